"""Train attnviz's built-in models, or fine-tune attention blocks on your own images.

Mode A (default) trains small plain / SE / ECA / CBAM / BAM ResNets on the synthetic
"find the class object" images of :mod:`attnviz.synthetic` and writes, for each variant,
``<out>/<name>.safetensors`` (the state dict), ``<out>/<name>.json`` (the sidecar that says how
to rebuild and feed the model) and ``<out>/<name>.log.jsonl`` (per-epoch metrics)::

    python -m attnviz train                      # all five, the shipped checkpoints/
    python -m attnviz train --variants se cbam --epochs 2 --out runs/

Mode B (``--imagefolder DIR``) attaches attention blocks to a pretrained torchvision ResNet
(``--arch resnet18|resnet34|resnet50``) and fine-tunes it on a ``torchvision.datasets.ImageFolder``
(``DIR/train`` + ``DIR/val``, or ``DIR`` split by ``--val-fraction``); ``--freeze-backbone``
trains only the attention blocks and the new ``fc``::

    python -m attnviz train --imagefolder ~/pets --arch resnet50 --variants se --freeze-backbone

Training is resumable: after every epoch ``<out>/<name>.resume.pt`` holds model, optimizer,
scheduler and epoch; ``--resume`` continues from it (it is deleted when the run finishes).
The synthetic training stream is indexed by step, so a resumed run sees exactly the batches an
uninterrupted one would.

On CPU the defaults are tuned for small machines: channels-last tensors, bfloat16 autocast where
the CPU has native bf16, the stream rendered once and shared by all variants, and the thread
count re-measured every 150 steps (all cores, or one when other jobs keep the cores busy and
OpenMP's spin-waiting would make several threads slower than one). The default command trains
all five built-in models in about 15–20 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import synthetic
from .models.resnet import AttentionResNet
from .preprocess import IMAGENET_MEAN, IMAGENET_STD

FORMAT = "attnviz-checkpoint/1"
SYNTHETIC_LICENSE = "CC0-1.0 (attnviz's own training output)"

#: CLI variant name → attention block kind (``None``: the plain ResNet).
VARIANTS: dict[str, str | None] = {"resnet": None, "se": "se", "eca": "eca", "cbam": "cbam", "bam": "bam"}

#: The built-in models' architecture (``AttentionResNet(**SYNTHETIC_ARCH, attn=..., ...)``): a
#: ResNet-10 with a stride-2 3×3 stem, no max-pool and stride 1 in the last stage, so 96 px inputs
#: give 48/24/12/12 px stages: Grad-CAM and the last spatial gates get 8 px cells for ~17 px
#: targets (a 6×6 last stage, 16 px cells, put Grad-CAM's maximum off the target in 5-18 % of images).
SYNTHETIC_ARCH: dict[str, Any] = {
    "depth": 10,
    "widths": [16, 32, 64, 128],
    "stem_width": 16,
    "stem_kernel_size": 3,
    "stem_stride": 2,
    "stem_pool": "none",
    "stage_strides": [1, 2, 2, 1],
}
#: Per-block kwargs for the narrow synthetic models (reduction 16 would leave 1 hidden unit).
SYNTHETIC_ATTN_KWARGS: dict[str, dict[str, Any]] = {
    "se": {"reduction": 4},
    "eca": {},
    "cbam": {"reduction": 4},
    "bam": {"reduction": 4},
}

#: Mode defaults, filled in where the option is left unset.
SYNTHETIC_DEFAULTS = {
    "epochs": 6, "steps_per_epoch": 200, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.05, "no_target_every": 8,
}
IMAGEFOLDER_DEFAULTS = {"epochs": 10, "steps_per_epoch": None, "batch_size": 32, "lr": 1e-3, "weight_decay": 0.01}

#: Largest synthetic training stream kept in memory to share between variants (bytes).
STREAM_CACHE_BYTES = 3 * 2**30

TORCHVISION_ARCHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50}


def checkpoint_name(variant: str, prefix: str = "shapes", suffix: str = "resnet") -> str:
    """``shapes_resnet`` for the plain model, ``shapes_se_resnet`` etc. for the others."""
    return f"{prefix}_{suffix}" if variant == "resnet" else f"{prefix}_{variant}_{suffix}"


# ----------------------------------------------------------------------------------------------
# Command line


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
                   help="torchvision ResNet state dict file (default: download torchvision's ImageNet weights)")
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
        if args.imagefolder is not None:
            return _run_imagefolder(args, variants, device, max_threads)
        return _run_synthetic(args, variants, device, max_threads)
    finally:
        torch.set_num_threads(max_threads)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnviz.train", description=__doc__.split("\n\n")[0])
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


# ----------------------------------------------------------------------------------------------
# The training loop (shared by both modes)


class _ThreadTuner:
    """Picks the faster of a few CPU thread counts, re-checking every ``period`` steps.

    On an idle machine all cores win; on a shared one (other jobs keeping the cores busy)
    OpenMP's spin-waiting makes multi-threaded steps several times slower than one thread,
    so the fastest setting is measured rather than assumed. Each trial times ``trial`` steps
    (after one warm-up step) of the compute only, not data generation.
    """

    def __init__(self, candidates: Sequence[int], period: int = 150, trial: int = 6) -> None:
        self.candidates = sorted(set(candidates), reverse=True)
        self.period, self.trial = period, trial
        self.best = self.candidates[0]
        self._plan: list[tuple[int, bool]] = []  # (threads, record this step's time)
        self._times: dict[int, list[float]] = {}
        self._since = period  # measure right away
        self._t0 = 0.0

    def start(self) -> None:
        if not self._plan and self._since >= self.period and len(self.candidates) > 1:
            self._plan = [(n, i > 0) for n in self.candidates for i in range(self.trial + 1)]
            self._times = {n: [] for n in self.candidates}
        n = self._plan[0][0] if self._plan else self.best
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        dt = time.perf_counter() - self._t0
        if not self._plan:
            self._since += 1
            return
        n, record = self._plan.pop(0)
        if record:
            self._times[n].append(dt)
        if not self._plan:
            med = {k: float(np.median(v)) for k, v in self._times.items()}
            self.best = min(med, key=med.__getitem__)
            self._since = 0


@dataclass
class _Run:
    name: str
    out: Path
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    epochs: int
    steps_per_epoch: int
    device: torch.device
    #: ``batches(epoch, first_step)`` yields ``(x uint8/float, y)`` for the rest of the epoch.
    batches: Callable[[int, int], Iterator[tuple[torch.Tensor, torch.Tensor]]]
    #: Turns a raw batch into the model's normalised float input on ``device``.
    prepare: Callable[[torch.Tensor], torch.Tensor]
    evaluate: Callable[[nn.Module], tuple[float, int]]
    config: dict[str, Any]
    progress: bool = True
    label_smoothing: float = 0.0
    set_train_mode: Callable[[nn.Module], None] | None = None
    tuner: _ThreadTuner | None = None
    amp_dtype: torch.dtype | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def resume_path(self) -> Path:
        return self.out / f"{self.name}.resume.pt"

    @property
    def log_path(self) -> Path:
        return self.out / f"{self.name}.log.jsonl"

    def save_resume(self, epoch: int) -> None:
        state = {
            "name": self.name, "config": self.config, "epoch": epoch, "elapsed_s": self.elapsed_s,
            "history": self.history, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        tmp = self.resume_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.resume_path)

    def load_resume(self) -> int:
        """Load the resume state; returns the number of epochs already done."""
        state = torch.load(self.resume_path, map_location=self.device, weights_only=True)
        if state.get("config") != self.config:
            raise SystemExit(
                f"error: {self.resume_path} was written with different settings "
                f"({state.get('config')} vs {self.config}); delete it or match the options"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.elapsed_s = float(state["elapsed_s"])
        self.history = list(state["history"])
        return int(state["epoch"])

    def fit(self, resume: bool) -> dict[str, Any]:
        from tqdm import tqdm

        start_epoch = 0
        if resume and self.resume_path.exists():
            start_epoch = self.load_resume()
            print(f"[{self.name}] resuming after epoch {start_epoch}/{self.epochs}", flush=True)
        elif self.log_path.exists():
            self.log_path.unlink()
        loss_fn = _SoftTargetLoss(self.label_smoothing)
        for epoch in range(start_epoch, self.epochs):
            t0 = time.perf_counter()
            self.model.train()
            if self.set_train_mode is not None:
                self.set_train_mode(self.model)
            loss_sum = torch.zeros((), device=self.device)
            correct = torch.zeros((), device=self.device, dtype=torch.long)
            seen = seen_labelled = 0
            bar = tqdm(
                self.batches(epoch, 0), total=self.steps_per_epoch, disable=not self.progress,
                desc=f"{self.name} {epoch + 1}/{self.epochs}", leave=False, dynamic_ncols=True,
            )
            for step, (xb, yb) in enumerate(bar):
                if self.tuner is not None:
                    self.tuner.start()
                x = self.prepare(xb)
                y = yb.to(self.device, non_blocking=True)
                with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16,
                                    enabled=self.amp_dtype is not None):
                    logits = self.model(x)
                    loss = loss_fn(logits.float(), y)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                loss_sum += loss.detach() * y.numel()
                labelled = y >= 0
                correct += (logits.detach().argmax(1) == y)[labelled].sum()
                seen += y.numel()
                seen_labelled += int(labelled.sum())
                if self.tuner is not None:
                    self.tuner.stop()
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
            bar.close()
            val_acc, val_size = self.evaluate(self.model)
            self.elapsed_s += time.perf_counter() - t0
            record = {
                "epoch": epoch + 1, "step": (epoch + 1) * self.steps_per_epoch,
                "train_loss": round(float(loss_sum) / max(seen, 1), 5),
                "train_acc": round(float(correct) / max(seen_labelled, 1), 5),
                "val_acc": round(val_acc, 5), "val_size": val_size,
                "lr": self.scheduler.get_last_lr()[0], "elapsed_s": round(self.elapsed_s, 2),
                "threads": torch.get_num_threads(),
            }
            self.history.append(record)
            print(
                f"[{self.name}] epoch {epoch + 1}/{self.epochs}: train loss {record['train_loss']:.4f} "
                f"acc {record['train_acc']:.4f} | val acc {val_acc:.4f} (n={val_size}) | {self.elapsed_s:.0f}s",
                flush=True,
            )
            with self.log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            if epoch + 1 < self.epochs:
                self.save_resume(epoch + 1)
        return self.history[-1] if self.history else {}


class _SoftTargetLoss(nn.Module):
    """Cross-entropy with label smoothing, where label ``NO_TARGET`` (-1, a target-free synthetic
    image) is trained towards the uniform distribution: no class may claim an image without
    evidence of its own."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if bool((y >= 0).all()):
            return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        k, eps = logits.shape[1], self.label_smoothing
        target = F.one_hot(y.clamp(min=0), k).to(logits.dtype) * (1 - eps) + eps / k
        target[y < 0] = 1.0 / k
        return F.cross_entropy(logits, target)


