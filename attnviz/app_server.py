"""The web app's server side that every tab shares: settings, where results and output files
live, input checks, and model access on the app's one torch thread.

``app.py`` lays the page out and wires events; the handlers those events call (``app_*_handlers``)
use this module. Importing it loads no model: a variant's model is loaded on first request.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from . import app_logic as L
from .app_results import DEFAULT_MAX_MB, ResultCache
from .inputs import ImageLoadError, load_image
from .inspection import Inspection, inspect, inspect_batch
from .models import LoadedModel, WeightsError, default_variant_name, load_model, variant_from_weights_file
from .models.timm_by_name import TIMM_PREFIX
from .models import variants as all_variants
from .render import COLORMAPS

try:  # Hugging Face ZeroGPU: functions that use the GPU are decorated; a no-op elsewhere
    import spaces  # type: ignore[import-not-found]

    GPU = spaces.GPU
except ImportError:  # pragma: no cover - depends on the environment
    def GPU(fn=None, **_kwargs):
        return fn if fn is not None else (lambda f: f)

MAX_FILE_SIZE = "200mb"  # a ResNet-50 checkpoint upload is ~100 MB; images are bounded by pixel count
#: ``--weights NAME=FILE``: local checkpoints used instead of downloading.
WEIGHT_FILES: dict[str, str] = {}

try:
    DEFAULT_VARIANT = default_variant_name()
except WeightsError:  # no built-in checkpoint and no cached ImageNet weights: one downloads on demand
    DEFAULT_VARIANT = next(iter(all_variants()))
EXAMPLE_VARIANT = L.builtin_default()
COMPARE_DEFAULT = (L.builtin_names() or [DEFAULT_VARIANT])[: L.MAX_COMPARE_VARIANTS]
DEFAULT_ALPHA, DEFAULT_CMAP = 0.5, "jet"

# Model loading and forwards run on one thread, whichever worker gradio runs the event on
# (torch's OpenMP slows every forward once several threads have run one: see L.TorchThread).
torch_thread = L.TorchThread()


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
# Scratch disk: each request's outputs (~0.2-2 MB) in a folder of their own; at most this many are
# kept (the oldest go first), and none for more than STATE_TTL_S.
MAX_SCRATCH_FOLDERS = int(_env_number("ATTNVIZ_MAX_SCRATCH_FOLDERS", 512)) or 1
# The queue: up to 4 events at once (model events one at a time, see app.MODEL), and at most
# MAX_QUEUE waiting; one more is answered at once with "Queue is full" (HTTP 503), not kept waiting.
MAX_QUEUE = int(_env_number("ATTNVIZ_MAX_QUEUE", 64))


def queue_settings(**override: Any) -> dict[str, Any]:
    """``demo.queue(**queue_settings())``: the app's concurrency and queue bounds."""
    return {"default_concurrency_limit": 4, "max_size": MAX_QUEUE or None, **override}


_SCRATCH = Path(tempfile.mkdtemp(prefix="attnviz-app-"))
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)
# Outputs are served from the scratch folder itself (per-request folders with random names,
# removed after an hour, or sooner once MAX_SCRATCH_FOLDERS newer ones exist) instead of being
# hashed and copied into gradio's cache one by one.
gr.set_static_paths([_SCRATCH])
scratch_dir = L.ScratchFolders(_SCRATCH, max_folders=MAX_SCRATCH_FOLDERS).new


# ----------------------------------------------------------------------------------------------
# kept results


def kept_result(state: dict | None, again: str | None = None, *, expected: bool = False) -> Any | None:
    """The kept result a follow-up works on, or None. When it was evicted or its state expired,
    say so, naming the button that runs it ``again`` (``expected``: the event can only come
    after a result was shown, e.g. a block choice). Follow-ups are queued events: Gradio shows a
    gr.Warning only from those."""
    value = RESULTS.get(state.get("key")) if state else None
    if value is None and again and (state or expected):
        gr.Warning(f"This result is no longer kept on the server (results are kept for up to "
                   f"{STATE_TTL_S // 60} minutes while memory allows): press {again} to run it again.")
    return value


def forget_result(state: dict | None) -> None:
    """gr.State's delete_callback: an expired or closed session's result is dropped at once."""
    if state:
        RESULTS.drop(state.get("key"))


def result_owner(request: gr.Request | None, tab: str) -> tuple[str, str] | None:
    """Whose result it is: one kept result per session and tab (None outside a request)."""
    session = getattr(request, "session_hash", None)
    return None if session is None else (session, tab)


# ----------------------------------------------------------------------------------------------
# input checks


