"""The per-batch step every engine runs: forward under :func:`attnviz.capture`, fold the gates
into an :class:`Analysis`. Kept free of data loading so the local and Ray engines share it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..capture import capture
from ..inspection import amp_autocast
from ..models.loading import LoadedModel
from .analysis import Analysis
from .sources import ResolvedSource
from .stats import BlockStats


@dataclass
class BatchGates:
    """One batch's gates (numpy, CPU) and top-1 predictions."""

    blocks: list[tuple[str, str, int | None, np.ndarray | None, np.ndarray | None]]  # name, kind, stage, [n,C], [n,H,W]
    predictions: np.ndarray  # [n] int64


def model_dtype(net: nn.Module) -> torch.dtype:
    p = next(net.parameters(), None)
    return torch.float32 if p is None else p.dtype


def forward_batch(net: nn.Module, device: torch.device, x: torch.Tensor, amp: str | None = None) -> BatchGates:
    """Run ``net`` on ``x`` [n, 3, S, S] with every attention gate captured; ``amp`` ("bf16",
    "fp16" or None) runs the forward under autocast, the model unchanged (gates read out in float32)."""
    # The input takes the model's dtype: a float64 model gives float64 gates (exactness checks).
    x = x.to(device, dtype=model_dtype(net), non_blocking=True)
    with capture(net) as cap, torch.inference_mode(), amp_autocast(amp, device):
        logits = net(x)
    preds = logits.argmax(1).cpu().numpy().astype(np.int64)
    # blocks with only branch weights (SelectiveKernel, SplitAttn) have no statistics here yet
    blocks = [(bc.name, bc.kind, bc.stage,
               None if bc.channel is None else bc.channel.numpy(),
               None if bc.spatial is None else bc.spatial.numpy())
              for bc in cap if bc.channel is not None or bc.spatial is not None]
    return BatchGates(blocks, preds)


def empty_analysis(loaded: LoadedModel, src: ResolvedSource, bins: int) -> Analysis:
    """An analysis of ``src`` with ``loaded`` holding no images yet."""
    model_classes = tuple(loaded.classes)
    grouping = "label" if src.labelled else "prediction"
    classes = src.classes if src.labelled else model_classes
    return Analysis(
        model=loaded.name, weights=loaded.weights, source=src.description, source_id=src.fingerprint,
        n_items=len(src), classes=classes, grouping=grouping, model_classes=model_classes, bins=bins,
        blocks=[], confusion=np.zeros((len(classes), len(model_classes)), np.int64),
    )


def fold(analysis: Analysis, gates: BatchGates, labels: np.ndarray) -> None:
    """Add one batch to ``analysis`` (labels are ignored when it groups by prediction)."""
    preds = gates.predictions
    if preds.size and int(preds.max()) >= analysis.confusion.shape[1]:
        raise ValueError(f"the model has {int(preds.max()) + 1}+ outputs but names "
                         f"{analysis.confusion.shape[1]} classes")
    groups = labels if analysis.grouping == "label" else preds
    known = {b.name: b for b in analysis.blocks}
    for name, kind, stage, channel, spatial in gates.blocks:
        stats = known.get(name)
        if stats is None:  # created on the first batch, when the gates' shapes are known
            stats = BlockStats.empty(name, kind, stage, len(analysis.classes), analysis.bins,
                                     None if channel is None else channel.shape[1],
                                     None if spatial is None else tuple(spatial.shape[1:]))
            analysis.blocks.append(stats)
            known[name] = stats
        stats.update(groups, channel, spatial)
    np.add.at(analysis.confusion, (groups, preds), 1)
