"""What the page says about the models it runs: the background preload's status line, the
default variant of a new session, the notice over a built-in model's prediction, and which
examples come first.

The preload itself is the library's (:mod:`attnviz.models.preload`); ``app.py`` starts it in
``main()`` (:mod:`attnviz.app_launch`) and this module reads its status for the page.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from . import app_logic as L
from .app_server import DEFAULT_VARIANT
from .models import default_variant_name, preload, variants
from .models import weights as W

TICK_S = 1.0  # how often an open page asks for the preload's progress while it runs

NOTICE = ("**Offline demo models** trained on synthetic shapes: they know {n} shapes, not photos — "
          "for ImageNet models run `python -m attnviz download cbam_resnet50` or deploy online.")


def is_builtin(name: str | None) -> bool:
    """Whether ``name`` is a built-in (synthetic-shapes) variant."""
    v = variants().get(name or "")
    return bool(v and v.builtin)


def notice_text(variant: str | None) -> str:
    """The notice above the prediction while a built-in (synthetic-shapes) model is selected, else ''."""
    v = variants().get(variant or "")
    return NOTICE.format(n=len(v.class_names)) if v is not None and v.builtin else ""


def notice(variant: str | None) -> dict[str, Any]:
    text = notice_text(variant)
    return gr.update(value=text, visible=bool(text))


def examples_for(examples: Sequence[Path], variant: str | None) -> list[Path]:
    """The examples the selected model can read first: synthetic scenes for a built-in model,
    photos for an ImageNet one (each group in name order)."""
    scenes_first = is_builtin(variant)
    return sorted(examples, key=lambda p: (p.name.startswith("synthetic") != scenes_first, p.name))


def example_samples(examples: Sequence[Path], variant: str | None) -> dict[str, Any]:
    """The Inspect examples' dataset, reordered for ``variant``."""
    return gr.Dataset(samples=[[str(p)] for p in examples_for(examples, variant)])


def variant_views(examples: Sequence[Path]) -> Callable[[str | None], tuple]:
    """The handler of a variant change: the notice and the examples' order."""
    def on_change(variant: str | None) -> tuple:
        return notice(variant), example_samples(examples, variant)

    return on_change


def session_variant() -> dict[str, Any]:
    """A new session's variant choices and default: the labels say which weights are here now,
    and an ImageNet variant is the default as soon as its weights are (unchanged otherwise)."""
    status = preload.current()
    if status is None or not status.items():
        return gr.skip()
    try:
        default = default_variant_name()
    except W.WeightsError:
        default = DEFAULT_VARIANT
    return gr.update(choices=L.variant_choices(), value=default)


def status_markdown(status: preload.PreloadStatus | None) -> str:
    """The status line: each variant's state while fetching, then what the preload achieved."""
    if status is None or not status.items():
        return ""
    line = status.line()
    if status.running:
        return f"⬇ {line}"
    failed = any(i.state in ("failed", "skipped") for i in status.items())
    try:
        default = default_variant_name()
    except W.WeightsError:
        default = None
    tail = (f" — new sessions open on **{default}** (reload this page to switch)"
            if default and not is_builtin(default) else "")
    return f"{'⚠ ' if failed else '✓ '}{line}{tail}"


def status_tick() -> tuple[dict[str, Any], gr.Timer]:
    """gr.Timer's tick: the status line, and the timer stops once the preload has finished."""
    status = preload.current()
    text = status_markdown(status)
    running = status is not None and status.running
    return gr.update(value=text, visible=bool(text)), gr.Timer(active=running)
