"""The app under hostile requests: file payloads pointing at files it never handed out, a full
queue, clients that leave mid-request, scratch disk over many requests, mixed concurrent load."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import torch
from gradio_client import Client, handle_file
from PIL import Image

from attnviz.synthetic import generate

from .conftest import _free_port
from .weights_support import put_in_hf_cache

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = "shapes_cbam_resnet"


def _load_bench():
    spec = importlib.util.spec_from_file_location("load_mixed", ROOT / "bench" / "load_mixed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["load_mixed"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _image(path: Path, i: int = 0) -> Path:
    Image.fromarray(generate(i, seed=5, size=96).image).save(path)
    return path


def _fd(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": Path(path).name}


def _call(url: str, api: str, data: list) -> str:
    """One request through the plain HTTP API; the event stream as one string."""
    r = httpx.post(f"{url}gradio_api/call/{api}", json={"data": data}, timeout=30)
    r.raise_for_status()
    with httpx.stream("GET", f"{url}gradio_api/call/{api}/{r.json()['event_id']}", timeout=120) as s:
        return "\n".join(s.iter_lines())


def test_file_payloads_the_server_never_handed_out_are_refused(app_server, client, tmp_path):
    url = app_server.url
    out = Client(url, verbose=False, download_files=False).predict(handle_file(str(_image(tmp_path / "a.png"))),
                                                                   api_name="/inspect")
    scratch = Path(out[2]["path"]).parents[1]  # <scratch root>/<request folder>/gradcam.jpg
    uploads = app_server.log.parent / "gradio_tmp"
    checkpoint = next(app_server.checkpoints.glob("*.safetensors"))
    cached = put_in_hf_cache(app_server.hf_home, "attnviz-tests/hostile", "model.safetensors",
                             {"w": torch.zeros(1)})  # a real file in the server's weights cache
    assert cached.is_file()
    inspect = lambda p, weights=None: [_fd(p), BUILTIN, 0.5, "jet", weights]  # noqa: E731
    refused_by_gradio = {
        "/etc/passwd": inspect("/etc/passwd"),
        "app.py": inspect(str(ROOT / "app.py")),
        "checkpoint": inspect(str(checkpoint)),
        "weights cache": inspect(str(cached)),
        "../ out of uploads": inspect(str(uploads / ".." / ".." / "etc" / "passwd")),
        "weights payload": inspect(str(_image(tmp_path / "b.png")), _fd(str(checkpoint))),
    }
    for what, data in refused_by_gradio.items():
        events = _call(url, "inspect", data)
        assert "event: error" in events and "was not uploaded by a user" in events, (what, events)
    events = _call(url, "analyze", ["Uploaded zip of images", _fd("/etc/passwd"), 10, BUILTIN])
    assert "event: error" in events and "was not uploaded by a user" in events, events
    for folder in (uploads, scratch):  # folders Gradio serves from reach our gate, which says what they are
        events = _call(url, "inspect", inspect(str(folder)))
        assert "event: error" in events and f"{folder.name}: is a directory" in events, events
    ssrf = {"path": None, "url": f"{url}config", "meta": {"_type": "gradio.FileData"}}
    events = _call(url, "inspect", [{**ssrf, "path": f"{url}config"}, BUILTIN, 0.5, "jet", None])
    assert "event: error" in events and "failed validation" in events, events
    events = _call(url, "inspect", [ssrf, BUILTIN, 0.5, "jet", None])
    assert "event: error" in events and "root:" not in events, events
    assert client.predict(handle_file(str(tmp_path / "a.png")), api_name="/inspect")[0]["predictions"]


def test_scratch_folders_stay_bounded_over_300_requests(tmp_path):
    from attnviz import app_server as S
    from attnviz.app_logic import ScratchFolders

    assert S.MAX_SCRATCH_FOLDERS >= 2 * S.MAX_SESSIONS and S.queue_settings()["max_size"] == S.MAX_QUEUE > 0
    folders = ScratchFolders(tmp_path, max_folders=50)
    made = []
    for i in range(300):  # a request's outputs: a folder with a file
        made.append(folders.new())
        (made[-1] / "view.jpg").write_bytes(b"x" * 1000)
        assert len(list(tmp_path.iterdir())) <= 50
    assert sorted(tmp_path.iterdir()) == sorted(made[-50:])  # the newest kept, the oldest removed


# ------------------------------------------------------------------------------------------------
# the real app in this process: its torch thread can be held, its queue and models looked at


@contextlib.contextmanager
def _in_process_app(max_size: int):
    import app as A
    from attnviz import app_server as S

    A.demo.queue(**S.queue_settings(max_size=max_size))
    port = _free_port()
    A.demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True,
                  max_file_size=S.MAX_FILE_SIZE, state_session_capacity=S.MAX_SESSIONS)
    try:
        yield A.demo, f"http://127.0.0.1:{port}/"
    finally:
        A.demo.close()


class Session:
    """Raw queue joins and the session's event stream, as the browser makes them."""

    def __init__(self, url: str, name: str, fns: dict[str, int]) -> None:
        self.url, self.hash, self.fns = url, name, fns

    def join(self, api: str, data: list) -> httpx.Response:
        return httpx.post(self.url + "gradio_api/queue/join", timeout=30,
                          json={"data": data, "fn_index": self.fns[api], "session_hash": self.hash, "trigger_id": None})

    def messages(self, until: Callable[[dict], bool], timeout: float = 120) -> list[dict]:
        """Read the stream until a message satisfies ``until``, then hang up (a disconnect)."""
        seen: list[dict] = []
        with httpx.stream("GET", f"{self.url}gradio_api/queue/data", params={"session_hash": self.hash},
                          timeout=timeout) as s:
            for line in s.iter_lines():
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:]))
                    if until(seen[-1]):
                        return seen
        return seen

    def hang_up(self, after: float = 0.3) -> None:
        """Open the session's stream and leave without reading: the browser tab closed."""
        with httpx.stream("GET", f"{self.url}gradio_api/queue/data", params={"session_hash": self.hash}, timeout=30):
            time.sleep(after)


