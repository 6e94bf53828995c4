"""Streaming statistics of attention gates, per block x class (x channel), in float64.

Per block and class ``k`` (the image's label, or its top-1 prediction for unlabelled sources):

* channel gates ``[C]``: image count ``n_k``, mean, ``M2`` (sum of squared deviations, so
  variance = ``M2 / n``), a histogram of ``bins`` equal bins on ``[0, 1]`` (values outside
  are counted in the edge bins) and exact saturation counts (``< 0.01``, ``> 0.99``);
* spatial gates ``[H, W]``: the sum of maps (mean map = sum / n), a histogram of pixel values
  and the saturation counts over pixels.

Batches are folded in with Chan et al.'s pairwise update, which is also how two accumulators
merge, so shards and resumed runs give the single run's numbers up to float64 rounding.
Memory is ``O(blocks x classes x channels x bins)``, independent of the number of images.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

SATURATION_LOW, SATURATION_HIGH = 0.01, 0.99
DEFAULT_BINS = 20


def chan_merge(n_a: np.ndarray, mean_a: np.ndarray, m2_a: np.ndarray,
               n_b: np.ndarray, mean_b: np.ndarray, m2_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and M2 of the union of two disjoint sets (Chan, Golub & LeVeque 1979).

    ``n_*`` broadcast against ``mean_*``; where both counts are 0 the result is 0."""
    n = n_a + n_b
    safe = np.where(n > 0, n, 1).astype(np.float64)
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / safe)
    m2 = m2_a + m2_b + delta * delta * (n_a * n_b / safe)
    return mean, m2


def _bin_index(x: np.ndarray, bins: int) -> np.ndarray:
    # NaN would cast to an arbitrary integer: count it in the lowest bin instead.
    return np.clip(np.nan_to_num(x * bins, nan=0.0), 0, bins - 1).astype(np.int64)


