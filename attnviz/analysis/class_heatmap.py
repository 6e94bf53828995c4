"""Per-class channel profiles of an :class:`Analysis` as a heat map (rows = classes).

The same view as the app's per-image profiles (:func:`attnviz.render.profiles.profile_heatmap`,
the depth overview's colour scale), so a dataset's class profiles and a handful of images read
alike. Drawn with PIL and numpy (a few ms), beside the matplotlib figures of :mod:`.plots`.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..render.profiles import ChannelOrder, profile_heatmap
from .analysis import Analysis


def class_profiles(analysis: Analysis, block: str, order: ChannelOrder = "mean",
                   width: int = 720) -> Image.Image:
    """Mean excitation of ``block`` per class: one row per class that has images (``n`` in its
    label), then all images pooled; channels sorted by their mean over those rows, or in index
    order."""
    b = analysis.block(block)
    counts = np.asarray(b.count)
    keep = np.nonzero(counts > 0)[0]
    if keep.size == 0:
        raise ValueError(f"block {block!r}: no class has images")
    profiles = np.asarray(analysis.profiles(block))[keep]
    _, pooled, _ = b.pooled()
    labels = [f"{analysis.classes[k]} (n={int(counts[k])})" for k in keep] + [f"all images (n={int(counts.sum())})"]
    return profile_heatmap(np.vstack([profiles, np.asarray(pooled)[None, :]]), labels, order=order,
                           title=f"{analysis.model} · {block} ({b.kind}): mean excitation per class",
                           width=width, item="channel", mean_row=None)