def upload_error(payload: Any, exc: Exception) -> gr.Error:
    """What an upload gradio could not preprocess gets told: the library's reason when it has
    one (it reads the file itself), else what is accepted."""
    path = getattr(payload, "path", None)
    name = getattr(payload, "orig_name", None) or (Path(path).name if path else "upload")
    if path:
        try:
            load_image(path)
        except ImageLoadError as err:
            return gr.Error(f"{name}: {err.problem}; accepted: {err.accepted or L.ACCEPTED_TEXT}")
        except Exception:
            pass
    return gr.Error(f"{name}: not a readable image ({type(exc).__name__}); "
                    f"accepted: {L.ACCEPTED_TEXT}, up to {MAX_FILE_SIZE}")


def image_path(image: Any) -> str:
    if image is None or (isinstance(image, str) and not image.strip()):
        raise gr.Error(f"No image: upload one ({L.ACCEPTED_TEXT}, up to {MAX_FILE_SIZE}), paste it, "
                       "use the webcam or pick an example.")
    return str(image)


def check_style(opacity: float | None, colormap: str | None) -> tuple[float, str]:
    alpha = DEFAULT_ALPHA if opacity is None else float(opacity)
    if not 0.0 <= alpha <= 1.0:
        raise gr.Error(f"opacity must be between 0 and 1, got {alpha}")
    cmap = colormap or DEFAULT_CMAP
    if cmap not in COLORMAPS:
        raise gr.Error(f"unknown colormap {cmap!r}; choose one of {', '.join(COLORMAPS)}")
    return alpha, cmap


def image_error(exc: ImageLoadError) -> gr.Error:
    return gr.Error(str(exc) if exc.accepted else f"{exc}; accepted: {L.ACCEPTED_TEXT}")


def lookup_error(exc: KeyError | ValueError) -> gr.Error:
    """An unknown block, or an index beyond a block's channels: the library's message says the range."""
    return gr.Error(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))


# ----------------------------------------------------------------------------------------------
# model access: every call runs on the torch thread


@torch_thread.runs
def load_variant(name: str | None, progress: gr.Progress | None = None, weights: str | None = None) -> LoadedModel:
    """The variant's model, loaded once per process (and device) by the library. ``name`` is a
    variant of the zoo or ``timm:NAME`` (any timm model; its weights come through the Hugging Face
    cache). ``weights`` is an uploaded checkpoint: a file written by ``attnviz train`` builds
    its own architecture with its own classes; any other file is read as the chosen variant's."""
    name = (name or "").strip()
    if not name:
        raise gr.Error("Choose a model variant.")
    if name.startswith(TIMM_PREFIX):
        return _load_timm(name, progress, weights)
    reg = all_variants()
    if name not in reg:
        raise gr.Error(f"Unknown variant {name!r}; available: {', '.join(reg)}, or {TIMM_PREFIX}NAME for any timm model.")
    if weights:
        return _load_upload(name, weights)
    if progress is not None and name not in WEIGHT_FILES and not L.is_local(reg[name]):
        progress(0.05, desc=f"Downloading the weights of {name} (first use only)…")
    try:
        return load_model(name, weights=WEIGHT_FILES.get(name), progress=True, keep_loaded=True)
    except (WeightsError, OSError) as exc:
        raise gr.Error(L.weights_help(name, exc), duration=None) from None


def _load_upload(name: str, weights: str) -> LoadedModel:
    try:
        described = variant_from_weights_file(weights, name=Path(weights).stem)
        # a self-describing file (attnviz train) is its own model: the dropdown's choice does not apply
        return load_model(described or name, weights=weights, progress=False)
    except (WeightsError, OSError) as exc:
        raise gr.Error(f"{Path(weights).name}: cannot be used as {name} weights: {exc}", duration=None) from None


def _load_timm(name: str, progress: gr.Progress | None, weights: str | None) -> LoadedModel:
    if progress is not None and not weights:
        progress(0.05, desc=f"Loading {name} (its weights download once)…")
    try:
        return load_model(name, weights=weights, progress=not weights, keep_loaded=not weights)
    except KeyError as exc:  # not a timm model name: the library's one line names close matches
        raise gr.Error(str(exc.args[0]), duration=None) from None
    except (WeightsError, OSError) as exc:
        raise gr.Error(str(exc), duration=None) from None


@torch_thread.runs
@GPU
def inspect_one(path: str, loaded: LoadedModel) -> Inspection:
    try:
        return inspect(path, loaded)
    except ImageLoadError as exc:
        raise image_error(exc) from None


@torch_thread.runs
@GPU
def inspect_images(paths: list[str], loaded: LoadedModel) -> list[Inspection]:
    try:
        return inspect_batch(paths, loaded, gradcam=False)
    except ImageLoadError as exc:
        raise image_error(exc) from None


def use_weight_files(specs: list[str]) -> None:
    """``--weights VARIANT=FILE`` (repeatable): serve VARIANT with that local checkpoint."""
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or name not in all_variants() or not Path(file).is_file():
            raise ValueError(f"--weights {spec!r}: expected VARIANT=FILE with a known variant and an existing file")
        WEIGHT_FILES[name] = str(Path(file).resolve())
