"""attnviz in the browser: see what SE / ECA / CBAM / BAM blocks inside ResNets do.

    python app.py                      # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT)
    python app.py --weights eca_resnet50=eca_resnet50_k3557.pth.tar

Tabs: Inspect (one image, one variant), Compare variants (one image, 2–5 variants), Compare
images (2–8 images, one variant), Dataset and Models. This file is the layout and its wiring:
one builder per tab (and per Inspect panel). The events' handlers are ``attnviz/app_*_handlers.py``
over :mod:`attnviz.app_server`; the library computes. No model is loaded before the first
request. Named API endpoints: ``/inspect``, ``/compare``, ``/compare_images``, ``/analyze``
(gate statistics of a set of images) and more; see README, "HTTP API", and docs/ANALYSIS.md.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from attnviz import app_compare_handlers as CH
from attnviz import app_compare_views as CV
from attnviz import app_dataset as D
from attnviz import app_dataset_handlers as DH
from attnviz import app_inspect_handlers as IH
from attnviz import app_intervene as IV
from attnviz import app_launch
from attnviz import app_logic as L
from attnviz import app_preload as P
from attnviz import app_server as S
from attnviz.app_server import COMPARE_DEFAULT, DEFAULT_ALPHA, DEFAULT_CMAP, DEFAULT_VARIANT, EXAMPLE_VARIANT
from attnviz.render import COLORMAPS

ROOT = Path(__file__).resolve().parent
ASSETS = Path(os.environ.get("ATTNVIZ_ASSETS", ROOT / "assets"))  # example images
EXAMPLES = L.example_images(ASSETS)
WEIGHT_TYPES = [".safetensors", ".pth", ".pt", ".tar", ".zip", ".bin"]
MODEL = {"concurrency_id": "model", "concurrency_limit": 1}  # every event that runs a model
PRIVATE = {"api_visibility": "private"}  # UI-only events: not part of the HTTP API

CSS = """
.attnviz-note { opacity: 0.85; font-size: 0.92em; }
.attnviz-chart img { object-fit: contain; }
.attnviz-gallery .fixed-height { min-height: 0 !important; max-height: none !important; }
"""
THEME = gr.themes.Default(primary_hue="indigo")


# -------------------- shared widgets -----------------------------------------------------------


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
            raise S.upload_error(payload, exc) from None

    component.preprocess = preprocess  # type: ignore[method-assign]
    return component


def gallery(**kwargs) -> gr.Gallery:
    """A gallery as tall as its images (gradio's "auto" height would keep a 450 px minimum)."""
    kwargs.setdefault("format", "png")
    kwargs.setdefault("object_fit", "contain")
    kwargs.setdefault("interactive", False)
    return gr.Gallery(height="auto", elem_classes="attnviz-gallery", **kwargs)


def chart(label: str, **kwargs) -> gr.Image:
    """A PNG chart shown at its own size, without its label."""
    return gr.Image(label=label, show_label=False, type="filepath", format="png", interactive=False,
                    elem_classes="attnviz-chart", **kwargs)


def variant_dropdown(choices: list, value: str | None, **kwargs) -> gr.Dropdown:
    """A model picker: the zoo's variants, or any timm model typed as timm:NAME."""
    return gr.Dropdown(choices, value=value, label="Model variant", allow_custom_value=True,
                       info="or type timm:NAME (any timm model, e.g. timm:efficientnet_b0)", **kwargs)


def kept_state() -> gr.State:
    """A session's token into the server's kept results (dropped with the session)."""
    return gr.State(None, time_to_live=S.STATE_TTL_S, delete_callback=S.forget_result)


def example_set():
    """Example images for Compare images: the synthetic ones (the built-in models' classes) first."""
    return L.compare_examples(EXAMPLES)


# -------------------- Inspect ------------------------------------------------------------------


@dataclass
class InspectInputs:
    """The Inspect tab's inputs; its Intervene and drill-down panels run on them too."""

    image: gr.Image
    variant: gr.Dropdown
    variant_md: gr.Markdown
    weights: gr.File
    run: gr.Button
    alpha: gr.Slider
    cmap: gr.Dropdown
    examples: gr.Column  # filled once the outputs exist (the examples' event targets them)


@dataclass
class InspectOutputs:
    notice: gr.Markdown  # over the prediction while a synthetic-shapes model is selected
    weights_md: gr.Markdown
    label: gr.Label
    gradcam: gr.Image
    spatial: gr.Gallery
    overview: gr.Image
    stats: gr.Image
    block: gr.Dropdown
    chart: gr.Image
    charts: gr.Gallery
    files: gr.File
    summary: gr.JSON


def _inspect_inputs(variant_choices: list) -> InspectInputs:
    image = image_input(label="Image", height=300, elem_id="inspect-image")
    variant = variant_dropdown(variant_choices, DEFAULT_VARIANT, elem_id="inspect-variant")
    variant_md = gr.Markdown(IH.variant_info(DEFAULT_VARIANT), elem_classes="attnviz-note")
    with gr.Accordion("Own checkpoint (optional)", open=False):
        weights = gr.File(
            label="A checkpoint: written by attnviz train (its own model and classes), or weights of the "
                  "chosen variant's architecture (.safetensors or a weights-only torch file)",
            file_types=WEIGHT_TYPES, type="filepath", elem_id="inspect-weights-file")
    run = gr.Button("Inspect", variant="primary", elem_id="inspect-run")
    with gr.Row():
        alpha = gr.Slider(0.0, 1.0, value=DEFAULT_ALPHA, step=0.05, label="Overlay opacity")
        cmap = gr.Dropdown(list(COLORMAPS), value=DEFAULT_CMAP, label="Colormap")
    return InspectInputs(image, variant, variant_md, weights, run, alpha, cmap, examples=gr.Column())


def _inspect_outputs() -> InspectOutputs:
    notice = gr.Markdown(P.notice_text(DEFAULT_VARIANT), visible=P.is_builtin(DEFAULT_VARIANT),
                         elem_id="inspect-notice")
    weights_md = gr.Markdown("Upload an image and press **Inspect**.", elem_classes="attnviz-note",
                             elem_id="inspect-weights")
    with gr.Row():
        label = gr.Label(num_top_classes=5, label="Top-5 prediction", elem_id="inspect-label")
        gradcam = gr.Image(label="Grad-CAM (top-1 class) on the model's view", type="filepath",
                           format="png", interactive=False, elem_id="inspect-gradcam")
    gr.Markdown("#### Spatial attention maps, by stage (on the region the model saw)")
    spatial = gallery(label="Spatial attention maps, by stage", show_label=False, columns=4,
                      elem_id="inspect-spatial")
    gr.Markdown("#### Channel attention: every block at a glance, then one block")
    overview = chart("Depth overview: blocks × channels (sorted), mean±std", elem_id="inspect-overview")
    stats = chart("Channel-gate mean / std / entropy along depth")
    # custom values: a session the server dropped still sends its choice and gets
    # the "run it again" message, not Gradio's "not in the list of choices"
    block = gr.Dropdown([], label="Block", interactive=True, allow_custom_value=True, elem_id="inspect-block")
    block_chart = chart("Channel weights of the selected block (sorted; top channels labelled; "
                        "click a bar to see that channel's feature map)", elem_id="inspect-chart")
    with gr.Accordion("All blocks' channel charts", open=False):
        charts = gallery(label="Channel weights, one chart per block", columns=2)
    files = gr.File(label="Downloads: figures (zip), summary (JSON), raw arrays (NPZ)",
                    file_count="multiple", interactive=False, elem_id="inspect-files")
    with gr.Accordion("Summary (JSON)", open=False):
        summary = gr.JSON(label="Summary")
    return InspectOutputs(notice, weights_md, label, gradcam, spatial, overview, stats, block, block_chart, charts,
                          files, summary)


def _inspect_events(i: InspectInputs, o: InspectOutputs, state: gr.State) -> tuple[list, Callable[[Any], None]]:
    """Wire /inspect, its redraws and follow-ups; returns its outputs and the follow-up chain."""
    # /inspect returns what is shown first; the selected block's chart (after_inspect) and
    # the downloads (inspect_downloads) are drawn from the kept result right after it.
    main_outputs = [o.summary, o.label, o.gradcam, o.spatial, o.overview, o.stats, state]

    def then_extras(event):
        event.then(IH.after_inspect, [state, o.block], [o.block, o.chart, o.weights_md], **PRIVATE,
                   ).then(IH.inspect_downloads, state, [o.charts, o.files], **PRIVATE)

    then_extras(i.run.click(
        IH.inspect_image, [i.image, i.variant, i.alpha, i.cmap, i.weights], main_outputs,
        api_name="inspect", **MODEL,
    ))
    for trigger in (i.alpha.release, i.cmap.input):
        then_extras(trigger(IH.rerender_inspect, [state, i.image, i.variant, i.alpha, i.cmap, i.weights],
                            main_outputs, **PRIVATE, **MODEL))
    o.block.input(IH.select_chart, [o.block, state], o.chart, **PRIVATE)
    # API only (the UI makes its downloads from the kept result): the files of /inspect
    gr.Button(visible=False).click(
        IH.inspect_files, [i.image, i.variant, i.alpha, i.cmap, i.weights], o.files,
        api_name="inspect_files", **MODEL)
    i.variant.change(IH.variant_info, i.variant, i.variant_md, **PRIVATE, queue=False)
    return main_outputs, then_extras


def _inspect_examples(i: InspectInputs, o: InspectOutputs, main_outputs: list,
                      then_extras: Callable[[Any], None]) -> None:
    if not EXAMPLES:
        gr.Markdown("No example images in `assets/` yet.", elem_classes="attnviz-note")
        return
    # Computed on click rather than cached (the selected variant runs them), then kept like any
    # other result for the extras. What the selected model can read comes first.
    ex = gr.Examples([[str(p)] for p in P.examples_for(EXAMPLES, DEFAULT_VARIANT)], [i.image],
                     examples_per_page=12, label="Examples (run on the selected variant)", elem_id="inspect-examples")
    then_extras(ex.load_input_event.then(
        IH.inspect_example, [i.image, i.variant, i.alpha, i.cmap], main_outputs, **PRIVATE, **MODEL))
    i.variant.change(P.variant_views(EXAMPLES), i.variant, [o.notice, ex.dataset], **PRIVATE, queue=False)


def inspect_tab(demo: gr.Blocks, variant_choices: list) -> InspectInputs:
    with gr.Tab("Inspect", id="inspect"):
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                inputs = _inspect_inputs(variant_choices)
            with gr.Column(scale=2):
                outputs = _inspect_outputs()
        state = kept_state()
        main_outputs, then_extras = _inspect_events(inputs, outputs, state)
        with inputs.examples:
            _inspect_examples(inputs, outputs, main_outputs, then_extras)
        intervene_panel(demo, inputs)
        drilldown_panel(demo, inputs, outputs, state)
    return inputs


def intervene_panel(demo: gr.Blocks, i: InspectInputs) -> None:
    """Switch a block's attention off or knock out channels, on the Inspect tab's image and variant."""
    with gr.Accordion("Intervene: switch a block's attention off or knock out channels",
                      open=False, elem_id="intervene-panel"):
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                blocks = gr.Dropdown([IV.ALL], value=[IV.ALL], multiselect=True, allow_custom_value=True,
                                     label="Blocks", elem_id="intervene-blocks")
                replacement = gr.Radio(list(IV.REPLACEMENTS), value="identity", label="Replacement",
                                       info="identity: block removed; mean: gate's mean; knockouts: "
                                            "the k highest / lowest-gate channels' output set to 0",
                                       elem_id="intervene-replacement")
                k = gr.Number(8, precision=0, label="k (channels, for knockouts)", elem_id="intervene-k")
                run = gr.Button("Intervene", variant="primary", elem_id="intervene-run")
            with gr.Column(scale=2):
                deltas = gr.Markdown("Choose blocks and a replacement, then press **Intervene** "
                                     "(uses the image and variant above).", elem_id="intervene-deltas")
                with gr.Row():
                    before = gr.Label(num_top_classes=5, label="Top-5 before", elem_id="intervene-before")
                    after = gr.Label(num_top_classes=5, label="Top-5 after", elem_id="intervene-after")
                with gr.Row():
                    cam_before = gr.Image(label="Grad-CAM before", type="filepath", interactive=False,
                                          elem_id="intervene-gradcam-before")
                    cam_after = gr.Image(label="Grad-CAM after (same class)", type="filepath",
                                         interactive=False, elem_id="intervene-gradcam-after")
                with gr.Accordion("Intervention summary (JSON)", open=False):
                    summary = gr.JSON(label="Intervention")
    run.click(IH.intervene_image, [i.image, i.variant, blocks, replacement, k, i.alpha, i.cmap],
              [deltas, before, after, cam_before, cam_after, summary], api_name="intervene", **MODEL)
    i.variant.change(IH.intervene_blocks, i.variant, blocks, **PRIVATE, queue=False)
    demo.load(IH.intervene_blocks, i.variant, blocks, **PRIVATE, queue=False)


def drilldown_panel(demo: gr.Blocks, i: InspectInputs, o: InspectOutputs, state: gr.State) -> None:
    """One channel's feature map before and after its block, on the Inspect tab's image and
    variant; a click on a bar of the selected block's chart opens it on that channel."""
    with gr.Accordion("Channel drill-down: one channel's feature map before and after its block",
                      open=False, elem_id="drilldown-panel") as panel:
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                block = gr.Dropdown([], label="Block", allow_custom_value=True, elem_id="drilldown-block")
                channel = gr.Number(-1, precision=0, label="Channel (-1: the highest gate)",
                                    elem_id="drilldown-channel")
                run = gr.Button("Show channel", elem_id="drilldown-run")
                text = gr.Markdown("", elem_id="drilldown-text")
            with gr.Column(scale=2):
                with gr.Row():
                    before = gr.Image(label="Entering the block", type="filepath", interactive=False,
                                      elem_id="drilldown-before")
                    after = gr.Image(label="Leaving the block (after the gates)", type="filepath",
                                     interactive=False, elem_id="drilldown-after")
                grid = gr.Image(label="Top-8 channels by gate (leaving the block)", type="filepath",
                                interactive=False, elem_id="drilldown-grid")
    run.click(IH.drilldown_image, [i.image, i.variant, block, channel, i.alpha, i.cmap],
              [text, before, after, grid], api_name="drilldown", **MODEL)
    o.chart.select(IH.drilldown_clicked, [state, o.block, i.image, i.alpha, i.cmap],
                   [panel, block, channel, text, before, after, grid], **PRIVATE, **MODEL)
    i.variant.change(IH.drilldown_blocks, i.variant, block, **PRIVATE, queue=False)
    demo.load(IH.drilldown_blocks, i.variant, block, **PRIVATE, queue=False)


# -------------------- Compare variants ---------------------------------------------------------


def _compare_columns() -> list:
    """One hidden column per possible variant: [column, head, top-5, Grad-CAM, spatial maps,
    channel chart, depth overview] each, in that order (what ``fill_columns`` returns)."""
    columns = []
    with gr.Row(equal_height=False):
        for i in range(L.MAX_COMPARE_VARIANTS):
            with gr.Column(visible=False, min_width=220) as col:
                head = gr.Markdown()
                lab = gr.Label(num_top_classes=5, label="Top-5")
                gc = gr.Image(label="Grad-CAM", type="filepath", format="png", interactive=False)
                sp = gallery(label="Spatial maps, by stage", columns=2)
                ch = chart("Channel weights (selected block)", elem_id=f"compare-col{i}-chart", buttons=["fullscreen"])
                ov = chart("Depth overview", elem_id=f"compare-col{i}-overview", buttons=["fullscreen"])
            columns += [col, head, lab, gc, sp, ch, ov]
    return columns


def compare_tab(variant_choices: list) -> None:
    with gr.Tab("Compare variants", id="compare"):
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                image = image_input(label="Image", height=260, elem_id="compare-image")
                variants = gr.CheckboxGroup(variant_choices, value=COMPARE_DEFAULT,
                                            label=f"Variants (2–{L.MAX_COMPARE_VARIANTS} with the timm models)")
                more = gr.Textbox("", label="And timm models (comma-separated timm:NAME)", elem_id="compare-more",
                                  placeholder="timm:efficientnet_b0, timm:seresnet50")
                run = gr.Button("Compare", variant="primary", elem_id="compare-run")
                if EXAMPLES:
                    gr.Examples([[str(p)] for p in EXAMPLES], [image], examples_per_page=12, label="Example images")
            with gr.Column(scale=2):
                agree = gr.Markdown("Choose an image and 2–5 variants, then press **Compare**.")
                stats = chart("Channel-gate statistics along depth, one line per variant", elem_id="compare-stats")
        with gr.Row():
            slot = gr.Dropdown([("deepest block of each variant", "")], value="", allow_custom_value=True,
                               label="Block / stage shown in every column (shared)", scale=2)
            alpha = gr.Slider(0.0, 1.0, value=DEFAULT_ALPHA, step=0.05, label="Overlay opacity", scale=1)
            cmap = gr.Dropdown(list(COLORMAPS), value=DEFAULT_CMAP, label="Colormap", scale=1)
        columns = _compare_columns()
        with gr.Accordion("All variants as galleries, and the summary (JSON)", open=False):
            gradcams = gallery(label="Grad-CAM per variant", columns=5)
            charts = gallery(label="Selected block's channel weights per variant", columns=2)
            overviews = gallery(label="Depth overview per variant", columns=2)
            summary = gr.JSON(label="Summary")
        state = kept_state()
        fill_inputs = [state, slot, alpha, cmap]
        fill_outputs = [slot, agree] + columns
        run.click(
            CH.compare_variants, [image, variants, slot, alpha, cmap, more],
            [summary, stats, gradcams, charts, overviews, state],
            api_name="compare", **MODEL,
        ).then(CH.fill_columns, fill_inputs, fill_outputs, **PRIVATE)
        slot.input(CH.fill_columns, fill_inputs, fill_outputs, **PRIVATE)
        alpha.release(CH.fill_columns, fill_inputs, fill_outputs, **PRIVATE)
        cmap.input(CH.fill_columns, fill_inputs, fill_outputs, **PRIVATE)


# -------------------- Compare images -----------------------------------------------------------


def images_tab(variant_choices: list) -> None:
    with gr.Tab("Compare images", id="compare_images"):
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                files = gr.File(label=f"Images (2–{L.MAX_COMPARE_IMAGES})", file_count="multiple",
                                file_types=["image"], elem_id="compare-images-files")
                if EXAMPLES:
                    examples = gr.Button("Use the example images", size="sm")
                    examples.click(example_set, None, files, **PRIVATE, queue=False)
                variant = variant_dropdown(variant_choices, EXAMPLE_VARIANT or DEFAULT_VARIANT)
                run = gr.Button("Compare images", variant="primary", elem_id="compare-images-run")
                gr.Markdown(
                    "Per block, each image's channel weights are a row of a heat map (channels sorted "
                    "by their mean over the images, or in index order; lines for up to 3 images), and "
                    "are compared by cosine similarity. SENet's analysis found early blocks "
                    "excite alike for all classes and late blocks class-specifically: similarity should "
                    "fall with depth when the images show different classes.", elem_classes="attnviz-note")
            with gr.Column(scale=2):
                thumbs = gallery(label="Images as the model saw them, with top-1", columns=4)
                sim = chart("Similarity of channel weights per depth", elem_id="compare-images-similarity")
                with gr.Row():
                    block = gr.Dropdown([], label="Block", interactive=True, allow_custom_value=True)
                    view = gr.Radio(list(CV.PROFILE_VIEWS), value=CV.DEFAULT_PROFILE_VIEW,
                                    label="Channel weights per image", elem_id="compare-images-view")
                profile = chart("Channel-weight profiles of the images (selected block)",
                                elem_id="compare-images-profile")
                with gr.Accordion("All blocks' profiles, and the summary (JSON)", open=False):
                    profiles = gallery(label="Profiles per block", columns=2)
                    summary = gr.JSON(label="Summary")
        kept = kept_state()
        run.click(
            CH.compare_images, [files, variant], [summary, sim, profiles, thumbs, kept],
            api_name="compare_images", **MODEL,
        ).then(CH.after_compare_images, [summary, profiles, block, view, kept], [block, profile], **PRIVATE)
        profile_inputs = [block, view, kept, summary, profiles]
        block.input(CH.select_profile, profile_inputs, profile, **PRIVATE)
        view.input(CH.select_profile, profile_inputs, profile, **PRIVATE)


# -------------------- Dataset ------------------------------------------------------------------


def _dataset_inputs(variant_choices: list) -> tuple[gr.Radio, gr.File, gr.Slider, gr.Dropdown, gr.Button, gr.File]:
    source = gr.Radio(list(DH.DATASET_SOURCES), value=DH.DATASET_SOURCES[0], label="Images")
    zip_file = gr.File(label="Zip of images (one subfolder per class, or loose)",
                       file_types=[".zip"], type="filepath", elem_id="dataset-zip")
    n = gr.Slider(8, D.MAX_APP_IMAGES, value=200, step=8, label="Images (at most)")
    variant = variant_dropdown(variant_choices, EXAMPLE_VARIANT or DEFAULT_VARIANT)
    run = gr.Button("Analyze", variant="primary", elem_id="dataset-run")
    saved = gr.File(label="Or open a saved analysis (.npz)", file_types=[".npz"], type="filepath",
                    elem_id="dataset-open")
    gr.Markdown(
        "SENet's population view (Fig. 6): the mean gate of every channel per class, and "
        "along depth the class-specificity (η², the share of gate variance between class "
        "means) and the share of saturated gates. Unlabelled images are grouped by the "
        "model's top-1. Definitions: docs/ANALYSIS.md.", elem_classes="attnviz-note")
    return source, zip_file, n, variant, run, saved


def dataset_tab(variant_choices: list) -> None:
    with gr.Tab("Dataset", id="dataset"):
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                source, zip_file, n, variant, run, saved = _dataset_inputs(variant_choices)
            with gr.Column(scale=2):
                with gr.Row():
                    blocks = gr.Dropdown([], multiselect=True, label="Blocks (panels)", interactive=True)
                    classes = gr.Dropdown([], multiselect=True, label="Classes (lines)", interactive=True)
                excitation = gr.Image(label="Mean excitation per channel by class", type="filepath", format="png",
                                      interactive=False, elem_id="dataset-excitation")
                with gr.Row():
                    specificity = gr.Image(label="Class-specificity along depth", type="filepath", format="png",
                                           interactive=False)
                    saturation = gr.Image(label="Saturated gates along depth", type="filepath", format="png",
                                          interactive=False)
                spatial = gr.Image(label="Mean spatial gate by class (last spatial block)", type="filepath",
                                   format="png", interactive=False)
                file = gr.File(label="Analysis file (.npz, attnviz-analysis/1)", interactive=False,
                               elem_id="dataset-file")
                with gr.Accordion("Summary (JSON)", open=False):
                    summary = gr.JSON(label="Summary")
        state = gr.State(None, time_to_live=S.STATE_TTL_S)  # the saved analysis file's path
        outputs = [summary, excitation, specificity, saturation, spatial, file, blocks, classes, state]
        run.click(DH.analyze_dataset, [source, zip_file, n, variant], outputs, api_name="analyze", **MODEL)
        saved.upload(DH.open_analysis, saved, outputs, **PRIVATE)
        for selector in (blocks, classes):
            selector.input(DH.redraw_dataset, [state, blocks, classes], [excitation, spatial], **PRIVATE)


# -------------------- the page -----------------------------------------------------------------


def models_tab() -> gr.Markdown:
    with gr.Tab("Models", id="models"):
        gr.Markdown("Every variant, where its weights come from, their licence and the top-1 accuracy "
                    "their authors report. Built-in models ship with attnviz and work offline; "
                    "ImageNet weights download once into the usual caches (torch hub / Hugging Face).")
        return gr.Markdown(L.models_table_markdown())


def build() -> gr.Blocks:
    variant_choices = L.variant_choices()
    with gr.Blocks(title="attnviz — attention blocks in ResNets", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# attnviz — what attention blocks inside ResNets do\n"
            "Channel gates (SE, ECA, CBAM, BAM: one weight per channel), spatial maps (CBAM, BAM) "
            "drawn exactly over the region the model saw, and Grad-CAM as a baseline. "
            "Built-in models run offline; ImageNet variants marked ⬇ download their weights on first use.")
        status, timer = gr.Markdown(visible=False, elem_id="preload-status"), gr.Timer(P.TICK_S)
        timer.tick(P.status_tick, None, [status, timer], **PRIVATE, queue=False)
        with gr.Tabs():
            inspect = inspect_tab(demo, variant_choices)
            compare_tab(variant_choices)
            images_tab(variant_choices)
            dataset_tab(variant_choices)
            models_md = models_tab()
        demo.load(P.session_variant, None, inspect.variant, **PRIVATE, queue=False)  # after a preload
        demo.load(lambda v: (L.models_table_markdown(), IH.variant_info(v)), inspect.variant,
                  [models_md, inspect.variant_md], **PRIVATE, queue=False)
    return demo


demo = build()


def main(argv: list[str] | None = None) -> None:
    """``python app.py [--weights VARIANT=FILE] [--preload NAMES] [--mcp]``: see attnviz.app_launch."""
    app_launch.launch(demo, argv, theme=THEME, css=CSS)


if __name__ == "__main__":
    sys.exit(main())