def _one_cycle(optimizer: torch.optim.Optimizer, lr: float, total_steps: int) -> Any:
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(total_steps, 1), pct_start=0.15,
        div_factor=20.0, final_div_factor=200.0,
    )


def _adamw(params: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )


def _normalizer(mean: Sequence[float], std: Sequence[float], device: torch.device,
                channels_last: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
    s = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def prepare(xb: torch.Tensor) -> torch.Tensor:
        xb = xb.to(device, non_blocking=True)
        if xb.dtype == torch.uint8:  # NHWC uint8 from the synthetic generator
            xb = xb.permute(0, 3, 1, 2).float().sub_(m).div_(s)
        return xb.contiguous(memory_format=fmt)

    return prepare


@torch.no_grad()
def _accuracy(model: nn.Module, batches: Any, prepare: Callable[[torch.Tensor], torch.Tensor],
              device: torch.device) -> tuple[float, int]:
    model.eval()
    correct = total = 0
    for xb, yb in batches:
        pred = model(prepare(xb)).argmax(1).cpu()
        correct += int((pred == yb).sum())
        total += int(yb.numel())
    return correct / max(total, 1), total


def _save_checkpoint(out: Path, name: str, model: nn.Module, sidecar: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = out / f"{name}.safetensors"
    save_file(state, str(path), metadata={"format": FORMAT, "name": name})
    os.chmod(path, 0o644)  # safetensors writes 0600; checkpoints are meant to be shared
    (out / f"{name}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return path


def _training_info(command: str, seed: int, epochs: int, steps: int, batch_size: int, duration: float,
                   device: torch.device, threads: int) -> dict[str, Any]:
    return {
        "command": command, "seed": seed, "epochs": epochs, "steps": steps, "batch_size": batch_size,
        "duration_s": round(duration, 1), "device": device.type, "threads": threads,
        "torch": torch.__version__,
    }


def _thread_tuner(args: argparse.Namespace, device: torch.device, n: int) -> _ThreadTuner | None:
    """Adaptive CPU threads (``n`` or 1) unless ``--threads`` fixes them."""
    torch.set_num_threads(n)
    if device.type != "cpu" or args.threads or n <= 1:
        return None
    return _ThreadTuner([n, 1])


def _default_workers(args: argparse.Namespace, device: torch.device) -> int:
    if args.workers is not None:
        return args.workers
    if device.type == "cuda":
        return min(8, max(1, (os.cpu_count() or 2) - 1))
    return 0  # on CPU the model needs every core; generating in-process avoids oversubscription


# ----------------------------------------------------------------------------------------------
# Mode A: synthetic shapes


def synthetic_arch(variant: str, widths: Sequence[int] | None = None) -> dict[str, Any]:
    """``AttentionResNet`` kwargs of the built-in model ``variant``."""
    attn = VARIANTS[variant]
    arch = {
        "depth": SYNTHETIC_ARCH["depth"], "num_classes": len(synthetic.CLASSES), "attn": attn,
        "attn_kwargs": dict(SYNTHETIC_ATTN_KWARGS.get(attn or "", {})), "stage_attn_kwargs": None,
        **{k: v for k, v in SYNTHETIC_ARCH.items() if k != "depth"},
    }
    arch["widths"] = list(widths) if widths is not None else list(SYNTHETIC_ARCH["widths"])
    if widths is not None:
        arch["stem_width"] = int(widths[0])
    return arch


def _run_synthetic(args: argparse.Namespace, variants: list[str], device: torch.device, max_threads: int) -> int:
    from torch.utils.data import DataLoader

    hp = {k: _opt(args, k, SYNTHETIC_DEFAULTS) for k in SYNTHETIC_DEFAULTS}
    hp["image_size"] = size = args.image_size or synthetic.DEFAULT_SIZE
    epochs, steps, bs = hp["epochs"], hp["steps_per_epoch"], hp["batch_size"]
    train_seed, val_seed = args.seed, args.seed + 1000
    command = _command(args, variants, hp)
    workers = _default_workers(args, device)
    arch_widths = args.widths or SYNTHETIC_ARCH["widths"]
    # channels_last is ~2x faster on CPU here, but torch 2.x's CPU backward of a strided 1x1 conv
    # with <= 8 input channels in channels_last corrupts the heap (segfault), so tiny widths skip it.
    channels_last = device.type == "cuda" or min(arch_widths) >= 16
    prepare = _normalizer(synthetic.MEAN, synthetic.STD, device, channels_last)

    t_val = time.perf_counter()
    val_images, val_labels, _ = synthetic.make_batch(0, args.val_size, seed=val_seed, size=size)
    val_batches = [
        (torch.from_numpy(val_images[i:i + 500]), torch.from_numpy(val_labels[i:i + 500]))
        for i in range(0, args.val_size, 500)
    ]
    adaptive = " (adaptive)" if _thread_tuner(args, device, max_threads) else ""
    amp = _amp_dtype(args.amp, device)
    print(f"held-out set: {args.val_size} images (seed {val_seed}, {time.perf_counter() - t_val:.1f}s); "
          f"device {device.type}, {max_threads} threads{adaptive}, {workers} data workers, "
          f"{'bf16 autocast' if amp else 'float32'}", flush=True)

    total_steps = epochs * steps
    dataset = synthetic.SyntheticBatches(total_steps, bs, seed=train_seed, size=size,
                                         no_target_every=hp["no_target_every"])

    # Every variant trains on the same stream: when several are trained in-process, keep the
    # generated batches (uint8, a few hundred MB per epoch) so the stream is rendered only once.
    stream_bytes = total_steps * bs * size * size * 3
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = (
        {} if len(variants) > 1 and workers == 0 and stream_bytes <= STREAM_CACHE_BYTES else None
    )

    def batches(epoch: int, first: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if cache is not None:
            def cached() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
                for k in range(epoch * steps + first, (epoch + 1) * steps):
                    if k not in cache:
                        cache[k] = dataset[k]
                    yield cache[k]

            return cached()
        loader = DataLoader(
            dataset, batch_size=None, sampler=range(epoch * steps + first, (epoch + 1) * steps),
            num_workers=workers, prefetch_factor=4 if workers else None,
            pin_memory=device.type == "cuda",
        )
        return iter(loader)

    results = []
    t_all = time.perf_counter()
    for variant in variants:
        name = checkpoint_name(variant)
        done = args.out / f"{name}.json"
        resume_path = args.out / f"{name}.resume.pt"
        if args.resume and done.exists() and (args.out / f"{name}.safetensors").exists() and not resume_path.exists():
            print(f"[{name}] already trained ({done}); skipping", flush=True)
            continue
        arch = synthetic_arch(variant, args.widths)
        torch.manual_seed(args.seed)
        np.random.seed(args.seed)
        model = AttentionResNet(**arch).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = _adamw(model.parameters(), hp["lr"], hp["weight_decay"])
        scheduler = _one_cycle(optimizer, hp["lr"], total_steps)
        config = {"arch": arch, **hp, "seed": args.seed, "size": size, "val_size": args.val_size}
        r = _Run(
            name=name, out=args.out, model=model, optimizer=optimizer, scheduler=scheduler,
            epochs=epochs, steps_per_epoch=steps, device=device, batches=batches, prepare=prepare,
            evaluate=lambda m: _accuracy(m, val_batches, prepare, device), config=config,
            progress=not args.no_progress, label_smoothing=0.05, tuner=_thread_tuner(args, device, max_threads),
            amp_dtype=_amp_dtype(args.amp, device),
        )
        last = r.fit(args.resume)
        sidecar = {
            "format": FORMAT, "name": name, "block": VARIANTS[variant] or "none", "arch": arch,
            "classes": list(synthetic.CLASSES),
            "preprocess": {
                "input_size": size, "resize_size": size, "mean": list(synthetic.MEAN),
                "std": list(synthetic.STD), "interpolation": "bilinear",
            },
            "dataset": {
                "generator": "attnviz.synthetic", "version": synthetic.VERSION, "image_size": size,
                "train_seed": train_seed, "val_seed": val_seed, "no_target_every": hp["no_target_every"],
            },
            "training": _training_info(command, args.seed, epochs, total_steps, bs, r.elapsed_s, device, max_threads),
            "metrics": {
                "val_accuracy": last["val_acc"], "val_size": last["val_size"], "train_loss": last["train_loss"],
            },
            "license": SYNTHETIC_LICENSE,
        }
        path = _save_checkpoint(args.out, name, model, sidecar)
        if r.resume_path.exists():
            r.resume_path.unlink()
        size_mb = path.stat().st_size / 2**20
        print(f"[{name}] val acc {last['val_acc']:.4f}, {r.elapsed_s:.0f}s -> {path} ({size_mb:.2f} MB)", flush=True)
        results.append((name, last["val_acc"], r.elapsed_s))
    if results:
        total = sum(t for *_, t in results)
        print(f"trained {len(results)} model(s) in {total:.0f}s of training "
              f"({time.perf_counter() - t_all:.0f}s wall, this run)", flush=True)
        for name, acc, t in results:
            print(f"  {name:22s} val acc {acc:.4f}  {t:6.0f}s")
    return 0


# ----------------------------------------------------------------------------------------------
# Mode B: attention blocks on a pretrained torchvision ResNet, fine-tuned on an ImageFolder


def torchvision_arch(arch: str, variant: str, num_classes: int) -> dict[str, Any]:
    """``AttentionResNet`` kwargs matching torchvision's ``arch`` with attention ``variant``."""
    return {
        "depth": TORCHVISION_ARCHS[arch], "num_classes": num_classes, "attn": VARIANTS[variant],
        "attn_kwargs": {}, "stage_attn_kwargs": None, "widths": [64, 128, 256, 512], "stem_width": 64,
        "stem_kernel_size": 7, "stem_stride": 2, "stem_pool": "max",
    }


def is_attention_key(key: str) -> bool:
    """Whether a state-dict key belongs to an attention block (absent from torchvision's ResNets)."""
    return ".attn." in key or key.startswith("bam")


def load_backbone(model: AttentionResNet, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Load a torchvision ResNet state dict into ``model`` except its ``fc`` (replaced for the new
    classes). Raises unless the only missing keys are attention-block keys and nothing is
    unexpected; returns the missing (attention) keys."""
    state = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches (e.g. a ResNet-50 file for a ResNet-18)
        raise ValueError(f"backbone weights do not match the ResNet: {e}") from None
    bad_missing = [k for k in missing if not (is_attention_key(k) or k.startswith("fc."))]
    if unexpected or bad_missing:
        raise ValueError(
            "backbone weights do not match the ResNet: "
            f"missing non-attention keys {bad_missing[:8]}, unexpected keys {list(unexpected)[:8]}"
        )
    return [k for k in missing if is_attention_key(k)]


def pretrained_state_dict(arch: str, weights_file: Path | None = None) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for ``arch`` (downloaded once to the torch hub cache), or
    the state dict stored in ``weights_file``."""
    if weights_file is not None:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        return state
    import torchvision

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    return torch.hub.load_state_dict_from_url(weights.url, map_location="cpu", progress=True, weights_only=True)


def _trainable(name: str) -> bool:
    return is_attention_key(name) or name.startswith("fc.")


def _imagefolder_datasets(root: Path, input_size: int, resize_size: int, val_fraction: float,
                          seed: int) -> tuple[Any, Any, list[str], str]:
    from torchvision import datasets, transforms

    norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose([
        transforms.RandomResizedCrop(input_size, antialias=True), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), norm,
    ])
    val_tf = transforms.Compose([
        transforms.Resize(resize_size, antialias=True), transforms.CenterCrop(input_size),
        transforms.ToTensor(), norm,
    ])
    if (root / "train").is_dir() and (root / "val").is_dir():
        train = datasets.ImageFolder(str(root / "train"), transform=train_tf)
        val = datasets.ImageFolder(str(root / "val"), transform=val_tf)
        if val.classes != train.classes:
            raise SystemExit(f"error: {root}/train and {root}/val have different classes")
        return train, val, list(train.classes), "train/val folders"
    from torch.utils.data import Subset

    full_train = datasets.ImageFolder(str(root), transform=train_tf)
    full_val = datasets.ImageFolder(str(root), transform=val_tf)
    n = len(full_train)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, int(round(n * val_fraction))) if n > 1 else 0
    return (Subset(full_train, order[n_val:]), Subset(full_val, order[:n_val]), list(full_train.classes),
            f"random {val_fraction:g} split, seed {seed}")


def _run_imagefolder(
    args: argparse.Namespace, variants: list[str], device: torch.device, max_threads: int
) -> int:
    from torch.utils.data import DataLoader

    hp = {k: _opt(args, k, IMAGEFOLDER_DEFAULTS) for k in IMAGEFOLDER_DEFAULTS}
    input_size = args.image_size or 224
    resize_size = int(round(input_size * 256 / 224))
    hp["image_size"] = args.image_size
    root = args.imagefolder
    train_set, val_set, classes, split = _imagefolder_datasets(root, input_size, resize_size, args.val_fraction, args.seed)
    if len(classes) < 2:
        raise SystemExit(f"error: {root} needs at least two class folders")
    workers = _default_workers(args, device)
    bs = hp["batch_size"]
    steps = hp["steps_per_epoch"] or max(1, len(train_set) // bs)
    epochs = hp["epochs"]
    command = _command(args, variants, hp)
    backbone = pretrained_state_dict(args.arch, args.backbone_weights)
    prefix = args.name_prefix or root.resolve().name

    def prepare(xb: torch.Tensor) -> torch.Tensor:  # the transforms already normalised it
        return xb.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)

    val_loader = DataLoader(val_set, batch_size=bs, shuffle=False, num_workers=workers)

    def batches(epoch: int, first: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(args.seed * 100_003 + epoch)
        loader = DataLoader(train_set, batch_size=bs, shuffle=True, drop_last=len(train_set) >= bs,
                            generator=g, num_workers=workers, pin_memory=device.type == "cuda")

        def gen() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            done = 0
            while done < steps:  # cycle when --steps-per-epoch exceeds one pass
                for xb, yb in loader:
                    if done >= steps:
                        return
                    done += 1
                    yield xb, yb

        return gen()

    def frozen_bn_eval(model: nn.Module) -> None:
        for mod_name, mod in model.named_modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm) and not _trainable(mod_name + "."):
                mod.eval()

    for variant in variants:
        name = checkpoint_name(variant, prefix, args.arch)
        done = args.out / f"{name}.json"
        if args.resume and done.exists() and not (args.out / f"{name}.resume.pt").exists():
            print(f"[{name}] already trained ({done}); skipping", flush=True)
            continue
        arch = torchvision_arch(args.arch, variant, len(classes))
        torch.manual_seed(args.seed)
        model = AttentionResNet(**arch)
        attn_keys = load_backbone(model, backbone)
        print(f"[{name}] loaded {args.arch} backbone; {len(attn_keys)} attention tensors and fc start fresh", flush=True)
        if args.freeze_backbone:
            for pname, p in model.named_parameters():
                p.requires_grad_(_trainable(pname))
        model = model.to(device, memory_format=torch.channels_last)
        optimizer = _adamw(model.parameters(), hp["lr"], hp["weight_decay"])
        scheduler = _one_cycle(optimizer, hp["lr"], epochs * steps)
        config = {"arch": arch, **hp, "steps": steps, "seed": args.seed, "freeze": args.freeze_backbone,
                  "root": str(root)}
        r = _Run(
            name=name, out=args.out, model=model, optimizer=optimizer, scheduler=scheduler, epochs=epochs,
            steps_per_epoch=steps, device=device, batches=batches, prepare=prepare,
            evaluate=lambda m: _accuracy(m, val_loader, prepare, device), config=config,
            progress=not args.no_progress, label_smoothing=0.1,
            set_train_mode=frozen_bn_eval if args.freeze_backbone else None, tuner=_thread_tuner(args, device, max_threads),
            amp_dtype=_amp_dtype(args.amp, device),
        )
        last = r.fit(args.resume)
        sidecar = {
            "format": FORMAT, "name": name, "block": VARIANTS[variant] or "none", "arch": arch,
            "classes": classes,
            "preprocess": {
                "input_size": input_size, "resize_size": resize_size, "mean": list(IMAGENET_MEAN),
                "std": list(IMAGENET_STD), "interpolation": "bilinear",
            },
            "dataset": {
                "generator": "torchvision.datasets.ImageFolder", "root": str(root), "split": split,
                "train_size": len(train_set), "val_size": len(val_set),
                "backbone": str(args.backbone_weights) if args.backbone_weights else f"torchvision {args.arch} DEFAULT",
                "freeze_backbone": bool(args.freeze_backbone),
            },
            "training": _training_info(command, args.seed, epochs, epochs * steps, bs, r.elapsed_s, device, max_threads),
            "metrics": {
                "val_accuracy": last["val_acc"], "val_size": last["val_size"], "train_loss": last["train_loss"],
            },
            "license": "same terms as the training images and the backbone weights",
        }
        path = _save_checkpoint(args.out, name, model, sidecar)
        if r.resume_path.exists():
            r.resume_path.unlink()
        print(f"[{name}] val acc {last['val_acc']:.4f} -> {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
