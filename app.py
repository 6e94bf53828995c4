"""attnviz in the browser: see what SE / ECA / CBAM / BAM blocks inside ResNets do.

    python app.py                      # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT)
    python app.py --weights eca_resnet50=eca_resnet50_k3557.pth.tar

Three tabs: Inspect (one image, one variant), Compare variants (one image, 2–5 variants) and
Compare images (2–8 images, one variant). The UI only arranges what the library computes
(:func:`attnviz.inspect`, :mod:`attnviz.export`, :mod:`attnviz.render`, :mod:`attnviz.app_logic`);
no model is loaded before the first request. Named API endpoints: ``/inspect``, ``/compare``,
``/compare_images``, ``/analyze`` (the Dataset tab: gate statistics of a set of images; see
README, "HTTP API", and docs/ANALYSIS.md).
"""
from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from attnviz import app_logic as L
from attnviz import app_intervene as IV
from attnviz import app_drilldown as DD
from attnviz import app_dataset as D
from attnviz import app_compare_views as CV
from attnviz.analysis import Analysis
from attnviz.app_results import DEFAULT_MAX_MB, ResultCache, inspection_nbytes, light_inspection, trim_memory_every
from attnviz import render
from attnviz.cli import unique_stems
from attnviz.inspection import Inspection, inspect, inspect_batch
from attnviz.models import LoadedModel, WeightsError, default_variant_name, load_model
from attnviz.models import variants as all_variants
from attnviz.inputs import ImageLoadError, load_image
from attnviz.render import COLORMAPS

try:  # Hugging Face ZeroGPU: functions that use the GPU are decorated; a no-op elsewhere
    import spaces  # type: ignore[import-not-found]

    GPU = spaces.GPU
except ImportError:  # pragma: no cover - depends on the environment
    def GPU(fn=None, **_kwargs):
        return fn if fn is not None else (lambda f: f)

ROOT = Path(__file__).resolve().parent
ASSETS = Path(os.environ.get("ATTNVIZ_ASSETS", ROOT / "assets"))  # example images
MAX_FILE_SIZE = "200mb"  # a ResNet-50 checkpoint upload is ~100 MB; images are bounded by pixel count
WEIGHT_TYPES = [".safetensors", ".pth", ".pt", ".tar", ".zip", ".bin"]
MODEL = {"concurrency_id": "model", "concurrency_limit": 1}  # every event that runs a model
#: ``--weights NAME=FILE``: local checkpoints used instead of downloading.
WEIGHT_FILES: dict[str, str] = {}

try:
    DEFAULT_VARIANT = default_variant_name()
except WeightsError:  # no built-in checkpoint and no cached ImageNet weights: one downloads on demand
    DEFAULT_VARIANT = next(iter(all_variants()))
EXAMPLE_VARIANT = L.builtin_default()
EXAMPLES = L.example_images(ASSETS)
COMPARE_DEFAULT = (L.builtin_names() or [DEFAULT_VARIANT])[: L.MAX_COMPARE_VARIANTS]
DEFAULT_ALPHA, DEFAULT_CMAP = 0.5, "jet"

_SCRATCH = Path(tempfile.mkdtemp(prefix="attnviz-app-"))
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)
# Outputs are served from the scratch folder itself (per-request folders with random names,
# removed after an hour) instead of being hashed and copied into gradio's cache one by one.
gr.set_static_paths([_SCRATCH])
_scratch_dir = L.ScratchFolders(_SCRATCH).new
# Model loading and forwards run on one thread, whichever worker gradio runs the event on
# (torch's OpenMP slows every forward once several threads have run one: see L.TorchThread).
_torch_thread = L.TorchThread()


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        value = default if raw in (None, "") else float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise SystemExit(f"{name}={raw!r}: expected a number >= 0 (default {default:g})")
    return value


# Results between a request and its follow-ups (block chart, downloads, redraws, compare columns)
# live in one byte-bounded LRU for the whole process; a session's gr.State holds only a token into
# it and expires after STATE_TTL_S, when the scratch files it points at are swept too. Gradio keeps
# ~0.5 MB of its own per session (each component's config and last output): MAX_SESSIONS bounds
# that (the least recently active session is dropped first, and its follow-ups ask to run again).
STATE_TTL_S = 3600
MAX_SESSIONS = int(_env_number("ATTNVIZ_MAX_SESSIONS", 128)) or 1
# two kept results a session at most (its Inspect and its Compare tab)
RESULTS = ResultCache(int(_env_number("ATTNVIZ_RESULT_CACHE_MB", DEFAULT_MAX_MB) * 2**20), max_items=2 * MAX_SESSIONS)


# ----------------------------------------------------------------------------------------------
# input checks and model access


def image_input(**kwargs) -> gr.Image:
    """A filepath gr.Image (the file itself reaches the library, EXIF orientation included) whose
    unreadable uploads raise a gr.Error that says what is accepted: gradio's own preprocessing
    would otherwise fail with a bare PIL error before our function runs. (An instance-level
    override: subclassing a component makes gradio write a .pyi stub next to this file.)"""
    component = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard", "webcam"], **kwargs)
    base = component.preprocess

    def preprocess(payload):
        try:
            return base(payload)
        except gr.Error:
            raise
        except Exception as exc:
            path = getattr(payload, "path", None)
            name = getattr(payload, "orig_name", None) or (Path(path).name if path else "upload")
            if path:
                try:
                    load_image(path)
                except ImageLoadError as err:
                    raise gr.Error(f"{name}: {err.problem}; accepted: {err.accepted or L.ACCEPTED_TEXT}") from None
                except Exception:
                    pass
            raise gr.Error(f"{name}: not a readable image ({type(exc).__name__}); "
                           f"accepted: {L.ACCEPTED_TEXT}, up to {MAX_FILE_SIZE}") from None

    component.preprocess = preprocess  # type: ignore[method-assign]
    return component


def _image_path(image: Any) -> str:
    if image is None or (isinstance(image, str) and not image.strip()):
        raise gr.Error(f"No image: upload one ({L.ACCEPTED_TEXT}, up to {MAX_FILE_SIZE}), paste it, "
                       "use the webcam or pick an example.")
    return str(image)


