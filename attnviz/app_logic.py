"""UI-free helpers of the web app (``app.py``): what to show for inspections, where its output
files live and which thread runs its torch work; no gradio here.

Everything model-related goes through the library (:func:`attnviz.inspect`,
:mod:`attnviz.export`, :mod:`attnviz.render`); this module only arranges results for display:
variant descriptions, captions, the views and downloads of one inspection, and the examples.
The compare tabs' own logic is :mod:`attnviz.app_compare`'s.
"""
from __future__ import annotations

import collections
import contextvars
import functools
import math
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from . import export, render
from .inspection import BlockResult, Inspection
from .models import Variant, variants
from .models import weights as W
from .models.loading import DEFAULT_BUILTIN

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
ACCEPTED_TEXT = "PNG, JPEG, WebP, GIF, BMP or TIFF images"
VIEW_SIZE = 448
MAX_COMPARE_VARIANTS = 5
MAX_COMPARE_IMAGES = 8

T = TypeVar("T")


# ----------------------------------------------------------------------------------------------
# variants and examples


def builtin_default() -> str | None:
    """The built-in variant examples use (never one that needs ImageNet weights)."""
    reg = variants()
    if DEFAULT_BUILTIN in reg:
        return DEFAULT_BUILTIN
    return next((v.name for v in reg.values() if v.builtin), None)


def builtin_names() -> list[str]:
    """Built-in variants, the default one first."""
    first = builtin_default()
    names = [v.name for v in variants().values() if v.builtin]
    return sorted(names, key=lambda n: (n != first, n))


def is_local(v: Variant) -> bool:
    return W.is_available(v.weights)


#: How the app names where a variant comes from (:attr:`attnviz.models.Variant.origin`).
ORIGIN_LABELS = {"imagenet": "ImageNet", "builtin": "built-in", "folder": "your model", "file": "your checkpoint",
                 "timm": "timm", "custom": "custom"}


def variant_label(v: Variant) -> str:
    """Dropdown label: name, block, family and whether the weights are on this machine."""
    block = v.block.upper() if v.block not in ("none", "spatial") else ("plain" if v.block == "none" else v.block)
    family = ORIGIN_LABELS.get(v.origin, v.origin)
    mark = "" if is_local(v) else " · ⬇ not on this machine (downloads on first use)"
    return f"{v.name} — {block} · {family}{mark}"


def variant_choices() -> list[tuple[str, str]]:
    return [(variant_label(v), v.name) for v in variants().values()]


def top1_text(v: Variant) -> str:
    t = v.weights.reported_top1
    if t is None:
        return "n/a"
    if v.origin == "builtin":  # checkpoints/ (or $ATTNVIZ_CHECKPOINTS): the training run's own validation
        where = "synthetic-shapes validation" if "synthetic shapes" in v.description else "its own validation set"
    else:
        where = "ImageNet val, as reported" if v.origin == "imagenet" else "as reported"
    return f"{t:.1f}% ({where})"


def variant_markdown(name: str | None) -> str:
    """Source, licence, reported top-1 and local availability of one variant."""
    if not name:
        return ""
    if name.startswith("timm:"):
        return (f"**{name}** — any timm model by name: its attention modules (SE, ECA, CBAM, "
                "selective kernel, split attention, global context, …) are found automatically; "
                "its ImageNet weights download once into the Hugging Face cache (see docs/MODELS.md).")
    try:
        v = variants()[name]
    except KeyError:
        return f"Unknown variant `{name}`: choose one of the list, or type timm:NAME."
    where = "✓ weights on this machine" if is_local(v) else (
        "⬇ weights not on this machine: they download on first use"
        + (f" (or: {v.weights.manual})" if v.weights.manual else ""))
    return (f"**{v.name}** — {v.description}  \n"
            f"Weights: {v.weights.description} · licence: {v.weights.license} · "
            f"reported top-1: {top1_text(v)} · {v.input_size}px input · {where}")


def models_table_markdown() -> str:
    rows = ["| variant | block | weights source | licence | reported top-1 | on this machine |",
            "|---|---|---|---|---|---|"]
    for v in variants().values():
        rows.append(f"| `{v.name}` | {v.block} | {v.weights.description} | {v.weights.license} | "
                    f"{top1_text(v)} | {'yes' if is_local(v) else 'no — downloads on first use'} |")
    return "\n".join(rows)


def example_images(folder: str | Path) -> list[Path]:
    """Image files of ``folder`` (sorted; none when it is missing or empty)."""
    p = Path(folder)
    if not p.is_dir():
        return []
    return sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def compare_examples(examples: Sequence[Path]) -> list[str] | None:
    """Example images for "Compare images": the synthetic ones (the built-in models' classes) first."""
    ordered = sorted(examples, key=lambda p: not p.name.startswith("synthetic"))
    return [str(p) for p in ordered[:MAX_COMPARE_IMAGES]] or None


