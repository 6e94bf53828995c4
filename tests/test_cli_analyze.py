"""``python -m attnviz analyze``: its files, one-line errors, exit status, --resume."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnviz.analysis import Analysis, analyze
from attnviz.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = "shapes_se_resnet"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attnviz", "analyze", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=240, env={**os.environ})


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("classes")
    for k, name in enumerate(("red circle", "blue square")):
        (root / name).mkdir()
        for j in range(3):
            Image.fromarray(generate(10 * k + j, seed=5, size=96).image).save(root / name / f"{j}.png")
    (root / "blue square" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    return root


def test_writes_report_and_lists_the_skipped_file(folder, tmp_path):
    out = tmp_path / "out"
    res = run_cli(str(folder), "--model", BUILTIN, "--out", str(out), "--batch-size", "4", "--workers", "1")
    assert res.returncode == 1, res.stderr  # done, but a file was skipped
    assert "Traceback" not in res.stderr
    skipped = [line for line in res.stderr.splitlines() if line.startswith("attnviz: skipped")]
    assert len(skipped) == 1 and "broken.jpg" in skipped[0]
    assert "6 of 7 images analysed" in res.stderr and "img/s" in res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 6 and summary["complete"] and summary["classes"] == ["blue square", "red circle"]
    assert [s["file"].endswith("broken.jpg") for s in summary["skipped"]] == [True]
    assert summary["accuracy"] is not None  # the folder names are the model's class names
    assert [b["name"] for b in summary["blocks"]] == ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    report = (out / "report.md").read_text()
    assert "broken.jpg" in report and "python -m attnviz analyze" in report
    assert "![class_profiles](class_profiles.png)" in report
    for png in ("excitation.png", "specificity.png", "saturation.png", "class_profiles.png"):
        with Image.open(out / png) as im:
            assert im.size[0] > 300
    assert Analysis.load(out / "analysis.npz").n_images == 6


@pytest.mark.parametrize("args, match", [
    (("{tmp}/missing",), "no such file or folder"),
    (("{folder}", "--classes", "red circle,purple cross"), "purple cross do not exist"),
    (("synthetic:x",), "positive number"),
    (("synthetic:4", "--engine", "ray", "--ray-actors", "0"), "--ray-actors must be positive"),
])
def test_bad_source_is_one_line_and_exit_2(folder, tmp_path, args, match):
    args = [a.format(tmp=tmp_path, folder=folder) for a in args]
    res = run_cli(*args, "--model", BUILTIN, "--out", str(tmp_path / "o"))
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("attnviz: error:") and match in lines[0], res.stderr


def test_resume_completes_a_partial_run(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # One image per forward: each image's gates are then bitwise the same in every partition.
    analyze("synthetic:12", BUILTIN, batch_size=1, num_workers=0, device="cpu", stop=5).save(out / "analysis.npz")
    res = run_cli("synthetic:12", "--model", BUILTIN, "--out", str(out), "--batch-size", "1", "--workers", "0",
                  "--resume", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert "/7 " in res.stderr  # the bar counts only the 7 items left
    resumed = Analysis.load(out / "analysis.npz")
    full = analyze("synthetic:12", BUILTIN, batch_size=1, num_workers=0, device="cpu")
    assert resumed.ranges == [(0, 12)] and resumed.n_images == 12
    np.testing.assert_array_equal(resumed.confusion, full.confusion)
    for a, b in zip(resumed.blocks, full.blocks):
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(a.m2, b.m2, rtol=1e-9, atol=1e-14)
        np.testing.assert_array_equal(a.hist, b.hist)
    other = run_cli("synthetic:12", "--model", "shapes_eca_resnet", "--out", str(out), "--resume")
    assert other.returncode == 2 and "cannot merge" in other.stderr and "Traceback" not in other.stderr
