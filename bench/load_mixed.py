"""Mixed load on ``python app.py``: concurrent clients, each a new Gradio session, cycling through
inspect, compare, multi-image compare, dataset analysis of a small zip and of the synthetic set,
and interventions. Every answer is compared with the serial answer to the same request; server
RSS, open file descriptors and scratch disk are sampled while it runs; at the end a burst of
queue joins shows the queue bound answering "busy" at once.

    python bench/load_mixed.py                              # 24 clients for 5 minutes
    python bench/load_mixed.py --clients 24 --minutes 3 --burst 100
    python bench/load_mixed.py --clients 8 --requests 3     # the size of the CI variant

tests/test_app_hostile.py::test_mixed_clients_equal_serial runs the same jobs (6 clients x 2
requests) against the session's app server.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import io
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

BUILTINS = ("shapes_cbam_resnet", "shapes_se_resnet", "shapes_eca_resnet", "shapes_bam_resnet", "shapes_resnet")


def make_inputs(folder: Path, n_images: int = 3, zip_images: int = 12) -> dict:
    """A few synthetic images and a small zip of class subfolders (the Dataset tab's upload)."""
    from PIL import Image

    from attnviz.synthetic import CLASSES, DEFAULT_SIZE, generate

    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(n_images):
        path = folder / f"scene{i}.png"
        Image.fromarray(generate(i, seed=17, size=DEFAULT_SIZE).image).save(path)
        images.append(str(path))
    zpath = folder / "small_set.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for i in range(zip_images):
            s = generate(i, seed=2000, size=DEFAULT_SIZE)
            buf = io.BytesIO()
            Image.fromarray(s.image).save(buf, "PNG")
            zf.writestr(f"set/{CLASSES[s.label]}/{i}.png", buf.getvalue())
    return {"images": images, "zip": str(zpath)}


def jobs(inputs: dict, variants: list[str]) -> list[tuple]:
    """The distinct requests: (name, api, args) with files as paths (uploaded per call)."""
    imgs, v = inputs["images"], [x for x in BUILTINS if x in variants] or variants
    out: list[tuple] = []
    for i, img in enumerate(imgs):
        out.append(("inspect", "/inspect", (img, v[i % len(v)])))
        out.append(("intervene", "/intervene", (img, v[0], ["all"], "mean", 8)))
        out.append(("compare", "/compare", (img, v[:3])))
    out.append(("compare_images", "/compare_images", (imgs, v[0])))
    out.append(("analyze_zip", "/analyze", ("Uploaded zip of images", inputs["zip"], 12, v[0])))
    out.append(("analyze_synthetic", "/analyze", ("Built-in synthetic set", None, 16, v[1 % len(v)])))
    return out


#: Parts of an answer that may differ between equal requests: timings, and where a dataset was unpacked.
VARYING = ("elapsed_s", "timings_ms", "source")


def _rounded(value, ndigits: int = 5):
    if isinstance(value, float):
        return round(value, ndigits)
    if isinstance(value, dict):
        return {k: _rounded(x, ndigits) for k, x in sorted(value.items()) if k not in VARYING}
    if isinstance(value, (list, tuple)):
        return [_rounded(x, ndigits) for x in value]
    return value


def key(name: str, out) -> str:
    """What must be equal between a concurrent and a serial answer (files and timings aside)."""
    if name == "inspect":
        s = out[0]
        kept = {"predictions": s["predictions"], "blocks": [(b["name"], b["channel_stats"], b["spatial_stats"])
                                                            for b in s["blocks"]]}
    elif name == "intervene":
        kept = out[5]
    elif name in ("compare", "compare_images"):
        kept = out[0]
    else:  # analyze: the summary
        kept = out[0]
    return json.dumps(_rounded(kept), sort_keys=True, default=str)


def call(client, job: tuple) -> str:
    from gradio_client import handle_file

    name, api, args = job

    def files(a):
        if isinstance(a, list):
            return [files(x) for x in a]
        return handle_file(a) if isinstance(a, str) and os.path.isfile(a) else a

    return key(name, client.predict(*[files(a) for a in args], api_name=api))


def session(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False)


def serial_keys(url: str, job_list: list[tuple]) -> dict[str, str]:
    c = session(url)
    return {repr(j): call(c, j) for j in job_list}


@dataclass
class Outcome:
    done: int = 0
    mismatches: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


def run_clients(url: str, clients: int, job_list: list[tuple], expected: dict[str, str], *,
                requests: int | None = None, until: float | None = None) -> Outcome:
    """``clients`` threads, each a new session per request, cycling through the jobs from its
    own offset: ``requests`` each, or until the monotonic time ``until``."""
    out, lock = Outcome(), threading.Lock()

    def client(k: int) -> None:
        r = 0
        while (requests is not None and r < requests) or (until is not None and time.monotonic() < until):
            job = job_list[(k * 5 + r) % len(job_list)]
            r += 1
            t0 = time.perf_counter()
            try:
                got = call(session(url), job)
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    out.errors.append(f"client {k} {job[0]}: {type(e).__name__}: {str(e)[:200]}")
                continue
            with lock:
                out.done += 1
                out.latencies.append(time.perf_counter() - t0)
                if got != expected[repr(job)]:
                    out.mismatches.append(f"client {k} {job[0]}: differs from serial")

    with cf.ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client, k) for k in range(clients)]:
            f.result()
    return out