def weights_help(name: str, error: BaseException) -> str:
    """The message shown when a variant's weights cannot be had."""
    try:
        v = variants()[name]
    except KeyError:
        return f"unknown variant {name!r}; available: {', '.join(variants())}"
    msg = str(error).strip().rstrip(".")
    if name not in msg:
        msg = f"{name} ({v.weights.description}): {msg}"
    if v.weights.manual and v.weights.manual not in msg:
        msg += f". {v.weights.manual}"
    return (f"{msg}.\nIn this app, use a local checkpoint file with "
            f"`python app.py --weights {name}=FILE`, or choose a built-in variant (they work offline).")


# ----------------------------------------------------------------------------------------------
# where the app's output files live


class ScratchFolders:
    """One fresh folder per request under ``root``; folders older than ``max_age_s`` are removed,
    and beyond ``max_folders`` made by this process the oldest one goes, whatever its age, so
    the scratch disk stays bounded however fast requests come.

    The age sweep runs at most once every ``sweep_every_s`` (by one request at a time): it stats
    every folder, ~20 ms for the 5000 folders an hour of 1.4 requests/s leaves, too much for every
    request. The count bound costs nothing: the folders are remembered in the order made.
    """

    def __init__(self, root: Path, *, max_age_s: float = 3600.0, sweep_every_s: float = 60.0,
                 max_folders: int | None = None, clock: Callable[[], float] = time.time) -> None:
        self.root, self.max_age_s, self.sweep_every_s, self._clock = Path(root), max_age_s, sweep_every_s, clock
        self.max_folders = max_folders
        self._last_sweep = -math.inf
        self._sweeping = threading.Lock()
        self._made: collections.deque[Path] = collections.deque()
        self._made_lock = threading.Lock()

    def new(self) -> Path:
        now = self._clock()
        if now - self._last_sweep >= self.sweep_every_s and self._sweeping.acquire(blocking=False):
            try:
                self._last_sweep = now
                self._sweep(now)
            finally:
                self._sweeping.release()
        folder = self.root / uuid.uuid4().hex
        folder.mkdir(parents=True)
        if self.max_folders:
            with self._made_lock:
                self._made.append(folder)
                oldest = [self._made.popleft() for _ in range(len(self._made) - self.max_folders)]
            for old in oldest:
                shutil.rmtree(old, ignore_errors=True)
        return folder

    def _sweep(self, now: float) -> None:
        for old in self.root.iterdir():
            try:
                if now - old.stat().st_mtime > self.max_age_s:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:  # removed meanwhile by another process or an earlier sweep
                pass


# ----------------------------------------------------------------------------------------------
# where the app's torch work runs


