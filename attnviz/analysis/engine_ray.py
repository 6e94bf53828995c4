"""The Ray engine: Ray Data tasks decode, an actor pool holding the model forwards under
:func:`attnviz.capture` (the same :func:`~attnviz.analysis.batch.forward_batch` as the local
engine), and the driver folds every batch's gates into the analysis with the same
:func:`~attnviz.analysis.batch.fold`.

Each actor returns its batches' raw gates (``O(batch x channels)``), not a dense partial
accumulator: a partial holds every class (``O(classes x channels x bins)``, gigabytes for
ImageNet) and Ray Data gives a callable class no end-of-stream hook at which to hand over a
per-actor partial once. Only imported when ``engine="ray"`` is asked for.
"""
from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np

from ..capture import find_gates
from ..models.loading import LoadedModel
from .analysis import Analysis
from .batch import BatchGates, empty_analysis, fold, forward_batch
from .engine_local import Progress
from .sources import ItemsDataset, ResolvedSource

_ERROR_WIDTH = 300  # characters of a decoding error kept per item


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


class GateActor:
    """Ray Data actor: holds the model on its device, forwards and captures each batch."""

    def __init__(self, loaded: LoadedModel, threads: int, amp: str | None = None) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = loaded.model.to(device).eval()
        self.device = device
        self.amp = amp if device.type == "cuda" or amp == "bf16" else None  # fp16 is CUDA-only

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        ok = np.asarray([not e for e in batch["error"]], bool)
        out = {"index": batch["index"], "label": batch["label"], "error": batch["error"],
               "pred": np.full(len(ok), -1, np.int64)}
        if ok.any():
            gates = forward_batch(self.model, self.device, torch.from_numpy(np.ascontiguousarray(batch["x"][ok])),
                                  self.amp)
            out["pred"][ok] = gates.predictions
            for name, _kind, _stage, channel, spatial in gates.blocks:
                for role, values in (("c", channel), ("s", spatial)):
                    if values is not None:
                        full = np.zeros((len(ok), *values.shape[1:]), values.dtype)
                        full[ok] = values
                        out[f"{role}:{name}"] = full
        return out


def _cluster_plan(ray: Any) -> tuple[int, int, float]:
    """(actors, torch threads per actor, GPUs per actor) for the cluster Ray is connected to."""
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 1))
    if gpus:
        return gpus, max(1, cpus // (2 * gpus)), 1.0
    actors = max(1, cpus // 4)  # leave CPUs to the decoding tasks
    return actors, 1, 0.0


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


def _batch_gates(batch: dict[str, np.ndarray], ok: np.ndarray, sites: list) -> BatchGates:
    blocks = []
    for site in sites:
        channel, spatial = batch.get(f"c:{site.name}"), batch.get(f"s:{site.name}")
        if channel is None and spatial is None:
            continue
        blocks.append((site.name, site.kind, site.stage,
                       None if channel is None else np.asarray(channel)[ok],
                       None if spatial is None else np.asarray(spatial)[ok]))
    return BatchGates(blocks, np.asarray(batch["pred"])[ok])


def run_ray(src: ResolvedSource, loaded: LoadedModel, todo: list[tuple[int, int]], *, bins: int, batch_size: int,
            address: str | None = None, amp: str | None = None, progress: Progress | None = None) -> Analysis:
    """Items in the ranges ``todo`` of ``src`` as one partial analysis, computed on Ray."""
    import ray
    import ray.data

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env=None if address else _local_runtime_env())
    _quiet(ray)
    t0 = time.perf_counter()
    try:
        part = empty_analysis(loaded, src, bins)
        indices = [i for a, b in todo for i in range(a, b)]
        if not indices:
            return part
        actors, threads, gpus = _cluster_plan(ray)
        cpu_copy = LoadedModel(loaded.variant, copy.deepcopy(loaded.model).cpu(), loaded.device, loaded.weights)
        ds = ray.data.from_items([{"index": i} for i in indices],
                                 override_num_blocks=max(1, min(len(indices) // batch_size, 64)))
        ds = ds.map_batches(decode_batch, fn_kwargs={"src": src, "config": loaded.preprocess},
                            batch_size=batch_size, batch_format="numpy")
        ds = ds.map_batches(GateActor, fn_constructor_kwargs={"loaded": cpu_copy, "threads": threads, "amp": amp},
                            batch_size=batch_size, batch_format="numpy", num_gpus=gpus or None,
                            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors))
        sites = find_gates(loaded.model)
        done = 0
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            ok = np.asarray([not e for e in batch["error"]], bool)
            if ok.any():
                fold(part, _batch_gates(batch, ok, sites), np.asarray(batch["label"])[ok])
            part.skipped.extend((src.name_of(int(i)), str(e)) for i, e in zip(batch["index"], batch["error"]) if e)
            done += len(ok)
            if progress is not None:
                progress(done, len(indices))
        part.ranges = [tuple(r) for r in todo if r[1] > r[0]]
        part.skipped.sort(key=lambda s: s[0])
        part.elapsed_s = time.perf_counter() - t0
        return part
    finally:
        if started:
            ray.shutdown()
