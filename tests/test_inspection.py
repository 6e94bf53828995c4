"""The Python API: one call from an image to predictions, gates, Grad-CAM and statistics."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import warnings

import numpy as np
import pytest
import torch

import attnviz
from attnviz.capture import capture
from attnviz.inspection import channel_stats
from attnviz.models.resnet import AttentionResNet
from attnviz.synthetic import generate

BUILTIN = "shapes_cbam_resnet"


@pytest.fixture(scope="module")
def loaded():
    return attnviz.load_model(BUILTIN, device="cpu")


@pytest.fixture(scope="module")
def sample():
    return generate(7, seed=4242, size=attnviz.get_variant(BUILTIN).input_size)


def test_three_line_notebook_use(sample, tmp_path):
    path = tmp_path / "shape.png"
    from PIL import Image

    Image.fromarray(sample.image).save(path)
    result = attnviz.inspect(path, BUILTIN)
    assert result.predictions[0].label == attnviz.get_variant(BUILTIN).classes[sample.label]
    assert len(result.predictions) == 5


def test_inspection_contents(loaded, sample):
    r = attnviz.inspect(sample.image, loaded)
    assert r.variant == BUILTIN and "built-in" in r.weights
    probs = [p.probability for p in r.predictions]
    assert probs == sorted(probs, reverse=True)
    assert math.isclose(float(r.probs.sum()), 1.0, rel_tol=1e-5)
    np.testing.assert_allclose(r.probs, torch.softmax(torch.from_numpy(r.logits), 0).numpy(), rtol=1e-5)
    assert [p.index for p in r.predictions] == list(np.argsort(-r.probs)[:5])
    # every residual block of the CBAM ResNet has a channel and a spatial gate
    depth_blocks = sum(len(getattr(loaded.model, s)) for s in loaded.model.stage_names)
    assert len(r.blocks) == len(r.channel_blocks) == len(r.spatial_blocks) == depth_blocks
    for b in r.blocks:
        assert b.channel.ndim == 1 and b.spatial.ndim == 2
        assert b.channel_stats.mean == pytest.approx(float(b.channel.mean()), rel=1e-5)
        assert b.channel_stats.top_channels[0][1] == pytest.approx(float(b.channel.max()))
        assert b.channel_stats.top_channels[0][0] == int(np.argmax(b.channel))
        assert 0.0 <= b.channel_stats.entropy <= 1.0
    assert r.gradcam is not None and r.gradcam.max() == pytest.approx(1.0) and r.gradcam.min() >= 0
    assert r.gradcam_target.index == r.predictions[0].index
    assert set(r.timings) >= {"preprocess_ms", "forward_ms", "gradcam_ms", "total_ms"}
    assert r.view().size[0] == r.view().size[1]
    json.loads(json.dumps(r.summary()))  # serialisable
    keys = set(r.arrays())
    assert {"logits", "probs", "gradcam"} <= keys
    assert {f"channel/{b.name}" for b in r.blocks} <= keys and {f"spatial/{b.name}" for b in r.blocks} <= keys


def test_gates_equal_a_direct_capture(loaded, sample):
    r = attnviz.inspect(sample.image, loaded, gradcam=False)
    assert r.gradcam is None and r.gradcam_target is None
    with torch.no_grad(), capture(loaded.model) as cap:
        loaded.model(r.prepared.tensor)
    for b in r.blocks:
        np.testing.assert_allclose(b.channel, cap[b.name].channel[0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b.spatial, cap[b.name].spatial[0].numpy(), rtol=1e-5, atol=1e-6)


def test_batch_equals_single(loaded):
    # float64: batched and single forwards take different float32 kernels (CPU-dependent rounding)
    double = dataclasses.replace(loaded, model=copy.deepcopy(loaded.model).double())
    images = [generate(i, seed=99, size=loaded.preprocess.input_size).image for i in range(3)]
    batch = attnviz.inspect_batch(images, double)
    for img, rb in zip(images, batch):
        rs = attnviz.inspect(img, double)
        assert rb.logits.dtype == rb.gradcam.dtype == rb.blocks[-1].channel.dtype == np.float64
        np.testing.assert_allclose(rb.logits, rs.logits, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(rb.gradcam, rs.gradcam, rtol=1e-10, atol=1e-10)
        for bb, bs in zip(rb.blocks, rs.blocks):
            np.testing.assert_allclose(bb.channel, bs.channel, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(bb.spatial, bs.spatial, rtol=1e-10, atol=1e-12)


def test_target_class_changes_gradcam(loaded, sample):
    r = attnviz.inspect(sample.image, loaded, target_class=(sample.label + 1) % len(loaded.classes))
    assert r.gradcam_target.index == (sample.label + 1) % len(loaded.classes)


def test_own_module_can_be_inspected():
    torch.manual_seed(0)
    model = AttentionResNet(depth=10, widths=(8, 16, 16, 32), stem_width=8, attn="se", num_classes=3).eval()
    r = attnviz.inspect(np.zeros((50, 80, 3), np.uint8) + 100, model,
                        device=None)
    assert [p.label for p in r.predictions][0].startswith("class ")
    assert len(r.predictions) == 3 and len(r.channel_blocks) == 4
    with pytest.warns(UserWarning, match="training mode"):
        attnviz.inspect(np.zeros((50, 80, 3), np.uint8), model.train())
    model.eval()


def test_entropy_definition():
    assert channel_stats(np.full(64, 0.5)).entropy == pytest.approx(1.0)
    one_hot = np.zeros(64)
    one_hot[3] = 1.0
    s = channel_stats(one_hot)
    assert s.entropy == pytest.approx(0.0) and s.top_channels[0] == (3, 1.0)


def test_unknown_variant_is_named():
    with pytest.raises(KeyError, match="unknown variant 'nope'.*shapes_"):
        attnviz.load_model("nope")


def test_no_warning_on_eval_model(loaded, sample):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attnviz.inspect(sample.image, loaded)


def test_user_checkpoints_do_not_pile_up_in_the_cache(loaded, tmp_path):
    from attnviz.models import loading

    files = []
    for i in range(4):
        f = tmp_path / f"ckpt{i}.pth"
        torch.save(loaded.model.state_dict(), f)
        files.append(f)
        attnviz.load_model(BUILTIN, weights=f, device="cpu")
    user = [k for k in loading._cache if k[1] is not None]
    assert len(user) == loading.MAX_USER_WEIGHTS_LOADED
    assert {k[1] for k in user} == {str(files[2].resolve()), str(files[3].resolve())}
    assert attnviz.load_model(BUILTIN, device="cpu") is loaded  # the zoo's own stays


def test_kept_checkpoints_stay_loaded_while_uploads_rotate(loaded, tmp_path):
    """A server's configured files (keep_loaded) are not evicted by uploads, nor count against them."""
    from attnviz.models import loading

    kept = []
    for i in range(3):
        f = tmp_path / f"configured{i}.pth"
        torch.save(loaded.model.state_dict(), f)
        kept.append(attnviz.load_model(BUILTIN, weights=f, device="cpu", keep_loaded=True))
    for i in range(3):
        f = tmp_path / f"upload{i}.pth"
        torch.save(loaded.model.state_dict(), f)
        attnviz.load_model(BUILTIN, weights=f, device="cpu")
    for i, k in enumerate(kept):  # same objects: never reloaded
        assert attnviz.load_model(BUILTIN, weights=tmp_path / f"configured{i}.pth", device="cpu") is k
    uploads = [k for k in loading._cache if k[1] is not None and k not in loading._kept]
    assert len(uploads) == loading.MAX_USER_WEIGHTS_LOADED


