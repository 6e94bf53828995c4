"""``python -m attnviz train``: its options, and how they become a :class:`~.loop.TrainingPlan`.

The two modes differ only in their data and defaults (:data:`SYNTHETIC_DEFAULTS`,
:data:`IMAGEFOLDER_DEFAULTS`); both then run :func:`~.loop.train_variants`.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .. import synthetic
from .arch import (
    SYNTHETIC_ARCH, TORCHVISION_ARCHS, VARIANTS, build_on_backbone, build_synthetic_model, checkpoint_name,
    frozen_bn_eval, pretrained_state_dict, synthetic_arch, torchvision_arch,
)
from .checkpoint import IMAGEFOLDER_LICENSE, SYNTHETIC_LICENSE
from .data import imagefolder_data, synthetic_data
from .loop import RunOptions, TrainingPlan, thread_tuner, train_variants

#: Mode defaults, filled in where the option is left unset.
SYNTHETIC_DEFAULTS = {
    "epochs": 6, "steps_per_epoch": 200, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.05, "no_target_every": 8,
}
IMAGEFOLDER_DEFAULTS = {"epochs": 10, "steps_per_epoch": None, "batch_size": 32, "lr": 1e-3, "weight_decay": 0.01}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m attnviz train``."""
    p = parser
    p.add_argument("--variants", nargs="+", default=["all"], metavar="V",
                   help="which models: resnet se eca cbam bam, or all (default)")
    p.add_argument("--out", type=Path, default=Path("checkpoints"), help="output folder (default: checkpoints/)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs (default: {SYNTHETIC_DEFAULTS['epochs']}; imagefolder: {IMAGEFOLDER_DEFAULTS['epochs']})")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help=f"optimizer steps per epoch (default: {SYNTHETIC_DEFAULTS['steps_per_epoch']}; "
                        "imagefolder: one pass over the training images)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"default: {SYNTHETIC_DEFAULTS['batch_size']}; imagefolder: {IMAGEFOLDER_DEFAULTS['batch_size']}")
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak AdamW learning rate of the one-cycle schedule (default: {SYNTHETIC_DEFAULTS['lr']}; "
                        f"imagefolder: {IMAGEFOLDER_DEFAULTS['lr']})")
    p.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay")
    p.add_argument("--seed", type=int, default=0, help="seed of init, data order and the training stream")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda when available")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--workers", type=int, default=None,
                   help="data loader worker processes (default: 0 on CPU, up to 8 on CUDA)")
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "off"),
                   help="bfloat16 autocast for training steps (auto: on CUDA with bf16 and on CPUs with native "
                        "bf16, AVX512-BF16/AMX; weights and evaluation stay float32)")
    p.add_argument("--resume", action="store_true",
                   help="continue from <out>/<name>.resume.pt; skip variants that already finished")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("synthetic data (mode A)")
    g.add_argument("--image-size", type=int, default=None,
                   help=f"input size (default: synthetic {synthetic.DEFAULT_SIZE}; imagefolder 224)")
    g.add_argument("--val-size", type=int, default=2000, help="held-out samples (synthetic, default 2000)")
    g.add_argument("--no-target-every", type=int, default=None, metavar="K",
                   help=f"every K-th training image has no target and a uniform label, so no class can be "
                        f"named by elimination (default: {SYNTHETIC_DEFAULTS['no_target_every']}; 0: none)")
    g.add_argument("--widths", type=int, nargs=4, default=None, metavar="W",
                   help=f"stage widths of the synthetic ResNet (default: {SYNTHETIC_ARCH['widths']})")
    g = p.add_argument_group("your own images (mode B)")
    g.add_argument("--imagefolder", type=Path, default=None, metavar="DIR",
                   help="fine-tune a pretrained torchvision ResNet on this ImageFolder (DIR/train + DIR/val, "
                        "or DIR split by --val-fraction)")
    g.add_argument("--arch", default="resnet50", choices=sorted(TORCHVISION_ARCHS), help="torchvision backbone")
    g.add_argument("--backbone-weights", type=Path, default=None, metavar="FILE",
                   help="torchvision ResNet state dict file (default: download torchvision's ImageNet weights); "
                        "'none': train the whole ResNet from random init")
    g.add_argument("--freeze-backbone", action="store_true", help="train only attention blocks and fc")
    g.add_argument("--val-fraction", type=float, default=0.2, help="held-out fraction when DIR has no train/val")
    g.add_argument("--name-prefix", default=None, help="checkpoint name prefix (default: the folder's name)")