@_torch_thread.runs
def _load(name: str | None, progress: gr.Progress | None = None, weights: str | None = None) -> LoadedModel:
    """The variant's model, loaded once per process (and device) by the library; ``weights`` is
    an uploaded checkpoint of that architecture (safetensors or a weights-only torch file)."""
    if not name:
        raise gr.Error("Choose a model variant.")
    reg = all_variants()
    if name not in reg:
        raise gr.Error(f"Unknown variant {name!r}; available: {', '.join(reg)}.")
    if weights:
        try:
            return load_model(name, weights=weights, progress=False)
        except (WeightsError, OSError) as exc:
            raise gr.Error(f"{Path(weights).name}: cannot be used as {name} weights: {exc}", duration=None) from None
    if progress is not None and name not in WEIGHT_FILES and not L.is_local(reg[name]):
        progress(0.05, desc=f"Downloading the weights of {name} (first use only)…")
    try:
        return load_model(name, weights=WEIGHT_FILES.get(name), progress=True, keep_loaded=True)
    except (WeightsError, OSError) as exc:
        raise gr.Error(L.weights_help(name, exc), duration=None) from None


def _image_error(exc: ImageLoadError) -> gr.Error:
    return gr.Error(str(exc) if exc.accepted else f"{exc}; accepted: {L.ACCEPTED_TEXT}")


@_torch_thread.runs
@GPU
def _inspect_one(path: str, loaded: LoadedModel) -> Inspection:
    try:
        return inspect(path, loaded)
    except ImageLoadError as exc:
        raise _image_error(exc) from None


@_torch_thread.runs
@GPU
def _inspect_images(paths: list[str], loaded: LoadedModel) -> list[Inspection]:
    try:
        return inspect_batch(paths, loaded, gradcam=False)
    except ImageLoadError as exc:
        raise _image_error(exc) from None


def _check_style(opacity: float | None, colormap: str | None) -> tuple[float, str]:
    alpha = DEFAULT_ALPHA if opacity is None else float(opacity)
    if not 0.0 <= alpha <= 1.0:
        raise gr.Error(f"opacity must be between 0 and 1, got {alpha}")
    cmap = colormap or DEFAULT_CMAP
    if cmap not in COLORMAPS:
        raise gr.Error(f"unknown colormap {cmap!r}; choose one of {', '.join(COLORMAPS)}")
    return alpha, cmap


def variant_info(name: str | None) -> str:
    """Source, licence, reported top-1 and availability of a variant (and its --weights file)."""
    text = L.variant_markdown(name)
    if name in WEIGHT_FILES:
        text += f"  \nThis app uses the local file `{Path(WEIGHT_FILES[name]).name}` for it (`--weights`)."
    return text


def _weights_in_use(r: Inspection) -> str:
    t = r.timings
    return (f"**{r.variant}** ran on **{r.device}** with weights: {r.weights} "
            f"({t.get('total_ms', 0):.0f} ms: forward {t.get('forward_ms', 0):.0f} ms, "
            f"Grad-CAM {t.get('gradcam_ms', 0):.0f} ms).")


def _pick_from_gallery(gallery: Any, names: list[str], name: str | None) -> Any:
    """The gallery image (path) belonging to block ``name``; galleries list blocks in ``names`` order."""
    if not gallery or not name or name not in names:
        return None
    i = names.index(name)
    if i >= len(gallery):
        return None
    item = gallery[i]
    return item[0] if isinstance(item, (list, tuple)) else item


# ----------------------------------------------------------------------------------------------
# Inspect


def _kept(state: dict | None, again: str | None = None, *, expected: bool = False) -> Any | None:
    """The kept result a follow-up works on, or None. When it was evicted or its state expired,
    say so, naming the button that runs it ``again`` (``expected``: the event can only come
    after a result was shown, e.g. a block choice). Follow-ups are queued events: Gradio shows a
    gr.Warning only from those."""
    value = RESULTS.get(state.get("key")) if state else None
    if value is None and again and (state or expected):
        gr.Warning(f"This result is no longer kept on the server (results are kept for up to "
                   f"{STATE_TTL_S // 60} minutes while memory allows): press {again} to run it again.")
    return value


def _forget(state: dict | None) -> None:
    """gr.State's delete_callback: an expired or closed session's result is dropped at once."""
    if state:
        RESULTS.drop(state.get("key"))


def _owner(request: gr.Request | None, tab: str) -> tuple[str, str] | None:
    """Whose result it is: one kept result per session and tab (None outside a request)."""
    session = getattr(request, "session_hash", None)
    return None if session is None else (session, tab)


def _inspect_outputs(result: Inspection, alpha: float, cmap: str, stem: str, request: gr.Request | None) -> tuple:
    folder = _scratch_dir()
    views = L.inspect_views(result, folder, alpha=alpha, colormap=cmap)
    kept = light_inspection(result, L.VIEW_SIZE)
    key = RESULTS.put(kept, inspection_nbytes(kept), owner=_owner(request, "inspect"))
    state = {"key": key, "stem": stem, "folder": folder, "style": (alpha, cmap)}
    return (L.summary(result), L.label_dict(result), views.gradcam, views.spatial, views.overview, views.stats, state)


def inspect_image(image, variant=DEFAULT_VARIANT, opacity=DEFAULT_ALPHA, colormap=DEFAULT_CMAP,
                  weights=None, progress=gr.Progress(track_tqdm=True), request: gr.Request = None):
    """Inspect one image with one variant (optionally with an uploaded checkpoint of that
    variant's architecture): top-5, Grad-CAM, every spatial map, the channel gates' depth
    overview and statistics, and the summary JSON (every block's gate statistics)."""
    path = _image_path(image)
    alpha, cmap = _check_style(opacity, colormap)
    loaded = _load(variant, progress, weights=weights)
    progress(0.7, desc=f"Running {loaded.name}…")
    result = _inspect_one(path, loaded)
    return _inspect_outputs(result, alpha, cmap, Path(path).name, request)


def inspect_example(image, variant=EXAMPLE_VARIANT, opacity=DEFAULT_ALPHA, colormap=DEFAULT_CMAP,
                    progress=gr.Progress(track_tqdm=True), request: gr.Request = None):
    """A clicked example: the built-in model's own weights, whatever checkpoint is uploaded."""
    return inspect_image(image, variant, opacity, colormap, None, progress, request)


def rerender_inspect(state, image, variant, opacity, colormap, weights=None, progress=gr.Progress(track_tqdm=True),
                     request: gr.Request = None):
    """New opacity / colormap: redraw the overlays from the kept Inspection, without running the model."""
    alpha, cmap = _check_style(opacity, colormap)
    result = _kept(state)
    if result is None:  # nothing shown yet, or no longer kept: run it (again) when there is an image
        if image is None:
            return (gr.skip(),) * 7
        return inspect_image(image, variant, alpha, cmap, weights, progress, request)
    folder = _scratch_dir()
    views = L.inspect_views(result, folder, alpha=alpha, colormap=cmap, charts=False)
    skip = gr.skip()
    return (skip, skip, views.gradcam, views.spatial, skip, skip,
            {**state, "folder": folder, "style": (alpha, cmap)})