def test_bf16_autocast_keeps_top1_and_gates_close(loaded):
    """amp='bf16': same top-1 and Grad-CAM target, gates and Grad-CAM within several 1e-2 of
    float32 (measured max over 64 images per built-in: 5.8e-2 gates, 1.1e-2 Grad-CAM), model untouched."""
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    size = loaded.preprocess.input_size
    largest = 0.0
    for i in range(12):
        image = generate(i % 8, seed=900 + i, size=size).image
        exact, fast = attnviz.inspect(image, loaded), attnviz.inspect(image, loaded, amp="bf16")
        assert fast.amp == "bf16" and fast.summary()["amp"] == "bf16" and exact.summary()["amp"] is None
        assert fast.predictions[0].index == exact.predictions[0].index
        assert fast.gradcam_target.index == exact.gradcam_target.index
        for a, b in zip(exact.blocks, fast.blocks):
            for role in ("channel", "spatial"):
                x, y = getattr(a, role), getattr(b, role)
                if x is not None:
                    assert y.dtype == np.float32 and np.abs(x - y).max() < 0.1, (a.name, role)
                    largest = max(largest, float(np.abs(x - y).max()))
        assert np.abs(exact.gradcam - fast.gradcam).max() < 5e-2
        assert np.abs(exact.probs - fast.probs).max() < 5e-2
    assert largest > 1e-4  # the forward did run in bfloat16
    assert not torch.is_autocast_enabled("cpu")
    after = loaded.model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def test_amp_that_cannot_run_is_refused_before_any_work(loaded, sample):
    def hooks() -> int:
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in loaded.model.modules())

    n = hooks()
    with pytest.raises(ValueError, match="CUDA"):
        attnviz.inspect(sample.image, loaded, amp="fp16")  # the fixture's model is on the CPU
    with pytest.raises(ValueError, match="'bf16' or 'fp16'"):
        attnviz.inspect(sample.image, loaded, amp="int8")
    assert hooks() == n