def burst(url: str, n: int, image: str) -> tuple[int, int, float]:
    """``n`` queue joins of /inspect at once: (accepted, answered busy, slowest answer in s)."""
    import httpx

    up = httpx.post(url + "gradio_api/upload", files={"files": open(image, "rb")}, timeout=60).json()[0]
    cfg = httpx.get(url + "config", timeout=30).json()
    fn = next(d["id"] for d in cfg["dependencies"] if d.get("api_name") == "inspect")
    data = [{"path": up, "meta": {"_type": "gradio.FileData"}}, BUILTINS[0], 0.5, "jet", None]

    def join(i: int) -> tuple[int, float]:
        t0 = time.perf_counter()
        r = httpx.post(url + "gradio_api/queue/join", timeout=60,
                       json={"data": data, "fn_index": fn, "session_hash": f"burst{i}", "trigger_id": None})
        return r.status_code, time.perf_counter() - t0

    with cf.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(join, range(n)))
    busy = sum(code == 503 for code, _ in answers)
    return sum(code == 200 for code, _ in answers), busy, max(t for _, t in answers)


def _scratch(roots: list[Path]) -> tuple[float, int]:
    """(MB, folders) under the scratch roots; folders removed while counted are skipped."""
    size, folders = 0, 0
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: None):
            folders += len(dirnames) if dirpath == str(root) else 0
            for f in filenames:
                try:
                    size += os.stat(os.path.join(dirpath, f)).st_size
                except OSError:
                    pass
    return round(size / 2**20, 1), folders


def _sampler(pid: int, scratch: list[Path], rows: list[dict], stop: threading.Event, t0: float, every: float) -> None:
    from timing import mb, rss_bytes  # bench/timing.py (main puts bench/ on sys.path)

    while not stop.wait(every):
        mb_used, folders = _scratch(scratch)
        rows.append({"t_s": round(time.monotonic() - t0), "rss_mb": mb(rss_bytes(pid)[0]),
                     "fds": len(os.listdir(f"/proc/{pid}/fd")), "scratch_mb": mb_used, "scratch_folders": folders})
        r = rows[-1]
        print(f"{r['t_s']:6d} s  RSS {r['rss_mb']:7.1f} MB  fds {r['fds']:3d}  scratch {r['scratch_mb']:6.1f} MB "
              f"in {r['scratch_folders']} folders", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=24)
    ap.add_argument("--minutes", type=float, default=5.0, help="how long the clients run (ignored with --requests)")
    ap.add_argument("--requests", type=int, default=None, help="requests per client instead of --minutes")
    ap.add_argument("--burst", type=int, default=100, help="queue joins fired at once at the end (0: none)")
    ap.add_argument("--every", type=float, default=10.0, help="seconds between server samples")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra server environment")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from servers import ROOT, Server  # bench/servers.py: the app-server helper

    sys.path.insert(0, str(ROOT))  # attnviz, for the synthetic inputs

    tmp = Path(tempfile.mkdtemp(prefix="attnviz-bench-load-"))
    inputs = make_inputs(tmp / "inputs")
    os.environ.update({"HF_HUB_OFFLINE": "1", "TORCH_HOME": str(tmp / "torch"), "HF_HOME": str(tmp / "hf"),
                       "GRADIO_TEMP_DIR": str(tmp / "gradio"), "TMPDIR": str(tmp)})
    os.environ.update(dict(kv.split("=", 1) for kv in args.env))
    server = Server("app", ROOT / "app.py", tmp, threads=os.cpu_count() or 1)
    rows: list[dict] = []
    stop = threading.Event()
    try:
        server.wait_ready(180)
        job_list = jobs(inputs, list(BUILTINS))
        t_serial = time.perf_counter()
        expected = serial_keys(server.url, job_list)
        t_serial = time.perf_counter() - t_serial
        print(f"serial: {len(job_list)} distinct requests in {t_serial:.1f} s", flush=True)
        t0 = time.monotonic()
        sampler = threading.Thread(target=_sampler, args=(server.pid, list(tmp.glob("attnviz-app-*")), rows, stop, t0,
                                                          args.every), daemon=True)
        sampler.start()
        until = None if args.requests else t0 + 60 * args.minutes
        outcome = run_clients(server.url, args.clients, job_list, expected, requests=args.requests, until=until)
        wall = time.monotonic() - t0
        accepted, busy, slowest = burst(server.url, args.burst, inputs["images"][0]) if args.burst else (0, 0, 0.0)
        time.sleep(args.every + 1)
        stop.set()
    finally:
        stop.set()
        server.stop()
    lat = sorted(outcome.latencies) or [0.0]
    print(f"\n{args.clients} clients, {outcome.done} requests in {wall:.0f} s ({outcome.done / wall:.2f}/s); "
          f"latency median {statistics.median(lat):.2f} s, p95 {lat[math.ceil(0.95 * len(lat)) - 1]:.2f} s "
          "(nearest rank); "
          f"equal to serial: {outcome.done - len(outcome.mismatches)}/{outcome.done}; errors: {len(outcome.errors)}")
    if rows:
        warm = rows[min(2, len(rows) - 1)]
        print(f"after warm-up (t={warm['t_s']} s) -> end: RSS {warm['rss_mb']:.1f} -> {rows[-1]['rss_mb']:.1f} MB "
              f"(min {min(r['rss_mb'] for r in rows[2:] or rows):.1f}, max {max(r['rss_mb'] for r in rows[2:] or rows):.1f}), "
              f"fds {warm['fds']} -> {rows[-1]['fds']}, scratch max {max(r['scratch_mb'] for r in rows)} MB / "
              f"{max(r['scratch_folders'] for r in rows)} folders")
    if args.burst:
        print(f"burst of {args.burst} joins: {accepted} queued, {busy} answered 503 'Queue is full'; "
              f"slowest answer {slowest * 1000:.0f} ms")
    for m in (outcome.mismatches + outcome.errors)[:10]:
        print("  " + m)
    return 1 if outcome.mismatches or outcome.errors else 0


if __name__ == "__main__":
    sys.exit(main())