def run(args: argparse.Namespace) -> int:
    """Run ``python -m attnviz train`` with parsed ``args``; returns the exit status."""
    try:
        variants = _parse_variants(args.variants)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    device = _pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    max_threads = torch.get_num_threads()
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        make_plan = _imagefolder_plan if args.imagefolder is not None else _synthetic_plan
        plan, command = make_plan(args, variants, device, max_threads)
        opts = RunOptions(
            out=args.out, seed=args.seed, resume=args.resume, progress=not args.no_progress, device=device,
            max_threads=max_threads, fixed_threads=bool(args.threads), amp_dtype=_amp_dtype(args.amp, device),
            command=command,
        )
        train_variants(plan, variants, opts)
        return 0
    finally:
        torch.set_num_threads(max_threads)


def main(argv: Sequence[str] | None = None) -> int:
    from .. import train

    parser = argparse.ArgumentParser(prog="python -m attnviz.train", description=train.__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def _parse_variants(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        for v in (VARIANTS if n == "all" else [n]):
            v = {"none": "resnet", "plain": "resnet"}.get(v, v)
            if v not in VARIANTS:
                raise ValueError(f"unknown variant {n!r}; expected some of {', '.join(VARIANTS)} or all")
            if v not in out:
                out.append(v)
    return out


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but CUDA is not available")
    return torch.device(name)


def _native_cpu_bf16() -> bool:
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        try:
            if getattr(torch.cpu, probe)():
                return True
        except (AttributeError, RuntimeError):
            pass
    return False


def _amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for training steps, or None for plain float32."""
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if _native_cpu_bf16() else None


def _opt(args: argparse.Namespace, key: str, defaults: dict[str, Any]) -> Any:
    value = getattr(args, key, None)
    return defaults[key] if value is None else value


def _command(args: argparse.Namespace, variants: Sequence[str], hp: dict[str, Any]) -> str:
    """The canonical command line that reproduces this run."""
    parts = ["python", "-m", "attnviz", "train", "--variants", *args.variants, "--out", str(args.out)]
    if args.imagefolder is not None:
        parts += ["--imagefolder", str(args.imagefolder), "--arch", args.arch]
        if args.backbone_weights is not None:
            parts += ["--backbone-weights", str(args.backbone_weights)]
        if args.freeze_backbone:
            parts.append("--freeze-backbone")
    for key in ("epochs", "steps_per_epoch", "batch_size", "lr", "weight_decay", "image_size", "no_target_every"):
        if hp.get(key) is not None:
            parts += [f"--{key.replace('_', '-')}", str(hp[key])]
    if args.imagefolder is None and args.widths is not None:
        parts += ["--widths", *map(str, args.widths)]
    parts += ["--seed", str(args.seed), "--device", args.device]
    if args.amp != "auto":
        parts += ["--amp", args.amp]
    if args.threads:
        parts += ["--threads", str(args.threads)]
    return shlex.join(parts)


def _default_workers(args: argparse.Namespace, device: torch.device) -> int:
    if args.workers is not None:
        return args.workers
    if device.type == "cuda":
        return min(8, max(1, (os.cpu_count() or 2) - 1))
    return 0  # on CPU the model needs every core; generating in-process avoids oversubscription


def _synthetic_plan(args: argparse.Namespace, variants: list[str], device: torch.device,
                    max_threads: int) -> tuple[TrainingPlan, str]:
    """Mode A: the built-in models from scratch on the synthetic stream; also the run's command line."""
    hp = {k: _opt(args, k, SYNTHETIC_DEFAULTS) for k in SYNTHETIC_DEFAULTS}
    hp["image_size"] = size = args.image_size or synthetic.DEFAULT_SIZE
    workers = _default_workers(args, device)
    # channels_last is ~2x faster on CPU here, but torch 2.x's CPU backward of a strided 1x1 conv
    # with <= 8 input channels in channels_last corrupts the heap (segfault), so tiny widths skip it.
    channels_last = device.type == "cuda" or min(args.widths or SYNTHETIC_ARCH["widths"]) >= 16
    data = synthetic_data(
        size=size, epochs=hp["epochs"], steps=hp["steps_per_epoch"], batch_size=hp["batch_size"],
        train_seed=args.seed, val_seed=args.seed + 1000, val_size=args.val_size,
        no_target_every=hp["no_target_every"], workers=workers, device=device, channels_last=channels_last,
        shared=len(variants) > 1,
    )
    adaptive = " (adaptive)" if thread_tuner(device, max_threads, bool(args.threads)) else ""
    print(f"{data.summary}; device {device.type}, {max_threads} threads{adaptive}, {workers} data workers, "
          f"{'bf16 autocast' if _amp_dtype(args.amp, device) else 'float32'}", flush=True)
    plan = TrainingPlan(
        data=data, epochs=hp["epochs"], batch_size=hp["batch_size"], lr=hp["lr"], weight_decay=hp["weight_decay"],
        label_smoothing=0.05, checkpoint_name=checkpoint_name,
        arch=lambda variant: synthetic_arch(variant, args.widths),
        build=lambda name, arch: build_synthetic_model(arch, args.seed, device, channels_last),
        resume_config={**hp, "seed": args.seed, "size": size, "val_size": args.val_size},
        license=SYNTHETIC_LICENSE,
    )
    return plan, _command(args, variants, hp)


def _imagefolder_plan(args: argparse.Namespace, variants: list[str], device: torch.device,
                      max_threads: int) -> tuple[TrainingPlan, str]:
    """Mode B: attention blocks on a pretrained torchvision ResNet, fine-tuned on an ImageFolder."""
    hp = {k: _opt(args, k, IMAGEFOLDER_DEFAULTS) for k in IMAGEFOLDER_DEFAULTS}
    input_size = args.image_size or 224
    hp["image_size"] = args.image_size
    root = args.imagefolder
    from_scratch = args.backbone_weights is not None and str(args.backbone_weights).lower() == "none"
    if from_scratch and args.freeze_backbone:
        raise SystemExit("error: --freeze-backbone needs pretrained --backbone-weights (with 'none' the backbone "
                         "is random and must be trained)")
    # Before the images are read: a missing backbone is the first thing to say.
    backbone = None if from_scratch else pretrained_state_dict(args.arch, args.backbone_weights)
    data = imagefolder_data(
        root, input_size=input_size, resize_size=int(round(input_size * 256 / 224)),
        val_fraction=args.val_fraction, seed=args.seed, batch_size=hp["batch_size"],
        steps_per_epoch=hp["steps_per_epoch"], workers=_default_workers(args, device), device=device,
    )
    data.dataset.update(
        backbone="none (random init)" if from_scratch else
        str(args.backbone_weights) if args.backbone_weights else f"torchvision {args.arch} DEFAULT",
        freeze_backbone=bool(args.freeze_backbone),
    )
    prefix = args.name_prefix or root.resolve().name
    plan = TrainingPlan(
        data=data, epochs=hp["epochs"], batch_size=hp["batch_size"], lr=hp["lr"], weight_decay=hp["weight_decay"],
        label_smoothing=0.1, checkpoint_name=lambda variant: checkpoint_name(variant, prefix, args.arch),
        arch=lambda variant: torchvision_arch(args.arch, variant, len(data.classes)),
        build=lambda name, arch: build_on_backbone(arch, backbone, args.freeze_backbone, device, name, args.arch),
        resume_config={**hp, "steps": data.steps_per_epoch, "seed": args.seed, "freeze": args.freeze_backbone,
                       "root": str(root)},
        license=IMAGEFOLDER_LICENSE, set_train_mode=frozen_bn_eval if args.freeze_backbone else None,
    )
    return plan, _command(args, variants, hp)
