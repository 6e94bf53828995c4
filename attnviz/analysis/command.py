"""``python -m attnviz analyze SOURCE --model NAME --out DIR``: gate statistics of a dataset.

Writes into ``--out``: ``analysis.npz`` (the mergeable statistics, also the checkpoint an
interrupted run resumes from with ``--resume``), ``summary.json``, ``report.md`` and its PNG
figures. Exit status: 0 done, 1 done but files were skipped (they are listed) or the run
failed, 2 a bad argument (source, output folder, ``--resume`` file of another run).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="folder of class subfolders, folder of images, .csv/.tsv of path,label, "
                                  "or synthetic:N (built-in held-out synthetic images)")
    p.add_argument("--model", help="model variant (see 'models'); default: cached ImageNet weights, "
                                   "else the built-in model")
    p.add_argument("--weights", help="local checkpoint file to load instead of the variant's own")
    p.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward (default 32)")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes (default: the cores left beside the forward, at most 4)")
    p.add_argument("--classes", help="comma-separated label names to keep (default: all)")
    p.add_argument("--max-images", type=int, default=None, help="analyse an evenly spread subset of N images")
    p.add_argument("--resume", action="store_true",
                   help="continue the run whose analysis.npz is in --out (same source and model)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: DataLoader workers + this process; ray: Ray Data actors (pip install 'attnviz[ray]')")
    p.add_argument("--ray-address", help="join this Ray cluster (e.g. ray://host:10001 or auto); "
                                         "default: start a local Ray")
    p.add_argument("--ray-actors", type=int, default=None,
                   help="model-holding Ray actors, each folding its share into its own partial analysis "
                        "(default: one per GPU, else one per 4 CPUs of the cluster)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    p.add_argument("--bins", type=int, default=20, help="histogram bins on [0, 1] per gate (default 20)")
    p.add_argument("--amp", choices=("bf16", "fp16"), help="forwards under autocast (fp16: CUDA only); "
                                                           "faster on GPUs, gates approximate")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _error(msg: str) -> None:
    print(f"attnviz: error: {msg}", file=sys.stderr)


def _progress_bar(quiet: bool):
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:  # shows images/s and the ETA
            bar = tqdm(total=total, unit="img", disable=quiet, file=sys.stderr, dynamic_ncols=True)
        bar.update(done - bar.n)

    def close() -> None:
        if bar is not None:
            bar.close()

    return update, close


def _load_resume(args: argparse.Namespace, path: Path):
    from .analysis import Analysis

    if not args.resume:
        return None
    if not path.exists():
        print(f"attnviz: nothing to resume in {args.out}; starting from the beginning", file=sys.stderr)
        return None
    return Analysis.load(path)


def _setup(args: argparse.Namespace) -> Any:
    """The options checked and the model loaded, or the exit code of what was wrong."""
    from ..models import WeightsError, load_model

    if args.out.exists() and not args.out.is_dir():
        _error(f"--out {args.out}: exists and is not a folder; give a folder (it is created if missing)")
        return EXIT_USAGE
    if (args.batch_size <= 0 or (args.workers is not None and args.workers < 0) or args.bins <= 0
            or (args.ray_actors is not None and args.ray_actors <= 0)):
        _error("--batch-size, --bins and --ray-actors must be positive, --workers 0 or more")
        return EXIT_USAGE
    try:
        loaded = load_model(args.model, weights=args.weights, device=args.device,
                            random_init=getattr(args, "random_init", False))
    except (KeyError, WeightsError, OSError, ValueError) as e:
        _error(str(e.args[0]) if isinstance(e, KeyError) else str(e))
        return EXIT_FAILED
    if loaded.warning:
        print(f"attnviz: warning: {loaded.warning}", file=sys.stderr)
    return loaded


def run(args: argparse.Namespace) -> int:
    from .api import analyze
    from .report import FILES, LISTED_SKIPPED, write_outputs
    from .sources import SourceError

    loaded = _setup(args)
    if isinstance(loaded, int):
        return loaded
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.out / FILES["analysis"]
    update, close = _progress_bar(args.quiet)
    try:
        resume = _load_resume(args, checkpoint)
        result = analyze(
            args.source, loaded, batch_size=args.batch_size, num_workers=args.workers,
            classes=[c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None,
            max_images=args.max_images, engine=args.engine, ray_address=args.ray_address,
            ray_actors=args.ray_actors, bins=args.bins,
            resume=resume, progress=update, checkpoint=checkpoint,
            amp=args.amp,
        )
    except SourceError as e:
        close()
        _error(str(e))
        return EXIT_USAGE
    except ValueError as e:  # --resume of another source / model, unreadable analysis file
        close()
        _error(f"--resume {checkpoint}: {e}" if args.resume else str(e))
        return EXIT_USAGE
    except ImportError as e:
        close()
        _error(f"--engine ray needs Ray ({e}); install it with: pip install 'attnviz[ray]'")
        return EXIT_FAILED
    close()
    # The report quotes the command that made it, when this process was started as one.
    command = ("python -m attnviz analyze " + " ".join(shlex.quote(a) for a in sys.argv[2:])
               if sys.argv[1:2] == ["analyze"] else None)
    paths = write_outputs(result, args.out, command)
    for name, err in result.skipped[:LISTED_SKIPPED]:
        print(f"attnviz: skipped {name}: {err}", file=sys.stderr)
    if len(result.skipped) > LISTED_SKIPPED:
        print(f"attnviz: skipped {len(result.skipped) - LISTED_SKIPPED} more files (all are listed in "
              f"{paths['summary']})", file=sys.stderr)
    if not args.quiet:
        acc = result.accuracy()
        print(f"{result.n_images} of {result.n_items} images analysed with {loaded.name}"
              + (f", top-1 {acc:.3f}" if acc is not None else "")
              + (f", {len(result.skipped)} skipped" if result.skipped else "")
              + f" -> {paths['report']}", file=sys.stderr)
    return EXIT_FAILED if result.skipped else EXIT_OK