def after_inspect(state, current):
    """UI-only follow-up: block selector, the selected block's chart, which weights ran."""
    result = _kept(state, "Inspect")
    if result is None:
        return gr.skip(), gr.skip(), gr.skip()
    names = [b.name for b in result.channel_blocks]
    block = current if current in names else (names[-1] if names else None)
    dd = gr.update(choices=names, value=block, interactive=bool(names),
                   info=None if names else "this model has no channel attention")
    return dd, L.block_chart(result, block, state["folder"]), _weights_in_use(result)


def select_chart(block, state):
    result = _kept(state, "Inspect", expected=True)
    if result is None:
        return gr.skip()
    return L.block_chart(result, block, state["folder"])


def inspect_files(image, variant=DEFAULT_VARIANT, opacity=DEFAULT_ALPHA, colormap=DEFAULT_CMAP,
                  weights=None, progress=gr.Progress(track_tqdm=True)):
    """The downloads of one inspection for API clients: figures zip (lossless PNGs), summary JSON
    and the raw arrays (NPZ), as ``attnviz inspect`` writes them."""
    path = _image_path(image)
    alpha, cmap = _check_style(opacity, colormap)
    result = _inspect_one(path, _load(variant, progress, weights=weights))
    return L.write_downloads(result, _scratch_dir(), Path(path).name, alpha=alpha, colormap=cmap)[1]


def inspect_downloads(state):
    """UI-only, after the views are shown: every block's chart and the downloads (figures zip
    with lossless PNGs, JSON, NPZ), in the opacity / colormap of the views."""
    result = _kept(state, "Inspect")
    if result is None:
        return gr.skip(), gr.skip()
    alpha, cmap = state["style"]
    return L.write_downloads(result, state["folder"] / "downloads", state["stem"], alpha=alpha, colormap=cmap)


# ----------------------------------------------------------------------------------------------
# Compare variants


def _column_views(results: dict[str, Inspection], slots, slot, alpha, cmap, folder: Path,
                  cache: dict | None = None) -> dict[str, tuple]:
    """Per variant: (views with the selected stage's spatial maps, selected block, its chart).
    ``cache`` keeps what was drawn for the same variant, block and style (the column fill after
    /compare reuses the API's images instead of drawing them again)."""
    out = {}
    for i, (name, r) in enumerate(results.items()):
        b = L.block_at(r, slot, slots)
        key = (name, None if b is None else b.name, alpha, cmap)
        if cache is not None and key in cache and Path(cache[key][0].input).exists():
            out[name] = cache[key]
            continue
        stage_blocks = [] if b is None or b.stage is None else [x.name for x in r.spatial_blocks if x.stage == b.stage]
        col = folder / str(i)
        views = L.inspect_views(r, col, alpha=alpha, colormap=cmap, spatial_blocks=stage_blocks)
        out[name] = (views, b, None if b is None else L.block_chart(r, b.name, col))
        if cache is not None:
            cache[key] = out[name]
    return out


def _slot_value(slot: str | None, slots) -> str:
    slot = slot or ""
    names = [n for n, _ in slots]
    if slot and slot not in names:
        raise gr.Error(f"unknown block {slot!r} for this comparison; choose one of: {', '.join(names)} "
                       "(or leave it empty for each variant's deepest block)")
    return slot


def compare_variants(image, variants=COMPARE_DEFAULT, block="", opacity=DEFAULT_ALPHA, colormap=DEFAULT_CMAP,
                     progress=gr.Progress(track_tqdm=True), request: gr.Request = None):
    """One image, 2–5 variants side by side."""
    path = _image_path(image)
    alpha, cmap = _check_style(opacity, colormap)
    names = list(dict.fromkeys(variants or []))
    if not 2 <= len(names) <= L.MAX_COMPARE_VARIANTS:
        raise gr.Error(f"Choose 2 to {L.MAX_COMPARE_VARIANTS} variants to compare (got {len(names)}).")
    results: dict[str, Inspection] = {}
    for i, name in enumerate(names):
        progress((i, len(names)), desc=f"{name}: loading and running ({i + 1}/{len(names)})…")
        results[name] = _inspect_one(path, _load(name, progress))
    slots = L.shared_slots(results)
    slot = _slot_value(block, slots)
    folder = _scratch_dir()
    cache: dict = {}
    cols = _column_views(results, slots, slot, alpha, cmap, folder, cache)
    gradcams, charts, overviews = [], [], []
    for i, (name, (views, b, chart)) in enumerate(cols.items()):
        p = results[name].predictions[0]
        gradcams.append((views.gradcam or views.input, f"{name}: {p.label} ({100 * p.probability:.1f}%)"))
        if chart is None:
            chart = L.save_png(render.depth_overview([]), folder / f"nochart{i}.png")
        charts.append((chart, f"{name}: {b.name if b is not None else 'no block'}"))
        overviews.append((views.overview, name))
    summary = L.compare_summary(results, slots, slot)
    stats = L.save_png(L.compare_stats_chart(results, slots), folder / "stats.png")
    light = {name: light_inspection(r, L.VIEW_SIZE) for name, r in results.items()}
    kept = {"results": light, "slots": slots, "views": cache}
    state = {"key": RESULTS.put(kept, sum(inspection_nbytes(r) for r in light.values()),
                                owner=_owner(request, "compare"))}
    return summary, stats, gradcams, charts, overviews, state


def fill_columns(state, slot, opacity, colormap):
    """UI-only: the side-by-side columns and the shared selector, from the kept results."""
    n_out = 2 + 7 * L.MAX_COMPARE_VARIANTS
    kept = _kept(state, "Compare")
    if kept is None:
        return (gr.skip(),) * n_out
    alpha, cmap = _check_style(opacity, colormap)
    results, slots = kept["results"], kept["slots"]
    slot = slot if slot in [n for n, _ in slots] else ""
    choices = [("deepest block of each variant", "")] + [
        (f"{n} (stage {st})" if st is not None else n, n) for n, st in slots]
    out: list[Any] = [gr.update(choices=choices, value=slot), L.agreement_markdown(results)]
    cache = kept["views"]
    if len(cache) > 4 * L.MAX_COMPARE_VARIANTS:  # one user trying many blocks / styles: keep it bounded
        cache.clear()
    folder = _scratch_dir()
    cols = _column_views(results, slots, slot, alpha, cmap, folder, cache)
    items = list(cols.items())
    width = CV.column_width(len(items))  # charts drawn for the width of their column: legible text
    for i in range(L.MAX_COMPARE_VARIANTS):
        if i >= len(items):
            out += [gr.update(visible=False)] + [None] * 6
            continue
        name, (views, b, chart) = items[i]
        r = results[name]
        if b is not None:
            selected = f"**{b.name}** ({b.kind})"
        else:
            selected = "none (no attention block in this stage)" if r.blocks else "none (no attention blocks: baseline)"
        head = f"### {name}\n{r.weights} · {r.device}  \nselected block: {selected}"
        # the spatial maps of the selected block's stage (all of a ResNet-50's would be 16 per column)
        stage = None if b is None else b.stage
        spatial = views.spatial
        chart = CV.column_chart(r, None if b is None else b.name, folder / f"col{i}", width)
        overview = CV.column_overview(r, folder / f"col{i}", width) if r.channel_blocks else None
        out += [gr.update(visible=True), head, L.label_dict(r), views.gradcam,
                gr.update(value=spatial, visible=bool(spatial), label=f"Spatial maps of stage {stage}"),
                gr.update(value=chart, visible=chart is not None),
                gr.update(value=overview, visible=overview is not None)]
    return tuple(out)


