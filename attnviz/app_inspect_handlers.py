"""What the Inspect tab's events call: ``/inspect`` and its follow-ups (block chart, downloads,
redraws in another style), ``/inspect_files``, and its two panels, ``/intervene`` and
``/drilldown``. The views are drawn by :mod:`attnviz.app_logic`, :mod:`attnviz.app_intervene`
and :mod:`attnviz.app_drilldown`; the server side (kept results, model access) is
:mod:`attnviz.app_server`'s.
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from . import app_drilldown as DD
from . import export
from . import app_intervene as IV
from . import app_logic as L
from . import app_server as S
from .app_results import inspection_nbytes, light_inspection
from .app_server import DEFAULT_ALPHA, DEFAULT_CMAP, DEFAULT_VARIANT, EXAMPLE_VARIANT, GPU
from .inputs import ImageLoadError
from .inspection import Inspection, inspect
from .models import LoadedModel


def variant_info(name: str | None) -> str:
    """Source, licence, reported top-1 and availability of a variant (and its --weights file)."""
    text = L.variant_markdown(name)
    if name in S.WEIGHT_FILES:
        text += f"  \nThis app uses the local file `{Path(S.WEIGHT_FILES[name]).name}` for it (`--weights`)."
    return text


def _weights_in_use(r: Inspection) -> str:
    t = r.timings
    return (f"**{r.variant}** ran on **{r.device}** with weights: {r.weights} "
            f"({t.get('total_ms', 0):.0f} ms: forward {t.get('forward_ms', 0):.0f} ms, "
            f"Grad-CAM {t.get('gradcam_ms', 0):.0f} ms).")


def _inspect_outputs(result: Inspection, alpha: float, cmap: str, stem: str, request: gr.Request | None) -> tuple:
    folder = S.scratch_dir()
    views = L.inspect_views(result, folder, alpha=alpha, colormap=cmap)
    kept = light_inspection(result, L.VIEW_SIZE)
    key = S.RESULTS.put(kept, inspection_nbytes(kept), owner=S.result_owner(request, "inspect"))
    state = {"key": key, "stem": stem, "folder": folder, "style": (alpha, cmap)}
    return (L.summary(result), L.label_dict(result), views.gradcam, views.spatial, views.overview, views.stats, state)


def inspect_image(image, variant=DEFAULT_VARIANT, opacity=DEFAULT_ALPHA, colormap=DEFAULT_CMAP,
                  weights=None, progress=gr.Progress(track_tqdm=True), request: gr.Request = None):
    """Inspect one image with one ResNet variant: what it predicts and what its attention blocks do.

    Args:
        image: the image (PNG, JPEG, WebP, GIF, BMP or TIFF; a URL or base64 data URL for MCP).
        variant: model variant name, e.g. cbam_resnet50, se_resnet50, eca_resnet50, bam_resnet50,
            resnet50 (ImageNet), shapes_cbam_resnet (built-in, trained on 8 synthetic shapes), or
            timm:NAME for any timm model (e.g. timm:efficientnet_b0).
        opacity: overlay opacity of the heat maps, 0 to 1.
        colormap: heat-map colormap, e.g. jet, viridis, inferno, magma, turbo.
        weights: optional checkpoint file of the variant's architecture, used instead of its weights.
    Returns:
        summary JSON (variant, weights, predictions, every block's gate statistics), the top-5
        labels with probabilities, the Grad-CAM overlay, the spatial-attention maps by stage, the
        channel gates' depth overview and their mean/std/entropy along depth."""
    path = S.image_path(image)
    alpha, cmap = S.check_style(opacity, colormap)
    loaded = S.load_variant(variant, progress, weights=weights)
    progress(0.7, desc=f"Running {loaded.name}…")
    result = S.inspect_one(path, loaded)
    return _inspect_outputs(result, alpha, cmap, Path(path).name, request)


def inspect_example(image, variant=EXAMPLE_VARIANT, opacity=DEFAULT_ALPHA, colormap=DEFAULT_CMAP,
                    progress=gr.Progress(track_tqdm=True), request: gr.Request = None):
    """A clicked example, on the selected variant's own weights (whatever checkpoint is uploaded)."""
    return inspect_image(image, variant, opacity, colormap, None, progress, request)


def rerender_inspect(state, image, variant, opacity, colormap, weights=None, progress=gr.Progress(track_tqdm=True),
                     request: gr.Request = None):
    """New opacity / colormap: redraw the overlays from the kept Inspection, without running the model."""
    alpha, cmap = S.check_style(opacity, colormap)
    result = S.kept_result(state)
    if result is None:  # nothing shown yet, or no longer kept: run it (again) when there is an image
        if image is None:
            return (gr.skip(),) * 7
        return inspect_image(image, variant, alpha, cmap, weights, progress, request)
    folder = S.scratch_dir()
    views = L.inspect_views(result, folder, alpha=alpha, colormap=cmap, charts=False)
    skip = gr.skip()
    return (skip, skip, views.gradcam, views.spatial, skip, skip,
            {**state, "folder": folder, "style": (alpha, cmap)})


def after_inspect(state, current):
    """UI-only follow-up: block selector, the selected block's chart, which weights ran."""
    result = S.kept_result(state, "Inspect")
    if result is None:
        return gr.skip(), gr.skip(), gr.skip()
    names = L.chart_blocks(result)
    block = current if current in names else (names[-1] if names else None)
    dd = gr.update(choices=names, value=block, interactive=bool(names),
                   info=None if names else "this model has no channel or branch attention")
    return dd, L.block_chart(result, block, state["folder"]), _weights_in_use(result)


def select_chart(block, state):
    result = S.kept_result(state, "Inspect", expected=True)
    if result is None:
        return gr.skip()
    return L.block_chart(result, block, state["folder"])


def inspect_files(image, variant=DEFAULT_VARIANT, opacity=DEFAULT_ALPHA, colormap=DEFAULT_CMAP,
                  weights=None, progress=gr.Progress(track_tqdm=True)):
    """The files of one inspection, as `python -m attnviz inspect` writes them.

    Args:
        image: the image (PNG, JPEG, WebP, GIF, BMP or TIFF; a URL or base64 data URL for MCP).
        variant: model variant name (see /inspect).
        opacity: overlay opacity of the figures, 0 to 1.
        colormap: heat-map colormap of the figures.
        weights: optional checkpoint file of the variant's architecture.
    Returns:
        three files: the figures as a zip of lossless PNGs, the summary JSON and the raw arrays
        (NPZ: logits, probs, channel/<block>, spatial/<block>, gradcam)."""
    path = S.image_path(image)
    alpha, cmap = S.check_style(opacity, colormap)
    result = S.inspect_one(path, S.load_variant(variant, progress, weights=weights))
    return L.write_downloads(result, S.scratch_dir(), Path(path).name, alpha=alpha, colormap=cmap)[1]


def inspect_downloads(state):
    """UI-only, after the views are shown: every block's chart and the downloads (figures zip
    with lossless PNGs, JSON, NPZ), in the opacity / colormap of the views."""
    result = S.kept_result(state, "Inspect")
    if result is None:
        return gr.skip(), gr.skip()
    alpha, cmap = state["style"]
    return L.write_downloads(result, state["folder"] / "downloads", state["stem"], alpha=alpha, colormap=cmap)


# ----------------------------------------------------------------------------------------------
# the Intervene panel (what it means: attnviz.intervene; the panel's logic: app_intervene)


@S.torch_thread.runs
@GPU
def _intervene_one(path: str, loaded: LoadedModel, interventions: dict) -> Inspection:
    try:
        return inspect(path, loaded, interventions=interventions)
    except ImageLoadError as exc:
        raise S.image_error(exc) from None
    except (KeyError, ValueError) as exc:  # unknown block, k beyond a block's channels: say the range
        raise S.lookup_error(exc) from None


def intervene_image(image, variant=DEFAULT_VARIANT, blocks=(IV.ALL,), replacement="identity", k=8,
                    opacity=DEFAULT_ALPHA, colormap=DEFAULT_CMAP, progress=gr.Progress(track_tqdm=True)):
    """Run one image with and without an intervention on the variant's attention blocks.

    Args:
        image: the image (a URL or base64 data URL for MCP).
        variant: model variant name (see /inspect).
        blocks: block names (e.g. layer4.0), or ["all"] for every attention block.
        replacement: identity (block removed), mean (gate's mean), top-k knockout or bottom-k knockout.
        k: channels knocked out per block by the knockouts.
        opacity: overlay opacity, 0 to 1.
        colormap: heat-map colormap.
    Returns:
        the deltas as text, the top-5 before and after, Grad-CAM before and after (both for the
        unmodified model's top-1 class) and a JSON summary (top-1 change, probability delta, KL)."""
    path = S.image_path(image)
    alpha, cmap = S.check_style(opacity, colormap)
    try:
        interventions = IV.build_interventions(blocks, replacement, k)
    except ValueError as exc:
        raise gr.Error(str(exc)) from None
    loaded = S.load_variant(variant, progress)
    progress(0.7, desc=f"Running {loaded.name} with and without the intervention…")
    result = _intervene_one(path, loaded, interventions)
    v = IV.intervene_views(result, S.scratch_dir(), alpha=alpha, colormap=cmap)
    return v.markdown, v.label_before, v.label_after, v.gradcam_before, v.gradcam_after, v.summary


@S.torch_thread.runs
def intervene_blocks(variant):
    """The Intervene panel's block choices for a variant (its architecture, no weights)."""
    try:
        names = IV.block_names(variant) if variant else ()
    except KeyError:
        names = ()
    return gr.update(choices=[IV.ALL, *names], value=[IV.ALL])


# ----------------------------------------------------------------------------------------------
# the channel drill-down panel (logic: app_drilldown)


@S.torch_thread.runs
@GPU
def _drill_one(path: str, loaded: LoadedModel, block: str, channel: int | None):
    try:
        result = inspect(path, loaded, gradcam=False)
        return result, *DD.channel_maps(result, block, channel)
    except ImageLoadError as exc:
        raise S.image_error(exc) from None
    except (KeyError, ValueError) as exc:  # unknown block, channel out of range: say the range
        raise S.lookup_error(exc) from None


def drilldown_image(image, variant=DEFAULT_VARIANT, block="", channel=-1, opacity=DEFAULT_ALPHA,
                    colormap=DEFAULT_CMAP, progress=gr.Progress(track_tqdm=True)):
    """One channel of one attention block: its feature map entering and leaving the block.

    Args:
        image: the image (a URL or base64 data URL for MCP).
        variant: model variant name (see /inspect).
        block: block name, e.g. layer4.2 (the /inspect summary lists them).
        channel: channel index, or -1 for the block's highest gate.
        opacity: overlay opacity, 0 to 1.
        colormap: heat-map colormap.
    Returns:
        a text with the channel's gate, the feature map entering and leaving the block on the
        model's view, and the block's top-8 channels by gate as a grid."""
    path = S.image_path(image)
    alpha, cmap = S.check_style(opacity, colormap)
    if not block:
        raise gr.Error("Choose a block for the drill-down.")
    loaded = S.load_variant(variant, progress)
    result, chosen, top = _drill_one(path, loaded, block, None if channel is None else int(channel))
    v = DD.drilldown_views(result, chosen, top, S.scratch_dir(), alpha=alpha, colormap=cmap)
    return v.markdown, v.before, v.after, v.grid


@S.torch_thread.runs
def drilldown_blocks(variant):
    """The drill-down's block choices for a variant (its deepest block first chosen)."""
    try:
        names = list(IV.block_names(variant)) if variant else []
    except KeyError:
        names = []
    return gr.update(choices=names, value=names[-1] if names else None)


def drilldown_clicked(state, block, image, opacity=DEFAULT_ALPHA, colormap=DEFAULT_CMAP,
                      evt: gr.SelectData = None, progress=gr.Progress(track_tqdm=True)):
    """A click on the selected block's channel chart: the drill-down of the channel under the
    pointer (same layout as the drawn chart), opened in its panel."""
    result = S.kept_result(state, "Inspect", expected=True)
    if result is None or evt is None or not block or block not in {b.name for b in result.channel_blocks}:
        return (gr.skip(),) * 7
    x, y = evt.index[:2]
    channel = export.channel_chart_layout(result, block).channel_at(x + 0.5, y + 0.5)
    if channel is None:
        gr.Info("Click on a bar of the chart to see that channel's feature map.")
        return (gr.skip(),) * 7
    views = drilldown_image(image, result.variant, block, channel, opacity, colormap, progress)
    return (gr.update(open=True), block, channel, *views)
