"""The app's Intervene panel: what the UI and ``/intervene`` ask for, turned into library calls.

The panel picks blocks (or all), a replacement ("identity", "mean", top-k or bottom-k
knockout) and k; :func:`build_interventions` turns that into the spec of
:func:`attnviz.intervene` and :func:`intervene_views` draws the before/after Grad-CAMs and
the deltas. Errors are ``ValueError`` / ``KeyError`` naming what is valid; the app shows them
as ``gr.Error``.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import render
from .capture import find_gates
from .inspection import Inspection
from .intervene import ChannelKnockout, Spec
from .models.zoo import get_variant

REPLACEMENTS = ("identity", "mean", "top-k knockout", "bottom-k knockout")
ALL = "all"
VIEW_SIZE = 448


@functools.lru_cache(maxsize=64)
def block_names(variant: str) -> tuple[str, ...]:
    """The attention blocks of a variant, from its architecture (no weights are loaded)."""
    return tuple(s.name for s in find_gates(get_variant(variant).build()))


def build_interventions(blocks: Sequence[str] | str | None, replacement: str | None,
                        k: float | int | None) -> dict[str, Spec]:
    """``{"layer4.0": "identity", ...}`` from the panel's inputs ("all" or no block: every block)."""
    if replacement not in REPLACEMENTS:
        raise ValueError(f"Replacement: one of {', '.join(REPLACEMENTS)} (got {replacement!r}).")
    chosen = [blocks] if isinstance(blocks, str) else list(blocks or [])
    chosen = [b.strip() for b in chosen if b and b.strip()]
    keys = ["*"] if not chosen or ALL in chosen else chosen
    if replacement.endswith("knockout"):
        if k is None or float(k) != int(float(k)) or int(float(k)) < 0:
            raise ValueError(f"k: a whole number of channels >= 0 (got {k!r}).")
        which = "top" if replacement.startswith("top") else "bottom"
        spec: Spec = ChannelKnockout(**{which: int(float(k))})
    else:
        spec = replacement
    return {key: spec for key in keys}


@dataclass
class InterventionViews:
    gradcam_before: str | None
    gradcam_after: str | None
    label_before: dict[str, float]
    label_after: dict[str, float]
    markdown: str
    summary: dict[str, Any]


def _label(result: Inspection) -> dict[str, float]:
    return {p.label: float(p.probability) for p in result.predictions}


def deltas_markdown(result: Inspection) -> str:
    eff = result.intervention
    changed = (f"**top-1 changed**: {eff.top1_before.label} → {eff.top1_after.label}"
               if eff.top1_changed else f"top-1 unchanged: {eff.top1_before.label}")
    what = ", ".join(f"`{k}` {v}" for k, v in eff.interventions.items()).replace("`*`", "every block:")
    return (f"Intervention: {what}.  \n{changed}; p({eff.top1_before.label}) {eff.prob_before:.3f} → "
            f"{eff.prob_after:.3f} (Δ {eff.delta_top1_prob:+.3f}); KL(before‖after) = {eff.kl:.4f} nats.")


def intervene_views(result: Inspection, folder: Path, *, alpha: float = 0.5,
                    colormap: str = "jet") -> InterventionViews:
    """Grad-CAM before / after (both explaining the plain model's top-1) as JPEGs in ``folder``."""
    eff = result.intervention
    folder.mkdir(parents=True, exist_ok=True)
    view = result.view(VIEW_SIZE)
    paths: dict[str, str | None] = {}
    for name, cam in (("before", eff.gradcam_before), ("after", eff.gradcam_after)):
        if cam is None:
            paths[name] = None
            continue
        image = render.overlay(view, cam, alpha=alpha, colormap=colormap, normalize="none")
        path = folder / f"gradcam_{name}.jpg"
        path.write_bytes(render.to_jpeg_bytes(image))
        paths[name] = str(path)
    return InterventionViews(paths["before"], paths["after"], _label(eff.before), _label(result),
                             deltas_markdown(result), {"variant": result.variant, **eff.summary()})
