"""Each block against its formula, against timm, and against what its gate multiplies by.

Everything runs in float64: the formulas use other kernels than the blocks (matmul for conv,
manual BatchNorm), and float32 results of different kernels differ by amounts that depend on
the CPU. In float64 a right block matches to ~1e-15 and a wrong one is off by O(1).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from timm.layers.cbam import CbamModule
from timm.layers.eca import EcaModule
from timm.layers.squeeze_excite import SEModule

from attnviz.blocks import (
    BAM, BLOCKS, CBAM, EfficientChannelAttention, SpatialAttention, SqueezeExcite, create_block,
    eca_kernel_size,
)
from attnviz.capture import capture


def randomize_bn(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BatchNorm statistics so a wrong BN placement cannot hide."""
    for m in module.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def x_like(gen: torch.Generator, c: int = 64, hw: int = 9, b: int = 3) -> torch.Tensor:
    return torch.randn(b, c, hw, hw + 2, generator=gen, dtype=torch.float64)


@torch.no_grad()
@pytest.mark.parametrize("pool", ["avg", "max"])
def test_se_matches_formula(gen, pool):
    x = x_like(gen)
    blk = SqueezeExcite(64, reduction=16, pool=pool).eval().double()
    s = x.mean((2, 3)) if pool == "avg" else x.amax((2, 3))
    w1, b1 = blk.fc1.weight.view(4, 64), blk.fc1.bias
    w2, b2 = blk.fc2.weight.view(64, 4), blk.fc2.bias
    g = torch.sigmoid(F.relu(s @ w1.T + b1) @ w2.T + b2)
    torch.testing.assert_close(blk(x), x * g[:, :, None, None])


