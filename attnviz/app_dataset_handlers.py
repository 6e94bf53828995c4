"""What the Dataset tab's events call: ``/analyze`` (gate statistics of a set of images), opening
a saved analysis and redrawing it for other blocks / classes. The tab's logic without gradio is
:mod:`attnviz.app_dataset`'s; the statistics are :func:`attnviz.analyze`'s.
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from . import app_dataset as D
from . import app_server as S
from .analysis import Analysis
from .app_server import DEFAULT_VARIANT, EXAMPLE_VARIANT, GPU
from .models import LoadedModel

DATASET_SOURCES = ("Built-in synthetic set", "Uploaded zip of images")


@S.torch_thread.runs
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
    """Gate statistics of a set of images (SENet's class-wise excitation analysis).

    Args:
        source: "Built-in synthetic set", or "Uploaded zip of images" (then zip_file).
        zip_file: zip of images, one subfolder per class or loose.
        n_images: how many images to analyse, 1 to 2000.
        variant: model variant name (see /inspect).
    Returns:
        summary JSON, mean excitation per channel by class, class-specificity and saturation
        along depth, the mean spatial gate by class, the analysis file (.npz), and the block and
        class choices."""
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
    loaded = S.load_variant(variant, progress)
    folder = S.scratch_dir()
    progress(0.1, desc=f"Analysing with {loaded.name}…")
    return _dataset_outputs(D.views(_run_dataset(spec, loaded, folder, n, progress), folder))


def open_analysis(file):
    if not file:
        return (gr.skip(),) * 9
    try:
        analysis = Analysis.load(str(file))
    except ValueError as exc:
        raise gr.Error(str(exc)) from None
    return _dataset_outputs(D.views(analysis, S.scratch_dir()))


def redraw_dataset(path, blocks, classes):
    if not path or not Path(path).is_file():  # nothing analysed yet, or expired with its scratch folder
        if path:
            gr.Warning("This analysis is no longer kept on the server: press Analyze to run it again.")
        return gr.skip(), gr.skip()
    # only the two figures the pickers change: no other figure, summary or file is redone
    return D.picked_figures(Analysis.load(path), S.scratch_dir(), blocks, classes)
