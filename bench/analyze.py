#!/usr/bin/env python
"""``attnviz.analyze`` throughput against a bare batched forward, memory, and Ray's overhead.

    python bench/analyze.py [--images 512] [--r50-images 128] [--ray-images 1024] [--repeats 3] [--skip-r50]
                            [--skip-rss] [--skip-ray] [--ray-actors N] [--out BENCHMARKS.md]

1. Throughput (local engine, CPU, batch 32): ``analyze`` on an ImageFolder of PNG files
   (decoded and preprocessed in DataLoader workers, forwarded under ``attnviz.capture``,
   statistics folded in float64) next to a bare ``inference_mode`` forward of the same model
   on the same images already decoded into tensors, in batches of 32. Both rows run in one
   loop, alternating, ``--repeats`` times; medians. Built-in models at 96 px and, unless
   ``--skip-r50``, ``se_resnet50`` and ``cbam_resnet50`` at 224 px (JPEGs of 320x256, resized
   to 256 and cropped) with RANDOM-INIT weights (no download; speed does not depend on them).
2. RSS of ``analyze`` on synthetic:1000 and synthetic:5000 (separate processes, sampled).
3. Ray engine on this machine (``ray.init(num_cpus=<cores>)``): start-up, time to the first
   batch and images/s against the local engine on the same folder.

The tables are printed and written into ``--out`` between this script's own markers (below
bench.py's marker, so bench.py keeps them).
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import attnviz  # noqa: E402
from attnviz.analysis import analyze  # noqa: E402
from attnviz.inspection import amp_autocast  # noqa: E402
from attnviz.models.loading import LoadedModel  # noqa: E402
from attnviz.preprocess import prepare  # noqa: E402
from attnviz.synthetic import CLASSES, generate  # noqa: E402
from timing import abba, replace_between  # noqa: E402  (bench/timing.py)

BEGIN, END = "<!-- bench/analyze.py begin -->", "<!-- bench/analyze.py end -->"
BUILTINS = ("shapes_se_resnet", "shapes_eca_resnet", "shapes_cbam_resnet", "shapes_bam_resnet")


def write_folder(root: Path, n: int, size: tuple[int, int], fmt: str) -> Path:
    for i in range(n):
        s = generate(i, seed=2000, size=max(size))
        d = root / CLASSES[s.label]
        d.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(s.image)
        if im.size != size:
            im = im.crop((0, 0, *size))
        im.save(d / f"{i}.{fmt}", quality=90) if fmt == "jpg" else im.save(d / f"{i}.{fmt}")
    return root


def bare_forward(loaded: LoadedModel, x: torch.Tensor, batch: int, amp: str | None = None) -> float:
    """The same forwards as analyze makes (host tensor -> device, autocast), nothing captured."""
    t0 = time.perf_counter()
    with torch.inference_mode(), amp_autocast(amp, loaded.device):
        for i in range(0, len(x), batch):
            loaded.model(x[i:i + batch].to(loaded.device, non_blocking=True))
    if loaded.device.type == "cuda":
        torch.cuda.synchronize(loaded.device)
    return time.perf_counter() - t0


def on_device(loaded: LoadedModel, device: str, channels_last: bool) -> LoadedModel:
    """``loaded`` on ``device`` (a copy; its weights channels-last when asked: both rows then
    feed it the same NCHW batches, as analyze does)."""
    model = copy.deepcopy(loaded.model).to(torch.device(device))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return LoadedModel(loaded.variant, model.eval(), torch.device(device), loaded.weights)


def throughput(loaded: LoadedModel, folder: Path, repeats: int, batch: int = 32, amp: str | None = None) -> dict:
    files = sorted(folder.rglob("*.*"))
    x = torch.cat([prepare(f, loaded.preprocess).tensor for f in files])  # decoded once, up front
    bare_forward(loaded, x[:batch], batch, amp)  # warm-up
    analyze(folder, loaded, batch_size=batch, max_images=batch, amp=amp)
    # ABBA (ms): drift on a shared machine hits both rows of a pair alike
    t_bare, t_an = abba(lambda: bare_forward(loaded, x, batch, amp),
                        lambda: analyze(folder, loaded, batch_size=batch, amp=amp), repeats, warmup=0)
    n = len(files)
    bare, an = 1e3 * n / statistics.median(t_bare), 1e3 * n / statistics.median(t_an)
    # The ratio is judged on the median of the per-pair ratios: the machine's speed moves between
    # pairs far more than within one.
    pairs = sorted(b / a for a, b in zip(t_an, t_bare))
    return {"model": loaded.name, "n": n, "bare": bare, "analyze": an, "ratio": statistics.median(pairs),
            "ratio_range": (pairs[0], pairs[-1])}


def random_init(name: str) -> LoadedModel:
    v = attnviz.get_variant(name)
    torch.manual_seed(0)
    return LoadedModel(v, v.build().eval(), torch.device("cpu"), "random init (benchmark)")


def rss_mb(n: int) -> tuple[float, float]:
    """(RSS before, peak RSS during) ``analyze('synthetic:n')`` in a fresh process, sampled
    from /proc every 20 ms (ru_maxrss would report the import-time peak of torch instead)."""
    code = ("import threading, time, attnviz\n"
            "def rss():\n"
            "    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20\n"
            "loaded = attnviz.load_model('shapes_se_resnet', device='cpu')\n"
            "attnviz.analyze('synthetic:64', loaded, num_workers=1)  # warm: first-batch allocations\n"
            "before, peak, stop = rss(), [0.0], threading.Event()\n"
            "def watch():\n"
            "    while not stop.is_set():\n"
            "        peak[0] = max(peak[0], rss()); time.sleep(0.02)\n"
            "t = threading.Thread(target=watch); t.start()\n"
            f"attnviz.analyze('synthetic:{n}', loaded, num_workers=1)\n"
            "stop.set(); t.join()\n"
            "print(before, peak[0])\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    before, peak = res.stdout.strip().splitlines()[-1].split()
    return float(before), float(peak)


def ray_overhead(loaded: LoadedModel, folder: Path, actors: int | None) -> dict:
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    t_init = time.perf_counter() - t0
    try:
        out = {}
        # Single runs, one after another: the first of each engine cold, then both warm ("again")
        # side by side; "ray checkpointed" (as the CLI runs it, the actors' partials taken and
        # saved about every 20 batches per actor) right after the warm Ray run it is set against.
        for engine in ("local", "ray", "local again", "ray again", "ray checkpointed"):
            first: list[tuple[float, int]] = []  # (time, items done) at the first progress report
            checkpoint = folder.parent / "bench_checkpoint.npz" if engine == "ray checkpointed" else None
            t0 = time.perf_counter()
            a = analyze(folder, loaded, batch_size=32, engine=engine.split()[0], ray_actors=actors,
                        checkpoint=checkpoint, checkpoint_every=20,
                        progress=lambda d, t: first.append((time.perf_counter(), d)) if not first else None)
            end = time.perf_counter()
            (t_first, d_first), n = first[0], a.n_images
            # steady: images after the first report over the time since (start-up left out)
            out[engine] = {"first": t_first - t0, "total": end - t0, "ips": n / (end - t0),
                           "steady": (n - d_first) / (end - t_first) if n > d_first else float("nan")}
    finally:
        ray.shutdown()
    out["init"] = t_init
    return out


def markdown(rows: list[dict], rss: dict | None, ray_rows: dict | None, args: argparse.Namespace) -> str:
    lines = [BEGIN, "", "## `attnviz analyze` (bench/analyze.py)", "",
             f"`python bench/analyze.py {' '.join(sys.argv[1:])}`, {os.cpu_count()} CPU cores, torch "
             f"{torch.__version__}, {torch.get_num_threads()} torch threads, batch 32, local engine, "
             f"device {args.device}{' ' + torch.cuda.get_device_name() if args.device.startswith('cuda') else ''}, "
             f"amp {args.amp or 'off (float32)'}, {'channels-last' if args.channels_last else 'NCHW'}, "
             f"{args.repeats} ABBA-alternating repeats (img/s: medians), load average {os.getloadavg()[0]:.1f} "
             "at the end (other work shared the machine).", "",
             "| model | input | images | bare forward img/s | analyze img/s | analyze / bare (median of pairs, range) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["ratio_range"]
        lines.append(f"| {r['model']} | {r['input']} | {r['n']} | {r['bare']:.1f} | {r['analyze']:.1f} | "
                     f"{r['ratio']:.2f}x ({lo:.2f}-{hi:.2f}) |")
    lines += ["", "ResNet-50 rows use random-init weights (speed does not depend on them). \"bare forward\" runs "
              "on tensors decoded before timing; \"analyze\" includes decoding the files in DataLoader "
              "workers, capture and the float64 statistics."]
    if rss:
        (b1, p1), (b5, p5) = rss[1000], rss[5000]
        lines += ["", f"RSS of the analyzing process (shapes_se_resnet, 1 worker, sampled every 20 ms, "
                      f"model loaded and warmed first): synthetic:1000 {b1:.0f} MB before, peak {p1:.0f} MB "
                      f"(+{p1 - b1:.0f}); synthetic:5000 {b5:.0f} MB before, peak {p5:.0f} MB (+{p5 - b5:.0f}); "
                      f"peak at 5k minus peak at 1k: {p5 - p1:+.0f} MB."]
    if ray_rows:
        ra, lo2, r2, rc = (ray_rows[k] for k in ("ray", "local again", "ray again", "ray checkpointed"))
        lines += ["", f"Ray engine on this machine ({ray_rows['model']}, {ray_rows['n']} PNGs, batch 32, "
                      f"{args.ray_actors or 'default'} actors, each folding into its own partial; single runs one "
                      f"after another, not repeated): ray.init {ray_rows['init']:.1f} s; cold run: first batch after "
                      f"{ra['first']:.1f} s, {ra['ips']:.1f} img/s end to end. Warm, side by side: first batch after "
                      f"{r2['first']:.1f} s (local {lo2['first']:.1f} s); {r2['ips']:.1f} img/s end to end (local "
                      f"{lo2['ips']:.1f}: {r2['ips'] / lo2['ips']:.2f}x); after the first batch (start-up left out) "
                      f"{r2['steady']:.1f} img/s (local {lo2['steady']:.1f}: {r2['steady'] / lo2['steady']:.2f}x). "
                      f"Checkpointed as the CLI runs it (partials taken and saved about every 20 batches per "
                      f"actor): {rc['ips']:.1f} img/s end to end, against {r2['ips']:.1f} without checkpoints."]
    return "\n".join(lines + ["", END]) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--r50-images", type=int, default=128)
    p.add_argument("--ray-images", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-r50", action="store_true")
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--skip-ray", action="store_true")
    p.add_argument("--ray-actors", type=int, default=None, help="model-holding actors (default: the engine's plan)")
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    p.add_argument("--device", default="cpu", help="the GPU rows: --device cuda [--amp bf16|fp16] [--channels-last]")
    p.add_argument("--amp", choices=("bf16", "fp16"), help="analyze and the bare forward under autocast")
    p.add_argument("--channels-last", action="store_true", help="model weights in channels-last (NHWC)")
    args = p.parse_args()
    rows, rss, ray_rows = [], None, None
    with tempfile.TemporaryDirectory() as tmp:
        small = write_folder(Path(tmp) / "96", args.images, (96, 96), "png")
        for name in BUILTINS:
            loaded = on_device(attnviz.load_model(name, device="cpu"), args.device, args.channels_last)
            rows.append({**throughput(loaded, small, args.repeats, amp=args.amp), "input": "96 px PNG"})
            print(rows[-1], flush=True)
        if not args.skip_r50:
            big = write_folder(Path(tmp) / "224", args.r50_images, (320, 256), "jpg")
            for name in ("se_resnet50", "cbam_resnet50"):
                rows.append({**throughput(on_device(random_init(name), args.device, args.channels_last), big, args.repeats, amp=args.amp),
                             "input": "224 px (JPEG 320x256)"})
                print(rows[-1], flush=True)
        if not args.skip_rss:
            rss = {n: rss_mb(n) for n in (1000, 5000)}
            print(rss, flush=True)
        if not args.skip_ray:
            loaded = attnviz.load_model("shapes_se_resnet", device="cpu")
            big_small = write_folder(Path(tmp) / "96ray", args.ray_images, (96, 96), "png")
            ray_rows = {**ray_overhead(loaded, big_small, args.ray_actors), "model": loaded.name, "n": args.ray_images}
            print(ray_rows, flush=True)
    text = markdown(rows, rss, ray_rows, args)
    print(text)
    replace_between(args.out, BEGIN, END, text)


if __name__ == "__main__":
    main()
