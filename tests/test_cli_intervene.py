"""``attnviz inspect --intervene BLOCK=SPEC``: before/after JSON and NPZ, usage errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import attnviz
from attnviz.intervene import ChannelKnockout
from attnviz.synthetic import generate
from tests.test_cli import BUILTIN, run_cli


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("iv") / "a.png"
    Image.fromarray(generate(1, seed=77, size=attnviz.get_variant(BUILTIN).input_size).image).save(path)
    return path


def test_intervene_writes_before_and_after(image, tmp_path):
    res = run_cli("inspect", str(image), "--variant", BUILTIN, "--out", str(tmp_path),
                  "--intervene", "layer4.0=top=10", "--intervene", "layer3.0=identity")
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "a.json").read_text())
    iv = summary["intervention"]
    assert iv["interventions"] == {"layer4.0": "knockout top 10", "layer3.0": "identity"}
    loaded = attnviz.load_model(BUILTIN, device="cpu")
    plain = attnviz.inspect(image, loaded)
    after = attnviz.inspect(image, loaded, interventions={"layer4.0": ChannelKnockout(top=10),
                                                          "layer3.0": "identity"})
    with np.load(tmp_path / "a.npz") as z:
        np.testing.assert_allclose(z["before/logits"], plain.logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(z["logits"], after.logits, rtol=1e-5, atol=1e-5)
        assert np.abs(z["logits"] - z["before/logits"]).max() > 1e-3
        assert z["before/gradcam"].shape == z["gradcam"].shape
    assert iv["top1_before"]["index"] == plain.predictions[0].index
    assert iv["prob_after"] == pytest.approx(float(after.probs[plain.predictions[0].index]), abs=1e-5)
    assert iv["kl"] == pytest.approx(after.intervention.kl, rel=1e-3, abs=1e-6)
    assert summary["predictions"][0]["index"] == after.predictions[0].index
    assert (tmp_path / "a" / "gradcam_before.png").is_file() and (tmp_path / "a" / "gradcam.png").is_file()


@pytest.mark.parametrize("spec,message", [
    ("layer4.0=top=200", "k must be in 0..128"),
    ("layer9=mean", "blocks: ['layer1.0', 'layer2.0', 'layer3.0', 'layer4.0']"),
    ("layer4.0=off", "expected identity, mean, a number"),
    ("identity", "BLOCK=SPEC"),
])
def test_impossible_interventions_are_usage_errors(image, tmp_path, spec, message):
    res = run_cli("inspect", str(image), "--variant", BUILTIN, "--out", str(tmp_path / "o"),
                  "--intervene", spec, "--no-figures")
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "o" / "a.json").exists()
