"""The Ray engine: Ray Data tasks decode and preprocess, a pool of actors holding the model
forwards under :func:`attnviz.capture` (the same :func:`~attnviz.analysis.batch.forward_batch`
as the local engine) and folds every batch into its own partial :class:`Analysis` (the same
:func:`~attnviz.analysis.batch.fold`); the driver merges the partials with
:meth:`Analysis.merge`.

The decoded stream is cut with ``Dataset.streaming_split`` into one iterator per actor, so an
actor knows when its share has ended and hands its partial over once: only
``O(blocks x classes x channels x bins)`` per actor crosses the network, however many images
there are. Only imported when ``engine="ray"`` is asked for.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..memory import release_free_memory
from ..models.loading import LoadedModel
from .analysis import Analysis
from .batch import empty_analysis, fold, forward_batch
from .engine_local import Progress
from .sources import ItemsDataset, ResolvedSource

_ERROR_WIDTH = 300  # characters of a decoding error kept per item
_POLL_S = 0.1  # how often the driver asks the actors how far they are


def decode_batch(batch: dict[str, np.ndarray], src: ResolvedSource, config: Any) -> dict[str, np.ndarray]:
    """Ray Data task: item indices -> preprocessed inputs (zeros + error text where undecodable)."""
    indices = [int(i) for i in batch["index"]]
    ds = ItemsDataset(src, indices, config)
    s = config.input_size
    x = np.zeros((len(indices), 3, s, s), np.float32)
    labels, errors = np.empty(len(indices), np.int64), []
    for k in range(len(indices)):
        tensor, labels[k], _, err = ds[k]
        if tensor is not None:
            x[k] = tensor.numpy()
        errors.append(err[:_ERROR_WIDTH])
    return {"index": np.asarray(indices, np.int64), "label": labels, "x": x, "error": np.asarray(errors, dtype=object)}


@dataclass
class ActorPart:
    """What one actor hands back: its partial analysis and the item index of each skipped file."""

    analysis: Analysis
    skipped_items: list[int]
    items: int


class GateAccumulator:
    """Ray actor: holds the model on its device, consumes one split of the decoded stream and
    folds every batch into its own partial analysis."""

    def __init__(self, loaded: LoadedModel, src: ResolvedSource, bins: int, threads: int,
                 amp: str | None = None) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = loaded.model.to(device).eval()
        self.device = device
        self.amp = amp if device.type == "cuda" or amp == "bf16" else None  # fp16 is CUDA-only
        self.src = src
        self.part = empty_analysis(loaded, src, bins)
        self.items = 0

    def consume(self, stream: Any, batch_size: int) -> ActorPart:
        """Fold every batch of ``stream`` (a Ray Data iterator); the partial once it has ended."""
        import torch

        skipped_items: list[int] = []
        for batch in stream.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
            ok = np.asarray([not e for e in batch["error"]], bool)
            if ok.any():
                x = torch.from_numpy(np.ascontiguousarray(batch["x"][ok]))
                fold(self.part, forward_batch(self.model, self.device, x, self.amp), np.asarray(batch["label"])[ok])
            for item, err in zip(batch["index"], batch["error"]):
                if err:
                    skipped_items.append(int(item))
                    self.part.skipped.append((self.src.name_of(int(item)), str(err)))
            self.items += len(ok)
            release_free_memory()  # as in the local engine: batches arrive through another thread
        return ActorPart(self.part, skipped_items, self.items)

    def progress(self) -> int:
        """Items this actor has folded so far (answered while ``consume`` runs)."""
        return self.items


@dataclass(frozen=True)
class ActorPlan:
    """How many actors, and what each holds of the cluster."""

    actors: int
    threads: int  # torch threads per actor
    cpus: float  # CPUs reserved per actor
    gpus: float  # GPUs per actor

    @classmethod
    def for_cluster(cls, resources: dict[str, float], actors: int | None = None) -> ActorPlan:
        """Half the CPUs go to the actors' forwards, half to the decoding tasks; with GPUs, one
        actor per GPU by default."""
        gpus, cpus = int(resources.get("GPU", 0)), float(resources.get("CPU", 1))
        n = actors or (gpus if gpus else max(1, int(cpus) // 4))
        share = cpus / (2 * n)
        threads = max(1, math.floor(share))
        return cls(n, threads, min(float(threads), share), min(1.0, gpus / n) if gpus else 0.0)


def _local_runtime_env() -> dict:
    """A local Ray's workers import attnviz from where this process does (a source checkout
    need not be installed); on a cluster attnviz must be installed on every node."""
    import os
    from pathlib import Path

    here = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


def _quiet(ray: Any) -> None:
    # Our own progress callback reports images; Ray Data's bars and stats would interleave.
    import logging

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def _parts_as_they_end(ray: Any, handles: list, futures: list, total: int,
                       progress: Progress | None) -> Iterator[ActorPart]:
    """Each actor's part as soon as it has ended (so the driver holds one part at a time, not
    all of them), ``progress`` polled meanwhile; an actor's error is raised when it happens."""
    pending, reported, finished = list(futures), -1, 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=_POLL_S)
        for ref in ready:
            part = ray.get(ref)
            finished += part.items
            yield part
        if progress is not None:
            done = finished + sum(ray.get([h.progress.remote() for h, f in zip(handles, futures) if f in pending]))
            if done != reported:
                progress(done, total)
                reported = done


