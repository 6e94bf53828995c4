"""How alike two maps are: Spearman rank correlation and SSIM, in numpy (no SciPy at runtime).

Both follow the reference implementations (``scipy.stats.spearmanr``: average ranks for ties;
``skimage.metrics.structural_similarity`` with its defaults: a 7×7 uniform window, K1 = 0.01,
K2 = 0.03, sample covariances, the mean over the pixels whose window fits in the image); the
tests check them against those libraries in float64.
"""
from __future__ import annotations

import numpy as np


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties given the average of their ranks."""
    a = np.asarray(a, dtype=np.float64).ravel()
    order = np.argsort(a, kind="stable")
    sorted_a = a[order]
    # first index of each run of equal values, and the run's average rank
    starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])
    ends = np.r_[starts[1:], a.size]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(a.size)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two equally sized arrays (flattened). A constant array
    shares no ranking with anything: 0.0 is returned (SciPy returns NaN)."""
    ra, rb = rankdata(a), rankdata(b)
    if ra.size != rb.size:
        raise ValueError(f"spearman needs arrays of one size, got {np.size(a)} and {np.size(b)}")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return 0.0 if denom == 0 else float((ra * rb).sum() / denom)


def _box_mean(x: np.ndarray, win: int) -> np.ndarray:
    """Mean over every win×win window that fits in ``x`` (a 2-D summed-area table)."""
    s = np.pad(x, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return (s[win:, win:] - s[:-win, win:] - s[win:, :-win] + s[:-win, :-win]) / (win * win)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, win_size: int = 7) -> float:
    """Structural similarity of two 2-D maps of one shape (skimage's defaults, see above).
    Maps smaller than the window use a window of their smaller side (made odd)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim needs two 2-D maps of one shape, got {a.shape} and {b.shape}")
    win = min(win_size, *a.shape)
    win -= 1 - win % 2
    n = win * win
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ua, ub = _box_mean(a, win), _box_mean(b, win)
    cov = n / (n - 1) if n > 1 else 1.0  # sample covariances, as skimage
    vaa = cov * (_box_mean(a * a, win) - ua * ua)
    vbb = cov * (_box_mean(b * b, win) - ub * ub)
    vab = cov * (_box_mean(a * b, win) - ua * ub)
    s = ((2 * ua * ub + c1) * (2 * vab + c2)) / ((ua * ua + ub * ub + c1) * (vaa + vbb + c2))
    return float(s.mean())


def minmax(m: np.ndarray) -> np.ndarray:
    """``m`` scaled to [0, 1] (a constant map becomes zeros): SSIM's common data range."""
    m = np.asarray(m, np.float64)
    lo, hi = m.min(), m.max()
    return np.zeros_like(m) if hi <= lo else (m - lo) / (hi - lo)
