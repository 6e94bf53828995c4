"""Channel deletion curves, cascading randomization and the similarity measures they use."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import attnviz
from attnviz.channel_deletion import channel_deletion
from attnviz.intervene import ChannelKnockout, intervene
from attnviz.models.resnet import AttentionResNet
from attnviz.sanity import SanityReport, cascading_randomization, randomization_steps
from attnviz.similarity import rankdata, spearman, ssim
from attnviz.synthetic import generate

SMALL = dict(depth=10, widths=(16, 32, 64, 128), stem_width=16, num_classes=7)


def test_spearman_and_ssim_match_scipy_and_skimage_in_float64():
    stats = pytest.importorskip("scipy.stats")
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    for shape in [(12, 12), (48, 48), (7, 9), (24, 30)]:
        a = rng.random(shape)
        b = np.clip(a + 0.4 * rng.random(shape) - 0.2, 0, 1)
        assert abs(ssim(a, b) - metrics.structural_similarity(a, b, data_range=1.0)) < 1e-12
        assert abs(spearman(a, b) - stats.spearmanr(a.ravel(), b.ravel()).statistic) < 1e-12
    ties = np.round(rng.random(200) * 4)
    np.testing.assert_array_equal(rankdata(ties), stats.rankdata(ties))
    assert spearman(np.ones(5), np.arange(5)) == 0.0 and ssim(b, b) == pytest.approx(1.0, abs=1e-15)
    with pytest.raises(ValueError, match="one shape"):
        ssim(np.zeros((4, 4)), np.zeros((4, 5)))


@pytest.fixture(scope="module")
def se64():
    torch.manual_seed(0)
    model = AttentionResNet(attn="se", **SMALL).eval().double()
    x = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return model, x


def test_deletion_rows_are_the_knockouts_they_stand_for(se64):
    """Every (image, step) row of the batched curve equals a direct top-k knockout (float64)."""
    model, x = se64
    steps = 4
    res = channel_deletion(model, x, "layer3.0", steps=steps, batch=5)  # batches cut across images
    assert res.channels == 64 and list(res.curves) == ["gate", "random", "activation"]
    with torch.no_grad():
        probs = torch.softmax(model(x), 1)
    target = probs.argmax(1)
    for s, frac in enumerate(res.fractions):
        k = int(round(frac * 64))
        with torch.no_grad(), intervene(model, {"layer3.0": ChannelKnockout(top=k)}):
            direct = torch.softmax(model(x), 1).gather(1, target[:, None])[:, 0].numpy()
        np.testing.assert_allclose(res.curves["gate"][:, s], direct, rtol=0, atol=1e-12)
    for order, curve in res.curves.items():  # nothing and everything knocked out: order-free
        np.testing.assert_allclose(curve[:, 0], probs.max(1).values.numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(curve[:, -1], res.curves["gate"][:, -1], rtol=0, atol=1e-12)
        assert res.auc[order] == pytest.approx(float(np.trapezoid(curve, res.fractions, axis=1).mean()))
    assert not np.allclose(res.curves["gate"][:, 1:-1], res.curves["random"][:, 1:-1])
    chart = np.asarray(res.chart().convert("L"), dtype=np.float32)
    assert chart.shape == (300, 640) and chart.std() > 5
    again = channel_deletion(model, x, "layer3.0", steps=steps, batch=1000)
    for order in res.curves:
        np.testing.assert_allclose(again.curves[order], res.curves[order], rtol=0, atol=1e-12)


def test_deletion_errors():
    torch.manual_seed(0)
    spatial = AttentionResNet(attn="spatial", **SMALL).eval()
    with pytest.raises(ValueError, match="needs a channel gate|no channel gate"):
        channel_deletion(spatial, torch.randn(1, 3, 32, 32), "layer1.0")
    with pytest.raises(KeyError, match="blocks:"):
        channel_deletion(spatial, torch.randn(1, 3, 32, 32), "layer7.0")


def test_cascading_randomization_leaves_the_model_and_follows_the_cascade():
    if "shapes_cbam_resnet" not in attnviz.variants():
        pytest.skip("built-in CBAM checkpoint missing")
    loaded = attnviz.load_model("shapes_cbam_resnet")
    state = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    images = [generate(i, seed=2000, size=96).image for i in range(6)]
    rep = cascading_randomization(loaded, images)
    assert all(torch.equal(v, state[k]) for k, v in loaded.model.state_dict().items())
    assert rep.steps == ["fc", "layer4.0", "layer3.0", "layer2.0", "layer1.0", "bn1", "conv1"]
    for source, rho in rep.spearman.items():
        assert len(rho) == len(rep.steps)
        block = source.split()[0]
        if block.startswith("layer"):  # a gate is the trained one until its own block is randomized
            own = rep.steps.index(block)
            assert all(r == pytest.approx(1.0) for r in rho[:own]) and rho[own] < 0.9
    assert rep.spearman["Grad-CAM"][-1] < 0.5 and "Grad-CAM" not in rep.survivors
    assert "layer1.0 channel" not in rep.ssim


def test_survivors_are_the_maps_still_correlated_at_the_end():
    rep = SanityReport("m", 1, ["fc", "conv1"], spearman={"a": [0.9, 0.8], "b": [0.9, 0.1]})
    assert rep.survivors == ["a"]
    assert randomization_steps(AttentionResNet(attn="bam", **SMALL))[:3] == ["fc", "layer4.0", "bam3"]


def test_evaluate_writes_channel_tables_before_the_notes(tmp_path, capsys):
    if "shapes_se_resnet" not in attnviz.variants():
        pytest.skip("built-in SE checkpoint missing")
    from attnviz.cli import main
    from attnviz.evaluate import NOTES_MARKER

    out, js = tmp_path / "EVALUATION.md", tmp_path / "e.json"
    out.write_text(f"old\n{NOTES_MARKER}\nkept.\n")
    assert main(["evaluate", "--variants", "shapes_se_resnet", "--n", "6", "--n-auc", "2", "--steps", "2",
                 "--out", str(out), "--json", str(js)]) == 0
    text = out.read_text()
    head, notes = text.split(NOTES_MARKER)
    assert notes == "\nkept.\n" and "## Channel deletion" in head and "## Sanity check" in head
    rows = [line for line in head.splitlines() if "| layer" in line and "knock" not in line]
    import json

    channels = json.loads(js.read_text())[0]["channels"]
    assert channels["n"] == 2 and [d["block"] for d in channels["channel_deletion"]] == [f"layer{i}.0" for i in range(1, 5)]
    for d in channels["channel_deletion"]:
        row = next(r for r in rows if f"| {d['block']} | {d['channels']} |" in r)
        beats = "yes" if d["auc"]["gate"] < d["auc"]["random"] else "no"
        assert f"| {d['auc']['gate']:.3f} | {d['auc']['random']:.3f} |" in row and row.endswith(f"| {beats} |")
    assert channels["sanity"]["steps"][0] == "fc"
