"""The page's side of the preload (attnviz.app_preload) and the start-up flags (attnviz.app_launch),
without a server: the status line for each state, the notice, the examples' order."""
from __future__ import annotations

from pathlib import Path

import pytest

from attnviz import app_launch, app_preload
from attnviz.models import preload


def _status(*items: preload.Item, done: bool = True) -> preload.PreloadStatus:
    status = preload.PreloadStatus([i.name for i in items])
    for i in items:
        status.update(i.name, state=i.state, done=i.done, total=i.total, message=i.message)
    if done:
        status.done.set()
    return status


def test_status_line_while_running_and_after_a_failure():
    running = _status(preload.Item("cbam_resnet50", "downloading", 42, 100), preload.Item("seresnet50"),
                      done=False)
    assert app_preload.status_markdown(running) == \
        "⬇ ImageNet weights: cbam_resnet50 downloading 42 % · seresnet50 waiting"
    failed = _status(preload.Item("cbam_resnet50", "failed", message="the server answered HTTP 404 Not Found"))
    text = app_preload.status_markdown(failed)
    assert text.startswith("⚠ ") and "cbam_resnet50 failed: the server answered HTTP 404 Not Found" in text
    assert app_preload.status_markdown(None) == "" and app_preload.status_markdown(_status()) == ""


def test_notice_only_for_builtin_models():
    text = app_preload.notice_text("shapes_cbam_resnet")
    assert "they know 8 shapes, not photos" in text and "python -m attnviz download cbam_resnet50" in text
    assert app_preload.notice_text("cbam_resnet50") == "" and app_preload.notice_text(None) == ""


def test_examples_the_model_can_read_come_first():
    files = [Path(n) for n in ("astronaut.jpg", "synthetic_red_circle.png", "chelsea.jpg", "synthetic_a.png")]
    assert [p.name for p in app_preload.examples_for(files, "shapes_se_resnet")] == \
        ["synthetic_a.png", "synthetic_red_circle.png", "astronaut.jpg", "chelsea.jpg"]
    assert [p.name for p in app_preload.examples_for(files, "se_resnet50")][:2] == ["astronaut.jpg", "chelsea.jpg"]


def test_preload_flag_is_checked(capsys):
    with pytest.raises(SystemExit):
        app_launch.configure(["--preload", "cbam_resnet50,nope"])
    err = capsys.readouterr().err
    assert "--preload='cbam_resnet50,nope': 'nope' is not an ImageNet variant" in err