# ----------------------------------------------------------------------------------------------
# Compare images


def compare_images(images, variant=EXAMPLE_VARIANT or DEFAULT_VARIANT, progress=gr.Progress(track_tqdm=True),
                   request: gr.Request = None):
    """2–8 images on one variant: per-block channel-weight profiles and their similarity."""
    paths = [str(p) for p in (images or []) if p]
    if not 2 <= len(paths) <= L.MAX_COMPARE_IMAGES:
        raise gr.Error(f"Upload 2 to {L.MAX_COMPARE_IMAGES} images ({L.ACCEPTED_TEXT}) to compare "
                       f"(got {len(paths)}).")
    loaded = _load(variant, progress)
    progress(0.6, desc=f"Running {loaded.name} on {len(paths)} images…")
    results = _inspect_images(paths, loaded)
    if not results[0].channel_blocks:
        raise gr.Error(f"{loaded.name} has no channel attention; choose a variant with SE, ECA, CBAM or BAM blocks.")
    names = unique_stems([Path(p).name for p in paths])
    sim = L.profile_similarity(results)
    mats = L.channel_matrix(results)
    folder = _scratch_dir()
    profiles = [(L.save_png(CV.profile_view(mats[b.name], names, b.name, b.kind), folder / f"profile{i}.png"),
                 L.block_caption(b)) for i, b in enumerate(results[0].channel_blocks)]
    profiles_kept = CV.keep_profiles(names, {b.name: b.kind for b in results[0].channel_blocks}, mats)
    nbytes = sum(m.nbytes for m in profiles_kept["mats"].values())
    kept = {"key": RESULTS.put(profiles_kept, nbytes, owner=_owner(request, "compare_images"))}  # for the view control
    summary = {
        "variant": loaded.name, "weights": loaded.weights, "device": str(loaded.device),
        "images": [{"name": n, "predictions": [p.__dict__ for p in r.predictions]} for n, r in zip(names, results)],
        "blocks": [b.name for b in results[0].channel_blocks],
        "similarity": sim,
    }
    thumbs = [L.thumbnail(r, n, folder, i) for i, (n, r) in enumerate(zip(names, results))]
    sim_chart = L.save_png(L.similarity_chart(sim, loaded.name), folder / "similarity.png")
    return summary, sim_chart, profiles, thumbs, kept


def after_compare_images(summary, profiles, current, view, kept):
    if not summary:
        return gr.skip(), gr.skip()
    names = summary["blocks"]
    block = current if current in names else (names[-1] if names else None)
    return gr.update(choices=names, value=block), select_profile(block, view, kept, summary, profiles)


def select_profile(block, view, state, summary=None, profiles=None):
    """UI-only: the selected block's profiles in the chosen view, drawn from the kept matrices."""
    kept = _kept(state, "Compare images", expected=summary is None)
    if not kept or block not in kept["mats"]:
        return _pick_from_gallery(profiles, summary["blocks"], block) if summary and profiles else None
    image = CV.profile_view(kept["mats"][block], kept["names"], block, kept["kinds"][block],
                            view or CV.DEFAULT_PROFILE_VIEW)
    return L.save_png(image, _scratch_dir() / "profile.png")


def example_set():
    """Example images for Compare images: the synthetic ones (the built-in models' classes) first."""
    ordered = sorted(EXAMPLES, key=lambda p: not p.name.startswith("synthetic"))
    return [str(p) for p in ordered[: L.MAX_COMPARE_IMAGES]] or None


# ----------------------------------------------------------------------------------------------
# Dataset (logic in attnviz.app_dataset; statistics by attnviz.analyze)

DATASET_SOURCES = ("Built-in synthetic set", "Uploaded zip of images")


@_torch_thread.runs
@GPU
def _run_dataset(source: str, loaded: LoadedModel, folder: Path, n: int, progress: gr.Progress) -> Analysis:
    def report(done: int, total: int) -> None:
        progress(0.1 + 0.85 * done / max(total, 1), desc=f"Analysed {done} of {total} images…")

    try:
        return D.run_analysis(source, loaded, folder, max_images=n, progress=report)
    except D.UploadError as exc:
        raise gr.Error(str(exc), duration=None) from None


def _dataset_outputs(v: D.DatasetViews) -> tuple:
    return (v.summary, v.excitation, v.specificity, v.saturation, v.spatial, v.analysis_file,
            gr.update(choices=v.blocks, value=[]), gr.update(choices=v.classes, value=[]), v.analysis_file)


def analyze_dataset(source=DATASET_SOURCES[0], zip_file=None, n_images=200, variant=EXAMPLE_VARIANT or DEFAULT_VARIANT,
                    progress=gr.Progress()):
    """Gate statistics of up to 2000 images (the built-in synthetic set or an uploaded zip)."""
    try:
        n = int(n_images)
    except (TypeError, ValueError):
        n = 0
    if not 1 <= n <= D.MAX_APP_IMAGES:
        raise gr.Error(f"Number of images: 1 to {D.MAX_APP_IMAGES} (got {n_images!r}).")
    if source == DATASET_SOURCES[1]:
        if not zip_file:
            raise gr.Error(f"No zip uploaded; accepted: {D.ZIP_ACCEPTED}.")
        spec = str(zip_file)
    elif source == DATASET_SOURCES[0]:
        spec = f"synthetic:{n}"
    else:
        raise gr.Error(f"Images: one of {', '.join(DATASET_SOURCES)} (got {source!r}).")
    loaded = _load(variant, progress)
    folder = _scratch_dir()
    progress(0.1, desc=f"Analysing with {loaded.name}…")
    return _dataset_outputs(D.views(_run_dataset(spec, loaded, folder, n, progress), folder))


