#!/usr/bin/env python
"""attnviz benchmark: one run, one image, one set of weights, every tool side by side.

    python bench/bench.py [--repeats 10] [--warmup 3] [--skip-cli] [--skip-app] [--requests 500]
                          [--out BENCHMARKS.md] [--device cpu|cuda] [--amp bf16|fp16]

What is timed (batch 1, 224 px, medians and p90 over ``--repeats`` runs after ``--warmup``):

1. bare forward of each ResNet-50 variant under ``torch.inference_mode()`` (the limit);
2. ``attnviz.capture`` around that forward;
3. ``attnviz.inspect`` (from the image file: decoding and preprocessing included) without and
   with Grad-CAM, each alone and followed by ``export.figures`` (every rendered output), and
   ``export.figures`` alone on a fixed result; with Grad-CAM also on the prepared tensor the
   peers get (their comparison targets use that row);
4. torchcam's and pytorch-grad-cam's ``GradCAM`` on the same model and input tensor
   (hooks, forward, backward, map);
4b. ``python -m attnviz inspect`` throughput (images/s) on 16 images, with and without figures;
5. the Gradio app's ``/inspect`` and ``/compare`` round trips through ``gradio_client`` next
   to a trivial echo app (``bench/echo_app.py``: Gradio's own floor, with one image and with
   as many files as the response) and next to the library's full inspection of the same model;
6. memory: RSS after building every ImageNet architecture, and the app server's RSS growth
   over ``--requests`` ``/inspect`` requests.

Every row of one section runs in the same loop, round-robin, the order rotated each repeat,
so drift from other processes on the machine hits all rows alike. ImageNet weights are not
downloaded: each variant is built at random init from a fixed seed, and that one model
object serves every tool. On CUDA, timings are synchronised and extra rows (channels-last,
``--amp`` autocast) and ``inspect_batch`` throughput (batch 16/32) are reported.

Results are printed and written to ``--out`` (default ``BENCHMARKS.md`` at the repo root);
anything below the marker line in that file is kept across runs.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import gc
import os
import platform
import re
import shlex
import shutil
import ssl
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import attnviz  # noqa: E402
from attnviz import export  # noqa: E402
from attnviz.inspection import AMP_DTYPES  # noqa: E402
from attnviz.preprocess import PreparedImage, prepare  # noqa: E402

RESNET50S = ("resnet50", "se_resnet50", "eca_resnet50", "cbam_resnet50", "bam_resnet50")
SEED = 0
MARKER = "<!-- bench.py rewrites everything above this line; notes below it are kept -->"
ECHO_APP = ROOT / "bench" / "echo_app.py"
#: How app round trips are timed: gradio_client's default (download every output file); the
#: response only (download_files=False: file URLs); and, for information, the downloads again.
#: The last two use one prebuilt SSL context: httpx builds one per new client (~20 ms of CPU,
#: encode/httpx#2298), gradio_client makes a client per request and per file, and on this 2-core
#: machine a client building one while the server runs its forward takes that CPU out of the
#: forward's two threads (measured in the server: the forward 113 ms with the default client,
#: 97 ms when repeated right after it in the same request; 103 vs 99 with one SSL context). A
#: remote client would not.
APP_MODES = ("outputs downloaded", "file URLs, one SSL context", "outputs downloaded, one SSL context")
#: Modes the app targets are judged in: gradio_client's default, and the server's work alone.
TARGET_MODES = APP_MODES[:2]
APP = ROOT / "app.py"

# Targets: (key, description, limit)
LIMITS = {
    "capture": 1.05,       # capture / bare forward
    "full": 1.5,           # inspect(gradcam=False) + figures / bare forward
    "vs_torchcam": 1.0,    # inspect(gradcam=True) / torchcam GradCAM
    "vs_pgc": 1 / 3,       # inspect(gradcam=True) / pytorch-grad-cam GradCAM
    "render_ms": 40.0,     # export.figures on one result
    "app": 1.3,            # (app /inspect - echo with as many files) / library full inspection
    "compare": 1.2,        # app /compare of 4 / sum of app /inspect of each
    "rss_mb": 20.0,        # server RSS growth over --requests /inspect
}


# --------------------------------------------------------------------------------------
# measurement helpers
# --------------------------------------------------------------------------------------
class Timer:
    """Wall time of one call; synchronised around it on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0


@dataclasses.dataclass
class Series:
    row: str
    variant: str
    times: list[float] = dataclasses.field(default_factory=list)  # seconds

    @property
    def median_ms(self) -> float:
        return 1e3 * float(np.median(self.times)) if self.times else float("nan")

    @property
    def p90_ms(self) -> float:
        return 1e3 * float(np.percentile(self.times, 90)) if self.times else float("nan")


class Results:
    def __init__(self) -> None:
        self.series: dict[tuple[str, str], Series] = {}
        self.order: list[tuple[str, str]] = []
        # section -> (% of all CPUs used by other processes, % used by the bench and its servers)
        self.contention: dict[str, tuple[float, float]] = {}

    def add(self, row: str, variant: str, seconds: float) -> None:
        key = (row, variant)
        if key not in self.series:
            self.series[key] = Series(row, variant)
            self.order.append(key)
        self.series[key].times.append(seconds)

    def get(self, row: str, variant: str) -> Series | None:
        return self.series.get((row, variant))

    def med(self, row: str, variant: str) -> float:
        s = self.get(row, variant)
        return s.median_ms if s else float("nan")

    def paired_ratio(self, num: tuple[str, str], den: tuple[str, str]) -> float:
        """Median over repeats of num/den measured in the same repeat."""
        a, b = self.get(*num), self.get(*den)
        if not a or not b:
            return float("nan")
        n = min(len(a.times), len(b.times))
        return float(np.median(np.asarray(a.times[:n]) / np.asarray(b.times[:n])))


Task = tuple[str, str, Callable[[], object]]  # (row, variant, fn)


