"""timm's attention families: every module found, every gate exact (float64), Grad-CAM, inspect.

Each model is built by timm at random init (offline) and run in float64 on a small input. The
attention modules are counted here with ``isinstance`` against timm's own classes, apart from
attnviz's table (attnviz/gate_sites.py), and each captured gate is recomputed from the module's
input with the module's own submodules, then shown to reproduce the module's output.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import pytest
import timm
import torch
from timm.layers.cbam import CbamModule, LightCbamModule
from timm.layers.eca import CecaModule, EcaModule
from timm.layers.gather_excite import GatherExcite
from timm.layers.global_context import GlobalContext
from timm.layers.selective_kernel import SelectiveKernel
from timm.layers.split_attn import SplitAttn
from timm.layers.squeeze_excite import EffectiveSEModule, SEModule
from timm.models._efficientnet_blocks import SqueezeExcite
from timm.models.senet import SEModule as LegacySEModule
from torch import nn
from torch.nn import functional as F

import attnviz
from attnviz import export
from attnviz.capture import capture, find_gates
from attnviz.gradcam import default_target_layer, gradcam
from attnviz.intervene import intervene

ATTENTION_CLASSES = (SEModule, LegacySEModule, SqueezeExcite, EffectiveSEModule, EcaModule, CecaModule,
                     CbamModule, LightCbamModule, GatherExcite, GlobalContext, SelectiveKernel, SplitAttn)
EXACT = 1e-12  # float64: the recomputation runs the same ops, so any difference is a real one


def _resnet10t(attn) -> dict:
    # zero_init_last=False: else every residual branch starts at 0 and the attention is moot
    return dict(model_name="resnet10t", block_args=dict(attn_layer=attn), zero_init_last=False)


# name -> timm.create_model arguments. GatherExcite's mlp and extra_params paths fail to build in
# timm 1.0.x (``*dd`` unpacks its dict keys as arguments), so Gather-Excite runs without its mlp.
MODELS: dict[str, dict] = {
    "efficientnet_b0": {}, "mobilenetv3_small_100": {}, "mixnet_s": {}, "ghostnet_100": {},
    "regnety_002": {}, "rexnet_100": {}, "nf_regnet_b0": {}, "eca_nfnet_l0": {},
    "seresnet18": {}, "legacy_seresnet18": {}, "ecaresnet26t": {}, "ese_vovnet19b_dw": {},
    "skresnet18": {}, "resnest14d": {}, "gcresnext26ts": {},
    "resnet10t+cbam": _resnet10t("cbam"), "resnet10t+lcbam": _resnet10t("lcbam"),
    "resnet10t+ceca": _resnet10t("ceca"), "resnet10t+gc": _resnet10t("gc"),
    "resnet10t+ge": _resnet10t(functools.partial(GatherExcite, use_mlp=False)),
    "resnet10t+ge_extent2": _resnet10t(functools.partial(GatherExcite, use_mlp=False, extent=2)),
}
#: counts the issue states for timm's models (issue 20), beside the isinstance counts
ISSUE_COUNTS = {"efficientnet_b0": 16, "skresnet18": 8, "resnest14d": 4}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small float64 forwards: one thread is faster than two on a shared machine (no OpenMP
    team waiting for a preempted worker)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.cache
def build(name: str) -> nn.Module:
    kwargs = dict(MODELS[name])
    torch.manual_seed(0)
    model = timm.create_model(kwargs.pop("model_name", name), pretrained=False, **kwargs)
    return model.eval().double()


@functools.cache
def sample(size: int = 64) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ATTENTION_CLASSES)]


def run_with_io(model: nn.Module, x: torch.Tensor):
    """One forward under capture, also keeping each attention module's input and output."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, (i[0].clone(), o.clone())))
               for n, m in attention_modules(model)]
    try:
        with torch.no_grad(), capture(model) as cap:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return cap, seen


# ---- recomputation of each family's gate from the module's input, with its own submodules ----

