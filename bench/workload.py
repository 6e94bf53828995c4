"""What every benchmark of ``bench/bench.py`` runs on: its options, the image, the ImageNet
architectures at random init, and one :class:`Run` holding them with the results so far.

Each benchmark script (``library.py``, ``cli_throughput.py``, ``app_roundtrip.py``, ...) has a
``run_section(run)`` that ``bench/bench.py`` calls in one run; ``python bench/<script>.py`` with
the same options runs that benchmark alone (:func:`main_alone`) and prints its timings.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import attnviz  # noqa: E402
from attnviz.inspection import AMP_DTYPES  # noqa: E402
from timing import Results, Timer, machine_info  # noqa: E402

RESNET50S = ("resnet50", "se_resnet50", "eca_resnet50", "cbam_resnet50", "bam_resnet50")
SEED = 0
APP = ROOT / "app.py"


@dataclasses.dataclass
class Run:
    """One benchmark run: its options, the image and models every benchmark uses, the results
    table and the report the Markdown is written from."""

    args: argparse.Namespace
    device: torch.device
    variants: list[str]  # the ResNet-50 variants timed (``--variants``)
    timer: Timer
    results: Results
    report: dict
    tmp: Path
    image: Path = Path()
    models: dict[str, attnviz.LoadedModel] = dataclasses.field(default_factory=dict)

    @property
    def accel_rows(self) -> bool:
        return self.device.type == "cuda" or self.args.accel_rows

    def skip(self, note: str) -> None:
        self.report.setdefault("skips", []).append(note)


def parse_args(argv: list[str] | None = None, description: str = "") -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def new_run(args: argparse.Namespace) -> Run:
    """A run of ``args`` with nothing measured yet (its image and models: :func:`prepare`)."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report: dict = {
        "args": args,
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": machine_info(device),
    }
    return Run(args=args, device=device, variants=[v for v in RESNET50S if v in args.variants.split(",")],
               timer=Timer(device), results=Results(), report=report,
               tmp=Path(tempfile.mkdtemp(prefix="attnviz-bench-")))


def prepare(run: Run) -> None:
    """The image, then every ImageNet architecture, with the RSS they take (row 6a: measured
    before anything else runs)."""
    from rss import models_rss

    run.image, run.report["image"] = bench_image(run.tmp)
    print(f"image: {run.report['image']}", file=sys.stderr)
    run.models, run.report["memory"] = models_rss(lambda: build_imagenet_models(run.device))


def bench_image(tmp: Path) -> tuple[Path, str]:
    """A real photo: assets/*.jpg when the repo has one, else scikit-image's chelsea."""
    from PIL import Image

    assets = sorted(p for p in (ROOT / "assets").glob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if assets:
        preferred = [p for p in assets if any(k in p.stem.lower() for k in ("chelsea", "cat"))]
        path = (preferred or assets)[0]
        with Image.open(path) as im:
            size = im.size
        return path, f"`{path.relative_to(ROOT)}` ({size[0]}×{size[1]} JPEG)"
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


def main_alone(run_section: Callable[[Run], None], description: str, argv: list[str] | None = None) -> int:
    """Run one benchmark with ``bench/bench.py``'s options and print its timings (no Markdown)."""
    from report import print_timings

    run = new_run(parse_args(argv, description))
    try:
        prepare(run)
        run_section(run)
    finally:
        shutil.rmtree(run.tmp, ignore_errors=True)
    print_timings(run.results)
    for s in run.report.get("skips", []):
        print(f"SKIP  {s}")
    return 0
