"""The result of :func:`attnviz.analyze`: gate statistics of a dataset, their derived
metrics, and a versioned file format that merges (shards, resumed runs).

Metrics, per block (``K`` classes with images, ``N`` images, ``C`` channels):

* **class-specificity** (:meth:`Analysis.specificity`): the share of the channel gates'
  variance that lies between the class means, ``η² = Σ_c Σ_k n_k (μ_kc − μ_c)² / Σ_c Σ_i
  (x_ic − μ_c)²`` (the correlation ratio, ratio of sums over channels). 0: every class has
  the same mean excitation; 1: the class determines every gate. When gates do not depend on
  the class, its expectation over relabellings is ``(K − 1) / (N − 1)``
  (:meth:`Analysis.specificity_baseline`). :meth:`Analysis.profile_distance` gives SENet's
  visual reading instead: the mean pairwise ``1 − cosine`` between class mean profiles.
* **saturation share** (:meth:`Analysis.saturation`): the fraction of gate values
  ``< 0.01`` or ``> 0.99`` (channel gates; spatial gates' pixels for spatial-only blocks).
* **accuracy**: top-1 against the labels, when every label name is a class of the model.

File format ``attnviz-analysis/1`` (:meth:`Analysis.save`): one ``.npz`` (numpy, no
pickles) holding ``meta.json`` (UTF-8 JSON as uint8: everything but the arrays) and, per
block, ``<block>/<array>`` for the arrays of :class:`~attnviz.analysis.stats.BlockStats`,
plus ``confusion`` ([K, M] int64: images of class k predicted as model class m).
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .stats import BlockStats

FORMAT = "attnviz-analysis/1"


def _merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            if a < out[-1][1]:
                raise ValueError(f"item ranges overlap ({out[-1]} and {(a, b)}): the same images "
                                 "would be counted twice")
            out[-1] = (out[-1][0], max(out[-1][1], b))
        elif b > a:
            out.append((a, b))
    return out


@dataclass
class Analysis:
    """Dataset-scale statistics of one model's attention gates (see the module docstring)."""

    model: str
    weights: str
    source: str  # description of the source
    source_id: str  # fingerprint of its item list (see ResolvedSource.fingerprint)
    n_items: int  # items in the source (after --classes / --max-images)
    classes: tuple[str, ...]  # the groups statistics are kept for
    grouping: str  # "label" (the source's labels) or "prediction" (top-1, unlabelled sources)
    model_classes: tuple[str, ...]
    bins: int
    blocks: list[BlockStats]
    confusion: np.ndarray  # [K, M] int64
    ranges: list[tuple[int, int]] = field(default_factory=list)  # item ranges folded in
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, error)
    elapsed_s: float = 0.0
    format: str = FORMAT

    # -- access --------------------------------------------------------------------------

    @property
    def n_images(self) -> int:
        """Images whose gates are in the statistics (skipped files excluded)."""
        return int(self.confusion.sum())

    @property
    def n_done(self) -> int:
        """Items covered so far (including skipped ones)."""
        return sum(b - a for a, b in self.ranges)

    @property
    def complete(self) -> bool:
        return self.ranges == [(0, self.n_items)] or self.n_items == 0

    def block(self, name: str) -> BlockStats:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(f"no block {name!r}; blocks: {[b.name for b in self.blocks]}")

    @property
    def channel_blocks(self) -> list[BlockStats]:
        return [b for b in self.blocks if b.mean is not None]

    def class_counts(self) -> np.ndarray:
        return self.confusion.sum(1)

    def profiles(self, block: str) -> np.ndarray:
        """[K, C] mean excitation of each channel per class (NaN rows for classes with no images)."""
        b = self.block(block)
        with np.errstate(invalid="ignore"):
            return np.where(b.count[:, None] > 0, b.mean, np.nan)

    # -- metrics ---------------------------------------------------------------------------

    def specificity(self) -> dict[str, float]:
        """η² per channel-gated block (the between-class share of gate variance)."""
        out = {}
        for b in self.channel_blocks:
            n, mean, m2_total = b.pooled()
            between = float((b.count[:, None] * (b.mean - mean) ** 2).sum())
            total = float(m2_total.sum())
            out[b.name] = between / total if total > 0 else float("nan")
        return out

    def specificity_baseline(self) -> float:
        """``(K − 1) / (N − 1)``: η²'s expectation when gates do not depend on the class."""
        k = int((self.class_counts() > 0).sum())
        n = self.n_images
        return (k - 1) / (n - 1) if n > 1 and k > 0 else float("nan")

    def profile_distance(self) -> dict[str, float]:
        """Mean pairwise ``1 − cosine`` between the class mean profiles, per channel-gated block."""
        out = {}
        for b in self.channel_blocks:
            p = b.mean[b.count > 0]
            if len(p) < 2:
                out[b.name] = float("nan")
                continue
            unit = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-300)
            cos = unit @ unit.T
            iu = np.triu_indices(len(p), 1)
            out[b.name] = float((1.0 - cos[iu]).mean())
        return out

    def saturation(self) -> dict[str, float]:
        """Share of gate values < 0.01 or > 0.99 per block (channel gates, else spatial pixels)."""
        out = {}
        for b in self.blocks:
            n = int(b.count.sum())
            if b.mean is not None:
                total = n * b.channels
                out[b.name] = float(b.low.sum() + b.high.sum()) / total if total else float("nan")
            elif b.spatial_sum is not None:
                h, w = b.spatial_shape
                total = n * h * w
                out[b.name] = float(b.spatial_low.sum() + b.spatial_high.sum()) / total if total else float("nan")
        return out

    def label_to_model(self) -> list[int] | None:
        """Model class index of each label, when every label name is one of the model's classes."""
        if self.grouping != "label":
            return None
        index = {c: i for i, c in enumerate(self.model_classes)}
        if not self.classes or any(c not in index for c in self.classes):
            return None
        return [index[c] for c in self.classes]

    def accuracy(self) -> float | None:
        """Top-1 accuracy against the labels (None when labels are not the model's classes)."""
        mapping = self.label_to_model()
        if mapping is None or self.n_images == 0:
            return None
        hits = sum(int(self.confusion[k, m]) for k, m in enumerate(mapping))
        return hits / self.n_images

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable summary of the metrics (what the CLI writes as summary.json);
        undefined values (NaN: e.g. one class only) are ``None``."""
        def num(v: float | None) -> float | None:
            return None if v is None or not np.isfinite(v) else float(v)

        spec, dist, sat = self.specificity(), self.profile_distance(), self.saturation()
        return {
            "format": self.format, "model": self.model, "weights": self.weights, "source": self.source,
            "images": self.n_images, "items": self.n_items, "complete": self.complete,
            "skipped": [{"file": f, "error": e} for f, e in self.skipped],
            "grouping": self.grouping, "classes": list(self.classes),
            "class_counts": self.class_counts().tolist(), "accuracy": self.accuracy(),
            "specificity_baseline": num(self.specificity_baseline()), "elapsed_s": round(self.elapsed_s, 3),
            "blocks": [{
                "name": b.name, "kind": b.kind, "stage": b.stage, "channels": b.channels,
                "spatial_shape": None if b.spatial_shape is None else list(b.spatial_shape),
                "specificity": num(spec.get(b.name)), "profile_distance": num(dist.get(b.name)),
                "saturation": num(sat.get(b.name)),
            } for b in self.blocks],
        }

    # -- merge -----------------------------------------------------------------------------

    def _identity(self) -> tuple:
        return (self.format, self.model, self.weights, self.source_id, self.n_items, self.classes,
                self.grouping, self.model_classes, self.bins)

    @classmethod
    def merge(cls, *parts: Analysis) -> Analysis:
        """One analysis of the union of ``parts``: disjoint item ranges of the same source,
        model and settings (e.g. shards, or a partial run and its continuation)."""
        if not parts:
            raise ValueError("merge needs at least one analysis")
        first = parts[0]
        for p in parts[1:]:
            if p._identity() != first._identity():
                diff = [n for n, a, b in zip(("format", "model", "weights", "source", "items", "classes",
                                              "grouping", "model classes", "bins"),
                                             first._identity(), p._identity()) if a != b]
                raise ValueError(f"cannot merge analyses that differ in {', '.join(diff)}")
        ranges = _merge_ranges([r for p in parts for r in p.ranges])
        blocks: dict[str, BlockStats] = {}
        order: list[str] = []
        for p in parts:  # a part whose every file was broken has no blocks yet
            for b in p.blocks:
                if b.name in blocks:
                    blocks[b.name] = blocks[b.name].merge(b)
                else:
                    blocks[b.name] = b
                    order.append(b.name)
        return cls(
            model=first.model, weights=first.weights, source=first.source, source_id=first.source_id,
            n_items=first.n_items, classes=first.classes, grouping=first.grouping,
            model_classes=first.model_classes, bins=first.bins, blocks=[blocks[n] for n in order],
            confusion=sum((p.confusion for p in parts[1:]), first.confusion.copy()), ranges=ranges,
            skipped=[s for p in parts for s in p.skipped], elapsed_s=sum(p.elapsed_s for p in parts),
        )

    # -- files -----------------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        return {
            "format": self.format, "model": self.model, "weights": self.weights, "source": self.source,
            "source_id": self.source_id, "n_items": self.n_items, "classes": list(self.classes),
            "grouping": self.grouping, "model_classes": list(self.model_classes), "bins": self.bins,
            "ranges": [list(r) for r in self.ranges], "skipped": [list(s) for s in self.skipped],
            "elapsed_s": self.elapsed_s,
            "blocks": [{"name": b.name, "kind": b.kind, "stage": b.stage} for b in self.blocks],
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the ``.npz`` file (see the module docstring) atomically; returns its path."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "meta.json": np.frombuffer(json.dumps(self._meta()).encode(), dtype=np.uint8),
            "confusion": self.confusion,
        }
        for b in self.blocks:
            for key in BlockStats.ARRAYS:
                value = getattr(b, key)
                if value is not None:
                    arrays[f"{b.name}/{key}"] = value
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)  # a reader never sees half a file, even if we are interrupted
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Analysis:
        """Read a file written by :meth:`save`; ValueError if it is not one."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
            meta = json.loads(bytes(data.pop("meta.json")).decode())
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
            raise ValueError(f"{path.name}: not an attnviz analysis file ({type(e).__name__}); "
                             f"accepted: .npz files written by attnviz analyze ({FORMAT})") from None
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path.name}: analysis format {meta.get('format')!r} is not {FORMAT!r}")
        blocks = []
        for info in meta["blocks"]:
            arrays = {k: data.get(f"{info['name']}/{k}") for k in BlockStats.ARRAYS}
            blocks.append(BlockStats(info["name"], info["kind"], info["stage"], **arrays))
        return cls(
            model=meta["model"], weights=meta["weights"], source=meta["source"], source_id=meta["source_id"],
            n_items=meta["n_items"], classes=tuple(meta["classes"]), grouping=meta["grouping"],
            model_classes=tuple(meta["model_classes"]), bins=meta["bins"], blocks=blocks,
            confusion=data["confusion"], ranges=[tuple(r) for r in meta["ranges"]],
            skipped=[tuple(s) for s in meta["skipped"]], elapsed_s=meta["elapsed_s"],
        )
