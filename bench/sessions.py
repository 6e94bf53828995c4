"""Server memory over many client sessions: RSS and open file descriptors of ``python app.py``.

    python bench/sessions.py                       # 300 new sessions x 2 requests, then 24 concurrent
    python bench/sessions.py --sessions 60 --concurrent 8 --rounds 1

Every ``gradio_client.Client`` is a new Gradio session (its own session hash), as every visitor
and every script run is on a public Space. The app runs as the README starts it, offline on its
built-in models. Phases, each reported as server RSS and open fds:

1. warm-up: one session, /inspect and /compare a few times;
2. one long session: --long requests alternating /inspect and /compare;
3. --sessions new sessions one after another, each /inspect then /compare;
4. --rounds rounds of --concurrent clients at once, each a new session with 3 mixed requests
   (/inspect, /compare, /compare_images).
Results are compared against serial ones (same top-1 for the same image and variant).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servers import ROOT, Server  # noqa: E402  (bench/servers.py)
from timing import mb, rss_bytes  # noqa: E402  (bench/timing.py)

sys.path.insert(0, str(ROOT))  # attnviz, for the synthetic images


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def make_images(folder: Path) -> list[Path]:
    from PIL import Image

    from attnviz.synthetic import DEFAULT_SIZE, generate

    paths = []
    for i in range(3):
        p = folder / f"scene{i}.png"
        Image.fromarray(generate(i, seed=11, size=DEFAULT_SIZE).image).save(p)
        paths.append(p)
    return paths


class Driver:
    """Requests as a gradio_client user makes them; one Client per session."""

    def __init__(self, url: str, images: list[Path]) -> None:
        self.url, self.images = url, images

    def session(self):
        from gradio_client import Client

        return Client(self.url, verbose=False, download_files=False)

    def inspect(self, client, i: int = 0) -> str:
        from gradio_client import handle_file

        summary = client.predict(handle_file(str(self.images[i % len(self.images)])), api_name="/inspect")[0]
        return summary["predictions"][0]["label"]

    def compare(self, client, i: int = 0) -> tuple:
        from gradio_client import handle_file

        summary = client.predict(handle_file(str(self.images[i % len(self.images)])), api_name="/compare")[0]
        return tuple(summary["top1"].items()) if isinstance(summary["top1"], dict) else tuple(summary["top1"])

    def compare_images(self, client) -> float:
        from gradio_client import handle_file

        summary = client.predict([handle_file(str(p)) for p in self.images[:2]], api_name="/compare_images")[0]
        return round(summary["similarity"][-1]["cosine_mean"], 6)


def reading(server: Server, label: str, t0: float) -> dict:
    rss, _ = rss_bytes(server.pid)
    row = {"phase": label, "rss_mb": mb(rss), "fds": open_fds(server.pid), "t_s": round(time.monotonic() - t0, 1)}
    print(f"{row['t_s']:7.1f} s  {label:<44} RSS {row['rss_mb']:7.1f} MB   fds {row['fds']}", flush=True)
    return row


def run_concurrent(driver: Driver, clients: int, expected: dict) -> list[str]:
    mismatches: list[str] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        try:
            c = driver.session()
            got = {"inspect": driver.inspect(c, k), "compare": driver.compare(c, k),
                   "compare_images": driver.compare_images(c)}
            c.close()
            for key, value in got.items():
                want = expected[key] if key == "compare_images" else expected[key][k % len(driver.images)]
                if value != want:
                    with lock:
                        mismatches.append(f"client {k} {key}: {value!r} != serial {want!r}")
        except Exception as exc:  # reported, not raised: the phase must finish to be measured
            with lock:
                mismatches.append(f"client {k}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return mismatches


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=300, help="new sessions one after another (2 requests each)")
    ap.add_argument("--long", type=int, default=100, help="requests of the one long session")
    ap.add_argument("--concurrent", type=int, default=24, help="clients at once in each concurrent round")
    ap.add_argument("--rounds", type=int, default=4, help="concurrent rounds")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra server environment")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="attnviz-bench-sessions-"))
    images = make_images(tmp)
    os.environ.update({"HF_HUB_OFFLINE": "1", "TORCH_HOME": str(tmp / "torch"), "HF_HOME": str(tmp / "hf"),
                       "GRADIO_TEMP_DIR": str(tmp / "gradio")})
    os.environ.update(dict(kv.split("=", 1) for kv in args.env))
    server = Server("app", ROOT / "app.py", tmp, threads=os.cpu_count() or 1)
    rows: list[dict] = []
    try:
        server.wait_ready(120)
        driver = Driver(server.url, images)
        t0 = time.monotonic()
        rows.append(reading(server, "started", t0))
        warm = driver.session()
        expected = {"inspect": [driver.inspect(warm, i) for i in range(len(images))],
                    "compare": [driver.compare(warm, i) for i in range(len(images))],
                    "compare_images": driver.compare_images(warm)}
        for i in range(5):
            driver.inspect(warm, i), driver.compare(warm, i)
        rows.append(reading(server, "warm (1 session)", t0))
        for i in range(args.long):
            driver.inspect(warm, i) if i % 2 == 0 else driver.compare(warm, i)
        rows.append(reading(server, f"one long session, +{args.long} requests", t0))
        for s in range(1, args.sessions + 1):
            c = driver.session()
            driver.inspect(c, s)
            driver.compare(c, s)
            c.close()
            if s % 50 == 0 or s == args.sessions:
                rows.append(reading(server, f"{s} new sessions x 2 requests", t0))
        mismatches: list[str] = []
        for r in range(1, args.rounds + 1):
            mismatches += run_concurrent(driver, args.concurrent, expected)
            rows.append(reading(server, f"{r} x {args.concurrent} concurrent new sessions", t0))
        time.sleep(5)
        rows.append(reading(server, "5 s idle", t0))
    finally:
        server.stop()
    warm_rss = rows[1]["rss_mb"]
    seq = next(r for r in rows if r["phase"].startswith(f"{args.sessions} new"))
    print(f"\nwarm RSS {warm_rss:.1f} MB; after {args.sessions} new sessions {seq['rss_mb']:.1f} MB "
          f"(+{seq['rss_mb'] - warm_rss:.1f} MB, {1024 * (seq['rss_mb'] - rows[2]['rss_mb']) / max(args.sessions, 1):.0f} kB "
          f"a session); end {rows[-1]['rss_mb']:.1f} MB (+{rows[-1]['rss_mb'] - warm_rss:.1f} MB); "
          f"fds {rows[1]['fds']} -> {rows[-1]['fds']}")
    print(f"concurrent results equal to serial: {not mismatches}" + "".join(f"\n  {m}" for m in mismatches[:10]))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
