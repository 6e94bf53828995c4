"""Your own model: a checkpoint written by ``train --imagefolder`` describes itself (architecture,
classes, preprocessing, provenance), so ``--weights FILE`` alone is enough; model folders add
variants beside the built-ins; the trainer's offline error is one line."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import attnviz
from attnviz import train
from attnviz.cli import main as cli_main
from attnviz.models import zoo
from attnviz.models.descriptions import DESCRIPTION_KEY, provenance
from attnviz.models.loading import clear_cache
from attnviz.models.resnet import AttentionResNet
from attnviz.models.weights import read_safetensors_metadata

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["apple", "kiwi", "plum"]
NAME = "fruit_se_resnet18"


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attnviz", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=240, env={**os.environ, **env})


def _offline_env(tmp: Path) -> dict[str, str]:
    """Empty caches and no way out: a download fails fast (the proxy refuses) wherever the test runs."""
    return {"TORCH_HOME": str(tmp / "torch"), "HF_HOME": str(tmp / "hf"), "HF_HUB_OFFLINE": "1",
            "HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "ATTNVIZ_MODELS": ""}


def _image_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for cls, tint in zip(CLASSES, ((200, 60, 60), (60, 200, 60), (120, 40, 160))):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.clip(rng.normal(tint, 30, (40, 44, 3)), 0, 255).astype(np.uint8)).save(
                root / cls / f"{i}.png")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A model fine-tuned by ``train --imagefolder`` (1 epoch, 32 px) on a stand-in backbone: torchvision's
    resnet18 at random init, saved as its ImageNet state dict is (no download)."""
    import torchvision

    tmp = tmp_path_factory.mktemp("own")
    _image_folder(tmp / "fruit")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp / "resnet18.pth")
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args([
        "--imagefolder", str(tmp / "fruit"), "--arch", "resnet18", "--variants", "se", "--backbone-weights",
        str(tmp / "resnet18.pth"), "--epochs", "1", "--batch-size", "6", "--image-size", "32", "--out",
        str(tmp / "out"), "--workers", "0", "--device", "cpu", "--no-progress",
    ])
    assert train.run(args) == 0
    return tmp / "out" / f"{NAME}.safetensors"


@pytest.fixture
def alone(trained, tmp_path) -> Path:
    """The trained weights file copied somewhere else without its sidecar."""
    (tmp_path / "elsewhere").mkdir()
    return Path(shutil.copy(trained, tmp_path / "elsewhere" / trained.name))


@pytest.fixture
def fresh_registry(monkeypatch):
    """Variant list and loaded models rebuilt for the test's environment, and forgotten after it."""
    monkeypatch.delenv("ATTNVIZ_MODELS", raising=False)
    monkeypatch.setattr(zoo, "_added_models_dirs", [])
    zoo.reset_registry()
    clear_cache()
    yield
    zoo.reset_registry()
    clear_cache()


def test_trainer_stores_its_sidecar_in_the_weights_file(trained):
    sidecar = json.loads(trained.with_suffix(".json").read_text())
    meta = read_safetensors_metadata(trained)
    assert json.loads(meta[DESCRIPTION_KEY]) == sidecar
    assert sidecar["classes"] == CLASSES and sidecar["dataset"]["train_size"] + sidecar["dataset"]["val_size"] == 18
    assert sidecar["training"]["epochs"] == 1 and "val_accuracy" in sidecar["metrics"]


def test_cli_inspect_with_weights_alone(trained, alone, tmp_path):
    img = tmp_path / "kiwi.png"
    shutil.copy(trained.parents[1] / "fruit" / "kiwi" / "0.png", img)
    res = run_cli("inspect", str(img), "--weights", str(alone), "--out", str(tmp_path / "o"), "--no-figures",
                  "--device", "cpu", env=_offline_env(tmp_path))
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "o" / "kiwi.json").read_text())
    assert summary["variant"] == NAME and summary["input_size"] == 32 and summary["random_init"] is False
    assert sorted(p["label"] for p in summary["predictions"]) == CLASSES  # its own classes, all three
    acc = json.loads(trained.with_suffix(".json").read_text())["metrics"]["val_accuracy"]
    assert summary["weights"] == (f"fine-tuned by attnviz on {trained.parents[1] / 'fruit'}, 18 images, "
                                  f"1 epoch, val acc {acc:.3f}")
    assert len(summary["blocks"]) == 8 and {b["kind"] for b in summary["blocks"]} == {"se"}
    assert f"inspected with {NAME} (fine-tuned by attnviz on" in res.stderr