class TorchThread:
    """Runs every torch call of a server process on one long-lived thread.

    Why: torch's OpenMP runtime (libgomp) gives every thread that runs a parallel op its own
    team of worker threads. Once the teams together hold more threads than there are CPUs,
    libgomp stops letting idle workers spin and every parallel region pays a sleep and a wake-up.
    A web server runs each event on whichever worker thread is free, so the second thread that
    ever ran a model made every forward slower: on 2 cores a ResNet-50 forward took 54.5-54.8 ms
    on the only thread that ran torch and 70.7-72.6 ms on a second long-lived one (``python
    bench/omp_threads.py``). One thread keeps one team, whichever server thread a request came in on.

    Calls block until done and return (or raise) exactly what ``fn`` does; the caller's context
    variables travel along (gradio finds the event's progress bar and request through them).
    A call made on the torch thread itself runs directly, so wrapped functions may nest.
    """

    def __init__(self, name: str = "attnviz-torch") -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._local = threading.local()

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        if getattr(self._local, "inside", False):
            return fn(*args, **kwargs)
        return self._pool.submit(contextvars.copy_context().run, self._inside, fn, *args, **kwargs).result()

    def _inside(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self._local.inside = True
        try:
            return fn(*args, **kwargs)
        finally:
            self._local.inside = False

    def runs(self, fn: Callable[..., T]) -> Callable[..., T]:
        """Decorator: every call of ``fn`` runs on this thread."""
        @functools.wraps(fn)
        def on_torch_thread(*args: Any, **kwargs: Any) -> T:
            return self.call(fn, *args, **kwargs)
        return on_torch_thread


# ----------------------------------------------------------------------------------------------
# one inspection


def block_caption(b: BlockResult) -> str:
    return f"{b.name} ({b.kind})"


def stage_key(b: BlockResult) -> int:
    return b.stage if b.stage is not None else 10**6


@dataclass
class InspectViews:
    """The images the app shows for one result, as files in one folder, rendered with one
    opacity / colormap. Overlays are JPEG (fast to encode, small to send); charts are PNG. Only
    what is shown is rendered: the downloads (:func:`write_downloads`) are made separately."""

    input: str  # the model's view
    gradcam: str | None
    spatial: list[tuple[str, str]]  # (path, caption), grouped by stage
    overview: str
    stats: str | None


def save_png(image: Image.Image, path: Path) -> str:
    path.write_bytes(render.to_png_bytes(image))
    return str(path)


def spatial_caption(b: BlockResult) -> str:
    return f"stage {b.stage} · {block_caption(b)}" if b.stage is not None else block_caption(b)


def inspect_views(result: Inspection, folder: Path, *, alpha: float = 0.5, colormap: str = "jet",
                  spatial_blocks: Sequence[str] | None = None, charts: bool = True) -> InspectViews:
    """Render the views of ``result`` into ``folder``: the model's view, Grad-CAM and the spatial
    maps (only ``spatial_blocks`` when given) as JPEG; with ``charts`` the depth overview and the
    gate statistics along depth as PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    pending = export.submit_jpegs(export.overlay_jobs(result, colormap=colormap, alpha=alpha, view_size=VIEW_SIZE,
                                                      spatial_blocks=spatial_blocks))
    overview = stats = ""
    if charts:  # drawn here while the workers draw the overlays (charts use fonts: one thread)
        overview = save_png(export.depth_overview(result), folder / "depth_overview.png")
        stats_im = depth_stats_chart(result)
        stats = None if stats_im is None else save_png(stats_im, folder / "depth_stats.png")
    paths: dict[str, str] = {}
    for name, future in pending.items():
        path = folder / Path(name).with_suffix(".jpg")
        path.write_bytes(future.result())
        paths[name] = str(path)
    shown = sorted((b for b in result.spatial_blocks if f"spatial_{b.name}.png" in paths), key=stage_key)
    spatial = [(paths[f"spatial_{b.name}.png"], spatial_caption(b)) for b in shown]  # stable: depth order in a stage
    return InspectViews(input=paths["input.png"], gradcam=paths.get("gradcam.png"),
                        spatial=spatial, overview=overview, stats=stats)


def chart_blocks(result: Inspection) -> list[str]:
    """Blocks that have a chart of their own, in model order: a channel gate's bars, or the
    branch weights of selection attention (SK, ResNeSt)."""
    return [b.name for b in result.blocks if b.channel is not None or b.branches is not None]


def block_chart(result: Inspection, block: str | None, folder: Path) -> str | None:
    """The chart of ``block`` as a PNG file: its channel-weight bars, or for selection attention
    its branch weights (None: no such block)."""
    if block not in chart_blocks(result):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    if result.block(block).channel is None:
        return save_png(export.branch_chart(result, block), folder / f"branches_{safe_stem(block)}.png")
    return save_png(export.channel_chart(result, block), folder / f"channels_{safe_stem(block)}.png")


def depth_stats_chart(result: Inspection) -> Image.Image | None:
    """Per-block mean / std / entropy of the channel gates along depth."""
    blocks = result.channel_blocks
    if not blocks:
        return None
    series = {
        "mean": [b.channel_stats.mean for b in blocks],
        "std": [b.channel_stats.std for b in blocks],
        "entropy (normalised)": [b.channel_stats.entropy for b in blocks],
    }
    return render.stats_along_depth(series, title=f"{result.variant}: channel-gate statistics along depth",
                                    labels=[b.name for b in blocks], size=(640, 300))


def summary(result: Inspection) -> dict[str, Any]:
    """``Inspection.summary()`` plus what an API client needs to read the returned images."""
    s = result.summary()
    v = variants().get(result.variant)
    view = result.view(VIEW_SIZE)
    s["num_classes"] = int(result.probs.size)
    s["total_probability"] = float(np.asarray(result.probs, dtype=np.float64).sum())
    s["view_size"] = list(view.size)
    if v is not None:
        s["weights_source"] = {"description": v.weights.description, "license": v.weights.license,
                               "reported_top1": v.weights.reported_top1}
    s["images"] = {
        "gradcam": None if result.gradcam is None else "gradcam overlay",
        "spatial_maps": [b.name for b in sorted(result.spatial_blocks, key=stage_key)],
        "channel_charts": [b.name for b in result.channel_blocks],
    }
    return s


def label_dict(result: Inspection) -> dict[str, float]:
    return {p.label: float(p.probability) for p in result.predictions}


# ----------------------------------------------------------------------------------------------
# downloads


def write_downloads(result: Inspection, folder: Path, stem: str, *, alpha: float = 0.5,
                    colormap: str = "jet") -> tuple[list[tuple[str, str]], list[str]]:
    """The CLI's files for one inspection: figures zip (lossless PNGs, as ``attnviz inspect``
    writes them), JSON summary, NPZ of raw arrays. Also returns every block's channel chart,
    written from the same encoded bytes, as ``(path, caption)``."""
    base = f"{safe_stem(stem)}_{result.variant}"
    folder.mkdir(parents=True, exist_ok=True)
    pngs = export.png_bytes(export.figures(result, colormap=colormap, alpha=alpha, view_size=VIEW_SIZE))
    charts = []
    for b in result.channel_blocks:
        path = folder / f"channels_{safe_stem(b.name)}.png"
        path.write_bytes(pngs[f"channels_{b.name}.png"])
        charts.append((str(path), block_caption(b)))
    paths = [folder / f"{base}_figures.zip", folder / f"{base}.json", folder / f"{base}.npz"]
    paths[0].write_bytes(export.zip_bytes(pngs))
    paths[1].write_text(export.summary_json(result))
    paths[2].write_bytes(export.npz_bytes(result))
    return charts, [str(p) for p in paths]


def safe_stem(name: str | None) -> str:
    stem = Path(str(name or "image")).stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"
    return stem[:60]
