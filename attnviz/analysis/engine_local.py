"""The local engine: DataLoader workers decode and preprocess, this process forwards and folds.

Batches arrive in item order (no shuffling), so after any batch the items done form one
prefix of the range being processed: that is what a checkpoint records and what a resumed
run skips.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from ..memory import release_free_memory
from ..models.loading import LoadedModel
from .analysis import Analysis
from .batch import empty_analysis, fold, forward_batch
from .sources import ItemsDataset, ResolvedSource, collate

Progress = Callable[[int, int], None]  # (items done, items in total)


class CheckpointPacer:
    """Lets a checkpoint be saved only once the time since the last one is ten times what that
    one cost: a checkpoint holds every skipped file so far, so with 10^6 missing files the saves
    stay O(n) over a run, not O(n^2)."""

    def __init__(self) -> None:
        self.saved_at, self.cost = -math.inf, 0.0

    def due(self) -> bool:
        return time.perf_counter() - self.saved_at >= 10 * self.cost

    def save(self, save: Callable[[], None]) -> None:
        t = time.perf_counter()
        save()
        self.saved_at = time.perf_counter()
        self.cost = self.saved_at - t


def default_workers() -> int:
    """Decode workers: the cores left beside the forward, at least 1 and at most 4."""
    return max(1, min(4, (os.cpu_count() or 1) - 1))


def _one_thread(_worker_id: int) -> None:
    # Workers only decode; torch threads there would compete with the forward's.
    torch.set_num_threads(1)


def loader(src: ResolvedSource, indices: range, loaded: LoadedModel, batch_size: int,
           num_workers: int) -> DataLoader:
    ds = ItemsDataset(src, indices, loaded.preprocess)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=collate, pin_memory=loaded.device.type == "cuda",
                      worker_init_fn=_one_thread if num_workers else None,
                      prefetch_factor=4 if num_workers else None)


def run_range(
    src: ResolvedSource, loaded: LoadedModel, start: int, stop: int, *, bins: int, batch_size: int,
    num_workers: int, amp: str | None = None, progress: Progress | None = None,
    on_checkpoint: Callable[[Analysis], None] | None = None, checkpoint_every: int = 0,
) -> Analysis:
    """Items ``start .. stop - 1`` of ``src`` as one partial analysis (range ``[start, stop)``)."""
    part = empty_analysis(loaded, src, bins)
    t0 = time.perf_counter()
    pacer = CheckpointPacer()
    done = start
    for k, batch in enumerate(loader(src, range(start, stop), loaded, batch_size, num_workers), 1):
        if len(batch.labels):
            fold(part, forward_batch(loaded.model, loaded.device, batch.x, amp), batch.labels)
        part.skipped.extend((src.name_of(i), err) for i, err in batch.errors)
        done += batch.size
        # Batches arrive through the DataLoader's receiving thread and its own malloc arena:
        # untrimmed, RSS climbed ~60 MB over the first ~4k images; a trim costs ~0.02 ms.
        release_free_memory()
        part.ranges = [(start, done)]
        part.elapsed_s = time.perf_counter() - t0
        if progress is not None:
            progress(done, stop)
        if (on_checkpoint is not None and checkpoint_every and k % checkpoint_every == 0 and done < stop
                and pacer.due()):
            pacer.save(lambda: on_checkpoint(part))
    part.ranges = [(start, stop)] if stop > start else []
    part.elapsed_s = time.perf_counter() - t0
    return part