@dataclass
class BlockStats:
    """The accumulated statistics of one attention block (see the module docstring)."""

    name: str
    kind: str
    stage: int | None
    count: np.ndarray  # [K] int64: images per class
    mean: np.ndarray | None = None  # [K, C] float64
    m2: np.ndarray | None = None  # [K, C] float64
    hist: np.ndarray | None = None  # [K, C, bins] int64
    low: np.ndarray | None = None  # [K, C] int64: gate < SATURATION_LOW
    high: np.ndarray | None = None  # [K, C] int64: gate > SATURATION_HIGH
    spatial_sum: np.ndarray | None = None  # [K, H, W] float64
    spatial_hist: np.ndarray | None = None  # [K, bins] int64
    spatial_low: np.ndarray | None = None  # [K] int64 (pixels)
    spatial_high: np.ndarray | None = None  # [K] int64 (pixels)

    ARRAYS = ("count", "mean", "m2", "hist", "low", "high", "spatial_sum", "spatial_hist",
              "spatial_low", "spatial_high")

    @classmethod
    def empty(cls, name: str, kind: str, stage: int | None, num_classes: int, bins: int,
              channels: int | None, spatial_shape: tuple[int, int] | None) -> BlockStats:
        k = num_classes
        b = cls(name, kind, stage, np.zeros(k, np.int64))
        if channels is not None:
            b.mean, b.m2 = np.zeros((k, channels)), np.zeros((k, channels))
            b.hist = np.zeros((k, channels, bins), np.int64)
            b.low, b.high = np.zeros((k, channels), np.int64), np.zeros((k, channels), np.int64)
        if spatial_shape is not None:
            b.spatial_sum = np.zeros((k, *spatial_shape))
            b.spatial_hist = np.zeros((k, bins), np.int64)
            b.spatial_low, b.spatial_high = np.zeros(k, np.int64), np.zeros(k, np.int64)
        return b

    @property
    def channels(self) -> int | None:
        return None if self.mean is None else int(self.mean.shape[1])

    @property
    def spatial_shape(self) -> tuple[int, int] | None:
        return None if self.spatial_sum is None else tuple(self.spatial_sum.shape[1:])  # type: ignore[return-value]

    @property
    def bins(self) -> int:
        h = self.hist if self.hist is not None else self.spatial_hist
        return int(h.shape[-1])  # type: ignore[union-attr]

    def update(self, groups: np.ndarray, channel: np.ndarray | None, spatial: np.ndarray | None) -> None:
        """Fold in one batch: ``groups`` [n] class indices, ``channel`` [n, C], ``spatial`` [n, H, W]."""
        bins = self.bins
        for k in np.unique(groups):
            sel = groups == k
            n_k = int(sel.sum())
            if channel is not None and self.mean is not None:
                x = channel[sel].astype(np.float64, copy=False)
                mean_b = x.mean(0)
                m2_b = ((x - mean_b) ** 2).sum(0)
                self.mean[k], self.m2[k] = chan_merge(self.count[k], self.mean[k], self.m2[k], n_k, mean_b, m2_b)
                c = x.shape[1]
                flat = (np.arange(c)[None, :] * bins + _bin_index(x, bins)).ravel()
                self.hist[k] += np.bincount(flat, minlength=c * bins).reshape(c, bins)
                self.low[k] += (x < SATURATION_LOW).sum(0)
                self.high[k] += (x > SATURATION_HIGH).sum(0)
            if spatial is not None and self.spatial_sum is not None:
                s = spatial[sel].astype(np.float64, copy=False)
                self.spatial_sum[k] += s.sum(0)
                self.spatial_hist[k] += np.bincount(_bin_index(s, bins).ravel(), minlength=bins)
                self.spatial_low[k] += int((s < SATURATION_LOW).sum())
                self.spatial_high[k] += int((s > SATURATION_HIGH).sum())
            self.count[k] += n_k

    def merge(self, other: BlockStats) -> BlockStats:
        """A new BlockStats for the union of the images of ``self`` and ``other``."""
        if (self.name, self.channels, self.spatial_shape, len(self.count)) != (
                other.name, other.channels, other.spatial_shape, len(other.count)):
            raise ValueError(f"block {self.name!r}: shapes differ between the analyses being merged")
        out = BlockStats(self.name, self.kind, self.stage, self.count + other.count)
        if self.mean is not None:
            na, nb = self.count[:, None], other.count[:, None]
            out.mean, out.m2 = chan_merge(na, self.mean, self.m2, nb, other.mean, other.m2)
        for key in self.ARRAYS:
            if key in ("count", "mean", "m2"):
                continue
            a, b = getattr(self, key), getattr(other, key)
            setattr(out, key, None if a is None else a + b)
        return out

    # -- derived -----------------------------------------------------------------------

    def variance(self) -> np.ndarray:
        """[K, C] population variance of each channel's gate per class (NaN for empty classes)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.m2 / self.count[:, None]

    def pooled(self, classes: Iterable[int] | None = None) -> tuple[float, np.ndarray, np.ndarray]:
        """Count, mean [C] and M2 [C] over the images of ``classes`` (default all)."""
        n, mean, m2 = 0, np.zeros(self.channels or 0), np.zeros(self.channels or 0)
        for k in (range(len(self.count)) if classes is None else classes):
            mean, m2 = chan_merge(n, mean, m2, self.count[k], self.mean[k], self.m2[k])
            n += int(self.count[k])
        return n, mean, m2

    def spatial_mean(self) -> np.ndarray | None:
        """[K, H, W] mean spatial map per class (NaN for empty classes)."""
        if self.spatial_sum is None:
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.spatial_sum / self.count[:, None, None]


def quantile_from_hist(hist: np.ndarray, q: float) -> np.ndarray:
    """The ``q`` quantile of values binned in ``hist`` [..., bins] on [0, 1], interpolated
    linearly inside the bin (exact to within one bin width, ``1 / bins``)."""
    bins = hist.shape[-1]
    cum = np.cumsum(hist, axis=-1)
    total = cum[..., -1:]
    target = q * total
    idx = np.minimum((cum < target).sum(-1, keepdims=True), bins - 1)
    before = np.where(idx > 0, np.take_along_axis(cum, np.maximum(idx - 1, 0), -1), 0)
    inside = np.take_along_axis(hist, idx, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(inside > 0, (target - before) / inside, 0.0)
        out = (idx + np.clip(frac, 0, 1)) / bins
    return np.where(total > 0, out, np.nan)[..., 0]
