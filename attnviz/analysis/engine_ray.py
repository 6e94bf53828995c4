"""The Ray engine: Ray Data tasks decode and preprocess, a pool of actors holding the model
forwards under :func:`attnviz.capture` (the same :func:`~attnviz.analysis.batch.forward_batch`
as the local engine) and folds every batch into its own partial :class:`Analysis` (the same
:func:`~attnviz.analysis.batch.fold`); the driver merges the partials with
:meth:`Analysis.merge`.

The decoded stream is cut with ``Dataset.streaming_split`` into one iterator per actor, so an
actor knows when its share has ended and hands its partial over then: only
``O(blocks x classes x channels x bins)`` per actor crosses the network, however many images
there are. For checkpoints the driver also takes each running actor's partial (and the items
it holds) every so often, without stopping the stream. Only imported when ``engine="ray"`` is
asked for.
"""
from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..memory import release_free_memory
from ..models.loading import LoadedModel
from .analysis import Analysis
from .batch import empty_analysis, fold, forward_batch
from .engine_local import CheckpointPacer, Progress
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
    """A partial analysis handed over by an actor, with the items it holds."""

    analysis: Analysis
    items: list[int]  # item indices folded in or skipped
    skipped_items: list[int]  # the item index of each of analysis.skipped


class GateAccumulator:
    """Ray actor: holds the model on its device, consumes one split of the decoded stream and
    folds every batch into its own partial analysis, which :meth:`take` hands over (and
    restarts) at any time."""

    def __init__(self, loaded: LoadedModel, src: ResolvedSource, bins: int, threads: int,
                 amp: str | None = None) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = loaded.model.to(device).eval()
        self.device = device
        self.amp = amp if device.type == "cuda" or amp == "bf16" else None  # fp16 is CUDA-only
        self.loaded, self.src, self.bins = loaded, src, bins
        self.lock = threading.Lock()  # consume() folds while take() may be called (max_concurrency=2)
        self._restart()

    def _restart(self) -> None:
        self.part = empty_analysis(self.loaded, self.src, self.bins)
        self.items: list[int] = []
        self.skipped_items: list[int] = []

    def consume(self, stream: Any, batch_size: int) -> ActorPart:
        """Fold every batch of ``stream`` (a Ray Data iterator); what is not taken yet once it ends."""
        import torch

        for batch in stream.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
            ok = np.asarray([not e for e in batch["error"]], bool)
            gates = None
            if ok.any():  # the forward runs outside the lock: take() waits for a fold at most
                gates = forward_batch(self.model, self.device, torch.from_numpy(np.ascontiguousarray(batch["x"][ok])),
                                      self.amp)
            with self.lock:
                if gates is not None:
                    fold(self.part, gates, np.asarray(batch["label"])[ok])
                for item, err in zip(batch["index"], batch["error"]):
                    if err:
                        self.skipped_items.append(int(item))
                        self.part.skipped.append((self.src.name_of(int(item)), str(err)))
                self.items.extend(int(i) for i in batch["index"])
            release_free_memory()  # as in the local engine: batches arrive through another thread
        return self.take()

    def take(self) -> ActorPart:
        """The partial since the last take, and a fresh one started."""
        with self.lock:
            out = ActorPart(self.part, self.items, self.skipped_items)
            self._restart()
        return out

    def progress(self) -> int:
        """Items held since the last take (answered while ``consume`` runs)."""
        return len(self.items)


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


def _ranges_of(items: list[int]) -> list[tuple[int, int]]:
    """Sorted item indices as maximal ``[a, b)`` ranges."""
    out: list[tuple[int, int]] = []
    for i in sorted(items):
        if out and i == out[-1][1]:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


class Collected:
    """The parts merged so far (one at a time: the driver never holds every actor's partial)."""

    def __init__(self, start: Analysis) -> None:
        self.analysis, self.t0 = start, time.perf_counter()
        self.items: list[int] = []
        self.skipped: list[tuple[int, tuple[str, str]]] = []

    def add(self, part: ActorPart) -> None:
        self.analysis = Analysis.merge(self.analysis, part.analysis)
        self.items += part.items
        self.skipped += zip(part.skipped_items, part.analysis.skipped)

    def result(self) -> Analysis:
        """The analysis of the items collected: their ranges, skipped files in item order (as the
        local engine lists them), wall time (the actors ran side by side)."""
        out = copy.copy(self.analysis)  # the arrays are shared; ranges, skipped and time are its own
        out.ranges = _ranges_of(self.items)
        out.skipped = [s for _, s in sorted(self.skipped, key=lambda pair: pair[0])]
        out.elapsed_s = time.perf_counter() - self.t0
        return out