class RayActors:
    """The model-holding actors of one run: started once, fed one stream of items per call of
    :meth:`parts`, killed on :meth:`close` (Ray must be initialised)."""

    def __init__(self, src: ResolvedSource, loaded: LoadedModel, *, bins: int, actors: int | None = None,
                 amp: str | None = None) -> None:
        import ray
        import ray.data

        _quiet(ray)
        self.ray, self.src, self.preprocess = ray, src, loaded.preprocess
        self.plan = ActorPlan.for_cluster(ray.cluster_resources(), actors)
        cpu_copy = LoadedModel(loaded.variant, copy.deepcopy(loaded.model).cpu(), loaded.device, loaded.weights)
        actor_class = ray.remote(GateAccumulator).options(
            num_cpus=self.plan.cpus, num_gpus=self.plan.gpus or None, max_concurrency=2)  # 2: progress() during consume()
        self.handles = [actor_class.remote(cpu_copy, src, bins, self.plan.threads, amp)
                        for _ in range(self.plan.actors)]

    def parts(self, indices: list[int], batch_size: int, progress: Progress | None = None) -> Iterator[ActorPart]:
        """Items ``indices``: one partial analysis per actor, each yielded when its actor has ended."""
        ds = self.ray.data.from_items([{"index": i} for i in indices],
                                      override_num_blocks=max(1, min(len(indices) // batch_size, 64)))
        ds = ds.map_batches(decode_batch, fn_kwargs={"src": self.src, "config": self.preprocess},
                            batch_size=batch_size, batch_format="numpy")
        streams = ds.streaming_split(len(self.handles), equal=False)
        futures = [h.consume.remote(s, batch_size) for h, s in zip(self.handles, streams)]
        yield from _parts_as_they_end(self.ray, self.handles, futures, len(indices), progress)

    def close(self) -> None:
        for h in self.handles:
            self.ray.kill(h)

    def __enter__(self) -> RayActors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ray_parts(src: ResolvedSource, loaded: LoadedModel, indices: list[int], *, bins: int, batch_size: int,
              actors: int | None = None, amp: str | None = None, progress: Progress | None = None
              ) -> Iterator[ActorPart]:
    """Items ``indices`` of ``src``: one partial analysis per actor, each yielded when its actor
    has ended (Ray must be initialised)."""
    with RayActors(src, loaded, bins=bins, actors=actors, amp=amp) as pool:
        yield from pool.parts(indices, batch_size, progress)


def _chunks(todo: list[tuple[int, int]], size: int) -> list[list[tuple[int, int]]]:
    """``todo``'s items in order, cut into groups of at most ``size`` items (as ranges)."""
    out: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    n = 0
    for a, b in todo:
        while a < b:
            take = min(b - a, size - n)
            current.append((a, a + take))
            n, a = n + take, a + take
            if n == size:
                out.append(current)
                current, n = [], 0
    return out + [current] if current else out


def _merge_parts(parts: Iterator[ActorPart], start: Analysis) -> Analysis:
    merged, skipped = start, []
    for part in parts:  # one at a time: the driver never holds every actor's partial at once
        merged = Analysis.merge(merged, part.analysis)
        skipped += zip(part.skipped_items, part.analysis.skipped)
    merged.skipped = [s for _, s in sorted(skipped, key=lambda pair: pair[0])]  # item order, as locally
    return merged


def run_ray(src: ResolvedSource, loaded: LoadedModel, todo: list[tuple[int, int]], *, bins: int, batch_size: int,
            address: str | None = None, actors: int | None = None, amp: str | None = None,
            progress: Progress | None = None, on_checkpoint: Callable[[Analysis], None] | None = None,
            checkpoint_every: int = 0) -> Analysis:
    """Items in the ranges ``todo`` of ``src`` as one partial analysis, computed on Ray: the
    merge of the actors' partials. With ``on_checkpoint``, the items go through in chunks of
    ``checkpoint_every`` batches per actor, and the analysis so far is handed to it after each."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env=None if address else _local_runtime_env())
    t0 = time.perf_counter()
    try:
        result = empty_analysis(loaded, src, bins)
        total = sum(b - a for a, b in todo)
        if total <= 0:
            return result
        with RayActors(src, loaded, bins=bins, actors=actors, amp=amp) as pool:
            size = checkpoint_every * batch_size * pool.plan.actors if on_checkpoint and checkpoint_every else total
            done_before = 0
            for chunk in _chunks(todo, size):
                def report(done: int, _total: int, offset: int = done_before) -> None:
                    if progress is not None:
                        progress(offset + done, total)

                indices = [i for a, b in chunk for i in range(a, b)]
                part = _merge_parts(pool.parts(indices, batch_size, report), empty_analysis(loaded, src, bins))
                part.ranges = chunk
                result = Analysis.merge(result, part)
                result.elapsed_s = time.perf_counter() - t0  # wall time: the actors ran side by side
                done_before += len(indices)
                if on_checkpoint is not None and done_before < total:
                    on_checkpoint(result)
        return result
    finally:
        if started:
            ray.shutdown()
