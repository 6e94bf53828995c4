"""The compare tabs without gradio: which block of each variant a shared selector points at,
gate statistics along a shared depth axis and the comparison's summary ("Compare variants"),
and the images' channel-profile similarity ("Compare images").

What the tabs draw at the size they are shown at is :mod:`attnviz.app_compare_views`'s.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import render
from .app_logic import save_png, stage_key, summary
from .inspection import BlockResult, Inspection
from .models import variants


# ----------------------------------------------------------------------------------------------
# compare variants: one shared block selector over variants with different blocks


_INDEX_RE = re.compile(r"\.(\d+)$")


def _slot_order(b: BlockResult, position: int) -> tuple[int, int, int]:
    m = _INDEX_RE.search(b.name)
    return (stage_key(b), int(m.group(1)) if m else 10**6, position)


def shared_slots(results: Mapping[str, Inspection]) -> list[tuple[str, int | None]]:
    """The depth positions of a comparison, as ``(block name, stage)``, shallow to deep.

    Positions are the per-residual-block names (``layer3.4``) of the variants that have them;
    blocks between stages (BAM's ``bam3``) are placed at the last position of their stage
    (see :func:`block_at`). Only when no variant has per-block attention are BAM's names used.
    """
    per_block = [r for r in results.values() if any(b.kind != "bam" for b in r.blocks)]
    pool = per_block or list(results.values())
    seen: dict[str, tuple[tuple[int, int, int], int | None]] = {}
    for r in pool:
        for i, b in enumerate(r.blocks):
            if b.name not in seen:
                seen[b.name] = (_slot_order(b, i), b.stage)
    return [(name, stage) for name, (_, stage) in sorted(seen.items(), key=lambda kv: kv[1][0])]


def block_at(result: Inspection, slot: str | None, slots: Sequence[tuple[str, int | None]]) -> BlockResult | None:
    """The block of ``result`` a shared selector value points at: the block of that name, else
    the deepest block of the same stage; ``slot`` empty: the variant's deepest block."""
    if not result.blocks:
        return None
    if not slot:
        return result.blocks[-1]
    for b in result.blocks:
        if b.name == slot:
            return b
    stage = dict(slots).get(slot)
    same = [b for b in result.blocks if b.stage is not None and b.stage == stage]
    return same[-1] if same else None


def _slot_index(result: Inspection, slots: Sequence[tuple[str, int | None]]) -> dict[str, int]:
    """Where each block of ``result`` sits on the shared depth axis."""
    index = {name: i for i, (name, _) in enumerate(slots)}
    out: dict[str, int] = {}
    for b in result.blocks:
        if b.name in index:
            out[b.name] = index[b.name]
            continue
        same_stage = [i for i, (_, st) in enumerate(slots) if st is not None and st == b.stage]
        if same_stage:
            out[b.name] = same_stage[-1]
    return out


def compare_stats_chart(results: Mapping[str, Inspection], slots: Sequence[tuple[str, int | None]]) -> Image.Image:
    """Mean, std and entropy of the channel gates along the shared depth axis, one line per
    variant (three charts stacked)."""
    labels = [name for name, _ in slots] or ["-"]
    charts = []
    for stat, title in (("mean", "mean channel weight"), ("std", "std of channel weights"),
                        ("entropy", "entropy of channel weights (normalised)")):
        series: dict[str, list[float]] = {}
        for name, r in results.items():
            pos = _slot_index(r, slots)
            vals = [math.nan] * len(labels)
            for b in r.channel_blocks:
                if b.name in pos:
                    vals[pos[b.name]] = float(getattr(b.channel_stats, stat))
            if any(np.isfinite(vals)):
                series[name] = vals
        if not series:
            series = {"no channel attention": [math.nan] * len(labels)}
        charts.append(render.stats_along_depth(series, title=title, labels=labels, size=(720, 260)))
    return render.stack_vertical(charts, gap=6)


def compare_summary(results: Mapping[str, Inspection], slots: Sequence[tuple[str, int | None]],
                    slot: str | None) -> dict[str, Any]:
    top1 = {name: r.predictions[0].label for name, r in results.items() if r.predictions}
    classes_alike = len({tuple(r.probs.shape) for r in results.values()}) == 1 and len(
        {variants()[n].class_names for n in results if n in variants()}) <= 1
    out_results = []
    for name, r in results.items():
        s = summary(r)
        b = block_at(r, slot, slots)
        s["selected_block"] = None if b is None else b.name
        out_results.append(s)
    return {
        "variants": list(results),
        "agree": len(set(top1.values())) == 1,
        "same_label_set": classes_alike,
        "top1": top1,
        "slots": [name for name, _ in slots],
        "selected_slot": slot or "",
        "results": out_results,
    }


def agreement_markdown(results: Mapping[str, Inspection]) -> str:
    top1 = {name: r.predictions[0] for name, r in results.items() if r.predictions}
    labels = {p.label for p in top1.values()}
    rows = ", ".join(f"`{n}`: {p.label} ({100 * p.probability:.1f}%)" for n, p in top1.items())
    if len(labels) == 1:
        return f"✓ **All {len(top1)} variants agree** on the top-1 prediction: **{next(iter(labels))}**.  \n{rows}"
    return f"⚠️ **The variants disagree** ({len(labels)} different top-1 predictions).  \n{rows}"


# ----------------------------------------------------------------------------------------------
# compare images: channel-weight profiles per block and their similarity


def channel_matrix(results: Sequence[Inspection]) -> dict[str, np.ndarray]:
    """Per channel-attention block, the images' gate vectors stacked: ``[N, C]``."""
    if not results:
        return {}
    names = [b.name for b in results[0].channel_blocks]
    return {n: np.stack([r.block(n).channel.astype(np.float64) for r in results]) for n in names}


def _pairwise_cosine(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    unit = np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)
    return np.clip(unit @ unit.T, -1.0, 1.0)


def profile_similarity(results: Sequence[Inspection],
                       mats: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """Per channel-attention block (shallow to deep): cosine similarity of the images' channel
    weights (all pairs: mean, min, full matrix) and the same after centring each vector on its
    mean (Pearson correlation, which sigmoid gates' common offset does not inflate). ``mats``:
    :func:`channel_matrix` of ``results``, when the caller has it already."""
    if not results:
        return []
    mats = channel_matrix(results) if mats is None else mats
    n = len(results)
    iu = np.triu_indices(n, k=1)
    out = []
    for b in results[0].channel_blocks:
        v = mats[b.name]
        cos = _pairwise_cosine(v)
        cen = _pairwise_cosine(v - v.mean(axis=1, keepdims=True))
        pairs, cpairs = (cos[iu], cen[iu]) if n > 1 else (np.ones(1), np.ones(1))
        out.append({
            "block": b.name, "kind": b.kind, "stage": b.stage, "channels": int(v.shape[1]),
            "cosine_mean": float(pairs.mean()), "cosine_min": float(pairs.min()),
            "centered_cosine_mean": float(cpairs.mean()),
            "cosine_matrix": np.round(cos, 6).tolist(),
        })
    return out


def similarity_chart(sim: Sequence[Mapping[str, Any]], variant: str) -> Image.Image:
    labels = [s["block"] for s in sim] or ["-"]
    series = {
        "cosine (mean over pairs)": [s["cosine_mean"] for s in sim],
        "cosine (min over pairs)": [s["cosine_min"] for s in sim],
        "centred cosine (mean)": [s["centered_cosine_mean"] for s in sim],
    }
    return render.stats_along_depth(series, title=f"{variant}: similarity of the images' channel weights per block",
                                    labels=labels, size=(720, 300))


def thumbnail(result: Inspection, name: str, folder: Path, index: int) -> tuple[str, str]:
    p = result.predictions[0]
    path = save_png(result.view(224), folder / f"image{index}.png")
    return path, f"{name}: {p.label} ({100 * p.probability:.1f}%)"
