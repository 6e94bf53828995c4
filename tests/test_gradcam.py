"""Grad-CAM against a reference computed by hand with autograd (in float64: the reference takes
other kernels, whose float32 rounding differs by CPU)."""
from __future__ import annotations

import pytest
import torch

from attnviz.capture import capture
from attnviz.gradcam import default_target_layer, gradcam
from attnviz.models.resnet import AttentionResNet

SMALL = dict(depth=10, widths=(16, 32, 64, 128), stem_width=16, num_classes=6)


def reference_gradcam(model, x, class_index=None):
    store = {}
    h = model.layer4.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        with torch.enable_grad():
            logits = model(x)
            idx = logits.argmax(1) if class_index is None else torch.full((x.shape[0],), class_index)
            score = logits[torch.arange(x.shape[0]), idx].sum()
            (g,) = torch.autograd.grad(score, store["a"])
    finally:
        h.remove()
    cam = torch.relu((g.mean((2, 3))[:, :, None, None] * store["a"]).sum(1))
    return cam.detach(), idx


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    return AttentionResNet(attn="cbam", **SMALL).eval().double()


@pytest.mark.parametrize("class_index", [None, 3])
def test_equals_hand_computed_reference(model, class_index):
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref, ref_idx = reference_gradcam(model, x, class_index)
    with gradcam(model) as gc, torch.no_grad():
        logits = model(x)
    res = gc.compute(logits, class_index)
    assert res.raw.dtype == torch.float64
    torch.testing.assert_close(res.raw, ref, rtol=1e-12, atol=1e-12)
    assert res.class_index.tolist() == ref_idx.tolist()
    assert res.maps.shape == (3, 2, 2) and float(res.maps.max()) <= 1.0
    peak = ref.flatten(1).amax(1).clamp_min(1e-12)
    torch.testing.assert_close(res.maps, ref / peak[:, None, None], rtol=1e-12, atol=1e-12)


def test_touches_no_parameter_grad_and_restores_grad_mode(model):
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    assert torch.is_grad_enabled()
    with gradcam(model) as gc, torch.no_grad():
        logits = model(x)
        assert not torch.is_grad_enabled()  # the head's grad switch ends with the forward
    gc.compute(logits)
    assert torch.is_grad_enabled()
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())


def test_with_grad_on_the_model_stays_trainable(model):
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with gradcam(model) as gc:
        logits = model(x)
    res = gc.compute(logits)
    ref, _ = reference_gradcam(model, x)
    torch.testing.assert_close(res.raw, ref, rtol=1e-12, atol=1e-12)
    logits.sum().backward()  # graph to the parameters is intact: Grad-CAM was read-only
    assert model.conv1.weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_inference_mode_is_refused_clearly(model):
    with pytest.raises(RuntimeError, match="not inference_mode"):
        with gradcam(model), torch.inference_mode():
            model(torch.randn(1, 3, 64, 64, dtype=torch.float64))
    assert torch.is_grad_enabled()
    assert all(not m._forward_hooks for m in model.modules())


def test_combined_with_capture_in_one_forward(model):
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with capture(model) as cap, gradcam(model) as gc, torch.no_grad():
        logits = model(x)
    res = gc.compute(logits)
    assert len(cap) == 4 and res.maps.shape == (1, 2, 2)


def test_default_target_layer():
    assert default_target_layer(AttentionResNet(**SMALL)) == "layer4"