def open_analysis(file):
    if not file:
        return (gr.skip(),) * 9
    try:
        analysis = Analysis.load(str(file))
    except ValueError as exc:
        raise gr.Error(str(exc)) from None
    return _dataset_outputs(D.views(analysis, _scratch_dir()))


def redraw_dataset(path, blocks, classes):
    if not path or not Path(path).is_file():  # nothing analysed yet, or expired with its scratch folder
        if path:
            gr.Warning("This analysis is no longer kept on the server: press Analyze to run it again.")
        return gr.skip(), gr.skip()
    v = D.views(Analysis.load(path), _scratch_dir(), blocks, classes)
    return v.excitation, v.spatial


# ----------------------------------------------------------------------------------------------
# layout

CSS = """
.attnviz-note { opacity: 0.85; font-size: 0.92em; }
.attnviz-chart img { object-fit: contain; }
.attnviz-gallery .fixed-height { min-height: 0 !important; max-height: none !important; }
"""
THEME = gr.themes.Default(primary_hue="indigo")


# ----------------------------------------------------------------------------------------------
# Inspect: the Intervene panel (what it means: attnviz.intervene; the panel's logic: app_intervene)


@_torch_thread.runs
@GPU
def _intervene_one(path: str, loaded: LoadedModel, interventions: dict) -> Inspection:
    try:
        return inspect(path, loaded, interventions=interventions)
    except ImageLoadError as exc:
        raise _image_error(exc) from None
    except (KeyError, ValueError) as exc:  # unknown block, k beyond a block's channels: say the range
        raise gr.Error(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc)) from None


def intervene_image(image, variant=DEFAULT_VARIANT, blocks=(IV.ALL,), replacement="identity", k=8,
                    opacity=DEFAULT_ALPHA, colormap=DEFAULT_CMAP, progress=gr.Progress(track_tqdm=True)):
    """Run one image with and without an intervention on attention blocks (blocks: names or
    "all"; replacement: identity, mean, top-k knockout, bottom-k knockout): the deltas, the top-5
    before and after, Grad-CAM before and after (both for the plain model's top-1) and a JSON summary."""
    path = _image_path(image)
    alpha, cmap = _check_style(opacity, colormap)
    try:
        interventions = IV.build_interventions(blocks, replacement, k)
    except ValueError as exc:
        raise gr.Error(str(exc)) from None
    loaded = _load(variant, progress)
    progress(0.7, desc=f"Running {loaded.name} with and without the intervention…")
    result = _intervene_one(path, loaded, interventions)
    v = IV.intervene_views(result, _scratch_dir(), alpha=alpha, colormap=cmap)
    return v.markdown, v.label_before, v.label_after, v.gradcam_before, v.gradcam_after, v.summary


@_torch_thread.runs
def intervene_blocks(variant):
    """The Intervene panel's block choices for a variant (its architecture, no weights)."""
    try:
        names = IV.block_names(variant) if variant else ()
    except KeyError:
        names = ()
    return gr.update(choices=[IV.ALL, *names], value=[IV.ALL])


@_torch_thread.runs
@GPU
def _drill_one(path: str, loaded: LoadedModel, block: str, channel: int | None):
    try:
        result = inspect(path, loaded, gradcam=False)
        return result, *DD.channel_maps(result, block, channel)
    except ImageLoadError as exc:
        raise _image_error(exc) from None
    except (KeyError, ValueError) as exc:  # unknown block, channel out of range: say the range
        raise gr.Error(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc)) from None


def drilldown_image(image, variant=DEFAULT_VARIANT, block="", channel=-1, opacity=DEFAULT_ALPHA,
                    colormap=DEFAULT_CMAP, progress=gr.Progress(track_tqdm=True)):
    """One channel of one block (channel -1: its highest gate): its feature map entering and
    leaving the block on the model's view, and the block's top-8 channels as a grid."""
    path = _image_path(image)
    alpha, cmap = _check_style(opacity, colormap)
    if not block:
        raise gr.Error("Choose a block for the drill-down.")
    loaded = _load(variant, progress)
    result, chosen, top = _drill_one(path, loaded, block, None if channel is None else int(channel))
    v = DD.drilldown_views(result, chosen, top, _scratch_dir(), alpha=alpha, colormap=cmap)
    return v.markdown, v.before, v.after, v.grid


@_torch_thread.runs
def drilldown_blocks(variant):
    """The drill-down's block choices for a variant (its deepest block first chosen)."""
    try:
        names = list(IV.block_names(variant)) if variant else []
    except KeyError:
        names = []
    return gr.update(choices=names, value=names[-1] if names else None)


def gallery(**kwargs) -> gr.Gallery:
    """A gallery as tall as its images (gradio's "auto" height would keep a 450 px minimum)."""
    kwargs.setdefault("format", "png")
    kwargs.setdefault("object_fit", "contain")
    kwargs.setdefault("interactive", False)
    return gr.Gallery(height="auto", elem_classes="attnviz-gallery", **kwargs)


