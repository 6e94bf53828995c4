"""Figures of an :class:`Analysis`, drawn once at the end (never inside the batch loop).

Uses :class:`matplotlib.figure.Figure` directly (no pyplot state), so it is safe in the app's
threads. Every function returns the figure; :func:`save_png` writes one.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .analysis import Analysis

_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf")


def default_blocks(analysis: Analysis, n: int = 4) -> list[str]:
    """Up to ``n`` channel-gated blocks spread along depth, always including the last."""
    names = [b.name for b in analysis.channel_blocks]
    if len(names) <= n:
        return names
    picks = np.unique(np.round(np.linspace(0, len(names) - 1, n)).astype(int))
    return [names[i] for i in picks]


def default_classes(analysis: Analysis, n: int = 4) -> list[str]:
    """The ``n`` classes with most images (SENet's Fig. 6 shows four)."""
    counts = analysis.class_counts()
    order = [k for k in np.argsort(-counts, kind="stable") if counts[k] > 0][:n]
    return [analysis.classes[k] for k in order]


def excitation_figure(analysis: Analysis, blocks: Sequence[str] | None = None,
                      classes: Sequence[str] | None = None) -> Figure:
    """SENet Fig. 6: mean excitation per channel, one line per class plus all images, one
    panel per block."""
    blocks = list(blocks or default_blocks(analysis))
    classes = list(classes or default_classes(analysis))
    unknown = [c for c in classes if c not in analysis.classes]
    if unknown:
        raise KeyError(f"no class {unknown}; classes: {list(analysis.classes)[:20]}")
    cols = min(len(blocks), 3) or 1
    rows = max(1, -(-len(blocks) // cols))
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows), dpi=100, layout="constrained")
    for i, name in enumerate(blocks):
        ax = fig.add_subplot(rows, cols, i + 1)
        b = analysis.block(name)
        x = np.arange(b.channels)
        for j, cls in enumerate(classes):
            k = analysis.classes.index(cls)
            if b.count[k]:
                ax.plot(x, b.mean[k], lw=0.9, color=_PALETTE[j % len(_PALETTE)], label=cls)
        _, pooled, _ = b.pooled()
        ax.plot(x, pooled, lw=1.2, color="black", label="all")
        ax.set_title(f"{name} ({b.kind}, {b.channels} ch)", fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("channel index", fontsize=8)
        ax.set_ylabel("mean excitation", fontsize=8)
        ax.tick_params(labelsize=7)
    if blocks:
        fig.axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{analysis.model}: mean excitation by class ({analysis.n_images} images)", fontsize=10)
    return fig


def _depth_axes(analysis: Analysis, title: str, ylabel: str) -> tuple[Figure, object, list[str]]:
    fig = Figure(figsize=(6.4, 3.4), dpi=100, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(f"{analysis.model}: {title}", fontsize=10)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_xlabel("block (input → output)", fontsize=8)
    return fig, ax, [b.name for b in analysis.blocks]


def _ticks(ax, names: list[str]) -> None:
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center",
                       fontsize=7)
    ax.tick_params(axis="y", labelsize=7)


def specificity_figure(analysis: Analysis) -> Figure:
    """Class-specificity (η² and the mean pairwise profile distance) along depth."""
    fig, ax, _ = _depth_axes(analysis, "class-specificity along depth", "share / distance")
    names = [b.name for b in analysis.channel_blocks]
    spec, dist = analysis.specificity(), analysis.profile_distance()
    ax.plot(range(len(names)), [spec[n] for n in names], "o-", color=_PALETTE[0],
            label="η² (between-class share of gate variance)")
    ax.plot(range(len(names)), [dist[n] for n in names], "s--", color=_PALETTE[1],
            label="mean pairwise 1 − cosine of class profiles")
    base = analysis.specificity_baseline()
    if np.isfinite(base):
        ax.axhline(base, color="grey", lw=0.8, ls=":", label=f"η² if gates ignored the class ({base:.3f})")
    ax.set_ylim(bottom=0)
    _ticks(ax, names)
    ax.legend(fontsize=7)
    return fig


def saturation_figure(analysis: Analysis) -> Figure:
    """Share of gate values < 0.01 or > 0.99 along depth."""
    fig, ax, names = _depth_axes(analysis, "saturated gates along depth", "share of gate values")
    sat = analysis.saturation()
    ax.bar(range(len(names)), [sat.get(n, np.nan) for n in names], color=_PALETTE[2])
    ax.set_ylim(0, 1)
    _ticks(ax, names)
    return fig


def spatial_figure(analysis: Analysis, block: str, classes: Sequence[str] | None = None) -> Figure:
    """The mean spatial map of ``block`` per class."""
    b = analysis.block(block)
    maps = b.spatial_mean()
    if maps is None:
        raise KeyError(f"block {block!r} has no spatial gate")
    classes = list(classes or default_classes(analysis))
    fig = Figure(figsize=(2.2 * len(classes), 2.4), dpi=100, layout="constrained")
    for i, cls in enumerate(classes):
        ax = fig.add_subplot(1, len(classes), i + 1)
        ax.imshow(maps[analysis.classes.index(cls)], vmin=0, vmax=1, cmap="viridis")
        ax.set_title(cls, fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f"{block}: mean spatial gate", fontsize=9)
    return fig


def save_png(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    fig.savefig(path, format="png")
    return path