def _upload(url: str, path: Path) -> dict:
    with open(path, "rb") as f:
        return _fd(httpx.post(url + "gradio_api/upload", files={"files": f}, timeout=30).json()[0])


def _zip_of_images(path: Path, n: int = 6) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(generate(i, seed=9, size=96).image).save(buf, "PNG")
            zf.writestr(f"set/c{i % 2}/{i}.png", buf.getvalue())
    return path


def _hooks(models) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for model in models for m in model.modules())


def test_full_queue_answers_busy_and_disconnects_leave_nothing(tmp_path):
    from attnviz import app_server as S
    from attnviz.models import loading

    with _in_process_app(max_size=3) as (demo, url):
        fns = {d["api_name"]: d["id"] for d in httpx.get(url + "config").json()["dependencies"] if d.get("api_name")}
        img = _upload(url, _image(tmp_path / "x.png"))
        inspect = [img, BUILTIN, 0.5, "jet", None]
        baseline = Client(url, verbose=False, download_files=False).predict(handle_file(str(tmp_path / "x.png")),
                                                                             api_name="/inspect")[0]
        hold = threading.Event()
        S.torch_thread._pool.submit(hold.wait)  # every model event now waits on the torch thread
        a, b = Session(url, "leaver", fns), Session(url, "stayer", fns)
        assert a.join("intervene", [img, BUILTIN, ["all"], "mean", 8, 0.5, "jet"]).status_code == 200
        a.messages(lambda m: m.get("msg") == "process_starts", timeout=30)  # running, then a hangs up
        assert a.join("inspect", inspect).status_code == 200  # queued behind it
        assert [b.join("inspect", inspect).status_code for _ in range(2)] == [200, 200]
        t0 = time.perf_counter()
        full = b.join("inspect", inspect)
        assert full.status_code == 503 and "Queue is full" in full.text and time.perf_counter() - t0 < 5
        a.hang_up()  # a's stream opens and closes: it left
        deadline = time.monotonic() + 10
        while len(demo._queue) > 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(demo._queue) == 2  # a's queued event is gone; b's two wait
        hold.set()
        completed: list[dict] = []
        b.messages(lambda m: m.get("msg") == "process_completed" and (completed.append(m) or len(completed) == 2))
        assert len(completed) == 2 and all(m["success"] for m in completed)
        _leave_mid_analysis(url, fns, tmp_path, hold)
        after = Client(url, verbose=False, download_files=False).predict(handle_file(str(tmp_path / "x.png")),
                                                                          api_name="/inspect")[0]
        assert after["predictions"] == baseline["predictions"]  # no intervention hook left behind
        assert _hooks(e.model for e in loading._cache.values()) == 0 and len(demo._queue) == 0
        assert not [p for p in S._SCRATCH.rglob("images") if p.is_dir()]  # unpacked uploads removed


def _leave_mid_analysis(url: str, fns: dict, tmp_path: Path, hold: threading.Event) -> None:
    """A zip analysis whose client leaves while it waits for the model: it runs, and its
    unpacked images are removed all the same."""
    from attnviz import app_server as S

    hold.clear()
    S.torch_thread._pool.submit(hold.wait)
    c = Session(url, "analyst", fns)
    zfd = _upload(url, _zip_of_images(tmp_path / "set.zip"))
    assert c.join("analyze", ["Uploaded zip of images", zfd, 6, BUILTIN]).status_code == 200
    c.messages(lambda m: m.get("msg") == "process_starts", timeout=30)  # started, then hung up
    hold.set()  # it runs on without its client; the next model request waits for it to finish


def test_mixed_clients_equal_serial(app_server, tmp_path):
    """The CI variant of bench/load_mixed.py: one request of each kind (inspect, intervene, compare,
    multi-image compare, zip and synthetic analysis) at once, each from a new session, each
    answer equal to the serial one."""
    bench = _load_bench()
    inputs = bench.make_inputs(tmp_path, n_images=2, zip_images=6)
    all_jobs = bench.jobs(inputs, sorted(app_server.builtin_variants()))
    kinds = sorted({j[0] for j in all_jobs})
    job_list = [next(j for j in all_jobs if j[0] == k) for k in kinds]
    assert set(kinds) >= {"inspect", "intervene", "compare", "compare_images", "analyze_zip", "analyze_synthetic"}
    expected = bench.serial_keys(app_server.url, job_list)
    outcome = bench.run_clients(app_server.url, len(job_list), job_list, expected, requests=1)
    assert outcome.done == len(job_list) and not outcome.errors and not outcome.mismatches, outcome