@torch.no_grad()
@pytest.mark.parametrize("k", [None, 3, 7])
def test_eca_matches_formula(gen, k):
    x = x_like(gen, c=128)
    blk = EfficientChannelAttention(128, kernel_size=k).eval().double()
    kk = blk.conv.kernel_size[0]
    assert kk == (k or eca_kernel_size(128))
    s = x.mean((2, 3))  # [B, C]
    w = blk.conv.weight.view(kk)
    padded = F.pad(s, ((kk - 1) // 2, (kk - 1) // 2))
    y = torch.stack([(padded[:, c:c + kk] * w).sum(1) for c in range(128)], dim=1)
    torch.testing.assert_close(blk(x), x * torch.sigmoid(y)[:, :, None, None])


@torch.no_grad()
@pytest.mark.parametrize("mlp", ["fc", "conv1d"])
@pytest.mark.parametrize("ks", [3, 5, 7])
def test_cbam_matches_formula(gen, mlp, ks):
    x = x_like(gen)
    blk = CBAM(64, reduction=16, spatial_kernel_size=ks, channel_mlp=mlp).eval().double()
    randomize_bn(blk, gen)
    if mlp == "fc":
        def mlp_fn(v):
            return blk.channel.mlp.fc2(F.relu(blk.channel.mlp.fc1(v)))
    else:
        def mlp_fn(v):
            return F.conv1d(v[:, None, :], blk.channel.mlp.weight, padding=blk.channel.mlp.padding).squeeze(1)
    gc = torch.sigmoid(mlp_fn(x.mean((2, 3))) + mlp_fn(x.amax((2, 3))))
    xc = x * gc[:, :, None, None]
    pooled = torch.cat([xc.amax(1, keepdim=True), xc.mean(1, keepdim=True)], 1)
    bn = blk.spatial.bn
    z = F.conv2d(pooled, blk.spatial.conv.weight, padding=ks // 2)
    z = (z - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + bn.eps)
    z = z * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(blk(x), xc * torch.sigmoid(z))


@torch.no_grad()
@pytest.mark.parametrize("combine", ["mul", "sum"])
def test_bam_matches_formula(gen, combine):
    x = x_like(gen, c=64, hw=12)
    blk = BAM(64, reduction=16, dilation=4, combine=combine).eval().double()
    randomize_bn(blk, gen)

    def bn(m, v):
        shape = (1, -1) + (1,) * (v.dim() - 2)
        return (v - m.running_mean.view(shape)) / torch.sqrt(m.running_var.view(shape) + m.eps) \
            * m.weight.view(shape) + m.bias.view(shape)

    cb, sb = blk.channel_branch, blk.spatial_branch
    mc = cb.fc2(F.relu(bn(cb.bn1, cb.fc1(x.mean((2, 3))))))[:, :, None, None]
    h = F.relu(bn(sb.reduce_bn, sb.reduce(x)))
    for i in range(2):
        conv = getattr(sb, f"dil{i}")
        assert conv.dilation == (4, 4) and conv.padding == (4, 4)
        h = F.relu(bn(getattr(sb, f"dil{i}_bn"), conv(h)))
    ms = sb.final(h)
    assert ms.shape == (3, 1, 12, 14)
    att = mc * ms if combine == "mul" else mc + ms
    torch.testing.assert_close(blk(x), x * (1 + torch.sigmoid(att)))


@torch.no_grad()
def test_spatial_matches_formula(gen):
    x = x_like(gen)
    blk = SpatialAttention(64).eval().double()
    m = torch.einsum("bchw,c->bhw", x, blk.conv.weight.view(64)) + blk.conv.bias
    torch.testing.assert_close(blk(x), x * torch.sigmoid(m)[:, None])


@pytest.mark.parametrize(
    "channels,expected",
    [(64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7)],
)
def test_eca_adaptive_kernel_sizes(channels, expected):
    t = int(abs((math.log2(channels) + 1) / 2))
    assert eca_kernel_size(channels) == (t if t % 2 else t + 1) == expected
    assert EfficientChannelAttention(channels).conv.kernel_size == (expected,)


@torch.no_grad()
@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_captured_gate_is_what_the_block_multiplies_by(gen, kind):
    """Recompute the gate from the block's input and output: out / in (BAM: out / in - 1)."""
    blk = create_block(kind, 64).eval().double()
    randomize_bn(blk, gen)
    x = x_like(gen, c=64, hw=10).abs() + 0.1  # no zeros to divide by
    seen = {}
    blk.register_forward_hook(lambda m, i, o: seen.update(x=i[0].clone(), y=o.clone()))
    with capture(blk) as cap:
        blk(x)
    assert blk._forward_hooks and all(not g._forward_hooks for g in blk.gate_modules().values())
    (res,) = list(cap)
    ratio = seen["y"] / seen["x"]
    if kind == "bam":
        ratio = ratio - 1
        torch.testing.assert_close(res.channel, ratio.mean((2, 3)))
        torch.testing.assert_close(res.spatial, ratio.mean(1))
    elif kind == "cbam":
        # total scale = channel gate (per channel) × spatial gate (per pixel)
        torch.testing.assert_close(ratio, res.channel[:, :, None, None] * res.spatial[:, None])
    elif kind == "spatial":
        assert res.channel is None
        torch.testing.assert_close(res.spatial, ratio[:, 0])
        torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))
    else:  # se, eca: one weight per channel, constant over pixels
        assert res.spatial is None
        torch.testing.assert_close(res.channel, ratio.mean((2, 3)))
        torch.testing.assert_close(ratio, res.channel[:, :, None, None].expand_as(ratio))


@torch.no_grad()
def test_se_equals_timm(gen):
    ours, ref = SqueezeExcite(256).eval().double(), SEModule(256, rd_ratio=1 / 16).eval().double()
    assert ref.fc1.out_channels == ours.fc1.out_channels == 16
    ref.load_state_dict({k: v for k, v in ours.state_dict().items()})
    x = x_like(gen, c=256)
    torch.testing.assert_close(ours(x), ref(x))


@torch.no_grad()
def test_eca_equals_timm(gen):
    ours = EfficientChannelAttention(256).eval().double()
    ref = EcaModule(channels=256).eval().double()
    assert ref.conv.weight.shape == ours.conv.weight.shape == (1, 1, 5)
    ref.load_state_dict(ours.state_dict())
    x = x_like(gen, c=256)
    torch.testing.assert_close(ours(x), ref(x))
    with capture(ours) as a, capture(ref) as b:
        ours(x)
        ref(x)
    torch.testing.assert_close(next(iter(a)).channel, next(iter(b)).channel)


@torch.no_grad()
def test_cbam_equals_timm(gen):
    """timm's CBAM: 1×1 convs without bias for the MLP and [mean, max] concat order."""
    ours = CBAM(128, reduction=16).eval().double()
    ref = CbamModule(128, rd_ratio=1 / 16).eval().double()
    randomize_bn(ours, gen)
    torch.nn.init.zeros_(ours.channel.mlp.fc1.bias)
    torch.nn.init.zeros_(ours.channel.mlp.fc2.bias)
    sd = ours.state_dict()
    ref.load_state_dict({
        "channel.fc1.weight": sd["channel.mlp.fc1.weight"][:, :, None, None],
        "channel.fc2.weight": sd["channel.mlp.fc2.weight"][:, :, None, None],
        # swap input channels: ours pools [max, mean], timm pools [mean, max]
        "spatial.conv.conv.weight": sd["spatial.conv.weight"].flip(1),
        **{f"spatial.conv.bn.{k}": sd[f"spatial.bn.{k}"] for k in
           ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")},
    })
    x = x_like(gen, c=128)
    torch.testing.assert_close(ours(x), ref(x))
    with capture(ours) as a, capture(ref) as b:
        ours(x)
        ref(x)
    (ca,), (cb,) = list(a), list(b)
    assert cb.kind == "cbam"
    torch.testing.assert_close(ca.channel, cb.channel)
    torch.testing.assert_close(ca.spatial, cb.spatial)


def test_factory_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown attention block 'xx'.*'bam'"):
        create_block("xx", 64)


def test_blocks_share_constructor_shape():
    for kind, cls in BLOCKS.items():
        blk = cls(64)
        assert blk.kind == kind
        gates = blk.gate_modules()
        assert gates and all(isinstance(g, torch.nn.Sigmoid) for g in gates.values())