def cpu_snapshot(pids: list[int]) -> tuple[int, int, int]:
    """(busy, total) jiffies of the whole machine and the jiffies used by ``pids``."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    own = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            own += int(stat[11]) + int(stat[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total - idle, total, own


def run_round_robin(tasks: list[Task], *, repeats: int, warmup: int, timer: Timer,
                    results: Results, label: str, pids: list[int] | None = None) -> None:
    """Run every task once per repeat, in an order rotated each repeat; record after warm-up.

    Also records how much of the machine's CPU other processes used meanwhile (``pids``:
    this process and its servers)."""
    n = len(tasks)
    pids = [os.getpid(), *(pids or [])]
    t_start = time.perf_counter()
    snap = None
    for r in range(warmup + repeats):
        if r == warmup:
            snap = cpu_snapshot(pids)
        shift = (r * n // (warmup + repeats)) % n if n else 0
        for row, variant, fn in tasks[shift:] + tasks[:shift]:
            dt = timer(fn)
            if r >= warmup:
                results.add(row, variant, dt)
        gc.collect()
        phase = "warm-up" if r < warmup else "repeat"
        k = r + 1 if r < warmup else r - warmup + 1
        print(f"  [{label}] {phase} {k}/{warmup if r < warmup else repeats} done "
              f"({time.perf_counter() - t_start:.0f} s, load {os.getloadavg()[0]:.2f})",
              file=sys.stderr, flush=True)
    if snap is not None:
        busy, total, own = (b - a for a, b in zip(snap, cpu_snapshot(pids)))
        if total > 0:
            results.contention[label] = (100.0 * max(0, busy - own) / total, 100.0 * own / total)


class LoadSampler(threading.Thread):
    """Samples the 1-minute load average every few seconds while the bench runs."""

    def __init__(self, every_s: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.every_s = every_s
        self.samples: list[float] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop_event.wait(self.every_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=self.every_s + 1)


def rss_bytes(pid: int | None = None) -> tuple[int, str]:
    """Resident set size of a process (this one by default) and how it was read."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss, "psutil"
    except ImportError:
        pass
    status = Path(f"/proc/{pid if pid else 'self'}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.M)
    if not m:
        raise RuntimeError("no VmRSS in /proc/<pid>/status")
    return int(m.group(1)) * 1024, "/proc/<pid>/status VmRSS"


def peak_rss_bytes(pid: int | None = None) -> int | None:
    try:
        status = Path(f"/proc/{pid if pid else 'self'}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmHWM:\s+(\d+)\s+kB", status, re.M)
    return int(m.group(1)) * 1024 if m else None


def mb(n: float) -> float:
    return n / 2**20


# --------------------------------------------------------------------------------------
# setup: machine, image, models
# --------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine_info(device: torch.device) -> dict[str, str]:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count() or 0
    info = {
        "CPU": cpu_model(),
        "cores": f"{os.cpu_count()} logical ({affinity} usable by this process)",
        "torch": torch.__version__,
        "torch threads": f"{torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op",
        "python": platform.python_version(),
        "OS": platform.platform(),
        "numpy / pillow": f"{np.__version__} / {package_version('pillow')}",
        "gradio / gradio_client": f"{package_version('gradio')} / {package_version('gradio_client')}",
        "torchcam / grad-cam": f"{package_version('torchcam')} / {package_version('grad-cam')}",
        "attnviz": attnviz.__version__,
    }
    if device.type == "cuda":
        info["GPU"] = torch.cuda.get_device_name(device)
        info["CUDA"] = str(torch.version.cuda)
    return info


def bench_image(tmp: Path) -> tuple[Path, str]:
    """A real photo: assets/*.jpg when the repo has one, else scikit-image's chelsea."""
    assets = sorted(p for p in (ROOT / "assets").glob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if assets:
        preferred = [p for p in assets if any(k in p.stem.lower() for k in ("chelsea", "cat"))]
        path = (preferred or assets)[0]
        from PIL import Image

        with Image.open(path) as im:
            size = im.size
        return path, f"`{path.relative_to(ROOT)}` ({size[0]}×{size[1]} JPEG)"
    from PIL import Image
    from skimage.data import chelsea

    path = tmp / "chelsea.png"
    arr = chelsea()
    Image.fromarray(arr).save(path)
    return path, (f"scikit-image `data.chelsea()` ({arr.shape[1]}×{arr.shape[0]} photo of a cat), "
                  "saved as PNG")


def build_imagenet_models(device: torch.device) -> dict[str, attnviz.LoadedModel]:
    """Every ImageNet variant's architecture at random init (seed ``SEED`` each), wrapped."""
    out = {}
    for name, v in attnviz.variants().items():
        if v.builtin:
            continue
        torch.manual_seed(SEED)
        model = v.build().eval().to(device)
        out[name] = attnviz.wrap_model(model, preprocess=v.preprocess, name=name, block=v.block)
    return out


def fresh(result: attnviz.Inspection) -> attnviz.Inspection:
    """The same result with an empty view cache, so rendering pays for the view again."""
    p = result.prepared
    return dataclasses.replace(result, prepared=PreparedImage(tensor=p.tensor, image=p.image,
                                                              geometry=p.geometry))


# --------------------------------------------------------------------------------------
# library rows (1-4)
# --------------------------------------------------------------------------------------
def library_tasks(name: str, loaded: attnviz.LoadedModel, image: Path, device: torch.device,
                  fixed: attnviz.Inspection, limit_pairs: int = 1, amp: str | None = None) -> list[Task]:
    """Rows 1-4 of one variant. Bare forward and capture run ``limit_pairs`` times per repeat,
    back to back in ABBA order: their target has the thinnest margin (5 %), and with 10 samples
    the ratio of medians swings more than that under this machine's noise."""
    from pytorch_grad_cam import GradCAM as PgcGradCAM
    from torchcam.methods import GradCAM as TorchcamGradCAM

    model = loaded.model
    prepared = prepare(image, loaded.preprocess)
    x = prepared.tensor.to(device)

    def bare() -> None:
        with torch.inference_mode():
            model(x)

    def cap() -> None:
        with attnviz.capture(model), torch.inference_mode():
            model(x)

    def inspect_only(gc_: bool) -> Callable[[], object]:
        return lambda: attnviz.inspect(image, loaded, gradcam=gc_)

    def inspect_full(gc_: bool) -> Callable[[], object]:
        return lambda: export.figures(attnviz.inspect(image, loaded, gradcam=gc_))

    def render() -> None:
        export.figures(fresh(fixed))

    def torchcam() -> None:
        extractor = TorchcamGradCAM(model, target_layer="layer4")
        try:
            scores = model(x)
            cams = extractor(int(scores[0].argmax()), scores)
            cams[0].cpu()
        finally:
            extractor.remove_hooks()

    def pgc() -> None:
        with PgcGradCAM(model=model, target_layers=[model.layer4]) as cam:
            cam(input_tensor=x, targets=None)  # None: the top-1 class; returns the 224x224 map
        model.zero_grad(set_to_none=True)  # pytorch-grad-cam backprops into .grad

    abba = [("bare forward", name, bare), ("capture", name, cap), ("capture", name, cap), ("bare forward", name, bare)]
    limit_rows = (abba * limit_pairs)[:2 * limit_pairs]
    return [
        *limit_rows,
        ("inspect gradcam=False", name, inspect_only(False)),
        ("inspect gradcam=False + figures", name, inspect_full(False)),
        ("inspect gradcam=True", name, inspect_only(True)),
        # the peers' input: the same preprocessed tensor, no decoding
        ("inspect gradcam=True (tensor input)", name, lambda: attnviz.inspect(prepared, loaded, gradcam=True)),
        ("inspect gradcam=True + figures", name, inspect_full(True)),
        ("figures (render only)", name, render),
        ("torchcam GradCAM", name, torchcam),
        ("pytorch-grad-cam GradCAM", name, pgc),
    ] + ([(f"inspect gradcam=True (tensor input, amp={amp})", name,
           lambda: attnviz.inspect(prepared, loaded, gradcam=True, amp=amp))] if amp else [])


def amp_checks(amp: str, device: torch.device, n_images: int = 64) -> list[dict]:
    """``inspect(..., amp=amp)`` against float32 on the trained built-in models (ImageNet weights
    are random here, where top-1 margins are meaningless): top-1 agreement, largest differences."""
    from attnviz.synthetic import generate

    rows = []
    for name, v in attnviz.variants().items():
        if not v.builtin:
            continue
        loaded = attnviz.load_model(name, device=device)
        same, gate_err, cam_err, prob_err = 0, 0.0, 0.0, 0.0
        for i in range(n_images):
            img = generate(i % len(v.class_names), seed=70_000 + i, size=v.input_size).image
            prepared = prepare(img, loaded.preprocess)
            exact = attnviz.inspect(prepared, loaded)
            fast = attnviz.inspect(prepared, loaded, amp=amp)
            same += exact.predictions[0].index == fast.predictions[0].index
            for a, b in zip(exact.blocks, fast.blocks):
                for role in ("channel", "spatial"):
                    x, y = getattr(a, role), getattr(b, role)
                    if x is not None:
                        gate_err = max(gate_err, float(np.abs(x - y).max()))
            cam_err = max(cam_err, float(np.abs(exact.gradcam - fast.gradcam).max()))
            prob_err = max(prob_err, float(np.abs(exact.probs - fast.probs).max()))
        rows.append({"variant": name, "n": n_images, "top1_same": same, "gate_err": gate_err,
                     "cam_err": cam_err, "prob_err": prob_err})
        print(f"  [amp {amp}] {name}: top-1 {same}/{n_images}, gate err {gate_err:.2e}", file=sys.stderr)
    return rows


# --------------------------------------------------------------------------------------
# accelerator rows (CUDA): channels-last, autocast, batch throughput
# --------------------------------------------------------------------------------------


def _gates(cap) -> dict[tuple[str, str], torch.Tensor]:
    out = {}
    for bc in cap:
        for role in ("channel", "spatial"):
            t = getattr(bc, role)
            if t is not None:
                out[(bc.name, role)] = t.float()
    return out


def accel_tasks(name: str, loaded: attnviz.LoadedModel, image: Path, device: torch.device,
                amp: str | None, checks: list[dict]) -> list[Task]:
    """channels-last (and autocast) copies of one model; checks top-1 and gates vs fp32."""
    model = loaded.model
    prepared = prepare(image, loaded.preprocess)
    x = prepared.tensor.to(device)
    with attnviz.capture(model) as cap_ref, torch.inference_mode():
        ref_logits = model(x).float()
    ref_gates = _gates(cap_ref)
    top2 = ref_logits[0].topk(2)
    ref_top1 = int(top2.indices[0])
    margin = float(top2.values[0] - top2.values[1])

    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    cl_loaded = attnviz.wrap_model(cl_model, preprocess=loaded.preprocess, name=name, block=loaded.variant.block)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    modes: list[tuple[str, torch.dtype | None]] = [("channels-last", None)]
    if amp:
        modes.append((f"channels-last + autocast {amp}", AMP_DTYPES[amp]))

    tasks: list[Task] = []
    for label, dtype in modes:
        def ctx(dtype=dtype):
            if dtype is None:
                return contextlib.nullcontext()
            return torch.autocast(device_type=device.type, dtype=dtype)

        with ctx(), attnviz.capture(cl_model) as cap, torch.inference_mode():
            logits = cl_model(x_cl).float()
        gates = _gates(cap)
        err = max((float((gates[k].cpu() - ref_gates[k].cpu()).abs().max()) for k in ref_gates), default=0.0)
        top1 = int(logits[0].argmax())
        checks.append({
            "variant": name, "mode": label, "top1_same": top1 == ref_top1, "fp32_top1": ref_top1,
            "top1": top1, "fp32_margin": margin, "max_gate_err": err,
            "logit_err": float((logits - ref_logits).abs().max()),
        })

        def bare(ctx=ctx) -> None:
            with ctx(), torch.inference_mode():
                cl_model(x_cl)

        def capt(ctx=ctx) -> None:
            with ctx(), attnviz.capture(cl_model), torch.inference_mode():
                cl_model(x_cl)

        def insp(ctx=ctx) -> None:
            with ctx():
                attnviz.inspect(image, cl_loaded, gradcam=True)

        tasks += [
            (f"bare forward [{label}]", name, bare),
            (f"capture [{label}]", name, capt),
            (f"inspect gradcam=True [{label}]", name, insp),
        ]
    return tasks


def batch_throughput(models: dict[str, attnviz.LoadedModel], image: Path, timer: Timer,
                     repeats: int, warmup: int, results: Results) -> list[dict]:
    rows = []
    for name in RESNET50S:
        loaded = models[name]
        prepared = prepare(image, loaded.preprocess)
        for bs in (16, 32):
            batch = [prepared] * bs
            fn = lambda batch=batch: attnviz.inspect_batch(batch, loaded, gradcam=True)  # noqa: E731
            for r in range(warmup + repeats):
                dt = timer(fn)
                if r >= warmup:
                    results.add(f"inspect_batch gradcam=True, batch {bs}", name, dt)
            med = results.med(f"inspect_batch gradcam=True, batch {bs}", name)
            rows.append({"variant": name, "batch": bs, "median_ms": med, "images_per_s": 1e3 * bs / med})
            print(f"  [throughput] {name} batch {bs}: {1e3 * bs / med:.1f} images/s", file=sys.stderr)
    return rows


CLI_IMAGES = 16


def cli_throughput(models: dict[str, attnviz.LoadedModel], image: Path, device: torch.device,
                   tmp: Path, repeats: int, warmup: int, results: Results) -> list[dict]:
    """``python -m attnviz inspect`` on ``CLI_IMAGES`` copies of the image (run in this process:
    the model is loaded once, by the warm-up), with and without figures, for one ResNet-50 (its
    random-init weights saved as the ``--weights`` file) and the default built-in model."""
    from safetensors.torch import save_file

    from attnviz import cli

    folder = tmp / "cli_images"
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(CLI_IMAGES):
        paths.append(folder / f"image_{i:02d}{image.suffix}")
        shutil.copyfile(image, paths[-1])
    runs: list[tuple[str, list[str]]] = []
    name = next((n for n in ("cbam_resnet50", *RESNET50S) if n in models), None)
    if name is not None:
        weights = tmp / f"{name}.safetensors"
        save_file({k: v.detach().cpu().contiguous() for k, v in models[name].model.state_dict().items()}, str(weights))
        runs.append((name, ["--variant", name, "--weights", str(weights)]))
    builtin = attnviz.default_variant_name()
    if attnviz.variants().get(builtin) is not None and attnviz.variants()[builtin].builtin:
        runs.append((builtin, ["--variant", builtin]))
    rows = []
    for variant, args in runs:
        for figures in (True, False):
            row = f"CLI inspect, {CLI_IMAGES} images" + ("" if figures else ", --no-figures")
            argv = ["inspect", *map(str, paths), "--out", str(tmp / "cli_out"), "--device", device.type, "-q",
                    *args, *([] if figures else ["--no-figures"])]
            for r in range(warmup + repeats):
                shutil.rmtree(tmp / "cli_out", ignore_errors=True)
                t0 = time.perf_counter()
                status = cli.main(argv)
                dt = time.perf_counter() - t0
                if status != 0:
                    raise RuntimeError(f"attnviz inspect exited with {status} ({variant})")
                if r >= warmup:
                    results.add(row, variant, dt)
            med = results.med(row, variant)
            rows.append({"variant": variant, "figures": figures, "median_ms": med,
                         "images_per_s": 1e3 * CLI_IMAGES / med})
            print(f"  [cli] {variant} figures={figures}: {1e3 * CLI_IMAGES / med:.1f} images/s",
                  file=sys.stderr, flush=True)
    shutil.rmtree(tmp / "cli_out", ignore_errors=True)
    return rows


# --------------------------------------------------------------------------------------
# app rows (5, 6)
# --------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A Gradio app as a subprocess on a free port."""

    def __init__(self, name: str, script: Path, log_dir: Path, threads: int,
                 extra_args: list[str] | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log_dir / f"{name}.log"
        env = dict(os.environ)
        env.update({
            "GRADIO_SERVER_PORT": str(self.port),
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "PYTHONUNBUFFERED": "1",
        })
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, str(script), *(extra_args or [])], cwd=str(ROOT), env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            m = re.search(r"Running on local URL:\s+(http://\S+)", self.log_tail(50))
            if m:  # the app may ignore GRADIO_SERVER_PORT
                self.url = m.group(1).rstrip("/") + "/"
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _choices(schema) -> list[str]:
    """The first ``enum`` list found in a parameter's JSON schema (dropdown choices)."""
    if isinstance(schema, dict):
        if isinstance(schema.get("enum"), list):
            return [c for c in schema["enum"] if isinstance(c, str)]
        for v in schema.values():
            found = _choices(v)
            if found:
                return found
    elif isinstance(schema, list):
        for v in schema:
            found = _choices(v)
            if found:
                return found
    return []


def _is_image_param(p: dict) -> bool:
    """An image input: an Image component, or a file input named like one (not e.g. a
    checkpoint upload, which keeps its default)."""
    comp = str(p.get("component", "")).lower()
    name = str(p.get("parameter_name", "")).lower()
    return comp in ("image", "imageeditor") or (comp == "file" and "image" in name)


def _is_multi_param(p: dict) -> bool:
    comp = str(p.get("component", "")).lower()
    ptype = str(p.get("python_type", {}).get("type", "")).lower()
    return comp == "checkboxgroup" or ptype.startswith("list") or (
        comp == "dropdown" and p.get("type", {}).get("type") == "array")


def _is_variant_param(p: dict) -> bool:
    """A choice of model variant(s): a dropdown / checkbox group / radio named variant(s) or model(s)."""
    name = str(p.get("parameter_name", "")).lower()
    comp = str(p.get("component", "")).lower()
    return comp in ("dropdown", "checkboxgroup", "radio") and any(k in name for k in ("variant", "model"))


def fill_params(params: list[dict], image: Path, *, variant: str | None = None,
                variants: list[str] | None = None) -> tuple[dict, list[str]]:
    """Keyword arguments for an endpoint: the image, the variant(s); defaults for the rest."""
    from gradio_client import handle_file

    kwargs, unknown = {}, []
    for p in params:
        name = p["parameter_name"]
        if _is_image_param(p):
            kwargs[name] = handle_file(str(image))
        elif variants is not None and _is_variant_param(p) and _is_multi_param(p):
            kwargs[name] = list(variants)
        elif variant is not None and _is_variant_param(p) and not _is_multi_param(p):
            kwargs[name] = variant
        elif p.get("parameter_has_default"):
            continue
        else:
            unknown.append(name)
    return kwargs, unknown


def _count_files(output) -> int:
    """Output files in an endpoint's response (what gradio_client downloads, one request each)."""
    if isinstance(output, dict):
        own = 1 if ("url" in output or "path" in output) and not isinstance(output.get("url", ""), dict) else 0
        return own + sum(_count_files(v) for v in output.values() if isinstance(v, (dict, list, tuple)))
    if isinstance(output, (list, tuple)):
        return sum(_count_files(v) for v in output)
    if isinstance(output, str) and output.startswith(("http://", "https://")) and "/file=" in output:
        return 1
    return 0


def _gradcam_default(params: list[dict]) -> tuple[bool, str]:
    for p in params:
        name = str(p.get("parameter_name", "")).lower()
        if "gradcam" in name.replace("_", "").replace("-", ""):
            if p.get("parameter_has_default") and isinstance(p.get("parameter_default"), bool):
                return p["parameter_default"], f"the app's `{p['parameter_name']}` default"
    return True, ("assumed: /inspect has no Grad-CAM switch, i.e. the app runs `attnviz.inspect` "
                  "with its default `gradcam=True`")


def app_section(args, image: Path, device: torch.device, imagenet: dict[str, attnviz.LoadedModel],
                timer: Timer, results: Results, report: dict) -> None:
    """Rows 5 and 6: Gradio round trips and the server's RSS growth."""
    skips = report.setdefault("skips", [])
    app_path = Path(args.app)
    if not app_path.exists():
        skips.append(f"app rows skipped: {args.app} does not exist yet")
        return
    from gradio_client import Client, handle_file

    tmp = Path(tempfile.mkdtemp(prefix="attnviz-bench-app-"))
    servers: list[Server] = []
    try:
        echo = Server("echo_app", ECHO_APP, tmp, args.threads)
        servers.append(echo)
        # The app cannot download ImageNet weights here; when it takes local checkpoints
        # (``--weights VARIANT=FILE``), hand it this process's random-init weights, so the app
        # and the library run the very same weights.
        extra: list[str] = []
        if "--weights" in app_path.read_text(errors="replace"):
            from safetensors.torch import save_file

            wdir = tmp / "weights"
            wdir.mkdir()
            for name in RESNET50S:
                if name in imagenet:
                    f = wdir / f"{name}.safetensors"
                    save_file({k: v.detach().cpu().contiguous() for k, v in imagenet[name].model.state_dict().items()}, str(f))
                    extra += ["--weights", f"{name}={f}"]
            report["app_weights"] = (f"the bench's random-init weights, saved to safetensors and passed as "
                                     f"`--weights VARIANT=FILE` for {', '.join(n for n in RESNET50S if n in imagenet)}")
        app = Server("app", app_path, tmp, args.threads, extra)
        servers.append(app)
        echo.wait_ready(120)
        app.wait_ready(600)
        dl = tmp / "downloads"
        shared_ssl = ssl.create_default_context()

        def mk(server: Server, mode: str) -> Client:
            if mode == APP_MODES[1]:
                return Client(server.url, verbose=False, download_files=False, analytics_enabled=False,
                              ssl_verify=shared_ssl)
            verify = shared_ssl if mode == APP_MODES[2] else True
            return Client(server.url, verbose=False, download_files=str(dl), analytics_enabled=False,
                          ssl_verify=verify)

        # Clients per app: gradio_client's default (every output file downloaded, one request and
        # one new httpx client per file), file URLs only (the server's work and one response), and
        # downloads with a shared SSL context (what the per-file downloads cost without rebuilding it);
        # the last two share one SSL context (see APP_MODES).
        clients = {mode: (mk(echo, mode), mk(app, mode)) for mode in APP_MODES}
        c_app = clients[APP_MODES[1]][1]
        api = c_app.view_api(print_info=False, return_format="dict") or {}
        endpoints = api.get("named_endpoints", {})
        report["app_endpoints"] = {k: [p["parameter_name"] for p in v.get("parameters", [])]
                                   for k, v in endpoints.items()}
        if "/inspect" not in endpoints:
            skips.append(f"app rows skipped: no /inspect endpoint (endpoints: {sorted(endpoints)})")
            return
        ins_params = endpoints["/inspect"]["parameters"]
        variant_param = next((p for p in ins_params if _is_variant_param(p) and not _is_multi_param(p)), None)
        choices = _choices(variant_param.get("type")) if variant_param else []
        default = variant_param.get("parameter_default") if variant_param else None
        builtin = default if isinstance(default, str) and default else attnviz.default_variant_name()
        app_gradcam, gradcam_src = _gradcam_default(ins_params)
        report["app_gradcam"] = (app_gradcam, gradcam_src)
        report["app_builtin"] = builtin

        def call(client, endpoint: str, kwargs: dict, timeout: float = 300):
            return client.submit(api_name=endpoint, **kwargs).result(timeout=timeout)

        def inspect_kwargs(v: str | None) -> dict:
            kw, unknown = fill_params(ins_params, image, variant=v)
            if unknown:
                raise RuntimeError(f"/inspect needs parameters this bench cannot fill: {unknown}")
            return kw

        runnable: dict[str, str | None] = {}  # variant -> None if it runs, else the error

        def probe(v: str) -> bool:
            if v not in runnable:
                try:
                    out = call(c_app, "/inspect", inspect_kwargs(v), timeout=300)
                    report.setdefault("app_files", {})[v] = _count_files(out)
                    runnable[v] = None
                except Exception as e:  # noqa: BLE001
                    runnable[v] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            return runnable[v] is None

        if not probe(builtin):
            skips.append(f"app rows skipped: /inspect on the default model {builtin!r} failed: {runnable[builtin]}")
            return
        loaded_builtin = attnviz.load_model(builtin, device=device)
        # One ImageNet architecture (random init in this process; the app has only what it can load).
        imagenet_name = next((v for v in ("cbam_resnet50", "se_resnet50", *RESNET50S)
                              if not choices or v in choices), None)
        imagenet_ok = imagenet_name is not None and probe(imagenet_name)
        report["app_probe"] = dict(runnable)
        if imagenet_name and not imagenet_ok:
            skips.append(f"app /inspect on ImageNet variant {imagenet_name!r} not measured: the app cannot "
                         f"run it here ({runnable[imagenet_name]}); the app is compared on the built-in "
                         f"model {builtin!r} instead")

        def inspect_task(v: str, mode: str) -> Task:
            client, kw = clients[mode][1], inspect_kwargs(v)
            return (f"app /inspect round trip [{mode}]", v, lambda: call(client, "/inspect", kw))

        tasks: list[Task] = [
            ("library inspect + figures (as app)", builtin,
             lambda: export.figures(attnviz.inspect(image, loaded_builtin, gradcam=app_gradcam))),
        ]
        for mode in APP_MODES:
            c_echo_m = clients[mode][0]
            tasks += [
                (f"echo app round trip [{mode}]", "-",
                 lambda c=c_echo_m: call(c, "/echo", {"image": handle_file(str(image))})),
                inspect_task(builtin, mode),
            ]
        if imagenet_ok:
            lm = imagenet[imagenet_name]
            tasks.append(("library inspect + figures (as app)", imagenet_name,
                          lambda: export.figures(attnviz.inspect(image, lm, gradcam=app_gradcam))))
            tasks += [inspect_task(imagenet_name, mode) for mode in APP_MODES]
        # Gradio's floor for a response with as many files as /inspect's: the app targets' floor.
        file_counts = sorted({report["app_files"][v] for v in (builtin, imagenet_name if imagenet_ok else None)
                              if v is not None and report.get("app_files", {}).get(v, 0) > 1})
        for n in file_counts:
            for mode in APP_MODES:
                tasks.append((f"echo app, n files round trip [{mode}]", f"{n} files",
                              lambda c=clients[mode][0], n=n: call(
                                  c, "/echo_files", {"image": handle_file(str(image)), "n": n})))

        # /compare of 4 variants next to the single /inspect of each.
        compare_set: list[str] = []
        if "/compare" not in endpoints:
            skips.append(f"/compare not measured: no such endpoint (endpoints: {sorted(endpoints)})")
        else:
            cmp_params = endpoints["/compare"]["parameters"]
            multi = next((p for p in cmp_params if _is_variant_param(p) and _is_multi_param(p)), None)
            cmp_choices = _choices(multi.get("type")) if multi else []
            pool = ([v for v in RESNET50S if v != "resnet50"] if imagenet_ok else []) + \
                   [v for v in (cmp_choices or choices) if attnviz.variants().get(v) is not None
                    and attnviz.variants()[v].builtin]
            for v in pool:
                if len(compare_set) == 4:
                    break
                if (not cmp_choices or v in cmp_choices) and probe(v):
                    compare_set.append(v)
            report["app_probe"] = dict(runnable)
            if len(compare_set) < 2:
                skips.append(f"/compare not measured: fewer than 2 variants the app can run ({runnable})")
                compare_set = []
            else:
                if len(compare_set) < 4:
                    skips.append(f"/compare measured on {len(compare_set)} variants, not 4: the app can run "
                                 f"only {compare_set} here")
                kw, unknown = fill_params(cmp_params, image, variants=compare_set)
                if unknown:
                    skips.append(f"/compare not measured: parameters this bench cannot fill: {unknown}")
                    compare_set = []
                else:
                    label = "+".join(compare_set)
                    for mode in APP_MODES:
                        tasks.append((f"app /compare round trip [{mode}]", label,
                                      lambda kw=kw, c=clients[mode][1]: call(c, "/compare", kw, timeout=600)))
                        for v in compare_set:
                            if v != builtin and not (imagenet_ok and v == imagenet_name):
                                tasks.append(inspect_task(v, mode))
        report["compare_set"] = compare_set

        run_round_robin(tasks, repeats=args.repeats, warmup=args.warmup, timer=timer,
                        results=results, label="app", pids=[echo.pid, app.pid])

        # Row 6: the server's RSS over --requests /inspect requests (built-in model).
        kw = inspect_kwargs(builtin)
        for _ in range(20):
            call(c_app, "/inspect", kw)
        gc.collect()
        before, how = rss_bytes(app.pid)
        t0 = time.perf_counter()
        for i in range(args.requests):
            call(c_app, "/inspect", kw)
            if (i + 1) % 100 == 0:
                print(f"  [app rss] {i + 1}/{args.requests} requests, server RSS "
                      f"{mb(rss_bytes(app.pid)[0]):.1f} MB", file=sys.stderr, flush=True)
            if (i + 1) % 50 == 0:
                shutil.rmtree(dl, ignore_errors=True)  # the client's downloads, not the server's
        after, _ = rss_bytes(app.pid)
        report["app_rss"] = {
            "requests": args.requests, "before_mb": mb(before), "after_mb": mb(after),
            "growth_mb": mb(after - before), "peak_mb": mb(peak_rss_bytes(app.pid) or 0), "how": how,
            "seconds": time.perf_counter() - t0,
        }
        e_rss, _ = rss_bytes(echo.pid)
        report["echo_rss_mb"] = mb(e_rss)
    except Exception as e:  # noqa: BLE001
        skips.append(f"app rows stopped early: {type(e).__name__}: {e}")
        for s in servers:
            tail = s.log_tail()
            if tail:
                print(f"--- {s.name} log tail ---\n{tail}", file=sys.stderr)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------
def fmt(v: float, nd: int = 1) -> str:
    return "n/a" if v != v else f"{v:.{nd}f}"


def evaluate_targets(results: Results, report: dict, variants: list[str]) -> list[dict]:
    t = []

    def add(name: str, variant: str, value: float, limit: float, unit: str, note: str = "",
            paired: float = float("nan")) -> None:
        ok = value == value and value <= limit + 1e-12
        t.append({"target": name, "variant": variant, "value": value, "limit": limit, "unit": unit,
                  "pass": ok, "note": note, "paired": paired})

    for v in variants:
        bare = results.med("bare forward", v)
        # Judged on the paired ratios: each capture run against the bare run beside it (ABBA), so
        # the machine's speed swings cancel; the ratio of the two medians moves by ±3 % with them.
        of_medians = results.med("capture", v) / bare
        add("capture ≤ 1.05 × bare forward (median of ABBA-paired ratios)", v,
            results.paired_ratio(("capture", v), ("bare forward", v)), LIMITS["capture"], "×",
            note=f"ratio of medians {of_medians:.3f}")
        add("inspect (no Grad-CAM) + figures ≤ 1.5 × bare forward", v,
            results.med("inspect gradcam=False + figures", v) / bare, LIMITS["full"], "×",
            paired=results.paired_ratio(("inspect gradcam=False + figures", v), ("bare forward", v)))
        # Same input for all three: the preprocessed tensor (from the file: see the ratio table).
        cam_row = "inspect gradcam=True (tensor input)"
        add("inspect with Grad-CAM ≤ torchcam GradCAM (same tensor)", v,
            results.med(cam_row, v) / results.med("torchcam GradCAM", v), LIMITS["vs_torchcam"], "×",
            paired=results.paired_ratio((cam_row, v), ("torchcam GradCAM", v)))
        add("inspect with Grad-CAM ≤ 1/3 × pytorch-grad-cam GradCAM (same tensor)", v,
            results.med(cam_row, v) / results.med("pytorch-grad-cam GradCAM", v), LIMITS["vs_pgc"],
            "×", paired=results.paired_ratio((cam_row, v), ("pytorch-grad-cam GradCAM", v)))
        add("all rendering (figures) ≤ 40 ms", v, results.med("figures (render only)", v), LIMITS["render_ms"], "ms")

    files = report.get("app_files") or {}
    for mode in TARGET_MODES:
        echo = results.med(f"echo app round trip [{mode}]", "-")
        for (row, v), s in results.series.items():
            if row != f"app /inspect round trip [{mode}]":
                continue
            lib = results.get("library inspect + figures (as app)", v)
            if lib is None:
                continue
            # Gradio's floor for this response: the echo returning as many files (gradio_client
            # downloads each file with a new client, whatever the app does); the one-image echo
            # where that row was not measured. The one-image reading stays in the note.
            same = results.get(f"echo app, n files round trip [{mode}]", f"{files.get(v, 0)} files")
            floor, floor_name = (same.median_ms, f"echo with {files[v]} files") if same else (echo, "echo")
            note = f"app {s.median_ms:.1f} ms − {floor_name} {floor:.1f} ms vs library {lib.median_ms:.1f} ms"
            if same:
                note += f"; against the one-image echo ({echo:.1f} ms): {(s.median_ms - echo) / lib.median_ms:.3f} ×"
            add(f"app /inspect − echo floor (as many files) ≤ 1.3 × library inspect + figures [{mode}]", v,
                (s.median_ms - floor) / lib.median_ms, LIMITS["app"], "×", note=note)
        cset = report.get("compare_set") or []
        if cset:
            label = "+".join(cset)
            singles = [results.med(f"app /inspect round trip [{mode}]", v) for v in cset]
            total = float(sum(singles))
            cmp_ms = results.med(f"app /compare round trip [{mode}]", label)
            add(f"app /compare ({len(cset)} variants) ≤ 1.2 × Σ app /inspect [{mode}]", label,
                cmp_ms / total, LIMITS["compare"], "×", note=f"compare {cmp_ms:.1f} ms vs Σ {total:.1f} ms")
    rss = report.get("app_rss")
    if rss:
        add(f"app server RSS growth over {rss['requests']} /inspect ≤ 20 MB", report.get("app_builtin", ""),
            rss["growth_mb"], LIMITS["rss_mb"], "MB")
    return t


def _row_key(results: Results, key: tuple[str, str]) -> tuple:
    row, variant = key
    rank = ROW_ORDER.get(row)
    if rank is None:
        rank = 100 + next((i for i, p in enumerate(ROW_PREFIXES) if row.startswith(p)), len(ROW_PREFIXES))
    mode = next((i for i, m in enumerate(APP_MODES) if f"[{m}]" in row), -1)
    vrank = RESNET50S.index(variant) if variant in RESNET50S else -1
    return (rank, mode, vrank, results.order.index(key))


def results_table_md(results: Results) -> list[str]:
    lines = ["| row | variant | median ms | p90 ms | n |", "|---|---|---:|---:|---:|"]
    for key in sorted(results.order, key=lambda k: _row_key(results, k)):
        s = results.series[key]
        lines.append(f"| {s.row} | {s.variant} | {fmt(s.median_ms)} | {fmt(s.p90_ms)} | {len(s.times)} |")
    return lines


ROW_ORDER = {r: i for i, r in enumerate([
    "bare forward", "capture", "inspect gradcam=False", "inspect gradcam=False + figures",
    "inspect gradcam=True", "inspect gradcam=True (tensor input)", "inspect gradcam=True + figures",
    "figures (render only)",
    "torchcam GradCAM", "pytorch-grad-cam GradCAM",
])}
ROW_PREFIXES = ("bare forward [", "capture [", "inspect gradcam=True [", "inspect_batch", "CLI inspect",
                "library inspect + figures (as app)", "echo app round trip", "echo app, n files",
                "app /inspect round trip", "app /compare round trip")


def ratio_table_md(results: Results, variants: list[str]) -> list[str]:
    cols = [
        ("capture / bare", "capture", "bare forward"),
        ("inspect (no CAM) / bare", "inspect gradcam=False", "bare forward"),
        ("inspect (no CAM) + figures / bare", "inspect gradcam=False + figures", "bare forward"),
        ("inspect (CAM) / bare", "inspect gradcam=True", "bare forward"),
        ("inspect (CAM) + figures / bare", "inspect gradcam=True + figures", "bare forward"),
        ("inspect (CAM, from file) / torchcam", "inspect gradcam=True", "torchcam GradCAM"),
        ("inspect (CAM, same tensor) / torchcam", "inspect gradcam=True (tensor input)", "torchcam GradCAM"),
        ("inspect (CAM, from file) / pytorch-grad-cam", "inspect gradcam=True", "pytorch-grad-cam GradCAM"),
        ("inspect (CAM, same tensor) / pytorch-grad-cam", "inspect gradcam=True (tensor input)",
         "pytorch-grad-cam GradCAM"),
        ("torchcam / bare", "torchcam GradCAM", "bare forward"),
        ("pytorch-grad-cam / bare", "pytorch-grad-cam GradCAM", "bare forward"),
    ]
    amp_rows = sorted({row for row, _ in results.series if row.startswith("inspect gradcam=True (tensor input, amp=")})
    cols += [(f"inspect (CAM, same tensor): {row.rsplit(', ', 1)[1].rstrip(')')} / float32", row,
              "inspect gradcam=True (tensor input)") for row in amp_rows]
    lines = ["| ratio (of medians) | " + " | ".join(variants) + " |",
             "|---|" + "---:|" * len(variants)]
    for label, num, den in cols:
        vals = [results.med(num, v) / results.med(den, v) for v in variants]
        lines.append(f"| {label} | " + " | ".join(fmt(x, 3) for x in vals) + " |")
    return lines


def per_file_floor_md(results: Results, report: dict) -> list[str]:
    """/inspect against an echo returning as many files (Gradio's and gradio_client's cost for a
    response of that shape: the app targets' floor), next to the one-image echo, in every mode."""
    counts = report.get("app_files") or {}
    lines = ["| mode | variant | files | app /inspect ms | echo, 1 image ms | echo, same number of files ms | "
             "(app − echo with as many files) / library |", "|---|---|---:|---:|---:|---:|---:|"]
    for mode in APP_MODES:
        for (row, v), s in results.series.items():
            n = counts.get(v, 0)
            floor = results.get(f"echo app, n files round trip [{mode}]", f"{n} files")
            lib = results.get("library inspect + figures (as app)", v)
            if row != f"app /inspect round trip [{mode}]" or floor is None or lib is None:
                continue
            one = results.med(f"echo app round trip [{mode}]", "-")
            lines.append(f"| {mode} | {v} | {n} | {fmt(s.median_ms)} | {fmt(one)} | {fmt(floor.median_ms)} | "
                         f"{fmt((s.median_ms - floor.median_ms) / lib.median_ms, 3)} × |")
    return lines if len(lines) > 2 else []


def targets_md(targets: list[dict]) -> list[str]:
    lines = ["| target | variant | measured | limit | result | paired-ratio median | note |",
             "|---|---|---:|---:|:---:|---:|---|"]
    for t in targets:
        unit = t["unit"]
        val = f"{fmt(t['value'], 3 if unit == '×' else 1)} {unit}"
        lim = f"{t['limit']:.3g} {unit}"
        paired = fmt(t["paired"], 3) if t["paired"] == t["paired"] else ""
        lines.append(f"| {t['target']} | {t['variant']} | {val} | {lim} | "
                     f"{'PASS' if t['pass'] else '**FAIL**'} | {paired} | {t['note']} |")
    return lines


def print_console(results: Results, targets: list[dict], variants: list[str], report: dict) -> None:
    print("\n== timings (ms) ==")
    w = max([len(s.row) for s in results.series.values()] + [10])
    wv = max([len(s.variant) for s in results.series.values()] + [8])
    print(f"{'row':<{w}}  {'variant':<{wv}}  {'median':>9}  {'p90':>9}  {'n':>3}")
    for key in sorted(results.order, key=lambda k: _row_key(results, k)):
        s = results.series[key]
        print(f"{s.row:<{w}}  {s.variant:<{wv}}  {fmt(s.median_ms):>9}  {fmt(s.p90_ms):>9}  {len(s.times):>3}")
    print("\n== ratios (of medians) ==")
    for line in ratio_table_md(results, variants):
        if not line.startswith("|---"):
            print(line.replace("|", " ").strip())
    print("\n== targets ==")
    for t in targets:
        unit = t["unit"]
        paired = f" (paired {t['paired']:.3f})" if t["paired"] == t["paired"] else ""
        print(f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']} [{t['variant']}]: "
              f"{fmt(t['value'], 3 if unit == '×' else 1)} {unit} (limit {t['limit']:.3g}){paired}"
              f"{'  ' + t['note'] if t['note'] else ''}")
    floor = per_file_floor_md(results, report)
    if floor:
        print("\n== app against the echo: one image, and as many files ==")
        for line in floor:
            if not line.startswith("|---"):
                print(line.replace("|", " ").strip())
    for s in report.get("skips", []):
        print(f"SKIP  {s}")


def write_markdown(path: Path, *, report: dict, results: Results, targets: list[dict],
                   variants: list[str]) -> None:
    kept = ""
    if path.exists():
        old = path.read_text()
        if MARKER in old:
            kept = old.split(MARKER, 1)[1]
    L: list[str] = []
    a = report["args"]
    L += ["# Benchmarks", "",
          f"Generated by `bench/bench.py` on {report['date']}; re-run it to refresh everything above "
          "the marker line at the end.", ""]
    n_pass = sum(t["pass"] for t in targets)
    L += [f"**Targets: {n_pass} of {len(targets)} pass.**", ""]
    L += ["## Command", "", "```sh", report["command"], "```", ""]
    L += ["## Machine", ""]
    L += [f"- {k}: {v}" for k, v in report["machine"].items()]
    ld = report["load"]
    L += [f"- load average (1 min): {ld['start']:.2f} at start, {ld['end']:.2f} at end; sampled every 5 s "
          f"during the run: median {ld['median']:.2f}, max {ld['max']:.2f} ({ld['n']} samples). "
          "The bench itself accounts for about 1 of it (up to 2 with the app server busy)."]
    for label, (others, own) in results.contention.items():
        L += [f"- CPU use during the timed `{label}` runs: other processes {others:.0f}% of the machine, "
              f"the bench and its servers {own:.0f}%."]
    L += [""]
    L += ["## Setup", "",
          f"- Device {a.device}, batch 1, 224×224 input, `torch.set_num_threads({a.threads})`; "
          f"medians and p90 over {a.repeats} timed runs after {a.warmup} warm-up runs.",
          f"- Image: {report['image']}; preprocessed by each variant's own config to 224 px. Inspection rows "
          "start from the image file (decoding and preprocessing included) except *(tensor input)*; bare "
          "forward, capture, torchcam and pytorch-grad-cam get the already preprocessed tensor.",
          f"- Weights: ImageNet weights cannot be downloaded on this machine, so every ImageNet variant is "
          f"its architecture at random init (`torch.manual_seed({SEED})` before `get_variant(name).build()`, "
          "then `.eval()` and `attnviz.wrap_model`). One model object per variant serves every tool, so all "
          "tools see the same weights. Speed does not depend on the weight values; predictions are meaningless.",
          "- Interleaving: within a section every (row, variant) runs once per repeat, in one loop, the order "
          "rotated each repeat, so load from other processes hits all rows alike. Targets use the ratio of "
          "medians (the median of per-repeat paired ratios next to it), except capture / bare forward: bare "
          f"forward and capture run {a.limit_pairs} times each per repeat, back to back in ABBA order "
          f"(`--limit-pairs`; {a.limit_pairs * a.repeats} samples), and that target, the one with the thinnest "
          "margin, is judged on the median of those adjacent pairs' ratios (the ratio of medians in its note).",
          "- Rows: *bare forward* = `model(x)` under `torch.inference_mode()`, no hooks; *capture* = "
          "`with attnviz.capture(model), torch.inference_mode(): model(x)`; *inspect* = "
          "`attnviz.inspect(image_path, loaded, gradcam=…)`; *(tensor input)* = `attnviz.inspect(prepared, "
          "loaded)` on the image prepared once, the same tensor the peers get (their comparison targets use "
          "it); *+ figures* adds `export.figures(result)` "
          "(every rendered output); *figures (render only)* = `export.figures` on a fixed Grad-CAM result "
          "with an empty view cache; *torchcam GradCAM* = `torchcam.methods.GradCAM(model, target_layer=\"layer4\")`"
          ", forward, CAM for the top-1 class, `remove_hooks()` (7×7 map); *pytorch-grad-cam GradCAM* = "
          "`pytorch_grad_cam.GradCAM(model=model, target_layers=[model.layer4])` called on the tensor "
          "(forward, backward, 224×224 map).", ""]
    L += ["## Timings", ""] + results_table_md(results) + [""]
    L += ["## Ratios", ""] + ratio_table_md(results, variants) + [""]
    L += ["## Targets", ""] + targets_md(targets) + [""]
    floor = per_file_floor_md(results, report)
    if floor:
        L += ["## App against the echo: one image, and as many files", "",
              "The app targets subtract the echo returning as many files as that `/inspect` response "
              "(`/echo_files` in `bench/echo_app.py`: the input image as that many JPEG files, served from "
              "a static folder like the app's). gradio_client fetches each output file with a new httpx "
              "client, so with downloads a response's cost grows with its number of files whatever the app "
              "does; the issue's reference echo (≈ 123 ms) is the one-image echo with downloads. Both floors, "
              "every mode; the last column is the app's own work against the "
              "library's.", ""] + floor + [""]
    mem = report.get("memory")
    if mem:
        L += ["## Memory", "",
              f"- RSS of the bench process ({mem['how']}): {mem['base_mb']:.0f} MB after imports, "
              f"{mem['loaded_mb']:.0f} MB with all {mem['n']} ImageNet architectures built at once "
              f"({', '.join(mem['names'])}): +{mem['loaded_mb'] - mem['base_mb']:.0f} MB for "
              f"{mem['param_mb']:.0f} MB of parameters and buffers."]
        rss = report.get("app_rss")
        if rss:
            L += [f"- App server ({rss['how']}, built-in model `{report.get('app_builtin')}`): "
                  f"{rss['before_mb']:.1f} MB after 20 warm-up `/inspect` requests (and the timed rows), "
                  f"{rss['after_mb']:.1f} MB after {rss['requests']} more: growth {rss['growth_mb']:+.1f} MB; "
                  f"peak (VmHWM) {rss['peak_mb']:.1f} MB; {rss['seconds']:.0f} s for the requests. "
                  f"Echo app: {report.get('echo_rss_mb', float('nan')):.1f} MB."]
        L += [""]
    if "app_endpoints" in report or report.get("skips"):
        L += ["## App", ""]
        if "app_endpoints" in report:
            L += ["- Endpoints found: " + "; ".join(f"`{k}`({', '.join(v)})" for k, v in report["app_endpoints"].items())]
            if "app_weights" in report:
                L += [f"- Weights in the app: {report['app_weights']}; built-in models from `checkpoints/` "
                      f"(default `{report.get('app_builtin')}`)."]
            if "app_gradcam" in report:
                g, src = report["app_gradcam"]
                L += [f"- Grad-CAM in the app's `/inspect`: {g} ({src}); the library comparison row uses the same."]
            if report.get("app_files"):
                L += ["- Output files per `/inspect` response: " + "; ".join(
                    f"`{k}`: {v}" for k, v in report["app_files"].items())]
            if report.get("app_probe"):
                L += ["- Variants tried on the app: " + "; ".join(
                    f"`{k}`: {'ok' if v is None else v}" for k, v in report["app_probe"].items())]
            L += ["- Round trips go through `gradio_client` (`submit(...).result()`) against servers started "
                  "as subprocesses on free ports, in three ways: *outputs downloaded* (the client's default: it "
                  "fetches every output file, one request and one new httpx client each), *file URLs, one SSL "
                  "context* (`download_files=False`: the server's work and one response) and, for information, "
                  "*outputs downloaded, one SSL context* (the same downloads as the default). *One SSL context*: "
                  "`Client(..., ssl_verify=ssl.create_default_context())`, so the client does not build one "
                  "(~20 ms of CPU, encode/httpx#2298) per request and per file; with the default, that CPU is "
                  "taken from the server's forward on this 2-core machine (its first forward in a request "
                  "113 ms, a second one right after 97 ms; 103 / 99 ms with one context), which a remote "
                  "client would not do. "
                  "The echo app (`bench/echo_app.py`, image in → same image out) is Gradio's own floor, timed "
                  "the same ways. Targets are judged in the first two. The library comparison row is "
                  "`export.figures(attnviz.inspect(image_path, model))`, with the app's Grad-CAM setting."]
        for s in report.get("skips", []):
            L += [f"- Not measured / note: {s}"]
        L += [""]
    if report.get("accel_checks"):
        L += ["## Accelerator checks", "", "| variant | mode | top-1 same | fp32 top-1 margin | max gate err | max logit err |",
              "|---|---|:---:|---:|---:|---:|"]
        for c in report["accel_checks"]:
            L.append(f"| {c['variant']} | {c['mode']} | {'yes' if c['top1_same'] else '**no**'} | "
                     f"{c['fp32_margin']:.3g} | {c['max_gate_err']:.2e}"
                     f"{'' if c['max_gate_err'] <= 1e-2 else ' **> 1e-2**'} | {c['logit_err']:.2e} |")
        L += [""]
    if report.get("amp_checks"):
        L += [f"## Autocast `amp={a.amp}` against float32 (library option; information)", "",
              f"`attnviz.inspect(image, model, amp=\"{a.amp}\")` and the float32 call on the same prepared image, "
              f"{report['amp_checks'][0]['n']} synthetic images per trained built-in model (the ImageNet weights "
              "here are random: their top-1 margins mean nothing). The issue's bar for autocast: top-1 kept, "
              "gate error ≤ 1e-2. Speed: the *amp* row in the timings.", "",
              "| variant | top-1 same | max gate err | ≤ 1e-2 | max Grad-CAM err | max probability err |",
              "|---|---:|---:|:---:|---:|---:|"]
        for r in report["amp_checks"]:
            L.append(f"| {r['variant']} | {r['top1_same']}/{r['n']} | {r['gate_err']:.2e} | "
                     f"{'yes' if r['gate_err'] <= 1e-2 else '**no**'} | {r['cam_err']:.2e} | {r['prob_err']:.2e} |")
        L += [""]
    if report.get("cli"):
        L += [f"## CLI throughput (`python -m attnviz inspect`, {CLI_IMAGES} images per run, Grad-CAM on)", "",
              f"Batch size: the CLI's default ({'16' if a.device == 'cuda' else '1'} on {a.device}); median "
              f"over {a.repeats} runs after {a.warmup} warm-up runs (the first loads the model). With figures, "
              "every image gets its JSON, NPZ and all figures as lossless PNG; without, JSON and NPZ only.", "",
              "| variant | figures | median s / run | images/s |", "|---|:---:|---:|---:|"]
        for r in report["cli"]:
            L.append(f"| {r['variant']} | {'yes' if r['figures'] else 'no'} | {r['median_ms'] / 1e3:.2f} | "
                     f"{r['images_per_s']:.1f} |")
        L += [""]
    if report.get("throughput"):
        L += ["## Batch throughput (`attnviz.inspect_batch`, Grad-CAM on)", "",
              "| variant | batch | median ms / batch | images/s |", "|---|---:|---:|---:|"]
        for r in report["throughput"]:
            L.append(f"| {r['variant']} | {r['batch']} | {r['median_ms']:.1f} | {r['images_per_s']:.1f} |")
        L += [""]
    L += [MARKER]
    text = "\n".join(L) + (kept if kept else "\n")
    path.write_text(text)


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=10, help="timed runs per row (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per row first (default 3)")
    p.add_argument("--limit-pairs", type=int, default=4,
                   help="bare-forward / capture pairs per repeat, ABBA order (default 4: 40 samples each)")
    p.add_argument("--skip-cli", action="store_true", help="skip the CLI throughput rows")
    p.add_argument("--skip-app", action="store_true", help="skip the Gradio rows (5 and 6)")
    p.add_argument("--requests", type=int, default=500, help="/inspect requests for the server RSS growth")
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help="Markdown report (default BENCHMARKS.md)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--amp", choices=tuple(AMP_DTYPES), default=None,
                   help="also time attnviz.inspect(..., amp=AMP) and check it against float32 on the "
                        "built-in models; on CUDA, also channels-last + autocast rows")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--variants", default=",".join(RESNET50S),
                   help="comma-separated subset of the ResNet-50 variants (default: all five)")
    # Runs the accelerator rows on the CPU, only to exercise that code path without a GPU.
    p.add_argument("--accel-rows", action="store_true", help=argparse.SUPPRESS)
    # Another app script (e.g. a stand-in while app.py is being written); default app.py.
    p.add_argument("--app", default=str(APP), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.limit_pairs < 1:
        p.error("--repeats and --limit-pairs must be ≥ 1 and --warmup ≥ 0")
    if args.amp == "fp16" and args.device != "cuda":
        p.error("--amp fp16 needs --device cuda (float16 convolutions on the CPU are tens of times slower)")
    unknown = set(args.variants.split(",")) - set(RESNET50S)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(RESNET50S)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    variants = [v for v in RESNET50S if v in args.variants.split(",")]
    timer = Timer(device)
    results = Results()
    report: dict = {
        "args": args,
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": machine_info(device),
    }
    load_start = os.getloadavg()[0]
    sampler = LoadSampler()
    sampler.start()
    tmp = Path(tempfile.mkdtemp(prefix="attnviz-bench-"))
    try:
        image, report["image"] = bench_image(tmp)
        print(f"image: {report['image']}", file=sys.stderr)

        # Row 6a: RSS with every ImageNet architecture built at once (before anything else runs).
        gc.collect()
        base, how = rss_bytes()
        models = build_imagenet_models(device)
        gc.collect()
        loaded_rss, _ = rss_bytes()
        param_bytes = sum(t.numel() * t.element_size() for lm in models.values()
                          for t in [*lm.model.parameters(), *lm.model.buffers()])
        report["memory"] = {"base_mb": mb(base), "loaded_mb": mb(loaded_rss), "how": how,
                            "n": len(models), "names": list(models), "param_mb": mb(param_bytes)}
        print(f"RSS: {mb(base):.0f} MB after imports, {mb(loaded_rss):.0f} MB with {len(models)} "
              f"ImageNet architectures", file=sys.stderr)

        # Rows 1-4, one interleaved loop over every variant and tool.
        tasks: list[Task] = []
        checks: list[dict] = []
        for name in variants:
            loaded = models[name]
            fixed = attnviz.inspect(image, loaded, gradcam=True)
            tasks += library_tasks(name, loaded, image, device, fixed, args.limit_pairs, args.amp)
            if device.type == "cuda" or args.accel_rows:
                tasks += accel_tasks(name, loaded, image, device, args.amp, checks)
        report["accel_checks"] = checks
        run_round_robin(tasks, repeats=args.repeats, warmup=args.warmup, timer=timer,
                        results=results, label="library")
        if device.type == "cuda" or args.accel_rows:
            report["throughput"] = batch_throughput(
                {n: models[n] for n in variants}, image, timer, args.repeats, args.warmup, results) \
                if device.type == "cuda" else []

        if args.amp:
            report["amp_checks"] = amp_checks(args.amp, device)

        if args.skip_cli:
            report.setdefault("skips", []).append("CLI throughput skipped: --skip-cli")
        else:
            report["cli"] = cli_throughput(models, image, device, tmp, args.repeats, args.warmup, results)

        # Rows 5-6.
        if args.skip_app:
            report.setdefault("skips", []).append("app rows skipped: --skip-app")
        else:
            app_section(args, image, device, models, timer, results, report)
    finally:
        sampler.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    s = sampler.samples or [load_start]
    report["load"] = {"start": load_start, "end": os.getloadavg()[0], "median": float(np.median(s)),
                      "max": float(max(s)), "n": len(s)}

    targets = evaluate_targets(results, report, variants)
    print_console(results, targets, variants, report)
    ld = report["load"]
    print(f"\nload average (1 min): start {ld['start']:.2f}, during median {ld['median']:.2f} / "
          f"max {ld['max']:.2f}, end {ld['end']:.2f}")
    for label, (others, own) in results.contention.items():
        print(f"CPU during the timed {label} runs: other processes {others:.0f}% of the machine, "
              f"bench + servers {own:.0f}%")
    out = Path(args.out)
    write_markdown(out, report=report, results=results, targets=targets, variants=variants)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