def build() -> gr.Blocks:
    variant_choices = L.variant_choices()
    with gr.Blocks(title="attnviz — attention blocks in ResNets", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# attnviz — what attention blocks inside ResNets do\n"
            "Channel gates (SE, ECA, CBAM, BAM: one weight per channel), spatial maps (CBAM, BAM) "
            "drawn exactly over the region the model saw, and Grad-CAM as a baseline. "
            "Built-in models run offline; ImageNet variants marked ⬇ download their weights on first use.")
        with gr.Tabs():
            # ---------------------------------------------------------------- Inspect
            with gr.Tab("Inspect", id="inspect"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=300):
                        in_image = image_input(label="Image", height=300, elem_id="inspect-image")
                        in_variant = gr.Dropdown(variant_choices, value=DEFAULT_VARIANT, label="Model variant",
                                                 elem_id="inspect-variant")
                        variant_md = gr.Markdown(variant_info(DEFAULT_VARIANT), elem_classes="attnviz-note")
                        with gr.Accordion("Own checkpoint (optional)", open=False):
                            in_weights = gr.File(
                                label="Weights for the chosen variant's architecture (.safetensors, or a "
                                      "weights-only torch file; module. prefixes and nested state_dict are fine)",
                                file_types=WEIGHT_TYPES, type="filepath", elem_id="inspect-weights-file")
                        run_btn = gr.Button("Inspect", variant="primary", elem_id="inspect-run")
                        with gr.Row():
                            in_alpha = gr.Slider(0.0, 1.0, value=DEFAULT_ALPHA, step=0.05, label="Overlay opacity")
                            in_cmap = gr.Dropdown(list(COLORMAPS), value=DEFAULT_CMAP, label="Colormap")
                        examples_slot = gr.Column()
                    with gr.Column(scale=2):
                        weights_md = gr.Markdown("Upload an image and press **Inspect**.",
                                                 elem_classes="attnviz-note", elem_id="inspect-weights")
                        with gr.Row():
                            out_label = gr.Label(num_top_classes=5, label="Top-5 prediction", elem_id="inspect-label")
                            out_gradcam = gr.Image(label="Grad-CAM (top-1 class) on the model's view", type="filepath",
                                                   format="png", interactive=False, elem_id="inspect-gradcam")
                        gr.Markdown("#### Spatial attention maps, by stage (on the region the model saw)")
                        out_spatial = gr.Gallery(label="Spatial attention maps, by stage", show_label=False,
                                                 columns=4, height="auto", format="png", object_fit="contain",
                                                 interactive=False, elem_id="inspect-spatial",
                                                 elem_classes="attnviz-gallery")
                        gr.Markdown("#### Channel attention: every block at a glance, then one block")
                        out_overview = gr.Image(label="Depth overview: blocks × channels (sorted), mean±std",
                                                show_label=False, type="filepath", format="png", interactive=False,
                                                elem_classes="attnviz-chart", elem_id="inspect-overview")
                        out_stats = gr.Image(label="Channel-gate mean / std / entropy along depth", show_label=False,
                                             type="filepath", format="png", interactive=False, elem_classes="attnviz-chart")
                        # custom values: a session the server dropped still sends its choice and gets
                        # the "run it again" message, not Gradio's "not in the list of choices"
                        block_dd = gr.Dropdown([], label="Block", interactive=True, allow_custom_value=True,
                                               elem_id="inspect-block")
                        out_chart = gr.Image(label="Channel weights of the selected block (sorted; top channels labelled)",
                                             show_label=False, type="filepath", format="png", interactive=False,
                                             elem_classes="attnviz-chart", elem_id="inspect-chart")
                        with gr.Accordion("All blocks' channel charts", open=False):
                            out_charts = gallery(label="Channel weights, one chart per block", columns=2)
                        out_files = gr.File(label="Downloads: figures (zip), summary (JSON), raw arrays (NPZ)",
                                            file_count="multiple", interactive=False, elem_id="inspect-files")
                        with gr.Accordion("Summary (JSON)", open=False):
                            out_summary = gr.JSON(label="Summary")
                inspect_state = gr.State(None, time_to_live=STATE_TTL_S, delete_callback=_forget)

                # /inspect returns what is shown first; the selected block's chart (after_inspect) and
                # the downloads (inspect_downloads) are drawn from the kept result right after it.
                main_outputs = [out_summary, out_label, out_gradcam, out_spatial, out_overview, out_stats, inspect_state]

                def then_extras(event):
                    event.then(after_inspect, [inspect_state, block_dd], [block_dd, out_chart, weights_md],
                               api_visibility="private",
                               ).then(inspect_downloads, inspect_state, [out_charts, out_files], api_visibility="private")

                then_extras(run_btn.click(
                    inspect_image, [in_image, in_variant, in_alpha, in_cmap, in_weights], main_outputs,
                    api_name="inspect", api_description="Inspect one image with one variant", **MODEL,
                ))
                for trigger in (in_alpha.release, in_cmap.input):
                    then_extras(trigger(rerender_inspect, [inspect_state, in_image, in_variant, in_alpha, in_cmap,
                                                           in_weights], main_outputs, api_visibility="private", **MODEL))
                block_dd.input(select_chart, [block_dd, inspect_state], out_chart, api_visibility="private")
                # API only (the UI makes its downloads from the kept result): the files of /inspect
                gr.Button(visible=False).click(
                    inspect_files, [in_image, in_variant, in_alpha, in_cmap, in_weights], out_files,
                    api_name="inspect_files", api_description="The downloads of /inspect: figures zip, JSON, NPZ",
                    **MODEL)
                in_variant.change(variant_info, in_variant, variant_md, api_visibility="private", queue=False)

                with examples_slot:
                    if EXAMPLES and EXAMPLE_VARIANT:
                        # Examples run on a built-in model (tens of ms), so they are computed on click
                        # rather than cached: the result is then kept like any other for the extras.
                        ex = gr.Examples(
                            [[str(p), EXAMPLE_VARIANT] for p in EXAMPLES], [in_image, in_variant],
                            visible_columns=[0], examples_per_page=12,
                            label=f"Examples (run on {EXAMPLE_VARIANT})", elem_id="inspect-examples",
                        )
                        then_extras(ex.load_input_event.then(
                            inspect_example, [in_image, in_variant, in_alpha, in_cmap], main_outputs,
                            api_visibility="private", **MODEL))
                    else:
                        gr.Markdown("No example images in `assets/` yet.", elem_classes="attnviz-note")

                with gr.Accordion("Intervene: switch a block's attention off or knock out channels",
                                  open=False, elem_id="intervene-panel"):
                    with gr.Row():
                        with gr.Column(scale=1, min_width=300):
                            iv_blocks = gr.Dropdown([IV.ALL], value=[IV.ALL], multiselect=True, allow_custom_value=True,
                                                    label="Blocks", elem_id="intervene-blocks")
                            iv_repl = gr.Radio(list(IV.REPLACEMENTS), value="identity", label="Replacement",
                                               info="identity: block removed; mean: gate's mean; knockouts: "
                                                    "the k highest / lowest-gate channels' output set to 0",
                                               elem_id="intervene-replacement")
                            iv_k = gr.Number(8, precision=0, label="k (channels, for knockouts)", elem_id="intervene-k")
                            iv_btn = gr.Button("Intervene", variant="primary", elem_id="intervene-run")
                        with gr.Column(scale=2):
                            iv_md = gr.Markdown("Choose blocks and a replacement, then press **Intervene** "
                                                "(uses the image and variant above).", elem_id="intervene-deltas")
                            with gr.Row():
                                iv_before = gr.Label(num_top_classes=5, label="Top-5 before", elem_id="intervene-before")
                                iv_after = gr.Label(num_top_classes=5, label="Top-5 after", elem_id="intervene-after")
                            with gr.Row():
                                iv_cam_before = gr.Image(label="Grad-CAM before", type="filepath", interactive=False,
                                                         elem_id="intervene-gradcam-before")
                                iv_cam_after = gr.Image(label="Grad-CAM after (same class)", type="filepath",
                                                        interactive=False, elem_id="intervene-gradcam-after")
                            with gr.Accordion("Intervention summary (JSON)", open=False):
                                iv_json = gr.JSON(label="Intervention")
                iv_btn.click(intervene_image, [in_image, in_variant, iv_blocks, iv_repl, iv_k, in_alpha, in_cmap],
                             [iv_md, iv_before, iv_after, iv_cam_before, iv_cam_after, iv_json], api_name="intervene",
                             api_description="One image with and without an intervention on attention blocks", **MODEL)
                in_variant.change(intervene_blocks, in_variant, iv_blocks, api_visibility="private", queue=False)
                demo.load(intervene_blocks, in_variant, iv_blocks, api_visibility="private", queue=False)

                with gr.Accordion("Channel drill-down: one channel's feature map before and after its block",
                                  open=False, elem_id="drilldown-panel"):
                    with gr.Row():
                        with gr.Column(scale=1, min_width=300):
                            dd_block = gr.Dropdown([], label="Block", allow_custom_value=True, elem_id="drilldown-block")
                            dd_channel = gr.Number(-1, precision=0, label="Channel (-1: the highest gate)",
                                                   elem_id="drilldown-channel")
                            dd_btn = gr.Button("Show channel", elem_id="drilldown-run")
                            dd_md = gr.Markdown("", elem_id="drilldown-text")
                        with gr.Column(scale=2):
                            with gr.Row():
                                dd_before = gr.Image(label="Entering the block", type="filepath", interactive=False,
                                                     elem_id="drilldown-before")
                                dd_after = gr.Image(label="Leaving the block (after the gates)", type="filepath",
                                                    interactive=False, elem_id="drilldown-after")
                            dd_grid = gr.Image(label="Top-8 channels by gate (leaving the block)", type="filepath",
                                               interactive=False, elem_id="drilldown-grid")
                dd_btn.click(drilldown_image, [in_image, in_variant, dd_block, dd_channel, in_alpha, in_cmap],
                             [dd_md, dd_before, dd_after, dd_grid], api_name="drilldown",
                             api_description="One channel's feature map before/after its block, and the top-8", **MODEL)
                in_variant.change(drilldown_blocks, in_variant, dd_block, api_visibility="private", queue=False)
                demo.load(drilldown_blocks, in_variant, dd_block, api_visibility="private", queue=False)

            # ---------------------------------------------------------------- Compare variants
            with gr.Tab("Compare variants", id="compare"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=300):
                        c_image = image_input(label="Image", height=260, elem_id="compare-image")
                        c_variants = gr.CheckboxGroup(variant_choices, value=COMPARE_DEFAULT,
                                                      label=f"Variants (2–{L.MAX_COMPARE_VARIANTS})")
                        c_btn = gr.Button("Compare", variant="primary", elem_id="compare-run")
                        if EXAMPLES:
                            gr.Examples([[str(p)] for p in EXAMPLES], [c_image], examples_per_page=12,
                                        label="Example images")
                    with gr.Column(scale=2):
                        c_agree = gr.Markdown("Choose an image and 2–5 variants, then press **Compare**.")
                        c_stats = gr.Image(label="Channel-gate statistics along depth, one line per variant",
                                           show_label=False, type="filepath", format="png", interactive=False,
                                           elem_classes="attnviz-chart", elem_id="compare-stats")
                with gr.Row():
                    c_slot = gr.Dropdown([("deepest block of each variant", "")], value="", allow_custom_value=True,
                                         label="Block / stage shown in every column (shared)", scale=2)
                    c_alpha = gr.Slider(0.0, 1.0, value=DEFAULT_ALPHA, step=0.05, label="Overlay opacity", scale=1)
                    c_cmap = gr.Dropdown(list(COLORMAPS), value=DEFAULT_CMAP, label="Colormap", scale=1)
                columns = []
                with gr.Row(equal_height=False):
                    for i in range(L.MAX_COMPARE_VARIANTS):
                        with gr.Column(visible=False, min_width=220) as col:
                            head = gr.Markdown()
                            lab = gr.Label(num_top_classes=5, label="Top-5")
                            gc = gr.Image(label="Grad-CAM", type="filepath", format="png", interactive=False)
                            sp = gallery(label="Spatial maps, by stage", columns=2)
                            ch = gr.Image(label="Channel weights (selected block)", show_label=False, type="filepath",
                                          format="png", interactive=False, elem_classes="attnviz-chart",
                                          elem_id=f"compare-col{i}-chart", buttons=["fullscreen"])
                            ov = gr.Image(label="Depth overview", show_label=False, type="filepath", format="png",
                                          interactive=False, elem_classes="attnviz-chart",
                                          elem_id=f"compare-col{i}-overview", buttons=["fullscreen"])
                        columns += [col, head, lab, gc, sp, ch, ov]
                with gr.Accordion("All variants as galleries, and the summary (JSON)", open=False):
                    c_gradcams = gallery(label="Grad-CAM per variant", columns=5)
                    c_charts = gallery(label="Selected block's channel weights per variant", columns=2)
                    c_overviews = gallery(label="Depth overview per variant", columns=2)
                    c_summary = gr.JSON(label="Summary")
                compare_state = gr.State(None, time_to_live=STATE_TTL_S, delete_callback=_forget)
                fill_inputs = [compare_state, c_slot, c_alpha, c_cmap]
                fill_outputs = [c_slot, c_agree] + columns
                c_btn.click(
                    compare_variants, [c_image, c_variants, c_slot, c_alpha, c_cmap],
                    [c_summary, c_stats, c_gradcams, c_charts, c_overviews, compare_state],
                    api_name="compare", api_description="One image, 2-5 variants side by side", **MODEL,
                ).then(fill_columns, fill_inputs, fill_outputs, api_visibility="private")
                c_slot.input(fill_columns, fill_inputs, fill_outputs, api_visibility="private")
                c_alpha.release(fill_columns, fill_inputs, fill_outputs, api_visibility="private")
                c_cmap.input(fill_columns, fill_inputs, fill_outputs, api_visibility="private")

            # ---------------------------------------------------------------- Compare images
            with gr.Tab("Compare images", id="compare_images"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=300):
                        m_files = gr.File(label=f"Images (2–{L.MAX_COMPARE_IMAGES})", file_count="multiple",
                                          file_types=["image"], elem_id="compare-images-files")
                        if EXAMPLES:
                            m_examples = gr.Button("Use the example images", size="sm")
                            m_examples.click(example_set, None, m_files, api_visibility="private", queue=False)
                        m_variant = gr.Dropdown(variant_choices, value=EXAMPLE_VARIANT or DEFAULT_VARIANT,
                                                label="Model variant")
                        m_btn = gr.Button("Compare images", variant="primary", elem_id="compare-images-run")
                        gr.Markdown(
                            "Per block, each image's channel weights are a row of a heat map (channels sorted "
                            "by their mean over the images, or in index order; lines for up to 3 images), and "
                            "are compared by cosine similarity. SENet's analysis found early blocks "
                            "excite alike for all classes and late blocks class-specifically: similarity should "
                            "fall with depth when the images show different classes.", elem_classes="attnviz-note")
                    with gr.Column(scale=2):
                        m_thumbs = gallery(label="Images as the model saw them, with top-1", columns=4)
                        m_sim = gr.Image(label="Similarity of channel weights per depth", show_label=False,
                                         type="filepath", format="png", interactive=False, elem_classes="attnviz-chart",
                                         elem_id="compare-images-similarity")
                        with gr.Row():
                            m_block = gr.Dropdown([], label="Block", interactive=True, allow_custom_value=True)
                            m_view = gr.Radio(list(CV.PROFILE_VIEWS), value=CV.DEFAULT_PROFILE_VIEW,
                                              label="Channel weights per image", elem_id="compare-images-view")
                        m_profile = gr.Image(label="Channel-weight profiles of the images (selected block)",
                                             show_label=False, type="filepath", format="png", interactive=False,
                                             elem_classes="attnviz-chart", elem_id="compare-images-profile")
                        with gr.Accordion("All blocks' profiles, and the summary (JSON)", open=False):
                            m_profiles = gallery(label="Profiles per block", columns=2)
                            m_summary = gr.JSON(label="Summary")
                m_kept = gr.State(None, time_to_live=STATE_TTL_S, delete_callback=_forget)
                m_btn.click(
                    compare_images, [m_files, m_variant], [m_summary, m_sim, m_profiles, m_thumbs, m_kept],
                    api_name="compare_images", api_description="2-8 images on one variant: channel-profile similarity",
                    **MODEL,
                ).then(after_compare_images, [m_summary, m_profiles, m_block, m_view, m_kept], [m_block, m_profile],
                       api_visibility="private")
                profile_inputs = [m_block, m_view, m_kept, m_summary, m_profiles]
                m_block.input(select_profile, profile_inputs, m_profile, api_visibility="private")
                m_view.input(select_profile, profile_inputs, m_profile, api_visibility="private")

            # ---------------------------------------------------------------- Dataset
            with gr.Tab("Dataset", id="dataset"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=300):
                        d_source = gr.Radio(list(DATASET_SOURCES), value=DATASET_SOURCES[0], label="Images")
                        d_zip = gr.File(label="Zip of images (one subfolder per class, or loose)",
                                        file_types=[".zip"], type="filepath", elem_id="dataset-zip")
                        d_n = gr.Slider(8, D.MAX_APP_IMAGES, value=200, step=8, label="Images (at most)")
                        d_variant = gr.Dropdown(variant_choices, value=EXAMPLE_VARIANT or DEFAULT_VARIANT,
                                                label="Model variant")
                        d_btn = gr.Button("Analyze", variant="primary", elem_id="dataset-run")
                        d_open = gr.File(label="Or open a saved analysis (.npz)", file_types=[".npz"],
                                         type="filepath", elem_id="dataset-open")
                        gr.Markdown(
                            "SENet's population view (Fig. 6): the mean gate of every channel per class, and "
                            "along depth the class-specificity (η², the share of gate variance between class "
                            "means) and the share of saturated gates. Unlabelled images are grouped by the "
                            "model's top-1. Definitions: docs/ANALYSIS.md.", elem_classes="attnviz-note")
                    with gr.Column(scale=2):
                        with gr.Row():
                            d_blocks = gr.Dropdown([], multiselect=True, label="Blocks (panels)", interactive=True)
                            d_classes = gr.Dropdown([], multiselect=True, label="Classes (lines)", interactive=True)
                        d_exc = gr.Image(label="Mean excitation per channel by class", type="filepath", format="png",
                                         interactive=False, elem_id="dataset-excitation")
                        with gr.Row():
                            d_spec = gr.Image(label="Class-specificity along depth", type="filepath", format="png",
                                              interactive=False)
                            d_sat = gr.Image(label="Saturated gates along depth", type="filepath", format="png",
                                             interactive=False)
                        d_spatial = gr.Image(label="Mean spatial gate by class (last spatial block)", type="filepath",
                                             format="png", interactive=False)
                        d_file = gr.File(label="Analysis file (.npz, attnviz-analysis/1)", interactive=False,
                                         elem_id="dataset-file")
                        with gr.Accordion("Summary (JSON)", open=False):
                            d_summary = gr.JSON(label="Summary")
                d_state = gr.State(None, time_to_live=STATE_TTL_S)  # the saved analysis file's path
                d_outputs = [d_summary, d_exc, d_spec, d_sat, d_spatial, d_file, d_blocks, d_classes, d_state]
                d_btn.click(analyze_dataset, [d_source, d_zip, d_n, d_variant], d_outputs, api_name="analyze",
                            api_description="Gate statistics of up to 2000 images: synthetic set or a zip", **MODEL)
                d_open.upload(open_analysis, d_open, d_outputs, api_visibility="private")
                for selector in (d_blocks, d_classes):
                    selector.input(redraw_dataset, [d_state, d_blocks, d_classes], [d_exc, d_spatial],
                                   api_visibility="private")

            # ---------------------------------------------------------------- Models
            with gr.Tab("Models", id="models"):
                gr.Markdown("Every variant, where its weights come from, their licence and the top-1 accuracy "
                            "their authors report. Built-in models ship with attnviz and work offline; "
                            "ImageNet weights download once into the usual caches (torch hub / Hugging Face).")
                models_md = gr.Markdown(L.models_table_markdown())
        demo.load(lambda v: (L.models_table_markdown(), variant_info(v)), in_variant,
                  [models_md, variant_md], api_visibility="private", queue=False)
    return demo


demo = build()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="attnviz web app (host/port: GRADIO_SERVER_NAME / GRADIO_SERVER_PORT)")
    parser.add_argument("--weights", action="append", default=[], metavar="VARIANT=FILE",
                        help="use this local checkpoint for VARIANT instead of downloading (repeatable)")
    args = parser.parse_args(argv)
    for spec in args.weights:
        name, sep, file = spec.partition("=")
        if not sep or name not in all_variants() or not Path(file).is_file():
            parser.error(f"--weights {spec!r}: expected VARIANT=FILE with a known variant and an existing file")
        WEIGHT_FILES[name] = str(Path(file).resolve())
    # SIGTERM (Spaces, systemd, docker stop) exits normally so atexit removes the temp outputs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    demo.queue(default_concurrency_limit=4)
    trim_memory_every(30.0)  # freed session memory back to the OS (see app_results.release_free_memory)
    demo.launch(max_file_size=MAX_FILE_SIZE, theme=THEME, css=CSS, show_error=True,
                state_session_capacity=MAX_SESSIONS)


if __name__ == "__main__":
    sys.exit(main())
