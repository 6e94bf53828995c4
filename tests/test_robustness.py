"""Bad inputs, fuzzing and leaks: the library and the CLI refuse clearly and keep going."""
from __future__ import annotations

import gc
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import attnviz
from attnviz.cli import unique_stems
from attnviz.inputs import ImageLoadError, load_image
from attnviz.inputs.gate import display_name

from .corpus import expected_message, make_corpus, make_large
from .test_hostile_inputs import within

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = "shapes_cbam_resnet"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def loaded():
    return attnviz.load_model(BUILTIN, device="cpu")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_corpus_is_large_enough(corpus):
    assert len(corpus) >= 60
    assert sum(e == "error" for _, e in corpus.values()) >= 35
    assert sum(e == "ok" for _, e in corpus.values()) >= 20


def test_library_on_every_corpus_file(corpus, loaded):
    for name, (path, expected) in corpus.items():
        if expected == "error":
            with pytest.raises(ImageLoadError) as info:
                within(10, attnviz.inspect, path, loaded)
            msg = str(info.value)
            assert msg.startswith(f"{display_name(path)}:"), msg
            assert "\n" not in msg and "accepted: PNG, JPEG, WebP, GIF, BMP, TIFF" in msg, msg
            assert expected_message(name) in msg, (name, msg)
        else:
            r = attnviz.inspect(path, loaded)
            size = loaded.preprocess.input_size
            assert r.prepared.tensor.shape == (1, 3, size, size), name
            assert np.isfinite(r.logits).all() and abs(float(r.probs.sum()) - 1) < 1e-4, name
            assert r.view().size[0] >= size, name


def test_odd_images_give_correct_pixels(corpus):
    """Spot checks that odd modes decode to the right colours, not just 'something'."""
    rgba = np.asarray(load_image(corpus["rgba.png"][0]))
    ref = np.asarray(Image.open(corpus["rgba.png"][0]).convert("RGB")).astype(int)
    # 50 % alpha on white: halfway between the colour and 255
    np.testing.assert_allclose(rgba.astype(int), (ref + 255) / 2, atol=2)
    gif = np.asarray(load_image(corpus["animated.gif"][0]))
    assert tuple(gif[0, 0]) == (255, 0, 0)  # first frame
    tif = np.asarray(load_image(corpus["multipage.tif"][0]))
    assert tuple(tif[0, 0]) == (255, 0, 0)
    rotated = load_image(corpus["exif_rotated.jpg"][0])
    assert rotated.size == (90, 160)  # EXIF orientation 6 applied
    pal = np.asarray(load_image(corpus["palette_transparent.png"][0]))
    assert tuple(pal[0, 0]) == (255, 255, 255) and tuple(pal[32, 32]) == (0, 255, 0)
    g16 = np.asarray(load_image(corpus["gray16.png"][0]))
    assert g16.max() > 200 and g16.min() < 10  # scaled by bit depth, not clipped white


def test_large_valid_image(tmp_path, loaded):
    path = make_large(tmp_path)
    r = attnviz.inspect(path, loaded)
    assert r.geometry.original_size == (12000, 12000)
    assert r.geometry.crop_box == pytest.approx((0, 0, 12000, 12000))


def test_cli_reports_each_broken_file_and_processes_the_rest(corpus, tmp_path):
    """Relative names after '--' (so '-leading-dash.png' is a file, not an option), run where
    they are; plus /dev/zero itself. Every bad one gets one line naming it, the rest is written."""
    folder = next(iter(corpus.values()))[0].parent
    names = [p.name for p, _ in corpus.values()]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-m", "attnviz", "inspect", "--variant", BUILTIN, "--out", str(tmp_path / "out"),
         "--no-figures", "-q", "--", *names, "/dev/zero"],
        cwd=folder, env=env, capture_output=True, timeout=300,
    )
    stderr = res.stderr.decode("utf-8", "backslashreplace")
    assert res.returncode == 1
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("attnviz: error:")]
    broken = [(n, p) for n, (p, e) in corpus.items() if e == "error"]
    assert len(errors) == len(broken) + 1
    assert sum(line.startswith("attnviz: error: zero: is a character device") for line in errors) == 1
    for name, path in broken:
        shown = f"attnviz: error: {display_name(path)}: "
        assert sum(line.startswith(shown) for line in errors) == 1, name
        assert any(expected_message(name) in line for line in errors if line.startswith(shown)), name
    for (name, (_, e)), stem in zip(corpus.items(), unique_stems(names)):
        assert (tmp_path / "out" / f"{stem}.json").exists() == (e == "ok"), name
    assert not (folder / "PWNED").exists() and not (ROOT / "PWNED").exists()  # '$(touch PWNED).png' ran nothing


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data):
    try:
        im = load_image(data)
    except ImageLoadError as e:
        assert str(e).startswith("uploaded image:") and "\n" not in str(e)
    else:
        assert im.mode == "RGB"


def _seed_files() -> list[bytes]:
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8))
    out = []
    for fmt, kw in (("PNG", {}), ("JPEG", {"quality": 80}), ("GIF", {}), ("WEBP", {}), ("BMP", {}), ("TIFF", {})):
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_files()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(SEEDS))), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                    max_size=8), st.integers(0, 10_000))
def test_fuzz_mutated_real_files(seed, flips, cut):
    data = bytearray(SEEDS[seed])
    for pos, value in flips:
        data[pos % len(data)] = value
    data = bytes(data[: max(1, len(data) - cut % len(data))]) if cut % 3 == 0 else bytes(data)
    try:
        im = load_image(data)
    except ImageLoadError as e:
        assert "\n" not in str(e)
    else:
        assert im.mode == "RGB" and im.size[0] * im.size[1] > 0


def test_no_leaks_after_1000_inspections_with_100_failures(loaded, corpus):
    good = [p for p, e in corpus.values() if e == "ok"][:5]
    bad = [p for p, e in corpus.values() if e == "error"][:5]
    model = loaded.model
    for i in range(30):  # warm-up: allocator pools, caches
        attnviz.inspect(good[i % len(good)], loaded)
    gc.collect()
    before = rss_mb()
    failures = 0
    for i in range(1000):
        if i % 10 == 0:
            with pytest.raises(ImageLoadError):
                attnviz.inspect(bad[(i // 10) % len(bad)], loaded)
            failures += 1
        else:
            attnviz.inspect(good[i % len(good)], loaded, gradcam=(i % 2 == 0))
    gc.collect()
    growth = rss_mb() - before
    assert failures == 100
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert not model.training
    assert growth <= 20, f"RSS grew by {growth:.1f} MB"
    print(f"RSS growth over 1000 inspections (100 failed): {growth:.1f} MB")