def test_load_model_weights_alone_builds_the_described_model(trained, alone, fresh_registry):
    loaded = attnviz.load_model(weights=alone, device="cpu")
    v = loaded.variant
    assert (v.name, v.origin, v.block, v.builtin) == (NAME, "file", "se", False)
    assert v.arch["depth"] == 18 and v.arch["num_classes"] == 3 and loaded.classes == tuple(CLASSES)
    assert (v.preprocess.input_size, v.preprocess.resize_size) == (32, 37)
    assert loaded.model.fc.out_features == 3 and loaded.weights.startswith("fine-tuned by attnviz on")
    result = attnviz.inspect(np.full((40, 44, 3), 128, np.uint8), loaded, gradcam=False)
    assert {p.label for p in result.predictions} == set(CLASSES)
    # Without the embedded copy, the sidecar beside the file says the same, through the same function.
    bare = alone.with_name("bare.safetensors")
    save_file(load_file(str(alone)), str(bare))
    assert DESCRIPTION_KEY not in read_safetensors_metadata(bare)
    shutil.copy(trained.with_suffix(".json"), bare.with_suffix(".json"))
    described = attnviz.variant_from_weights_file(bare)
    assert (described.name, described.arch, described.classes) == ("bare", v.arch, v.classes)
    assert described.weights.description == v.weights.description


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """No ImageNet weights on "this machine": the default variant is the built-in one."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)


def test_files_without_description_keep_todays_behaviour(tmp_path, empty_caches, fresh_registry):
    default = attnviz.default_variant_name()
    assert default == "shapes_cbam_resnet"
    for name in (default, "shapes_se_resnet"):  # a plain state dict, no metadata, no sidecar
        state = attnviz.load_model(name, device="cpu").model.state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / f"{name}_plain.safetensors"))
    assert attnviz.variant_from_weights_file(tmp_path / f"{default}_plain.safetensors") is None
    loaded = attnviz.load_model(weights=tmp_path / f"{default}_plain.safetensors", device="cpu")
    assert loaded.name == default and loaded.weights == f"local file {default}_plain.safetensors"
    with pytest.raises(attnviz.WeightsError, match="does not fit this architecture"):  # into the default, as before
        attnviz.load_model(weights=tmp_path / "shapes_se_resnet_plain.safetensors", device="cpu")
    assert attnviz.load_model("shapes_se_resnet", weights=tmp_path / "shapes_se_resnet_plain.safetensors",
                              device="cpu").name == "shapes_se_resnet"


TINY_ARCH = {"depth": 10, "num_classes": 3, "attn": "se", "attn_kwargs": {"reduction": 2},
             "widths": [8, 8, 8, 8], "stem_width": 8}


def _tiny_description(**changes) -> dict:
    meta = {"format": "attnviz-checkpoint/1", "name": "tiny", "block": "se", "arch": dict(TINY_ARCH),
            "classes": ["a", "b", "c"], "preprocess": {"input_size": 32, "resize_size": 36, "mean": [0.5] * 3,
                                                        "std": [0.25] * 3, "interpolation": "bilinear"},
            "dataset": {"generator": "torchvision.datasets.ImageFolder", "root": "/data/abc", "train_size": 9,
                        "val_size": 3, "backbone": "none (random init)"},
            "training": {"epochs": 2}, "metrics": {"val_accuracy": 0.5}, "license": "test"}
    for key, value in changes.items():
        if key.startswith("arch_"):
            meta["arch"][key[5:]] = value
        else:
            meta[key] = value
    return meta


def _described_file(path: Path, description: dict | str) -> Path:
    torch.manual_seed(0)
    state = AttentionResNet(**TINY_ARCH).state_dict()
    text = description if isinstance(description, str) else json.dumps(description)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={DESCRIPTION_KEY: text})
    return path


def test_a_tiny_description_loads_and_says_where_it_came_from(tmp_path, fresh_registry):
    loaded = attnviz.load_model(weights=_described_file(tmp_path / "tiny.safetensors", _tiny_description()))
    assert loaded.classes == ("a", "b", "c") and loaded.preprocess.resize_size == 36
    assert loaded.weights == "trained from random init by attnviz on /data/abc, 12 images, 2 epochs, val acc 0.500"
    assert loaded.variant.description == "SE ResNet-10, " + loaded.weights
    synthetic = _tiny_description(dataset={"generator": "attnviz.synthetic"})
    assert provenance(synthetic) == "trained by attnviz on its synthetic shapes, 2 epochs, val acc 0.500"
    assert provenance(synthetic, builtin=True) == "built-in: attnviz's own training on synthetic shapes (offline)"


@pytest.mark.parametrize("description, error", [
    (_tiny_description(format="attnviz-checkpoint/2"),
     "description format 'attnviz-checkpoint/2' is not supported; accepted: attnviz-checkpoint/1"),
    (_tiny_description(arch_wings=2), "unknown architecture keys ['wings']; accepted: depth, "),
    (_tiny_description(arch_depth=11), "its architecture does not build (ValueError: ResNet depth must be one of"),
    (_tiny_description(classes=["a", "b"]), "lists 2 classes but its architecture has 3 outputs"),
    (_tiny_description(classes=list("abcd"), arch_num_classes=4), "names 4 classes but its classifier fc.weight "
                                                                  "has 3 outputs"),
    (_tiny_description(block="sk"), "unknown attention block 'sk'; accepted: se, eca"),
    (_tiny_description(preprocess={"input_size": 32, "interpolation": "lanczos"}), "'preprocess' is not valid"),
    ("{not json", "'attnviz.description' metadata is not valid JSON"),
])
def test_bad_descriptions_are_one_line_errors_naming_the_file(tmp_path, fresh_registry, description, error):
    path = _described_file(tmp_path / "bad.safetensors", description)
    with pytest.raises(attnviz.WeightsError) as e:
        attnviz.load_model(weights=path, device="cpu")
    assert str(e.value).startswith(f"{path}: ") and error in str(e.value) and "\n" not in str(e.value)


def test_cli_bad_description_is_one_line(tmp_path, fresh_registry, capsys):
    path = _described_file(tmp_path / "bad.safetensors", _tiny_description(format="attnviz-checkpoint/9"))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    assert cli_main(["inspect", str(tmp_path / "x.png"), "--weights", str(path), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"attnviz: error: {path}: description format")


def test_models_folders_add_variants_beside_the_builtins(trained, tmp_path, monkeypatch, fresh_registry, capsys):
    builtins = {n: v for n, v in attnviz.variants().items()}
    other = tmp_path / "other"
    other.mkdir()
    _described_file(other / "shapes_se_resnet.safetensors", _tiny_description())  # same name as a built-in
    (other / "notes.json").write_text('{"unrelated": true}')  # other files in the folder are not models
    monkeypatch.setenv("ATTNVIZ_MODELS", os.pathsep.join([str(trained.parent), str(other)]))
    zoo.reset_registry()
    reg = attnviz.variants()
    assert all(reg[n] == v and reg[n].origin == v.origin for n, v in builtins.items())  # none replaced
    assert set(reg) - set(builtins) == {NAME, "shapes_se_resnet@other"}
    assert reg[NAME].origin == "folder" and reg[NAME].classes == tuple(CLASSES) and not reg[NAME].builtin
    assert reg["shapes_se_resnet@other"].classes == ("a", "b", "c")
    assert attnviz.load_model(NAME, device="cpu").weights.startswith("fine-tuned by attnviz on")
    # --models-dir does the same from the command line
    monkeypatch.delenv("ATTNVIZ_MODELS")
    zoo.reset_registry()
    assert cli_main(["models", "--json", "--models-dir", str(other)]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["shapes_se_resnet@other"]["origin"] == "folder" and rows["shapes_se_resnet"]["origin"] == "builtin"
    assert cli_main(["models", "--models-dir", str(tmp_path / "missing")]) == 2
    assert "--models-dir" in capsys.readouterr().err


def test_attnviz_checkpoints_still_replaces_the_builtin_folder(trained, monkeypatch, fresh_registry):
    monkeypatch.setenv("ATTNVIZ_CHECKPOINTS", str(trained.parent))
    zoo.reset_registry()
    reg = attnviz.variants()
    assert NAME in reg and reg[NAME].builtin and not any(n.startswith("shapes_") for n in reg)
    assert reg[NAME].weights.description.startswith("fine-tuned by attnviz on")  # true, not "synthetic shapes"


def test_train_offline_without_backbone_weights_is_one_line(trained, tmp_path):
    res = run_cli("train", "--imagefolder", str(trained.parents[1] / "fruit"), "--arch", "resnet18",
                  "--out", str(tmp_path / "out"), "--variants", "se", env=_offline_env(tmp_path))
    assert res.returncode == 1
    err = res.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("error: torchvision's resnet18 ImageNet weights") and "--backbone-weights FILE" in err
    assert "--backbone-weights none" in err and not list((tmp_path / "out").glob("*.safetensors"))


def test_backbone_none_cannot_be_frozen(trained, tmp_path):
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args(["--imagefolder", str(trained.parents[1] / "fruit"), "--arch", "resnet18",
                              "--backbone-weights", "none", "--freeze-backbone", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--freeze-backbone needs pretrained --backbone-weights"):
        train.run(args)
