"""``python -m attnviz``: the documented files, clear one-line errors, exit status."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import attnviz
from attnviz.cli import unique_stems
from attnviz.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = "shapes_cbam_resnet"


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "attnviz", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=240, env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("imgs")
    size = attnviz.get_variant(BUILTIN).input_size
    (d / "sub").mkdir()
    paths = {
        "a": d / "a.png",
        "a_again": d / "sub" / "a.jpg",  # same stem, other folder
        "broken": d / "broken.png",
    }
    Image.fromarray(generate(1, seed=77, size=size).image).save(paths["a"])
    Image.fromarray(generate(2, seed=77, size=size).image).save(paths["a_again"], quality=95)
    paths["broken"].write_text("this is not an image")
    return paths


def test_unique_stems():
    assert unique_stems(["x/cat.jpg", "y/cat.png", "cat-2.png", "z/cat.gif"]) == ["cat", "cat-2", "cat-2-2", "cat-3"]


def test_models_json_lists_every_variant():
    res = run_cli("models", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    names = {r["name"] for r in rows}
    assert {"resnet50", "se_resnet50", "eca_resnet50", "cbam_resnet50", "bam_resnet50", BUILTIN} <= names
    for r in rows:
        assert r["block"] in {"se", "eca", "cbam", "bam", "spatial", "none"}
        assert isinstance(r["params"], int) and r["params"] > 0
        assert isinstance(r["input_size"], int) and isinstance(r["weights_available"], bool)
        assert r["source"]
    by_name = {r["name"]: r for r in rows}
    assert by_name[BUILTIN]["weights_available"] is True
    assert by_name["cbam_resnet50"]["params"] == 28_089_624


def test_inspect_writes_documented_files_and_reports_broken_file(images, tmp_path):
    out = tmp_path / "out"
    res = run_cli("inspect", str(images["a"]), str(images["broken"]), str(images["a_again"]),
                  "--variant", BUILTIN, "--out", str(out))
    assert res.returncode == 1
    err_lines = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(err_lines) == 1 and "broken.png" in err_lines[0]
    assert "Traceback" not in res.stderr
    for stem in ("a", "a-2"):
        summary = json.loads((out / f"{stem}.json").read_text())
        assert summary["variant"] == BUILTIN
        assert len(summary["predictions"]) == 5
        assert sum(p["probability"] for p in summary["predictions"]) <= 1.0 + 1e-6
        assert {"preprocess_ms", "forward_ms", "total_ms"} <= set(summary["timings_ms"])
        blocks = summary["blocks"]
        assert blocks and all(b["channel_stats"]["top_channels"] for b in blocks)
        with np.load(out / f"{stem}.npz") as z:
            keys = set(z.files)
            assert {"logits", "probs", "gradcam"} <= keys
            for b in blocks:
                assert z[f"channel/{b['name']}"].shape == (b["channels"],)
                assert list(z[f"spatial/{b['name']}"].shape) == b["spatial_shape"]
        figs = {p.name for p in (out / stem).iterdir()}
        assert {"input.png", "gradcam.png", "depth_overview.png"} <= figs
        assert {f"channels_{b['name']}.png" for b in blocks} <= figs
        assert {f"spatial_{b['name']}.png" for b in blocks} <= figs
        with Image.open(out / stem / "gradcam.png") as im:
            assert np.asarray(im).std() > 5  # not blank
    assert not (out / "broken.json").exists()


def test_inspect_reports_unwritable_outputs_per_image(images, tmp_path):
    """--out that is a file: a usage error up front. A file in the way of one image's figure
    folder: that image is reported, the others are written, exit 1, no traceback."""
    not_a_folder = tmp_path / "out.txt"
    not_a_folder.write_text("x")
    res = run_cli("inspect", str(images["a"]), "--variant", BUILTIN, "--out", str(not_a_folder))
    assert res.returncode == 2 and "not a folder" in res.stderr and "Traceback" not in res.stderr

    out = tmp_path / "out"
    out.mkdir()
    (out / "a").write_text("in the way of a's figures")
    res = run_cli("inspect", str(images["a"]), str(images["a_again"]), "--variant", BUILTIN, "--out", str(out))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "a: cannot write" in errors[0]
    assert (out / "a-2" / "gradcam.png").is_file() and (out / "a-2.json").is_file()


def test_inspect_amp(images, tmp_path):
    res = run_cli("inspect", str(images["a"]), "--variant", BUILTIN, "--out", str(tmp_path / "fp16"),
                  "--amp", "fp16", "--device", "cpu")
    assert res.returncode == 2 and "CUDA" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "fp16").exists()
    res = run_cli("inspect", str(images["a"]), "--variant", BUILTIN, "--out", str(tmp_path / "bf16"),
                  "--amp", "bf16", "--no-figures")
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "bf16" / "a.json").read_text())["amp"] == "bf16"


def test_inspect_with_local_weights_file(images, tmp_path):
    """--weights: a user checkpoint with module. prefix nested in state_dict loads."""
    loaded = attnviz.load_model(BUILTIN, device="cpu")
    ckpt = tmp_path / "mine.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in loaded.model.state_dict().items()}}, ckpt)
    out = tmp_path / "out"
    res = run_cli("inspect", str(images["a"]), "--variant", BUILTIN, "--weights", str(ckpt),
                  "--out", str(out), "--no-figures")
    assert res.returncode == 0, res.stderr
    mine = np.load(out / "a.npz")["logits"]
    ref = attnviz.inspect(images["a"], loaded).logits
    np.testing.assert_allclose(mine, ref, rtol=1e-4, atol=1e-4)
    assert json.loads((out / "a.json").read_text())["weights"] == "local file mine.pth"

    bad = tmp_path / "bad.pth"  # a plain ResNet's checkpoint: the CBAM blocks' keys are missing
    torch.save({k: v for k, v in loaded.model.state_dict().items() if ".attn." not in k}, bad)
    res = run_cli("inspect", str(images["a"]), "--variant", BUILTIN, "--weights", str(bad), "--out", str(out))
    assert res.returncode == 1
    assert "missing keys: layer1.0.attn." in res.stderr and "Traceback" not in res.stderr


def test_default_variant_is_used_without_variant(images, tmp_path):
    res = run_cli("inspect", str(images["a"]), "--out", str(tmp_path), "--no-figures",
                  env={"TORCH_HOME": str(tmp_path / "torch"), "HF_HOME": str(tmp_path / "hf")})
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "a.json").read_text())["variant"] == BUILTIN
