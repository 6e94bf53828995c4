"""The running app under bad inputs, concurrent clients and file-serving probes."""
from __future__ import annotations

import concurrent.futures as cf
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from attnviz.synthetic import generate

from .conftest import rss_mb, start_app
from .corpus import expected_message, make_corpus, uploadable

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def test_every_corpus_file_through_the_app(client, corpus):
    for name, (path, expected) in corpus.items():
        if not uploadable(name):
            continue  # a FIFO, a device, a folder, a missing path, 1 GiB: not something HTTP can carry
        if expected == "error":
            with pytest.raises(AppError) as info:
                client.predict(handle_file(str(path)), api_name="/inspect")
            msg = str(info.value)
            assert "accepted" in msg and expected_message(name) in msg, (name, msg)
        else:
            summary = client.predict(handle_file(str(path)), api_name="/inspect")[0]
            assert summary["predictions"], name
    # still serving after all that
    assert client.predict(handle_file(str(corpus["photo.webp"][0])), api_name="/inspect")[0]["predictions"]


def _key(summary: dict) -> tuple:
    """What must be identical between a concurrent and a serial answer."""
    return (
        summary["variant"],
        tuple((p["index"], round(p["probability"], 5)) for p in summary["predictions"]),
        tuple((b["name"], round(b["channel_stats"]["mean"], 5) if b["channel_stats"] else None,
               round(b["spatial_stats"]["max"], 5) if b["spatial_stats"] else None) for b in summary["blocks"]),
    )


def test_16_clients_x_10_requests_equal_serial(app_server, tmp_path):
    variants = sorted(app_server.builtin_variants())
    size = 96
    paths = []
    for i in range(4):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(generate(i, seed=314, size=size).image).save(p)
        paths.append(p)
    jobs = [(paths[(c + r) % len(paths)], variants[(c * 3 + r) % len(variants)]) for c in range(16) for r in range(10)]
    serial_client = Client(app_server.url, verbose=False, download_files=str(tmp_path / "s"))
    serial = {}
    for job in set(jobs):
        serial[job] = _key(serial_client.predict(handle_file(str(job[0])), job[1], api_name="/inspect")[0])

    def client_run(c: int) -> list[tuple]:
        cl = Client(app_server.url, verbose=False, download_files=str(tmp_path / f"c{c}"))
        out = []
        for r in range(10):
            job = jobs[c * 10 + r]
            out.append((job, _key(cl.predict(handle_file(str(job[0])), job[1], api_name="/inspect")[0])))
        return out

    with cf.ThreadPoolExecutor(16) as pool:
        results = [f.result(timeout=600) for f in [pool.submit(client_run, c) for c in range(16)]]
    answers = [a for r in results for a in r]
    assert len(answers) == 160
    for job, key in answers:
        assert key == serial[job], job


def test_serves_no_file_outside_its_assets_and_outputs(app_server):
    probes = ["/etc/passwd", str(ROOT / "app.py"), str(ROOT / "attnviz" / "models" / "zoo.py"),
              str(next((ROOT / "checkpoints").glob("*.json"), ROOT / "README.md")), str(Path.home() / ".bashrc"),
              "../../../../etc/passwd"]
    for path in probes:
        for url in (f"{app_server.url}gradio_api/file={path}", f"{app_server.url}file={path}"):
            r = httpx.get(url, timeout=10)
            assert r.status_code in (403, 404), (url, r.status_code)
            assert b"root:" not in r.content and b"import" not in r.content


def test_outputs_are_served_and_temp_outputs_removed_on_shutdown(app_server, tmp_path):
    """A separate server: its request outputs exist while it runs and are gone after SIGTERM."""
    server_tmp = tmp_path / "tmp"
    server_tmp.mkdir()
    img = tmp_path / "x.png"
    Image.fromarray(generate(0, seed=1, size=96).image).save(img)
    with start_app(tmp_path, app_server.checkpoints, TMPDIR=str(server_tmp)) as server:
        out = Client(server.url, verbose=False, download_files=str(tmp_path / "dl")).predict(
            handle_file(str(img)), api_name="/inspect")
        assert Path(out[2]).is_file()  # the Grad-CAM overlay was served to us
        scratch = [p for p in server_tmp.iterdir() if p.name.startswith("attnviz-app-")]
        assert scratch and any(scratch[0].iterdir())
    assert not [p for p in server_tmp.iterdir() if p.name.startswith("attnviz-app-")]


def test_server_memory_does_not_grow_over_repeated_requests(app_server, client, tmp_path):
    img = tmp_path / "m.png"
    Image.fromarray(generate(5, seed=2, size=96).image).save(img)
    for _ in range(20):
        client.predict(handle_file(str(img)), api_name="/inspect")
    before = rss_mb(app_server.pid)
    for _ in range(100):
        client.predict(handle_file(str(img)), api_name="/inspect")
    growth = rss_mb(app_server.pid) - before
    print(f"server RSS growth over 100 /inspect requests: {growth:.1f} MB")
    assert growth <= 20