class RayActors:
    """The model-holding actors of one run, killed on :meth:`close` (Ray must be initialised)."""

    def __init__(self, src: ResolvedSource, loaded: LoadedModel, *, bins: int, actors: int | None = None,
                 amp: str | None = None) -> None:
        import ray
        import ray.data

        _quiet(ray)
        self.ray, self.src, self.preprocess = ray, src, loaded.preprocess
        self.plan = ActorPlan.for_cluster(ray.cluster_resources(), actors)
        cpu_copy = LoadedModel(loaded.variant, copy.deepcopy(loaded.model).cpu(), loaded.device, loaded.weights)
        actor_class = ray.remote(GateAccumulator).options(
            num_cpus=self.plan.cpus, num_gpus=self.plan.gpus or None, max_concurrency=2)  # take() during consume()
        self.handles = [actor_class.remote(cpu_copy, src, bins, self.plan.threads, amp)
                        for _ in range(self.plan.actors)]

    def start(self, indices: list[int], batch_size: int) -> list:
        """Feed items ``indices`` to the actors; one future of a final :class:`ActorPart` per actor."""
        ds = self.ray.data.from_items([{"index": i} for i in indices],
                                      override_num_blocks=max(1, min(len(indices) // batch_size, 64)))
        ds = ds.map_batches(decode_batch, fn_kwargs={"src": self.src, "config": self.preprocess},
                            batch_size=batch_size, batch_format="numpy")
        streams = ds.streaming_split(len(self.handles), equal=False)
        return [h.consume.remote(s, batch_size) for h, s in zip(self.handles, streams)]

    def collect(self, futures: list, collected: Collected, total: int, progress: Progress | None = None,
                take_every: int = 0, on_checkpoint: Callable[[Analysis], None] | None = None) -> None:
        """Merge each actor's final part as soon as it has ended, polling ``progress``; with
        ``on_checkpoint``, take the running actors' partials each time ``take_every`` more items
        are held (paced by :class:`CheckpointPacer`) and hand it the result. An actor's error is
        raised when it happens."""
        ray = self.ray
        checkpoints = on_checkpoint is not None and take_every > 0
        pending, reported, taken_at, pacer = list(futures), -1, 0, CheckpointPacer()
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=_POLL_S)
            for ref in ready:
                collected.add(ray.get(ref))
            if progress is None and not checkpoints:
                continue
            running = [h for h, f in zip(self.handles, futures) if f in pending]
            done = len(collected.items) + sum(ray.get([h.progress.remote() for h in running]))
            if progress is not None and done != reported:
                progress(done, total)
                reported = done
            if checkpoints and running and done - taken_at >= take_every and pacer.due():
                def take_and_save(running: list = running) -> None:
                    for h in running:
                        collected.add(ray.get(h.take.remote()))
                    on_checkpoint(collected.result())

                pacer.save(take_and_save)
                taken_at = done

    def close(self) -> None:
        for h in self.handles:
            self.ray.kill(h)

    def __enter__(self) -> RayActors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_ray(src: ResolvedSource, loaded: LoadedModel, todo: list[tuple[int, int]], *, bins: int, batch_size: int,
            address: str | None = None, actors: int | None = None, amp: str | None = None,
            progress: Progress | None = None, on_checkpoint: Callable[[Analysis], None] | None = None,
            checkpoint_every: int = 0) -> Analysis:
    """Items in the ranges ``todo`` of ``src`` as one partial analysis, computed on Ray: the
    merge of the actors' partials. With ``on_checkpoint``, the analysis so far is handed to it
    about every ``checkpoint_every`` batches per actor."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env=None if address else _local_runtime_env())
    try:
        collected = Collected(empty_analysis(loaded, src, bins))
        indices = [i for a, b in todo for i in range(a, b)]
        if indices:
            with RayActors(src, loaded, bins=bins, actors=actors, amp=amp) as pool:
                pool.collect(pool.start(indices, batch_size), collected, len(indices), progress,
                             take_every=checkpoint_every * batch_size * pool.plan.actors, on_checkpoint=on_checkpoint)
        return collected.result()
    finally:
        if started:
            ray.shutdown()
