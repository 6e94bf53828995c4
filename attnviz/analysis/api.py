""":func:`analyze`: dataset-scale statistics of a model's attention gates."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ..inspection import ModelSpec, check_amp, resolve_model
from ..models.loading import LoadedModel
from .analysis import Analysis
from .batch import empty_analysis
from .engine_local import Progress, default_workers, run_range
from .sources import ResolvedSource, resolve_source, select
from .stats import DEFAULT_BINS


def _todo(covered: list[tuple[int, int]], start: int, stop: int) -> list[tuple[int, int]]:
    """The parts of ``[start, stop)`` not in ``covered`` (sorted, disjoint ranges)."""
    out, at = [], start
    for a, b in covered:
        if b <= at or a >= stop:
            continue
        if a > at:
            out.append((at, min(a, stop)))
        at = max(at, b)
    if at < stop:
        out.append((at, stop))
    return out


def prepare_source(source: str | os.PathLike | ResolvedSource, loaded_input_size: int,
                   classes: Sequence[str] | None, max_images: int | None) -> ResolvedSource:
    src = source if isinstance(source, ResolvedSource) else resolve_source(source, synthetic_size=loaded_input_size)
    return select(src, list(classes) if classes else None, max_images)


def analyze(
    source: str | os.PathLike | ResolvedSource,
    model: ModelSpec = None,
    *,
    weights: Any = None,
    batch_size: int = 32,
    device: Any = None,
    num_workers: int | None = None,
    classes: Sequence[str] | None = None,
    max_images: int | None = None,
    engine: Literal["local", "ray"] = "local",
    ray_address: str | None = None,
    ray_actors: int | None = None,
    bins: int = DEFAULT_BINS,
    start: int = 0,
    stop: int | None = None,
    resume: Analysis | None = None,
    progress: Progress | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 20,
    amp: str | None = None,
) -> Analysis:
    """Statistics of every attention gate of ``model`` over the images of ``source``.

    Args:
        source: a folder of class subfolders (ImageFolder), a folder of unlabelled images
            (statistics are then grouped by the model's top-1 prediction), a ``.csv``/``.tsv``
            of ``path,label`` rows (paths relative to the file), or ``"synthetic:N"``: the first
            N images of the built-in held-out synthetic stream (works offline).
        model: a variant name, a :class:`~attnviz.LoadedModel` or your own module (see
            :func:`attnviz.inspect`); images are preprocessed with its own configuration.
        batch_size: images per forward. num_workers: decoding processes (0: in this one;
            default: the cores left beside the forward, at most 4).
        classes: only the images of these labels. max_images: an evenly spread seeded subset.
        engine: ``"local"`` or ``"ray"`` (Ray Data actors; needs ``pip install 'attnviz[ray]'``;
            ``ray_address`` joins a cluster, else a local Ray is started; ``ray_actors`` actors
            hold the model, each folds its share into its own partial: default 1 per GPU, else per 4 CPUs).
        bins: histogram bins on [0, 1] per block x class x channel.
        start, stop: analyse only items ``[start, stop)`` (a shard; merge shards with
            :meth:`Analysis.merge`). resume: a partial analysis of the same source and model;
            only the items it lacks are analysed and the result includes it.
        progress: called as ``progress(items_done, items_total)`` after every batch.
        checkpoint: a file the partial analysis is saved to every ``checkpoint_every`` batches
            (per actor on Ray), so an interrupted run can be resumed from it.
        amp: ``"bf16"`` / ``"fp16"`` (CUDA): forwards under autocast, as ``inspect(amp=)``.

    Files that cannot be decoded are listed in ``Analysis.skipped`` and never stop the run.
    Raises :class:`~attnviz.analysis.SourceError` (a ValueError) for an unusable source.
    """
    _check_options(batch_size, engine, ray_actors)  # before a model is loaded
    loaded = resolve_model(model, weights=weights, device=device)
    check_amp(amp, loaded.device)  # before any image is read: fp16 on a CPU is refused
    src, base, todo = _plan(source, loaded, classes, max_images, bins, start, stop, resume)
    if engine == "ray":
        return _run_on_ray(src, loaded, base, todo, checkpoint, bins=bins, batch_size=batch_size,
                           address=ray_address, actors=ray_actors, amp=amp, progress=progress,
                           checkpoint_every=checkpoint_every)
    workers = default_workers() if num_workers is None else num_workers
    return _run_local(src, loaded, base, todo, bins=bins, batch_size=batch_size, workers=workers,
                      progress=progress, checkpoint=checkpoint, checkpoint_every=checkpoint_every, amp=amp)


def _check_options(batch_size: int, engine: str, ray_actors: int | None) -> None:
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if ray_actors is not None and ray_actors <= 0:
        raise ValueError(f"ray_actors must be positive, got {ray_actors}")
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")


def _plan(source: str | os.PathLike | ResolvedSource, loaded: LoadedModel, classes: Sequence[str] | None,
          max_images: int | None, bins: int, start: int, stop: int | None, resume: Analysis | None
          ) -> tuple[ResolvedSource, Analysis, list[tuple[int, int]]]:
    """The items to analyse, the analysis they add to (empty, or ``resume``) and the ranges of
    items in ``[start, stop)`` it still lacks."""
    src = prepare_source(source, loaded.preprocess.input_size, classes, max_images)
    stop = len(src) if stop is None else min(stop, len(src))
    base = empty_analysis(loaded, src, bins)
    if resume is not None:
        base = Analysis.merge(base, resume)  # raises if it is of another source / model / setting
    return src, base, _todo(base.ranges, max(0, start), stop)


def _run_on_ray(src: ResolvedSource, loaded: LoadedModel, base: Analysis, todo: list[tuple[int, int]],
                checkpoint: str | os.PathLike | None, **options: Any) -> Analysis:
    from .engine_ray import run_ray  # imported only here: the local path never loads ray

    def save_partial(part: Analysis) -> None:
        Analysis.merge(base, part).save(Path(checkpoint))

    result = Analysis.merge(base, run_ray(src, loaded, todo, on_checkpoint=save_partial if checkpoint else None,
                                          **options))
    if checkpoint:
        result.save(Path(checkpoint))
    return result


def _run_local(src: ResolvedSource, loaded: LoadedModel, base: Analysis, todo: list[tuple[int, int]], *,
               bins: int, batch_size: int, workers: int, progress: Progress | None,
               checkpoint: str | os.PathLike | None, checkpoint_every: int, amp: str | None) -> Analysis:
    result, total = base, sum(b - a for a, b in todo)
    done_before = 0
    for a, b in todo:
        offset = done_before - a

        def report(done: int, _stop: int, offset: int = offset) -> None:
            if progress is not None:
                progress(done + offset, total)

        def save_partial(part: Analysis, result: Analysis = result) -> None:
            Analysis.merge(result, part).save(Path(checkpoint))

        part = run_range(src, loaded, a, b, bins=bins, batch_size=batch_size, num_workers=workers, amp=amp,
                         progress=report, on_checkpoint=save_partial if checkpoint else None,
                         checkpoint_every=checkpoint_every)
        result = Analysis.merge(result, part)
        done_before += b - a
    if checkpoint:
        result.save(Path(checkpoint))
    return result

