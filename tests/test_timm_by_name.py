"""Any timm model by name (``timm:NAME``): weights through the zoo's Hugging Face Hub path (here a
hub cache staged in the exact layout ``huggingface_hub`` writes), a one-line error offline,
random init only when asked for, and then flagged."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import attnviz
from attnviz.cli import main as cli_main
from attnviz.models.loading import clear_cache
from attnviz.models.timm_by_name import timm_class_names

from .weights_support import put_in_hf_cache

ROOT = Path(__file__).resolve().parents[1]
MODEL = "test_resnet.r160_in1k"  # timm's own tiny test ResNet (0.47 M parameters), ImageNet head
HUB_ID = f"timm/{MODEL}"


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache and HF_HUB_OFFLINE=1; returns HF_HOME."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clear_cache()
    yield tmp_path / "hf"
    clear_cache()


def _timm_state(seed: int, **kwargs) -> dict[str, torch.Tensor]:
    import timm

    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in timm.create_model(MODEL, pretrained=False, **kwargs).state_dict().items()}


def test_the_variant_comes_from_timms_pretrained_cfg():
    v = attnviz.get_variant(f"timm:{MODEL}")
    assert (v.name, v.family, v.origin, v.arch) == (f"timm:{MODEL}", "timm", "timm", {"model_name": MODEL})
    assert (v.weights.hf_repo, v.weights.hf_filename, v.weights.format) == (HUB_ID, "model.safetensors", "timm")
    # timm's data config: 160 px, crop_pct 0.95 -> resize floor(160 / 0.95) = 168, bilinear, mean/std 0.5
    pre = v.preprocess
    assert (pre.input_size, pre.resize_size, pre.interpolation, pre.mean) == (160, 168, "bilinear", (0.5,) * 3)
    assert attnviz.get_variant("timm:efficientnet_b0").preprocess.interpolation == "bicubic"
    assert v.classes is None and v.class_names == attnviz.models.imagenet_classes()


def test_class_names_of_other_heads():
    import timm.models

    in21k = timm.models.get_pretrained_cfg("vit_base_patch16_224.augreg_in21k").to_dict()
    names = timm_class_names(in21k)
    assert len(names) == in21k["num_classes"] == 21843 and names[0] == "organism, being"
    assert timm_class_names({"num_classes": 3}) == ("class 0", "class 1", "class 2")


@pytest.mark.parametrize("name, error", [
    ("timm:efficientnet_bo", "timm:efficientnet_bo: timm has no model 'efficientnet_bo'; did you mean"),
    ("timm:efficientnet_b0.nope", "timm has no weights tagged so; tags of efficientnet_b0: efficientnet_b0."),
    ("timm:", "expected timm:NAME with a timm model name"),
])
def test_unknown_names_are_one_line_errors(name, error):
    with pytest.raises(KeyError) as e:
        attnviz.load_model(name)
    assert error in e.value.args[0] and "\n" not in e.value.args[0]


def test_offline_without_weights_is_one_clear_line(offline_hub, capsys, tmp_path):
    with pytest.raises(attnviz.WeightsUnavailableError) as e:
        attnviz.load_model(f"timm:{MODEL}", device="cpu")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"timm:{MODEL}: its pretrained weights {HUB_ID}/model.safetensors")
    assert "HF_HUB_OFFLINE" in msg and "--weights FILE" in msg and "--random-init" in msg
    assert str(offline_hub / "hub") in msg
    # the CLI prints it as it is
    np_img = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(np_img)
    assert cli_main(["inspect", str(np_img), "--variant", f"timm:{MODEL}", "--out", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err.strip() == f"attnviz: error: {msg}"


def test_random_init_only_when_asked_and_then_flagged(offline_hub):
    loaded = attnviz.load_model(f"timm:{MODEL}", device="cpu", random_init=True)
    assert loaded.random_init and "random init" in loaded.warning and loaded.weights.startswith("random init")
    clear_cache()
    again = attnviz.load_model(f"timm:{MODEL}", device="cpu", random_init=True)
    assert torch.equal(again.model.fc.weight, loaded.model.fc.weight)  # seeded: the same untrained model
    result = attnviz.inspect(np.full((50, 60, 3), 90, np.uint8), loaded)
    assert result.summary()["random_init"] is True and result.gradcam is not None
    assert result.predictions[0].label in attnviz.models.imagenet_classes()
    with pytest.raises(ValueError, match="either weights"):
        attnviz.load_model(f"timm:{MODEL}", weights="x.safetensors", random_init=True)


def test_cli_random_init_warns_on_stderr(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((50, 60, 3), 90, np.uint8)).save(tmp_path / "x.png")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "attnviz", "inspect", str(tmp_path / "x.png"), "--variant",
                          f"timm:{MODEL}", "--random-init", "--out", str(tmp_path / "o"), "--no-figures"],
                         cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    assert res.returncode == 0, res.stderr
    assert f"attnviz: warning: timm:{MODEL} runs at random init" in res.stderr
    assert json.loads((tmp_path / "o" / "x.json").read_text())["random_init"] is True


def test_weights_from_a_staged_hub_cache_load_through_the_hub_path(offline_hub):
    state = _timm_state(seed=3)
    put_in_hf_cache(offline_hub, HUB_ID, "model.safetensors", state)
    loaded = attnviz.load_model(f"timm:{MODEL}", device="cpu")
    assert not loaded.random_init and loaded.warning is None and HUB_ID in loaded.weights
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_timm_reads_the_same_staged_cache(tmp_path):
    """timm's own pretrained=True loader finds the file where attnviz does (a fresh process: the hub
    client reads HF_HOME at import)."""
    hf = tmp_path / "hf"
    put_in_hf_cache(hf, HUB_ID, "model.safetensors", _timm_state(seed=4))
    code = (f"import timm, torch, attnviz; a = timm.create_model({MODEL!r}, pretrained=True); "
            f"b = attnviz.load_model('timm:{MODEL}', device='cpu').model; "
            "assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values())); "
            "print('same')")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240,
                         env={**os.environ, "HF_HOME": str(hf), "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0 and res.stdout.strip() == "same", res.stderr[-2000:]


def test_local_weights_file_with_its_own_head(offline_hub, tmp_path):
    save_file(_timm_state(seed=5, num_classes=3), str(tmp_path / "mine.safetensors"))
    loaded = attnviz.load_model(f"timm:{MODEL}", weights=tmp_path / "mine.safetensors", device="cpu")
    assert loaded.model.get_classifier().out_features == 3
    assert loaded.classes == ("class 0", "class 1", "class 2") and loaded.weights == "local file mine.safetensors"
    save_file(_timm_state(seed=6), str(tmp_path / "imagenet.safetensors"))
    same_head = attnviz.load_model(f"timm:{MODEL}", weights=tmp_path / "imagenet.safetensors", device="cpu")
    assert len(same_head.classes) == 1000 and same_head.classes[0] == attnviz.models.imagenet_classes()[0]
