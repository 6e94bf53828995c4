"""The app's view and download files, made from a real inspection of a built-in model."""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from PIL import Image

from attnviz import app_logic as L

from .conftest import BUILTIN_CBAM as CBAM


def _open(path: str) -> Image.Image:
    im = Image.open(path)
    im.load()
    return im


def test_building_the_app_loads_no_model():
    """The app starts in seconds because no model is loaded before the first request (checked
    on what importing app.py does, not with a clock: start-up time depends on the machine)."""
    import subprocess
    import sys

    code = ("import app; from attnviz.models import loading; "
            "assert app.demo is not None and not loading._cache, list(loading._cache); print('ok')")
    res = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_views_are_jpeg_overlays_and_png_charts(cbam_result, tmp_path):
    views = L.inspect_views(cbam_result, tmp_path, alpha=0.6, colormap="viridis")
    size = cbam_result.view(L.VIEW_SIZE).size
    for path in [views.input, views.gradcam] + [p for p, _ in views.spatial]:
        im = _open(path)
        assert im.format == "JPEG" and im.size == size
    assert [c for _, c in views.spatial] == [L.spatial_caption(b) for b in sorted(cbam_result.spatial_blocks,
                                                                                  key=L.stage_key)]
    assert _open(views.overview).format == "PNG" and _open(views.stats).format == "PNG"
    # only the blocks asked for, and no charts
    one = cbam_result.spatial_blocks[-1].name
    part = L.inspect_views(cbam_result, tmp_path / "part", spatial_blocks=[one], charts=False)
    assert len(part.spatial) == 1 and one in part.spatial[0][1] and not part.overview and part.stats == ""


def test_block_chart(cbam_result, tmp_path):
    name = cbam_result.channel_blocks[0].name
    path = L.block_chart(cbam_result, name, tmp_path)
    assert path is not None and _open(path).format == "PNG"
    assert L.block_chart(cbam_result, "no.such.block", tmp_path) is None
    assert L.block_chart(cbam_result, None, tmp_path) is None


def test_downloads_hold_lossless_figures_and_the_charts_shown(cbam_result, tmp_path):
    charts, files = L.write_downloads(cbam_result, tmp_path, "my image.png", alpha=0.5, colormap="jet")
    assert [Path(f).name for f in files] == [f"my_image_{CBAM}_figures.zip", f"my_image_{CBAM}.json",
                                             f"my_image_{CBAM}.npz"]
    assert [c for _, c in charts] == [L.block_caption(b) for b in cbam_result.channel_blocks]
    with zipfile.ZipFile(files[0]) as zf:
        for (path, _), b in zip(charts, cbam_result.channel_blocks):
            assert zf.read(f"channels_{b.name}.png") == Path(path).read_bytes()  # encoded once
        for b in cbam_result.spatial_blocks:
            with Image.open(io.BytesIO(zf.read(f"spatial_{b.name}.png"))) as im:
                assert im.format == "PNG"


def test_scratch_folders_sweep_old_ones_at_most_once_per_interval(tmp_path):
    now = [10_000.0]
    scratch = L.ScratchFolders(tmp_path, max_age_s=3600, sweep_every_s=60, clock=lambda: now[0])

    def aged(name: str, age_s: float) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "overlay.jpg").write_bytes(b"x")
        os.utime(folder, (now[0] - age_s, now[0] - age_s))
        return folder

    stale, young = aged("stale", 7200), aged("young", 60)
    first = scratch.new()  # the first request sweeps
    assert first.is_dir() and first.parent == tmp_path
    assert not stale.exists() and young.exists()

    late = aged("stale-later", 7200)
    now[0] += 30  # within the interval: no sweep, however many requests
    for _ in range(5):
        scratch.new()
    assert late.exists()
    now[0] += 31  # past it: the next request sweeps again
    scratch.new()
    assert not late.exists() and young.exists() and first.exists()
    assert len(list(tmp_path.iterdir())) == 8  # young, the first, five within the interval, the last


def test_torch_thread_runs_every_call_on_one_thread_with_the_callers_context():
    import contextvars
    import threading

    worker = L.TorchThread(name="test-torch")
    request = contextvars.ContextVar("request", default=None)
    seen: list[tuple[int, str | None]] = []

    @worker.runs
    def job(tag: str) -> str:
        seen.append((threading.get_ident(), request.get()))
        return tag.upper()

    @worker.runs
    def outer() -> str:  # a wrapped function calling another one runs inline, no deadlock
        return job("inner") + "!"

    def caller(tag: str, out: list) -> None:
        request.set(tag)
        out.append(job(tag))

    results: list[str] = []
    callers = [threading.Thread(target=caller, args=(f"r{i}", results)) for i in range(4)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(timeout=10)
    assert sorted(results) == ["R0", "R1", "R2", "R3"]
    assert outer() == "INNER!"
    idents = {ident for ident, _ in seen}
    assert len(idents) == 1 and not idents & ({t.ident for t in callers} | {threading.get_ident()})
    assert sorted(ctx for _, ctx in seen if ctx) == ["r0", "r1", "r2", "r3"]  # each caller's own value

    class Boom(ValueError):
        pass

    def fail() -> None:
        raise Boom("what went wrong")

    import pytest

    with pytest.raises(Boom, match="what went wrong"):
        worker.call(fail)
    assert worker.call(len, "four") == 4  # still serving after an error


def test_app_runs_model_loading_and_forwards_on_its_torch_thread(tmp_path, monkeypatch):
    """Whichever gradio worker thread an event comes in on, the model is loaded and run on the
    one torch thread (a second thread running torch slows every later forward)."""
    import threading

    from attnviz import app_server as app
    from attnviz.synthetic import generate

    loaded_on: list[int] = []
    real_load = app.load_model

    def recording_load(*args, **kwargs):
        loaded_on.append(threading.get_ident())
        return real_load(*args, **kwargs)

    monkeypatch.setattr(app, "load_model", recording_load)
    loaded = app.load_variant(CBAM)
    forwards_on: list[int] = []
    handle = loaded.model.register_forward_pre_hook(lambda *_: forwards_on.append(threading.get_ident()))
    try:
        image = tmp_path / "shapes.png"
        Image.fromarray(generate(0, seed=1, size=loaded.preprocess.input_size).image).save(image)
        callers = [threading.Thread(target=app.inspect_one, args=(str(image), loaded)) for _ in range(2)]
        callers.append(threading.Thread(target=app.inspect_images, args=([str(image)] * 2, loaded)))
        for t in callers:
            t.start()
        for t in callers:
            t.join(timeout=120)
    finally:
        handle.remove()
    assert len(forwards_on) >= 3 and set(forwards_on) == set(loaded_on)
    assert not set(forwards_on) & ({t.ident for t in callers} | {threading.get_ident()})
