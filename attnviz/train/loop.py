"""The one training loop: every variant of either data source goes through :func:`train_variants`.

A :class:`TrainingPlan` holds what differs between the data sources (the data, the defaults
resolved into hyperparameters, how a variant's model is built); the loop, resuming, logging
and checkpointing are the same for both.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .arch import VARIANTS
from .checkpoint import (
    append_log, is_finished, log_path, read_resume_state, resume_path, save_checkpoint, sidecar,
    training_info, write_resume_state,
)
from .data import TrainingData


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


def thread_tuner(device: torch.device, n: int, fixed: bool) -> _ThreadTuner | None:
    """Adaptive CPU threads (``n`` or 1) unless the thread count is ``fixed`` (``--threads``)."""
    torch.set_num_threads(n)
    if device.type != "cpu" or fixed or n <= 1:
        return None
    return _ThreadTuner([n, 1])


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
        return resume_path(self.out, self.name)

    @property
    def log_path(self) -> Path:
        return log_path(self.out, self.name)

    def save_resume(self, epoch: int) -> None:
        write_resume_state(self.resume_path, {
            "name": self.name, "config": self.config, "epoch": epoch, "elapsed_s": self.elapsed_s,
            "history": self.history, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        })

    def load_resume(self) -> int:
        """Load the resume state; returns the number of epochs already done."""
        state = read_resume_state(self.resume_path, self.device)
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
        """Train the epochs not done yet; returns the last epoch's log record."""
        start_epoch = 0
        if resume and self.resume_path.exists():
            start_epoch = self.load_resume()
            print(f"[{self.name}] resuming after epoch {start_epoch}/{self.epochs}", flush=True)
        elif self.log_path.exists():
            self.log_path.unlink()
        loss_fn = _SoftTargetLoss(self.label_smoothing)
        for epoch in range(start_epoch, self.epochs):
            t0 = time.perf_counter()
            train_loss, train_acc = self._train_epoch(epoch, loss_fn)
            val_acc, val_size = self.evaluate(self.model)
            self.elapsed_s += time.perf_counter() - t0
            self._log_epoch(epoch, train_loss, train_acc, val_acc, val_size)
            if epoch + 1 < self.epochs:
                self.save_resume(epoch + 1)
        return self.history[-1] if self.history else {}

    def _train_epoch(self, epoch: int, loss_fn: nn.Module) -> tuple[float, float]:
        """One epoch of optimizer steps; returns (mean loss, accuracy on the labelled images)."""
        from tqdm import tqdm

        self.model.train()
        if self.set_train_mode is not None:
            self.set_train_mode(self.model)
        # Running sums stay on the device: no host sync per step.
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
            loss, logits = self._step(x, y, loss_fn)
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
        return float(loss_sum) / max(seen, 1), float(correct) / max(seen_labelled, 1)

    def _step(self, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16,
                            enabled=self.amp_dtype is not None):
            logits = self.model(x)
            loss = loss_fn(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss, logits

    def _log_epoch(self, epoch: int, train_loss: float, train_acc: float, val_acc: float, val_size: int) -> None:
        record = {
            "epoch": epoch + 1, "step": (epoch + 1) * self.steps_per_epoch,
            "train_loss": round(train_loss, 5), "train_acc": round(train_acc, 5),
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
        append_log(self.log_path, record)


def _one_cycle(optimizer: torch.optim.Optimizer, lr: float, total_steps: int) -> Any:
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(total_steps, 1), pct_start=0.15,
        div_factor=20.0, final_div_factor=200.0,
    )


def _adamw(params: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    # No weight decay on biases and BatchNorm/gate parameters (1-d tensors).
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )


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


@dataclass
class TrainingPlan:
    """What one data source trains: its data, resolved hyperparameters and how models are built."""

    data: TrainingData
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    label_smoothing: float
    #: Variant → checkpoint name, and → ``AttentionResNet`` kwargs.
    checkpoint_name: Callable[[str], str]
    arch: Callable[[str], dict[str, Any]]
    #: ``build(name, arch)``: the model on the device, called right after ``torch.manual_seed``.
    build: Callable[[str, dict[str, Any]], nn.Module]
    #: Settings a resume state must have been written with (besides the arch).
    resume_config: dict[str, Any]
    license: str
    set_train_mode: Callable[[nn.Module], None] | None = None


@dataclass
class RunOptions:
    """Settings of one command that are the same for every variant."""

    out: Path
    seed: int
    resume: bool
    progress: bool
    device: torch.device
    max_threads: int
    fixed_threads: bool
    amp_dtype: torch.dtype | None
    command: str


def train_variants(plan: TrainingPlan, variants: Sequence[str], opts: RunOptions) -> None:
    """Train (or, with ``opts.resume``, finish) each variant and write its checkpoint."""
    results = []
    t_all = time.perf_counter()
    for variant in variants:
        name = plan.checkpoint_name(variant)
        if opts.resume and is_finished(opts.out, name):
            print(f"[{name}] already trained ({opts.out / f'{name}.json'}); skipping", flush=True)
            continue
        results.append(_train_variant(plan, variant, name, opts))
    if results:
        total = sum(t for *_, t in results)
        print(f"trained {len(results)} model(s) in {total:.0f}s of training "
              f"({time.perf_counter() - t_all:.0f}s wall, this run)", flush=True)
        for name, acc, t in results:
            print(f"  {name:22s} val acc {acc:.4f}  {t:6.0f}s")


def _train_variant(plan: TrainingPlan, variant: str, name: str, opts: RunOptions) -> tuple[str, float, float]:
    """Train one variant and save it; returns (name, validation accuracy, training seconds)."""
    data, steps = plan.data, plan.data.steps_per_epoch
    arch = plan.arch(variant)
    torch.manual_seed(opts.seed)
    model = plan.build(name, arch)
    optimizer = _adamw(model.parameters(), plan.lr, plan.weight_decay)
    scheduler = _one_cycle(optimizer, plan.lr, plan.epochs * steps)
    r = _Run(
        name=name, out=opts.out, model=model, optimizer=optimizer, scheduler=scheduler, epochs=plan.epochs,
        steps_per_epoch=steps, device=opts.device, batches=data.batches, prepare=data.prepare,
        evaluate=lambda m: _accuracy(m, data.val_batches, data.prepare, opts.device),
        config={"arch": arch, **plan.resume_config}, progress=opts.progress,
        label_smoothing=plan.label_smoothing, set_train_mode=plan.set_train_mode,
        tuner=thread_tuner(opts.device, opts.max_threads, opts.fixed_threads), amp_dtype=opts.amp_dtype,
    )
    last = r.fit(opts.resume)
    training = training_info(opts.command, opts.seed, plan.epochs, plan.epochs * steps, plan.batch_size,
                             r.elapsed_s, opts.device, opts.max_threads)
    meta = sidecar(name=name, block=VARIANTS[variant] or "none", arch=arch, classes=data.classes,
                   preprocess=data.preprocess, dataset=data.dataset, training=training, last=last,
                   license=plan.license)
    path = save_checkpoint(opts.out, name, model, meta)
    if r.resume_path.exists():
        r.resume_path.unlink()
    size_mb = path.stat().st_size / 2**20
    print(f"[{name}] val acc {last['val_acc']:.4f}, {r.elapsed_s:.0f}s -> {path} ({size_mb:.2f} MB)", flush=True)
    return name, last["val_acc"], r.elapsed_s
