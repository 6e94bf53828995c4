"""Channel-attention faithfulness: does knocking out the channels a gate ranks highest hurt most?

For one block, channels are knocked out (:class:`attnviz.ChannelKnockout`: the block's output
for them is 0) cumulatively in an order — the gate's (highest first), a random one, or the
activation norm's (the L2 norm of the block's output channel, highest first) — and the
probability of the class the unmodified model predicted is recorded after each step. The mean
over the steps (trapezoid over the knocked-out fraction, 0..1) is the deletion AUC: lower means
the order found the channels the decision depends on. If the gate is faithful, its AUC is
below the random order's.

Cost: one plain forward, then (steps + 1) × images rows per order in batched forwards of
``batch`` rows (every step of every image is one row with its own knockout mask).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .capture import block_io, capture
from .intervene import ChannelKnockout, intervene

ORDERS = ("gate", "random", "activation")


@dataclass
class DeletionCurves:
    """``curves[order]`` [N, steps + 1]: the target class's probability after knocking out the
    first ``fractions[s]`` of the channels; ``auc[order]``: its trapezoid mean over images."""

    block: str
    channels: int
    fractions: np.ndarray
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    auc: dict[str, float] = field(default_factory=dict)

    def chart(self, size: tuple[int, int] = (640, 300)):
        """The mean curve of each order against the knocked-out fraction (a PIL image)."""
        from . import render

        series = {f"{o} (AUC {self.auc[o]:.3f})": c.mean(0).tolist() for o, c in self.curves.items()}
        return render.stats_along_depth(
            series, title=f"{self.block}: probability of the predicted class while channels are knocked out",
            ylabel="probability", size=size, labels=[f"{f:.2f}" for f in self.fractions])

    @property
    def gate_beats_random(self) -> bool | None:
        if "gate" not in self.auc or "random" not in self.auc:
            return None
        return self.auc["gate"] < self.auc["random"]


def _as_batch(loaded: Any, images: torch.Tensor | Sequence[Any]) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images
    from .preprocess import PreparedImage, prepare

    return torch.cat([(im if isinstance(im, PreparedImage) else prepare(im, loaded.preprocess)).tensor
                      for im in images])


@torch.inference_mode()
def _plain_run(loaded: Any, x: torch.Tensor, block: str, batch: int) -> tuple[torch.Tensor, ...]:
    """Target classes, channel gates [N, C] and output-channel norms [N, C] of the plain model."""
    net, norms, logits = loaded.model, [], []
    with block_io(net, block, lambda _entering, leaving: norms.append(leaving.flatten(2).norm(dim=2).cpu())), \
            capture(net, only=[block]) as cap:
        for i in range(0, len(x), batch):
            logits.append(net(x[i:i + batch].to(loaded.device)).float().cpu())
    if cap[block].channel is None:
        raise ValueError(f"{block} has no channel gate; channel deletion needs one")
    return torch.cat(logits).argmax(1), cap[block].channel, torch.cat(norms)


def _orders(order: str, gates: torch.Tensor, norms: torch.Tensor, seed: int) -> torch.Tensor:
    """[N, C] channel indices, first knocked out first (ties: lower channel first)."""
    if order == "gate":
        return torch.argsort(gates, dim=1, descending=True, stable=True)
    if order == "activation":
        return torch.argsort(norms, dim=1, descending=True, stable=True)
    if order == "random":
        g = torch.Generator().manual_seed(seed)
        return torch.stack([torch.randperm(gates.shape[1], generator=g) for _ in range(len(gates))])
    raise ValueError(f"unknown order {order!r}; expected one of {ORDERS}")


@torch.inference_mode()
def _curve(loaded: Any, x: torch.Tensor, block: str, order: torch.Tensor, targets: torch.Tensor,
           counts: torch.Tensor, batch: int) -> np.ndarray:
    n, c = order.shape
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(c).expand(n, -1).contiguous())
    s = len(counts)
    # row r = image r // s at step r % s: knock out the channels ranked below counts[step]
    masks = (rank[:, None, :] < counts[None, :, None]).reshape(n * s, c)
    rows = torch.arange(n).repeat_interleave(s)
    probs = []
    for i in range(0, n * s, batch):
        sel = rows[i:i + batch]
        with intervene(loaded.model, {block: ChannelKnockout(mask=masks[i:i + batch].to(loaded.device))}):
            logits = loaded.model(x[sel].to(loaded.device)).double()  # float64 model: exact rows
        probs.append(torch.softmax(logits, 1).gather(1, targets[sel, None].to(logits.device)).cpu()[:, 0])
    return torch.cat(probs).view(n, s).numpy()


def channel_deletion(
    model: Any,
    images: torch.Tensor | Sequence[Any],
    block: str,
    *,
    steps: int = 16,
    orders: Sequence[str] = ORDERS,
    seed: int = 0,
    batch: int = 256,
) -> DeletionCurves:
    """Deletion curves of ``block``'s channels in each of ``orders`` (see the module docstring).

    Args:
        model: a variant name, :class:`~attnviz.LoadedModel` or ``nn.Module`` (as for inspect).
        images: a batch tensor [N, 3, H, W] already preprocessed, or images / PreparedImages.
        block: a block with a channel gate (``"layer4.0"``, ``"bam3"``).
        steps: knock out ``round(s / steps * C)`` channels at step s = 0..steps.
        batch: rows per forward; each row is one image at one step.
    """
    from .inspection import resolve_model

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    loaded = resolve_model(model)
    x = _as_batch(loaded, images)
    targets, gates, norms = _plain_run(loaded, x, block, batch)
    c = gates.shape[1]
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = torch.from_numpy(np.round(fractions * c).astype(np.int64))
    result = DeletionCurves(block, c, fractions)
    for name in orders:
        curve = _curve(loaded, x, block, _orders(name, gates, norms, seed), targets, counts, batch)
        result.curves[name] = curve
        result.auc[name] = float(np.trapezoid(curve, fractions, axis=1).mean())
    return result
