"""Turn an :class:`~attnviz.inspection.Inspection` into files: JSON summary, NPZ, PNG figures.

The CLI and the app share these, so a download from the app and a CLI run give the same files.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from . import render
from .inspection import Inspection

NPZ_KEYS_DOC = (
    "logits [K], probs [K], channel/<block> [C] channel-gate weights, "
    "spatial/<block> [H, W] spatial-gate map, branches/<block> [K, C] selection weights over K kernel "
    "branches (SelectiveKernel, SplitAttn), gradcam [h, w] in [0, 1]"
)


def overlay_jobs(
    result: Inspection,
    *,
    colormap: str = "jet",
    alpha: float = 0.5,
    normalize: Literal["minmax", "none"] = "minmax",
    view_size: int = 448,
    spatial_blocks: Sequence[str] | None = None,
) -> dict[str, Callable[[], Image.Image]]:
    """The image figures by file name — the model's view, Grad-CAM and one overlay per spatial
    gate (only those named in ``spatial_blocks``, when given) — as calls not yet made, so they
    can run in parallel (overlays use numpy and PIL's C core, no fonts: safe in worker threads)."""
    view = result.view(view_size)  # drawn here, once, before any worker shares it
    jobs: dict[str, Callable[[], Image.Image]] = {"input.png": lambda: view}
    if result.gradcam is not None:
        jobs["gradcam.png"] = partial(render.overlay, view, result.gradcam, alpha=alpha, colormap=colormap,
                                      normalize="none")
    before = None if result.intervention is None else result.intervention.before
    if before is not None and before.gradcam is not None:  # gradcam.png is then the intervened one
        jobs["gradcam_before.png"] = partial(render.overlay, view, before.gradcam, alpha=alpha,
                                             colormap=colormap, normalize="none")
    for b in result.spatial_blocks:
        if spatial_blocks is None or b.name in spatial_blocks:
            jobs[f"spatial_{b.name}.png"] = partial(render.overlay, view, b.spatial, alpha=alpha,
                                                    colormap=colormap, normalize=normalize)
    return jobs


def _channel_chart_args(result: Inspection, block: str) -> tuple[np.ndarray, str]:
    b = result.block(block)
    if b.channel is None:
        raise ValueError(f"block {block!r} has no channel gate")
    return b.channel, f"{result.variant} · {b.name} ({b.kind}) · {b.channel.size} channels"


def channel_chart(result: Inspection, block: str) -> Image.Image:
    """The bar chart of one block's channel gate (``channels_<block>.png`` of :func:`figures`)."""
    weights, title = _channel_chart_args(result, block)
    return render.channel_bar_chart(weights, title=title)


def channel_chart_layout(result: Inspection, block: str) -> render.ChannelBarLayout:
    """Where :func:`channel_chart` puts each channel: ``.channel_at(x, y)`` of a pixel of it."""
    weights, title = _channel_chart_args(result, block)
    return render.channel_bar_layout(weights, title=title)


def branch_chart(result: Inspection, block: str) -> Image.Image:
    """Selection weights of one SK / ResNeSt block (``branches_<block>.png`` of :func:`figures`):
    each channel's split between the kernel branches, then one bar chart per branch."""
    b = result.block(block)
    if b.branches is None:
        raise ValueError(f"block {block!r} has no branch weights")
    k, c = b.branches.shape
    return render.branch_figure(b.branches, title=f"{result.variant} · {b.name} ({b.kind}) · {k} branches × {c} channels")


def depth_overview(result: Inspection) -> Image.Image:
    """Every channel gate at a glance (blocks × channels), ``depth_overview.png`` of :func:`figures`."""
    return render.depth_overview([(b.name, b.channel) for b in result.channel_blocks])


def chart_figures(result: Inspection) -> dict[str, Image.Image]:
    """The chart figures by file name: one bar chart per channel gate, the depth overview, and
    the branch weights of each selection-attention block."""
    channel_blocks = result.channel_blocks
    out = {f"channels_{b.name}.png": channel_chart(result, b.name) for b in channel_blocks}
    if channel_blocks:
        out["depth_overview.png"] = depth_overview(result)
    out.update({f"branches_{b.name}.png": branch_chart(result, b.name) for b in result.branch_blocks})
    return out


def figures(
    result: Inspection,
    *,
    colormap: str = "jet",
    alpha: float = 0.5,
    normalize: Literal["minmax", "none"] = "minmax",
    view_size: int = 448,
) -> dict[str, Image.Image]:
    """Every figure of one inspection by file name: the model's view, Grad-CAM, one overlay per
    spatial gate, one bar chart per channel gate and the depth overview."""
    jobs = overlay_jobs(result, colormap=colormap, alpha=alpha, normalize=normalize, view_size=view_size)
    overlays = {name: _WORKERS.submit(draw) for name, draw in jobs.items()}
    charts = chart_figures(result)  # here, while the workers draw the overlays (fonts: one thread)
    return {**{name: future.result() for name, future in overlays.items()}, **charts}


def summary_json(result: Inspection) -> str:
    return json.dumps(result.summary(), indent=2)


def npz_bytes(result: Inspection) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **result.arrays())
    return buf.getvalue()


# Overlays (numpy, PIL's C core) and PNG / JPEG encoding release the GIL for most of their
# time, so the figures of one inspection are drawn and encoded in parallel in these threads.
# Charts are not: they draw text with shared font objects. Callers never run in these threads,
# so waiting on their results cannot deadlock.
_WORKERS = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="attnviz-figures")


def png_bytes(images: dict[str, Image.Image]) -> dict[str, bytes]:
    """Every figure encoded as PNG, in parallel; same keys and order."""
    return dict(zip(images, _WORKERS.map(render.to_png_bytes, images.values())))


def submit_jpegs(jobs: dict[str, Callable[[], Image.Image]]) -> dict[str, Future[bytes]]:
    """Draw and JPEG-encode (:func:`attnviz.render.to_jpeg_bytes`) every job in the worker
    threads; the caller may do other work (e.g. charts, which use fonts) before the results."""
    return {name: _WORKERS.submit(lambda draw=draw: render.to_jpeg_bytes(draw())) for name, draw in jobs.items()}


def zip_bytes(files: dict[str, bytes]) -> bytes:
    """Already-encoded files in one uncompressed zip (PNGs do not compress further)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def write_inspection(
    result: Inspection,
    out_dir: str | Path,
    stem: str,
    *,
    with_figures: bool = True,
    colormap: str = "jet",
    alpha: float = 0.5,
) -> list[Path]:
    """Write ``<stem>.json``, ``<stem>.npz`` and, with figures, ``<stem>/<figure>.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / f"{stem}.json", out / f"{stem}.npz"]
    written[0].write_text(summary_json(result))
    written[1].write_bytes(npz_bytes(result))
    if with_figures:
        fig_dir = out / stem
        fig_dir.mkdir(exist_ok=True)
        for name, data in png_bytes(figures(result, colormap=colormap, alpha=alpha)).items():
            path = fig_dir / name
            path.write_bytes(data)
            written.append(path)
    return written
