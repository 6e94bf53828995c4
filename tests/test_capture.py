"""Capture hooks: right blocks, read-only, removed, restoring state, thread-safe."""
from __future__ import annotations

import copy
import threading

import pytest
import timm
import torch
from torch import nn

from attnviz.capture import capture, find_gates
from attnviz.models.resnet import AttentionResNet

SMALL = dict(depth=10, widths=(16, 32, 64, 128), stem_width=16, num_classes=7)


def all_hooks_empty(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.fixture(scope="module")
def cbam_model() -> AttentionResNet:
    torch.manual_seed(0)
    return AttentionResNet(attn="cbam", **SMALL).eval()


@pytest.mark.parametrize("attn,n_blocks,has_channel,has_spatial", [
    ("se", 4, True, False), ("eca", 4, True, False), ("cbam", 4, True, True),
    ("bam", 3, True, True), ("spatial", 4, False, True), (None, 0, False, False),
])
def test_finds_every_block_with_names_and_stages(attn, n_blocks, has_channel, has_spatial):
    model = AttentionResNet(attn=attn, **SMALL).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), capture(model) as cap:
        model(x)
    assert len(cap) == n_blocks
    expected = ["bam1", "bam2", "bam3"] if attn == "bam" else [f"layer{i}.0" for i in range(1, 5)][:n_blocks]
    assert [b.name for b in cap] == expected
    assert [b.stage for b in cap] == list(range(1, n_blocks + 1))
    for b in cap:
        assert (b.channel is not None) == has_channel and (b.spatial is not None) == has_spatial
        if b.channel is not None:
            assert b.channel.shape[0] == 2 and b.channel.device.type == "cpu"
            assert 0 <= b.channel.min() and b.channel.max() <= 1
        if b.spatial is not None:
            assert b.spatial.shape[0] == 2 and b.spatial.dim() == 3
    assert all_hooks_empty(model)


def test_hooks_removed_after_many_captures_and_after_errors(cbam_model):
    x = torch.randn(1, 3, 64, 64)
    for _ in range(100):
        with torch.no_grad(), capture(cbam_model):
            cbam_model(x)
    assert all_hooks_empty(cbam_model)
    for _ in range(10):
        with pytest.raises(RuntimeError):
            with capture(cbam_model):
                cbam_model(torch.randn(1, 5, 64, 64))  # wrong channel count raises inside forward
        with pytest.raises(KeyError):
            with capture(cbam_model):
                raise KeyError("user code failed inside the block")
    assert all_hooks_empty(cbam_model)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("grad", [True, False])
def test_mode_and_grad_state_left_as_they_were(training, grad):
    model = AttentionResNet(attn="se", **SMALL).train(training)
    with torch.set_grad_enabled(grad):
        with capture(model) as cap:
            out = model(torch.randn(2, 3, 32, 32))
        assert torch.is_grad_enabled() == grad
        assert out.requires_grad == grad
    assert all(m.training == training for m in model.modules())
    assert len(cap) == 4
    if grad:  # capture is read-only: training still gets its gradients
        out.sum().backward()
        assert model.layer1[0].attn.fc1.weight.grad is not None


def test_capture_survives_in_place_changes_after_the_gate():
    class InPlaceAfterGate(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = nn.Sigmoid()

        def forward(self, x):
            g = self.gate(x)
            g.mul_(0)  # a later in-place op on the gate output
            return g

    m = nn.Sequential(InPlaceAfterGate())
    x = torch.randn(1, 8, 1, 1)
    with torch.no_grad(), capture(m, gates={"0.gate": "channel"}) as cap:
        m(x)
    (res,) = list(cap)
    torch.testing.assert_close(res.channel, torch.sigmoid(x).view(1, 8))


def test_two_forwards_concatenate_along_batch(cbam_model):
    # float64: a batch of 3 and batches of 1 and 2 take different float32 kernels, whose rounding
    # differs by CPU; in double they agree to ~1e-15.
    model = copy.deepcopy(cbam_model).double()
    a, b = torch.randn(1, 3, 64, 64, dtype=torch.float64), torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad(), capture(model) as cap:
        model(a)
        model(b)
    with torch.no_grad(), capture(model) as ref:
        model(torch.cat([a, b]))
    for name in ("layer1.0", "layer4.0"):
        assert cap[name].channel.shape[0] == 3 and cap[name].channel.dtype == torch.float64
        torch.testing.assert_close(cap[name].channel, ref[name].channel, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(cap[name].spatial, ref[name].spatial, rtol=1e-12, atol=1e-12)


def test_only_selects_blocks_and_rejects_unknown(cbam_model):
    with torch.no_grad(), capture(cbam_model, only=["layer4.0"]) as cap:
        cbam_model(torch.randn(1, 3, 64, 64))
    assert [b.name for b in cap] == ["layer4.0"]
    with pytest.raises(KeyError, match="layer9.9"):
        with capture(cbam_model, only=["layer9.9"]):
            pass
    assert all_hooks_empty(cbam_model)


def test_eight_threads_on_one_model_equal_serial(cbam_model):
    # float64, so that "equal" does not rest on float32 kernels rounding alike on every thread
    model = copy.deepcopy(cbam_model).double()
    inputs = [torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
              for i in range(8)]

    def run(x):
        with torch.no_grad(), capture(model) as cap:
            logits = model(x)
        return logits, {b.name: (b.channel.clone(), b.spatial.clone()) for b in cap}

    serial = [run(x) for x in inputs]
    results: list = [None] * 8
    errors = []
    barrier = threading.Barrier(8)

    def worker(i):
        try:
            barrier.wait()
            for _ in range(3):
                results[i] = run(inputs[i])
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (lo_s, caps_s), (lo_t, caps_t) in zip(serial, results):
        torch.testing.assert_close(lo_t, lo_s)
        assert caps_t.keys() == caps_s.keys()
        for name in caps_s:
            assert caps_t[name][0].shape == (1, caps_s[name][0].shape[1])  # own batch only
            torch.testing.assert_close(caps_t[name][0], caps_s[name][0])
            torch.testing.assert_close(caps_t[name][1], caps_s[name][1])
    assert all_hooks_empty(model)


def test_finds_timm_attention_modules():
    model = timm.create_model("resnet10t", pretrained=False, num_classes=5,
                              block_args=dict(attn_layer="se")).eval()
    sites = find_gates(model)
    assert [s.name for s in sites][:2] == ["layer1.0", "layer2.0"]
    assert {s.kind for s in sites} == {"se"}
    with torch.no_grad(), capture(model) as cap:
        model(torch.randn(1, 3, 64, 64))
    assert len(cap) == len(sites) == 4
    assert all_hooks_empty(model)


def test_custom_gate_mapping_validates():
    m = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Sigmoid())
    with pytest.raises(KeyError, match="no module named 'nope'"):
        with capture(m, gates={"nope": "channel"}):
            pass
    with pytest.raises(ValueError, match="channel, spatial or joint"):
        with capture(m, gates={"1": "colour"}):
            pass