def _se_gate(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    s = x.mean((2, 3), keepdim=True)
    if isinstance(m, SqueezeExcite):
        return m.gate(m.conv_expand(m.act1(m.conv_reduce(s))))
    if isinstance(m, LegacySEModule):
        return m.sigmoid(m.fc2(m.relu(m.fc1(s))))
    if isinstance(m, EffectiveSEModule):
        return m.gate(m.fc(s))
    return m.gate(m.fc2(m.act(m.bn(m.fc1(s)))))


def _eca_gate(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = x.mean((2, 3)).view(x.shape[0], 1, -1)
    if isinstance(m, CecaModule):
        y = F.pad(y, (m.padding, m.padding), mode="circular")
    y = m.conv(y)
    if getattr(m, "conv2", None) is not None:
        y = m.conv2(m.act(y))
    return m.gate(y).view(x.shape[0], -1, 1, 1)


def recompute(m: nn.Module, x: torch.Tensor, got) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(expected gates by role, the module's output rebuilt from the *captured* gates)."""
    b = x.shape[0]
    if isinstance(m, (SEModule, LegacySEModule, SqueezeExcite, EffectiveSEModule, EcaModule, CecaModule)):
        g = _se_gate(m, x) if not isinstance(m, (EcaModule, CecaModule)) else _eca_gate(m, x)
        return {"channel": g.reshape(b, -1)}, x * got.channel.view(b, -1, 1, 1)
    if isinstance(m, (CbamModule, LightCbamModule)):
        ca, sa = m.channel, m.spatial
        if isinstance(m, LightCbamModule):
            gc = torch.sigmoid(ca.fc2(ca.act(ca.fc1(0.5 * x.mean((2, 3), keepdim=True) + 0.5 * x.amax((2, 3), keepdim=True)))))
        else:
            gc = ca.gate(ca.fc2(ca.act(ca.fc1(x.mean((2, 3), keepdim=True)))) + ca.fc2(ca.act(ca.fc1(x.amax((2, 3), keepdim=True)))))
        x1 = x * got.channel.view(b, -1, 1, 1)
        mean, peak = x1.mean(1, keepdim=True), x1.amax(1, keepdim=True)
        pooled = 0.5 * mean + 0.5 * peak if isinstance(m, LightCbamModule) else torch.cat([mean, peak], 1)
        gs = sa.gate(sa.conv(pooled))
        return {"channel": gc.reshape(b, -1), "spatial": gs.reshape(b, *x.shape[-2:])}, x1 * got.spatial.unsqueeze(1)
    if isinstance(m, GatherExcite):
        return _recompute_ge(m, x, got)
    if isinstance(m, GlobalContext):
        return _recompute_gc(m, x, got)
    if isinstance(m, SelectiveKernel):
        return _recompute_sk(m, x, got)
    if isinstance(m, SplitAttn):
        return _recompute_splat(m, x, got)
    raise AssertionError(type(m))


def _recompute_ge(m: GatherExcite, x: torch.Tensor, got):
    if m.extent == 0:
        g = m.gate(m.mlp(x.mean((2, 3), keepdim=True)))
        return {"channel": g.reshape(x.shape[0], -1)}, x * got.channel.view(*g.shape)
    pooled = m.mlp(F.avg_pool2d(x, kernel_size=m.gk, stride=m.gs, padding=m.gk // 2, count_include_pad=False))
    # upsampled to the input unless pooling left one pixel (then the gate broadcasts over pixels)
    g = m.gate(pooled if pooled.shape[-2:] == (1, 1) else F.interpolate(pooled, size=x.shape[-2:]))
    # capture keeps a joint gate's means; the full gate is checked against the output instead
    assert torch.equal(x * g, m(x))
    return {"channel": g.mean((2, 3)), "spatial": g.mean(1)}, x * g


def _recompute_gc(m: GlobalContext, x: torch.Tensor, got):
    b, c, h, w = x.shape
    expected = {"spatial": F.softmax(m.conv_attn(x).reshape(b, 1, h * w), dim=-1).reshape(b, h, w)}
    context = (x.reshape(b, c, h * w).unsqueeze(1) @ got.spatial.reshape(b, 1, h * w, 1)).view(b, c, 1, 1)
    out = x
    if m.mlp_scale is not None:
        expected["channel"] = m.gate(m.mlp_scale(context)).reshape(b, c)
        out = out * got.channel.view(b, c, 1, 1)
    if m.mlp_add is not None:
        out = out + m.mlp_add(context)
    return expected, out


def _recompute_sk(m: SelectiveKernel, x: torch.Tensor, got):
    parts = torch.split(x, m.in_channels // m.num_paths, 1) if m.split_input else [x] * m.num_paths
    paths = torch.stack([op(p) for op, p in zip(m.paths, parts)], dim=1)  # [B, K, C, H, W]
    a = m.attn
    z = a.fc_select(a.act(a.bn(a.fc_reduce(paths.sum(1).mean((2, 3), keepdim=True)))))
    weights = torch.softmax(z.view(x.shape[0], m.num_paths, -1), dim=1)
    return {"branches": weights}, (paths * got.branches[..., None, None]).sum(1)


def _recompute_splat(m: SplitAttn, x: torch.Tensor, got):
    y = m.act0(m.drop(m.bn0(m.conv(x))))
    b, rc, h, w = y.shape
    r, card = m.radix, m.rsoftmax.cardinality
    y = y.reshape(b, r, rc // r, h, w)
    z = m.fc2(m.act1(m.bn1(m.fc1(y.sum(1).mean((2, 3), keepdim=True)))))
    weights = F.softmax(z.view(b, card, r, -1).transpose(1, 2), dim=1).reshape(b, r, -1)
    return {"branches": weights}, (y * got.branches.reshape(b, r, -1, 1, 1)).sum(1)


# ---- tests ----

@pytest.mark.parametrize("name", MODELS)
def test_every_attention_module_is_found_once(name):
    model = build(name)
    modules = attention_modules(model)
    sites = find_gates(model)
    assert len(sites) == len(modules) > 0
    assert [s.module for s in sites] == [m for _, m in modules]
    assert len({s.name for s in sites}) == len(sites)
    if name in ISSUE_COUNTS:
        assert len(sites) == ISSUE_COUNTS[name]


@pytest.mark.parametrize("name", MODELS)
def test_every_gate_is_exact_in_float64(name):
    model = build(name)
    cap, seen = run_with_io(model, sample())
    sites = find_gates(model)
    assert len(cap) == len(sites) == len(seen)
    worst = 0.0
    for site, (mod_name, module) in zip(sites, attention_modules(model)):
        x, y = seen[mod_name]
        got = cap[site.name]
        with torch.no_grad():
            expected, rebuilt = recompute(module, x, got)
        assert {r for r in ("channel", "spatial", "branches") if getattr(got, r) is not None} == set(expected)
        for role, values in expected.items():
            captured = getattr(got, role)
            assert captured.dtype == torch.float64 and captured.shape == values.shape, (site.name, role)
            worst = max(worst, (captured - values).abs().max().item())
        worst = max(worst, (rebuilt - y).abs().max().item())
    print(f"{name}: max |captured - recomputed| and |output - rebuilt| = {worst:.3g}")
    assert worst <= EXACT


@pytest.mark.parametrize("name", ["skresnet18", "resnest14d"])
def test_branch_weights_are_a_softmax_over_branches(name):
    model = build(name)
    with torch.no_grad(), capture(model) as cap:
        model(sample())
    for b in cap:
        assert b.channel is None and b.branches.shape[:2] == (2, 2)
        torch.testing.assert_close(b.branches.sum(1), torch.ones_like(b.branches[:, 0]), rtol=0, atol=1e-12)


def test_function_gates_are_read_exactly():
    """A gate that is a plain function, not a module, is read from its input's module."""
    from attnviz.gate_sites import FAMILIES

    torch.manual_seed(0)
    for gate_fn in (torch.sigmoid, F.hardsigmoid):
        se = SqueezeExcite(16).double().eval()
        del se.gate  # a child module: only a deleted one can be replaced by a plain function
        se.gate = gate_fn
        x = torch.randn(2, 16, 5, 5, dtype=torch.float64)
        wrapper = nn.Sequential()
        wrapper.add_module("se", se)
        with torch.no_grad(), capture(wrapper) as cap:
            y = wrapper(x)
        (site,) = find_gates(wrapper)
        assert site.gates["channel"] is se.conv_expand and site.readers["channel"] is gate_fn
        assert torch.equal(y, x * cap["se"].channel.view(2, 16, 1, 1))
    assert set(FAMILIES) >= {c.__name__ for c in ATTENTION_CLASSES}


@pytest.mark.parametrize("name", ["efficientnet_b0", "nf_regnet_b0", "eca_nfnet_l0", "ghostnet_100",
                                  "skresnet18", "resnest14d", "gcresnext26ts", "rexnet_100", "regnety_002"])
def test_gradcam_default_layer_from_feature_info(name):
    model = build(name)
    assert default_target_layer(model) == model.feature_info[-1]["module"]
    with gradcam(model) as gc, torch.no_grad():
        logits = model(sample()[:1])
    cam = gc.compute(logits)
    assert cam.maps.dim() == 3 and cam.maps.shape[0] == 1 and torch.isfinite(cam.maps).all()
    assert cam.maps.shape[-1] == math.ceil(64 / model.feature_info[-1]["reduction"])


def test_wrap_model_takes_timm_data_config_and_its_crop():
    """A wrapped timm model sees the crop timm's own eval transform makes (256 px, crop_pct 0.9,
    bicubic here), so its maps lie on that crop."""
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    from attnviz.preprocess import prepare

    model = timm.create_model("gcresnext26ts", pretrained=False)
    cfg = resolve_data_config({}, model=model)
    loaded = attnviz.wrap_model(model)
    pre, size = loaded.preprocess, cfg["input_size"][-1]
    assert (pre.input_size, pre.resize_size) == (size, math.floor(size / cfg["crop_pct"])) == (256, 284)
    assert (pre.mean, pre.std, pre.interpolation) == (tuple(cfg["mean"]), tuple(cfg["std"]), cfg["interpolation"])
    assert loaded.name == "gcresnext26ts"
    yy, xx = np.mgrid[0:300, 0:340]  # smooth, so the two resampling paths agree closely
    image = Image.fromarray(np.stack([np.sin(xx / 17) * 120 + 128, np.cos(yy / 23) * 120 + 128,
                                      (xx + yy) * 0.35], -1).astype(np.uint8))
    prepared = prepare(image, pre)
    left, top, right, bottom = prepared.geometry.crop_box
    side = 300 * size / pre.resize_size  # timm: shorter side to 284, centre 256 crop
    assert math.isclose(right - left, side) and math.isclose(bottom - top, side)
    assert math.isclose(left + right, 340) and math.isclose(top + bottom, 300)
    reference = create_transform(**cfg)(image).unsqueeze(0)
    assert (reference - prepared.tensor).abs().mean() < 0.02


def _image(size: int = 300) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((size, size + 40, 3)) * 255).astype(np.uint8)


def test_inspect_a_wrapped_timm_model_with_every_view():
    """inspect() on timm models of the new kinds: summary, arrays and figures do not break."""
    torch.manual_seed(0)
    for name, kinds in (("skresnet18", {"sk"}), ("resnet10t+gc", {"gc"})):
        kwargs = dict(MODELS[name])
        model = timm.create_model(kwargs.pop("model_name", name), pretrained=False, **kwargs).eval()
        result = attnviz.inspect(_image(), attnviz.wrap_model(model))
        assert {b.kind for b in result.blocks} == kinds and len(result.blocks) == len(find_gates(model))
        assert result.gradcam is not None and np.isfinite(result.gradcam).all()
        summary = result.summary()
        arrays = result.arrays()
        if kinds == {"sk"}:
            b = result.blocks[0]
            assert b.channel is None and b.branches.shape == (2, 64) and b.branch_stats is not None
            assert summary["blocks"][0]["branches_shape"] == [2, 64]
            assert math.isclose(sum(summary["blocks"][0]["branch_stats"]["share"]), 1.0)
            assert arrays[f"branches/{b.name}"].shape == (2, 64)
        else:
            assert result.spatial_blocks and all(f"spatial/{b.name}" in arrays for b in result.spatial_blocks)
        files = export.npz_bytes(result), export.summary_json(result), export.chart_figures(result)
        assert files[0] and files[1]


def test_interventions_replace_gates_that_can_be_replaced_and_refuse_the_others():
    x = sample()[:1]
    for name in ("efficientnet_b0", "resnet10t+ge_extent2", "resnet10t+gc"):
        model = build(name)
        module = find_gates(model)[0].module
        seen = []
        h = module.register_forward_hook(lambda _m, i, o: seen.append((i[0].clone(), o.clone())))
        try:
            with torch.no_grad(), intervene(model, {"*": "identity"}):
                model(x)
        finally:
            h.remove()
        inp, out = seen[0]
        assert torch.equal(out, inp), name  # the block without its attention, exactly
    for name, key in (("skresnet18", "layer1.0.conv1"), ("resnest14d", "layer1.0.conv2"),
                      ("gcresnext26ts", "stages.0.0"), ("resnet10t+lcbam", "layer1.0:channel")):
        with pytest.raises(ValueError, match="cannot be intervened on"):
            with intervene(build(name), {key: "identity"}):
                pass
    with pytest.raises(ValueError, match="matches no gate that can be replaced"):
        with intervene(build("skresnet18"), {"*": "mean"}):
            pass


def test_knockout_on_a_plain_joint_gate_zeroes_those_channels():
    model = build("resnet10t+ge_extent2")
    site = find_gates(model)[1]
    seen = []
    h = site.module.register_forward_hook(lambda _m, _i, o: seen.append(o.clone()))
    try:
        with torch.no_grad(), intervene(model, {site.name: attnviz.ChannelKnockout(indices=[0, 3])}):
            model(sample()[:1])
    finally:
        h.remove()
    assert torch.count_nonzero(seen[0][:, [0, 3]]) == 0 and torch.count_nonzero(seen[0][:, 1]) > 0


def test_drilldown_refuses_branch_blocks_and_works_on_se():
    model = timm.create_model("skresnet18", pretrained=False).eval()
    result = attnviz.inspect(_image(), attnviz.wrap_model(model), gradcam=False)
    with pytest.raises(ValueError, match="kernel branches"):
        result.channel_map(result.blocks[0].name, 0)
    model = timm.create_model("mobilenetv3_small_100", pretrained=False).eval()
    result = attnviz.inspect(_image(), attnviz.wrap_model(model), gradcam=False)
    block = result.blocks[-1]
    cm = result.channel_map(block.name, 5)
    assert cm.gate == block.channel[5] and cm.before.shape == cm.after.shape


def test_analysis_leaves_branch_only_blocks_out(tmp_path):
    """attnviz.analyze has no per-class statistics of branch weights yet: SK blocks are left
    out (as the Ray engine does), GC blocks are analysed."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(2):
            Image.fromarray((rng.random((70, 80, 3)) * 255).astype(np.uint8)).save(tmp_path / label / f"{i}.png")
    for name, blocks in (("skresnet18", 0), ("resnet10t+gc", 4)):
        kwargs = dict(MODELS[name])
        model = timm.create_model(kwargs.pop("model_name", name), pretrained=False, num_classes=2, **kwargs).eval()
        analysis = attnviz.analyze(tmp_path, attnviz.wrap_model(model, classes=["a", "b"]), batch_size=4,
                                   num_workers=0)
        assert analysis.n_images == 4 and len(analysis.blocks) == blocks


def test_models_doc_table_is_measured():
    """docs/MODELS.md's table is what docs/model_families.py measures today."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("model_families", root / "docs" / "model_families.py")
    families = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(families)
    assert families.table() in (root / "docs" / "MODELS.md").read_text()
