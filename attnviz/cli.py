"""Command line: ``python -m attnviz {models,inspect,download,train,evaluate,analyze}``."""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _models(args: argparse.Namespace) -> int:
    from .models import variants
    from .models.weights import is_available

    rows = []
    for v in variants().values():
        rows.append({
            "name": v.name,
            "block": v.block,
            "params": v.params,
            "input_size": v.input_size,
            "source": v.weights.description,
            "license": v.weights.license,
            "reported_top1": v.weights.reported_top1,
            "weights_available": is_available(v.weights),
            "builtin": v.builtin,
            "origin": v.origin,
            "num_classes": len(v.class_names),
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    header = f"{'name':<20} {'block':<6} {'params':>11} {'input':>5} {'top1':>6} {'local':>5}  source"
    print(header)
    for r in rows:
        top1 = "" if r["reported_top1"] is None else f"{r['reported_top1']:.1f}"
        print(f"{r['name']:<20} {r['block']:<6} {r['params']:>11,} {r['input_size']:>5} {top1:>6} "
              f"{'yes' if r['weights_available'] else 'no':>5}  {r['source']}")
    return EXIT_OK


MAX_STEM_BYTES = 200  # room for "-12", ".json" and the like within a 255-byte file name


def _short_stem(stem: str) -> str:
    """``stem`` cut to MAX_STEM_BYTES (as the file system counts them) plus a hash of the whole."""
    raw = stem.encode("utf-8", "surrogateescape")
    if len(raw) <= MAX_STEM_BYTES:
        return stem
    head = raw[: MAX_STEM_BYTES - 9].decode("utf-8", "ignore")  # never split a character
    return f"{head}-{hashlib.sha1(raw).hexdigest()[:8]}"


def unique_stems(paths: Sequence[str]) -> list[str]:
    """File stems made unique: a second ``cat.jpg`` becomes ``cat-2``; a name too long for the
    output files' names (255 bytes) is shortened, keeping a hash of the whole."""
    seen: dict[str, int] = {}
    taken: set[str] = set()
    out = []
    for p in paths:
        stem = _short_stem(Path(p).stem or "image")
        n = seen.get(stem, 0)
        candidate = stem if n == 0 else f"{stem}-{n + 1}"
        while candidate in taken:
            n += 1
            candidate = f"{stem}-{n + 1}"
        seen[stem] = n + 1
        taken.add(candidate)
        out.append(candidate)
    return out


def _error(msg: str) -> None:
    print(f"attnviz: error: {msg}", file=sys.stderr)


def warn_if_untrained(loaded: Any) -> None:
    """Say on stderr when a model runs at random init (``--random-init``): its output means nothing."""
    if loaded.warning:
        print(f"attnviz: warning: {loaded.warning}", file=sys.stderr)


def model_options(*, random_init: bool = True) -> argparse.ArgumentParser:
    """Options shared by the commands that list or load models: more model folders, random init."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--models-dir", action="append", type=Path, default=[], metavar="DIR",
                   help="add the models of DIR (files written by `attnviz train`) beside the built-ins; "
                        "repeatable; $ATTNVIZ_MODELS=DIR1:DIR2 does the same")
    if random_init:
        p.add_argument("--random-init", action="store_true",
                       help="run the model untrained (no weights; e.g. a timm:NAME offline); a warning says so")
    return p


def _add_models_dirs(args: argparse.Namespace) -> int | None:
    """Register ``--models-dir`` folders; the exit code of a usage error, else None."""
    from .models import add_models_dir

    for folder in getattr(args, "models_dir", None) or []:
        if not folder.is_dir():
            _error(f"--models-dir {folder}: not a folder; give a folder of attnviz checkpoints "
                   "(*.safetensors written by `python -m attnviz train`)")
            return EXIT_USAGE
        add_models_dir(folder)
    return None


def _inspect_setup(args: argparse.Namespace) -> tuple[Any, dict | None] | int:
    """The model and the parsed ``--intervene`` requests, or the exit code of a usage error."""
    from .inspection import check_amp
    from .models import WeightsError, load_model

    if args.out.exists() and not args.out.is_dir():
        _error(f"--out {args.out}: exists and is not a folder; give a folder (it is created if missing)")
        return EXIT_USAGE
    if args.random_init and args.weights:
        _error("--weights and --random-init exclude each other: give one")
        return EXIT_USAGE
    try:
        loaded = load_model(args.variant, weights=args.weights, device=args.device, random_init=args.random_init)
    except (KeyError, WeightsError, OSError) as e:
        _error(str(e.args[0]) if isinstance(e, KeyError) else str(e))
        return EXIT_FAILED
    warn_if_untrained(loaded)
    try:
        check_amp(args.amp, loaded.device)
    except ValueError as e:
        _error(f"--amp {args.amp}: {e}")
        return EXIT_USAGE
    interventions = None
    if args.intervene:
        from .effects import check_interventions
        from .intervene import parse_interventions

        try:
            interventions = parse_interventions(args.intervene)
            check_interventions(loaded, interventions)
        except (KeyError, ValueError) as e:
            _error(f"--intervene: {e.args[0] if isinstance(e, KeyError) else e}")
            return EXIT_USAGE
    return loaded, interventions


class _InspectRun:
    """Prepared images inspected ``--batch-size`` at a time and written as each batch is done;
    a failed image is counted and reported, never fatal to the others."""

    def __init__(self, args: argparse.Namespace, loaded: Any, interventions: dict | None, progress: Any) -> None:
        self.args, self.loaded, self.interventions, self.progress = args, loaded, interventions, progress
        self.batch_size = args.batch_size or (16 if loaded.device.type == "cuda" else 1)
        self.pending: list[tuple[str, object]] = []
        self.failed = 0

    def add(self, stem: str, prepared: object) -> None:
        self.pending.append((stem, prepared))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        from .inspection import inspect_batch

        if not self.pending:
            return
        args = self.args
        try:
            results = inspect_batch([p for _, p in self.pending], self.loaded, topk=args.topk,
                                    gradcam=not args.no_gradcam, target_class=args.target_class, amp=args.amp,
                                    interventions=self.interventions)
        except Exception as e:  # a model-side failure: report once per image, keep going
            for stem, _ in self.pending:
                _error(f"{stem}: inspection failed ({type(e).__name__}: {e})")
            self.failed += len(self.pending)
        else:
            self._write(results)
        self.progress.update(len(self.pending))
        self.pending.clear()

    def _write(self, results: list) -> None:
        from .export import write_inspection

        args = self.args
        # Written here, not in a thread beside the next forward: on CPU both compete for the
        # same cores (measured: 5.1 -> 4.0 img/s for cbam_resnet50 with figures, 2 cores).
        for (stem, _), result in zip(self.pending, results):
            try:
                write_inspection(result, args.out, stem, with_figures=not args.no_figures,
                                 colormap=args.colormap, alpha=args.alpha)
            except OSError as e:  # disk full, permissions: say which image, keep going
                _error(f"{stem}: cannot write its files to {args.out} ({e})")
                self.failed += 1


def _inspect(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .inputs import ImageLoadError
    from .preprocess import prepare

    setup = _inspect_setup(args)
    if isinstance(setup, int):
        return setup
    loaded, interventions = setup
    progress = tqdm(total=len(args.images), unit="img", disable=len(args.images) < 2 or args.quiet,
                    file=sys.stderr)
    run = _InspectRun(args, loaded, interventions, progress)
    for path, stem in zip(args.images, unique_stems(args.images)):
        try:
            prepared = prepare(path, loaded.preprocess)
        except ImageLoadError as e:
            tqdm.write(f"attnviz: error: {e}", file=sys.stderr)
            run.failed += 1
            progress.update(1)
            continue
        run.add(stem, prepared)
    run.flush()
    progress.close()
    done = len(args.images) - run.failed
    if not args.quiet:
        print(f"{done} of {len(args.images)} images inspected with {loaded.name} ({loaded.weights}) "
              f"-> {args.out}", file=sys.stderr)
    return EXIT_FAILED if run.failed else EXIT_OK


def _download(args: argparse.Namespace) -> int:
    from .models import WeightsError, get_variant
    from .models.weights import resolve_file

    status = EXIT_OK
    for name in args.variants:
        try:
            path = resolve_file(get_variant(name).weights, download=True, progress=True)
            print(f"{name}: {path}")
        except (KeyError, WeightsError) as e:
            _error(str(e.args[0]) if isinstance(e, KeyError) else str(e))
            status = EXIT_FAILED
    return status


def build_parser() -> argparse.ArgumentParser:
    from .inspection import AMP_DTYPES

    parser = argparse.ArgumentParser(prog="python -m attnviz", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    shared = model_options()
    p = sub.add_parser("models", help="list every variant, its block, size and weights source",
                       parents=[model_options(random_init=False)])
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_models)

    p = sub.add_parser("inspect", help="inspect images: predictions, gates, Grad-CAM, figures", parents=[shared])
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, WebP, GIF, BMP, TIFF)")
    p.add_argument("--variant", help="model variant (see 'models'), or timm:NAME for any timm model; default: "
                                     "the one --weights describes, else cached ImageNet weights, else the built-in model")
    p.add_argument("--weights", help="local checkpoint file to load instead of downloading; a file written by "
                                     "`attnviz train` needs no --variant (it carries its architecture and classes)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    p.add_argument("--batch-size", type=int, default=0, help="images per forward (default 16 on GPU, 1 on CPU)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--target-class", type=int, default=None, help="class Grad-CAM explains (default: top-1)")
    p.add_argument("--no-gradcam", action="store_true")
    p.add_argument("--amp", choices=tuple(AMP_DTYPES), default=None,
                   help="forward under bfloat16 (CPU with native bf16, CUDA) or float16 (CUDA) autocast: "
                        "faster, gate values up to ~6e-2 off float32's (default: float32)")
    p.add_argument("--intervene", action="append", metavar="BLOCK=SPEC", default=[],
                   help="replace a block's attention gate, e.g. layer4.0=identity, '*=mean', layer3.0=0.5, "
                        "layer4.0=top=5 (knock out its 5 highest-gate channels), bottom=K, channels=1,2; "
                        "repeatable. The JSON gains 'intervention' (before/after, delta, KL), the NPZ before/*")
    p.add_argument("--no-figures", action="store_true", help="write only JSON and NPZ")
    p.add_argument("--colormap", default="jet")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("download", help="fetch ImageNet weights into the cache now")
    p.add_argument("variants", nargs="+")
    p.set_defaults(func=_download)

    from . import evaluate, train

    p = sub.add_parser("train", help="train the built-in models, or attach blocks to a pretrained ResNet")
    train.add_arguments(p)
    p.set_defaults(func=train.run)

    p = sub.add_parser("evaluate", help="accuracy, pointing game and deletion/insertion on held-out images")
    evaluate.add_arguments(p)
    p.set_defaults(func=evaluate.run)

    from .analysis import command as analysis_command

    p = sub.add_parser("analyze", help="gate statistics of a dataset: class-wise excitation by depth, report",
                       parents=[shared])
    analysis_command.add_arguments(p)
    p.set_defaults(func=analysis_command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .models import WeightsError

    args = build_parser().parse_args(argv)
    status = _add_models_dirs(args)
    if status is not None:
        return status
    try:
        return int(args.func(args) or 0)
    except WeightsError as e:  # e.g. a bad $ATTNVIZ_MODELS folder or model description
        _error(str(e))
        return EXIT_FAILED
