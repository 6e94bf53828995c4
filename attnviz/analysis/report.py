"""The one-page Markdown report of an :class:`Analysis`, with its PNG figures beside it."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .analysis import Analysis
from .class_heatmap import class_profiles
from .plots import excitation_figure, save_png, saturation_figure, spatial_figure, specificity_figure

#: Skipped files listed one by one in the report (and on stderr); the rest are counted.
LISTED_SKIPPED = 100
FILES = {"analysis": "analysis.npz", "summary": "summary.json", "report": "report.md",
         "excitation": "excitation.png", "specificity": "specificity.png", "saturation": "saturation.png",
         "spatial": "spatial.png", "class_profiles": "class_profiles.png"}


def _fmt(v: float | None, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def markdown(analysis: Analysis, figures: dict[str, str], command: str | None = None) -> str:
    """The report text; ``figures`` maps figure kind to its file name beside the report."""
    a = analysis
    acc = a.accuracy()
    lines = [
        f"# Attention analysis: {a.model}", "",
        f"- model: `{a.model}` ({a.weights})",
        f"- source: {a.source}",
        f"- images analysed: {a.n_images} of {a.n_items} items"
        + (f", {len(a.skipped)} skipped (listed below)" if a.skipped else "")
        + ("" if a.complete else " — **incomplete** (resume it to finish)"),
        f"- grouped by: {'label' if a.grouping == 'label' else 'top-1 prediction (unlabelled source)'}, "
        f"{int((a.class_counts() > 0).sum())} classes with images",
        f"- top-1 accuracy: {_fmt(acc) if acc is not None else 'n/a (labels are not the model classes)'}",
        f"- time: {a.elapsed_s:.1f} s",
    ]
    if command:
        lines += ["", "```", command, "```"]
    spec, dist, sat = a.specificity(), a.profile_distance(), a.saturation()
    lines += ["", "| block | kind | stage | channels | η² | 1 − cos | saturated |", "|---|---|---|---|---|---|---|"]
    for b in a.blocks:
        lines.append(f"| {b.name} | {b.kind} | {b.stage if b.stage is not None else '–'} | "
                     f"{b.channels or '–'} | {_fmt(spec.get(b.name))} | {_fmt(dist.get(b.name))} | "
                     f"{_fmt(sat.get(b.name))} |")
    lines += ["", f"η²: the share of channel-gate variance between class means (0: class-agnostic, "
                  f"1: the class decides every gate); if gates ignored the class it would be about "
                  f"{_fmt(a.specificity_baseline())} here. 1 − cos: mean pairwise cosine distance of "
                  "class mean profiles. saturated: share of gate values < 0.01 or > 0.99.", ""]
    for kind in ("excitation", "class_profiles", "specificity", "saturation", "spatial"):
        if kind in figures:
            lines.append(f"![{kind}]({figures[kind]})")
    if a.skipped:
        lines += ["", "## Skipped files", ""] + [f"- `{f}`: {e}" for f, e in a.skipped[:LISTED_SKIPPED]]
        if len(a.skipped) > LISTED_SKIPPED:
            lines.append(f"- … and {len(a.skipped) - LISTED_SKIPPED} more (all are listed in {FILES['summary']})")
    return "\n".join(lines) + "\n"


def write_outputs(analysis: Analysis, out: str | os.PathLike, command: str | None = None) -> dict[str, Path]:
    """Write the analysis file, summary.json, the figures and report.md into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"analysis": analysis.save(out / FILES["analysis"])}
    summary = analysis.summary()
    (out / FILES["summary"]).write_text(json.dumps(summary, indent=2, allow_nan=False))
    paths["summary"] = out / FILES["summary"]
    figures: dict[str, str] = {}
    if analysis.channel_blocks:
        for kind, draw in (("excitation", excitation_figure), ("specificity", specificity_figure)):
            paths[kind] = save_png(draw(analysis), out / FILES[kind])
            figures[kind] = FILES[kind]
        if analysis.n_images:  # the deepest block's class profiles, as the app's heat map
            image = class_profiles(analysis, analysis.channel_blocks[-1].name)
            paths["class_profiles"] = out / FILES["class_profiles"]
            image.save(paths["class_profiles"], format="PNG", compress_level=1)
            figures["class_profiles"] = FILES["class_profiles"]
    if analysis.blocks:
        paths["saturation"] = save_png(saturation_figure(analysis), out / FILES["saturation"])
        figures["saturation"] = FILES["saturation"]
        spatial = [b.name for b in analysis.blocks if b.spatial_sum is not None]
        if spatial and analysis.n_images:
            paths["spatial"] = save_png(spatial_figure(analysis, spatial[-1]), out / FILES["spatial"])
            figures["spatial"] = FILES["spatial"]
    # File names that are not UTF-8 are written as \xNN escapes rather than failing the report.
    text = markdown(analysis, figures, command).encode("utf-8", "surrogateescape")
    (out / FILES["report"]).write_text(text.decode("utf-8", "backslashreplace"), encoding="utf-8")
    paths["report"] = out / FILES["report"]
    return paths
