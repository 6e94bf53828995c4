"""Cold start of ``python app.py`` and server memory per loaded ImageNet variant.

    python bench/coldstart.py                  # everything, 3 starts per case
    python bench/coldstart.py --repeats 1 --skip-rss

Cold start is timed from spawning ``python app.py`` to the first answered request (``GET /``
returns the page) and to the first ``/inspect`` result of the default variant through
``gradio_client`` (model load included). Cases, each in a fresh process with fresh caches:

- ``offline``: ``HF_HUB_OFFLINE=1``, empty caches: the built-in default (what a clean clone does);
- ``offline+mcp``: the same with ``ATTNVIZ_MCP=1`` (Gradio's MCP server mounted);
- ``preloaded``: ``seresnet50``'s hub file already in the HF cache, as the Spaces front matter's
  ``preload_from_hub`` leaves it: the ImageNet default from the first request on;
- ``prefetch``: online against a loopback hub stand-in (``HF_ENDPOINT``) with an empty cache and
  ``ATTNVIZ_PRELOAD=seresnet50``: when the page answers, and when the default switched (the
  app logs the preload's "ready" line).

Weights are each source's architecture at random init in the source's file format (no internet
here); load time and memory do not depend on the values. RSS: one server (offline, every
ImageNet variant given as ``--weights NAME=FILE``), after one built-in ``/inspect``, then after
an ``/inspect`` with each variant in turn, so each line is that many variants loaded together.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from servers import free_port  # noqa: E402  (bench/servers.py)
from timing import mb, rss_bytes  # noqa: E402  (bench/timing.py)

from tests.hub_standin import HubStandIn, timm_safetensors  # noqa: E402

HUB_VARIANT = "seresnet50"


def rss_mb(pid: int) -> float:
    return mb(rss_bytes(pid)[0])


class App:
    """``python app.py`` with its own caches under ``home``; timings from the spawn."""

    def __init__(self, home: Path, env: dict[str, str], args: list[str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = home / f"app-{self.port}.log"
        full = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(self.port),
                "GRADIO_ANALYTICS_ENABLED": "False", "TORCH_HOME": str(home / "torch"),
                "HF_HOME": str(home / "hf"), "GRADIO_TEMP_DIR": str(home / "gradio"),
                "PYTHONUNBUFFERED": "1", **env}
        for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "SPACE_ID"):
            full.pop(var, None)
        self.t0 = time.perf_counter()
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen([sys.executable, "app.py", *(args or [])], cwd=ROOT, env=full,
                                         stdout=fh, stderr=subprocess.STDOUT)

    def wait_page(self, timeout: float = 180) -> float:
        """Seconds from the spawn to the first ``GET /`` answered with 200."""
        while time.perf_counter() - self.t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited:\n{self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.t0
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"no answer in {timeout} s:\n{self.log.read_text()[-2000:]}")

    def wait_log(self, pattern: str, timeout: float = 300) -> float:
        while time.perf_counter() - self.t0 < timeout:
            if re.search(pattern, self.log.read_text(errors="replace")):
                return time.perf_counter() - self.t0
            time.sleep(0.1)
        raise TimeoutError(f"{pattern!r} not logged in {timeout} s:\n{self.log.read_text()[-2000:]}")

    def inspect(self, image: Path, variant: str | None = None) -> dict:
        from gradio_client import Client, handle_file

        client = Client(self.url, verbose=False, download_files=False)
        args = [handle_file(str(image))] + ([variant] if variant else [])
        return client.predict(*args, api_name="/inspect")[0]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def scene(folder: Path) -> Path:
    from PIL import Image

    from attnviz.synthetic import DEFAULT_SIZE, generate

    path = folder / "scene.png"
    Image.fromarray(generate(0, seed=3, size=DEFAULT_SIZE).image).save(path)
    return path


def hub_file(folder: Path) -> Path:
    from attnviz.models import get_variant

    v = get_variant(HUB_VARIANT)
    return timm_safetensors(v.arch["model_name"], folder / "published" / v.weights.hf_filename)


def fill_hf_cache(home: Path, standin: HubStandIn) -> None:
    """Download the hub file into ``home``'s HF cache through the zoo's own path (as a Space build does)."""
    from attnviz.models import get_variant
    from attnviz.models.weights import resolve_file

    saved = {k: os.environ.get(k) for k in ("HF_HOME", "HF_ENDPOINT", "HF_HUB_OFFLINE")}
    os.environ.update(HF_HOME=str(home / "hf"), HF_ENDPOINT=standin.url, HF_HUB_OFFLINE="0")
    try:
        resolve_file(get_variant(HUB_VARIANT).weights, progress=False)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def one_start(case: str, root: Path, image: Path, standin: HubStandIn) -> dict:
    home = Path(tempfile.mkdtemp(dir=root, prefix=f"{case}-"))
    env = {"HF_HUB_OFFLINE": "1", "ATTNVIZ_PRELOAD": "none"}
    if case == "offline+mcp":
        env["ATTNVIZ_MCP"] = "1"
    elif case == "preloaded":
        fill_hf_cache(home, standin)
    elif case == "prefetch":
        env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": standin.url, "ATTNVIZ_PRELOAD": HUB_VARIANT}
    app = App(home, env)
    try:
        row = {"case": case, "page_s": app.wait_page()}
        if case == "prefetch":
            row["switch_s"] = app.wait_log(rf"preload {HUB_VARIANT} ready")
        t = time.perf_counter()
        # the API's default variant is the one of the start; after the switch, name the new one
        summary = app.inspect(image, HUB_VARIANT if case == "prefetch" else None)
        row["inspect_s"] = time.perf_counter() - app.t0
        row["first_inspect_only_s"] = time.perf_counter() - t
        row["variant"] = summary["variant"]
        row["rss_mb"] = rss_mb(app.proc.pid)
        return row
    finally:
        app.stop()


def cold_starts(root: Path, image: Path, repeats: int, cases: list[str]) -> list[dict]:
    rows = []
    with HubStandIn() as standin:
        from attnviz.models import get_variant

        source = get_variant(HUB_VARIANT).weights
        standin.add_hf(source.hf_repo, source.hf_filename, hub_file(root))
        for _ in range(repeats):
            for case in cases:  # interleaved, so slow phases of the machine hit every case alike
                rows.append(one_start(case, root, image, standin))
                print("  ", {k: round(v, 2) if isinstance(v, float) else v for k, v in rows[-1].items()},
                      flush=True)
    return rows


def weights_files(folder: Path, names: list[str]) -> list[str]:
    """``NAME=FILE`` for each variant: its architecture at random init (attnviz / timm layout)."""
    import torch
    from safetensors.torch import save_file

    from attnviz.models import get_variant

    specs = []
    for name in names:
        torch.manual_seed(0)
        path = folder / f"{name}.safetensors"
        save_file({k: t.contiguous() for k, t in get_variant(name).build().state_dict().items()}, str(path))
        specs.append(f"{name}={path}")
    return specs


def rss_per_variant(root: Path, image: Path, names: list[str]) -> list[tuple[str, float]]:
    home = Path(tempfile.mkdtemp(dir=root, prefix="rss-"))
    args = [a for spec in weights_files(home, names) for a in ("--weights", spec)]
    app = App(home, {"HF_HUB_OFFLINE": "1", "ATTNVIZ_PRELOAD": "none"}, args)
    try:
        app.wait_page()
        rows = [("idle", rss_mb(app.proc.pid))]
        app.inspect(image)
        rows.append(("+ built-in (first /inspect)", rss_mb(app.proc.pid)))
        for name in names:
            app.inspect(image, name)
            time.sleep(1.0)  # the app returns freed heap to the OS every 30 s; settle a little
            rows.append((f"+ {name}", rss_mb(app.proc.pid)))
            print(f"   {rows[-1][0]:<30} {rows[-1][1]:7.0f} MB", flush=True)
        return rows
    finally:
        app.stop()


def report(rows: list[dict], rss: list[tuple[str, float]]) -> None:
    print("\ncold start, median of", len(rows) // max(1, len({r['case'] for r in rows})), "starts (s):")
    for case in dict.fromkeys(r["case"] for r in rows):
        mine = [r for r in rows if r["case"] == case]
        cols = [k for k in ("page_s", "switch_s", "inspect_s", "first_inspect_only_s", "rss_mb") if k in mine[0]]
        text = "  ".join(f"{k}={statistics.median(r[k] for r in mine):.2f}" for k in cols)
        print(f"  {case:<12} default={mine[0]['variant']:<20} {text}")
    if rss:
        print("\nserver RSS, variants loaded together (MB):")
        prev = None
        for label, value in rss:
            print(f"  {label:<30} {value:7.0f}" + (f"  (+{value - prev:.0f})" if prev is not None else ""))
            prev = value


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cases", default="offline,offline+mcp,preloaded,prefetch")
    p.add_argument("--rss-variants", default="cbam_resnet50,se_resnet50,seresnet50,eca_resnet50,"
                                              "ecaresnet50d,bam_resnet50,resnet50")
    p.add_argument("--skip-rss", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="attnviz-coldstart-") as tmp:
        root = Path(tmp)
        image = scene(root)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
              "cold starts:", flush=True)
        rows = cold_starts(root, image, args.repeats, args.cases.split(","))
        rss = [] if args.skip_rss else rss_per_variant(root, image, args.rss_variants.split(","))
    report(rows, rss)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (other jobs on the machine slow every start)")


if __name__ == "__main__":
    main()
