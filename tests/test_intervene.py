"""Interventions on attention gates: exact semantics in float64, hooks removed, thread-safe."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

import attnviz
from attnviz.capture import capture
from attnviz.intervene import ChannelKnockout, intervene, parse_interventions, plan
from attnviz.models.resnet import AttentionResNet

SMALL = dict(depth=10, widths=(16, 32, 64, 128), stem_width=16, num_classes=7)
BLOCKS = ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]


def all_hooks_empty(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def randomize_bn_stats(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics, so the equivalences are not helped by BN being identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def make_model(attn: str | None, seed: int = 0) -> AttentionResNet:
    torch.manual_seed(seed)
    model = AttentionResNet(attn=attn, **SMALL).eval()
    randomize_bn_stats(model, seed)
    return model.double()


def without_attention(model: AttentionResNet) -> AttentionResNet:
    """The plain ResNet with the same weights, minus every attention block."""
    plain = AttentionResNet(attn=None, **SMALL).double().eval()
    sd = {k: v for k, v in model.state_dict().items() if ".attn." not in k and not k.startswith("bam")}
    plain.load_state_dict(sd, strict=True)
    return plain


def x64(b: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 3, 64, 64, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def attn_outputs(model: nn.Module, x: torch.Tensor, interventions=None) -> dict[str, torch.Tensor]:
    """Each attention module's output in one forward (optionally under interventions)."""
    from attnviz.capture import attention_module

    out: dict[str, torch.Tensor] = {}
    names = [s.name for s in attnviz.find_gates(model)]
    handles = [attention_module(model, n).register_forward_hook(
        lambda _m, _i, o, n=n: out.__setitem__(n, o.detach().clone())) for n in names]
    try:
        with torch.no_grad():
            if interventions:
                with intervene(model, interventions):
                    model(x)
            else:
                model(x)
    finally:
        for h in handles:
            h.remove()
    return out


@pytest.mark.parametrize("attn", ["se", "eca", "cbam", "bam"])
def test_identity_on_every_block_is_the_plain_resnet(attn):
    model, x = make_model(attn), x64()
    plain = without_attention(model)
    with torch.no_grad():
        ref, with_attn = plain(x), model(x)
        with intervene(model, {"*": "identity"}) as ctx:
            out = model(x)
    assert (with_attn - ref).abs().max() > 1e-2  # the blocks do change the logits...
    assert (out - ref).abs().max() <= 1e-10  # ...and "identity" removes exactly them
    assert set(ctx.calls) == {(e.block, e.role) for e in ctx.edits} and all(v == 1 for v in ctx.calls.values())
    assert all_hooks_empty(model)


@pytest.mark.parametrize("attn", ["se", "eca", "cbam", "bam"])
def test_identity_on_one_block_is_that_block_removed(attn):
    model, x = make_model(attn), x64()
    name = "bam2" if attn == "bam" else "layer3.0"
    outs = attn_outputs(model, x, {name: "identity"})
    from attnviz.capture import attention_module

    seen = []
    h = attention_module(model, name).register_forward_hook(lambda _m, i, _o: seen.append(i[0].detach().clone()))
    try:
        with torch.no_grad(), intervene(model, {name: "identity"}):
            model(x)
    finally:
        h.remove()
    assert torch.equal(outs[name], seen[0])  # block output == block input


@pytest.mark.parametrize("attn", ["se", "eca", "cbam", "bam"])
def test_knockout_of_all_channels_zeroes_the_block_output(attn):
    model, x = make_model(attn), x64()
    name = "bam1" if attn == "bam" else "layer2.0"
    channels = 16 if attn == "bam" else 32  # bam1 follows stage 1 (16 channels)
    plain = attn_outputs(model, x)[name]
    out = attn_outputs(model, x, {name: ChannelKnockout(top=channels)})[name]
    assert plain.abs().amin((0, 2, 3)).max() > 0 and torch.count_nonzero(out) == 0


@pytest.mark.parametrize("attn", ["se", "cbam", "bam"])
@pytest.mark.parametrize("which", ["top", "bottom"])
def test_knockout_top_and_bottom_k_zero_exactly_the_ranked_channels(attn, which):
    model, x, k = make_model(attn), x64(), 5
    name = "bam2" if attn == "bam" else "layer3.0"
    with torch.no_grad(), capture(model, only=[name]) as cap:
        model(x)
    gates = cap[name].channel.double()  # [B, C] from the unmodified forward (float32 copy)
    order = torch.argsort(gates, dim=1, descending=which == "top", stable=True)[:, :k]
    plain = attn_outputs(model, x)[name]
    out = attn_outputs(model, x, {name: ChannelKnockout(**{which: k})})[name]
    for i in range(x.shape[0]):
        chosen = set(order[i].tolist())
        zero = {c for c in range(out.shape[1]) if torch.count_nonzero(out[i, c]) == 0}
        dead = {c for c in range(out.shape[1]) if torch.count_nonzero(plain[i, c]) == 0}  # ReLU'd away
        assert zero == chosen | dead and len(chosen - dead) >= 3
        if attn != "cbam":  # CBAM's spatial gate sees the zeroed channels: others move slightly
            rest = [c for c in range(out.shape[1]) if c not in chosen]
            assert torch.equal(out[i, rest], plain[i, rest])


def test_knockout_indices_and_mask_per_image():
    model, x = make_model("se"), x64(b=3)
    out = attn_outputs(model, x, {"layer4.0": ChannelKnockout(indices=[0, 5, 127])})["layer4.0"]
    assert torch.count_nonzero(out[:, [0, 5, 127]]) == 0 and out[:, 1].abs().sum() > 0
    mask = torch.zeros(3, 128, dtype=torch.bool)
    mask[0, :10], mask[2, 100:] = True, True
    out = attn_outputs(model, x, {"layer4.0": ChannelKnockout(mask=mask)})["layer4.0"]
    nonzero = out.abs().sum((2, 3)) > 0
    assert torch.equal(~nonzero, mask)


def test_mean_constant_and_tensor_replace_the_gate():
    model, x = make_model("cbam"), x64()
    with torch.no_grad(), capture(model) as cap:
        ref = model(x)
    with torch.no_grad(), intervene(model, {"layer2.0": "mean"}), \
            capture(model) as seen:  # capture hooks run after the intervention's: they see its gates
        model(x)
    with torch.no_grad(), intervene(model, {"layer3.0:spatial": 0.25}), capture(model) as seen3:
        model(x)
    ch, sp = cap["layer2.0"].channel, cap["layer2.0"].spatial
    torch.testing.assert_close(seen["layer2.0"].channel, ch.mean(1, keepdim=True).expand_as(ch))
    # the spatial gate is computed on the mean-gated features: uniform per image, as "mean" asks
    assert sp.std() > 1e-3 and seen["layer2.0"].spatial.flatten(1).std(1).max() < 1e-7
    assert torch.all(seen3["layer3.0"].spatial == 0.25)
    assert torch.equal(seen3["layer3.0"].channel, cap["layer3.0"].channel)  # its channel gate untouched
    # the unmodified gate given back as a tensor reproduces the plain forward exactly
    with torch.no_grad(), capture(model, only=["layer4.0"]) as c64:
        pass
    gate = []
    h = model.layer4[0].attn.channel.gate.register_forward_hook(lambda _m, _i, o: gate.append(o.detach().clone()))
    with torch.no_grad():
        model(x)
    h.remove()
    with torch.no_grad(), intervene(model, {"layer4.0:channel": gate[0]}):
        assert torch.equal(model(x), ref)
    assert len(c64) == 0 and all_hooks_empty(model)


def test_bam_constant_is_the_gate_value():
    """BAM computes x * (1 + g): a constant c gives the multiplier 1 + c, "mean" a uniform one."""
    model, x = make_model("bam"), x64()
    inp = []
    h = model.bam1.register_forward_hook(lambda _m, i, _o: inp.append(i[0].detach().clone()))  # returns None
    out = attn_outputs(model, x, {"bam1": 0.5})["bam1"]
    h.remove()
    torch.testing.assert_close(out, inp[0] * 1.5, rtol=1e-12, atol=1e-12)
    out = attn_outputs(model, x, {"bam1": "mean"})["bam1"]
    ratio = out[inp[0] != 0] / inp[0][inp[0] != 0]  # one multiplier 1 + mean(g) per image
    assert 1 < ratio.min() and ratio.max() - ratio.min() < 0.2


def test_hooks_removed_and_model_untouched_after_errors():
    model = make_model("cbam")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(5):
        with pytest.raises(RuntimeError):
            with intervene(model, {"*": "identity", "layer1.0": ChannelKnockout(top=3)}):
                model(torch.randn(1, 5, 32, 32, dtype=torch.float64))  # wrong channel count
        with pytest.raises(ValueError, match=r"0\.\.32"):
            with intervene(model, {"layer2.0": ChannelKnockout(top=33)}), torch.no_grad():
                model(x64())  # k > channels: raised inside the hook, during the forward
        with pytest.raises(KeyError):
            with intervene(model, {"layer4.0": "mean"}):
                raise KeyError("user code failed inside the block")
    assert all_hooks_empty(model)
    assert not model.training and all(not m.training for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_bad_requests_name_what_is_valid():
    model = make_model("cbam")
    with pytest.raises(KeyError, match=r"layer9\.0.*blocks: \['layer1\.0', 'layer2\.0', 'layer3\.0', 'layer4\.0'\]"):
        plan(model, {"layer9.0": "identity"})
    with pytest.raises(ValueError, match="expected 'identity', 'mean'"):
        plan(model, {"layer4.0": "off"})
    with pytest.raises(ValueError, match="exactly one of"):
        ChannelKnockout(top=2, bottom=2)
    with pytest.raises(ValueError, match="valid 0..31"):
        attn_outputs(model, x64(), {"layer2.0": ChannelKnockout(indices=[3, 32])})
    with pytest.raises(ValueError, match="layer4.0:channel"):
        plan(model, {"layer4.0": torch.ones(128)})
    with pytest.raises(KeyError, match="no joint gate"):
        plan(model, {"layer4.0:joint": "identity"})
    with pytest.raises(ValueError, match="needs a channel gate"):
        plan(make_model("spatial"), {"layer1.0": ChannelKnockout(top=1)})
    with pytest.raises(ValueError, match=r"matches no gate.*'layer1\.0': \['channel'\]"):
        plan(make_model("se"), {"*:spatial": "mean"})
    with pytest.raises(ValueError, match="no attention blocks"):
        plan(make_model(None), {"*": "identity"})
    with pytest.raises(ValueError, match="BLOCK=SPEC"):
        parse_interventions(["identity"])
    assert parse_interventions(["layer4.0=top=5", "*=0.5"])["layer4.0"].top == 5


def test_concurrent_requests_with_and_without_interventions_match_serial_ones():
    model, x = make_model("se"), x64()
    specs = [None, {"*": "identity"}, {"layer4.0": ChannelKnockout(top=10)}, {"layer2.0": "mean"}]

    def run(spec):
        with torch.no_grad():
            if spec is None:
                return model(x)
            with intervene(model, spec):
                return model(x)

    serial = [run(s) for s in specs]
    assert all((serial[0] - s).abs().max() > 1e-6 for s in serial[1:])
    results: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(specs))}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(specs))

    def worker(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(15):
                results[i].append(run(specs[i]))
        except BaseException as e:  # reported in the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(specs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, outs in results.items():
        assert len(outs) == 15 and all((o - serial[i]).abs().max() <= 1e-12 for o in outs)
    assert all_hooks_empty(model)


@pytest.fixture(scope="module")
def builtin_cbam():
    if "shapes_cbam_resnet" not in attnviz.variants():
        pytest.skip("built-in CBAM checkpoint missing")
    from attnviz.synthetic import generate

    loaded = attnviz.load_model("shapes_cbam_resnet")
    return loaded, generate(5, seed=8, size=loaded.preprocess.input_size).image


def test_inspect_with_interventions_reports_before_and_after(builtin_cbam):
    loaded, image = builtin_cbam
    spec = {"*": "identity"}
    plain = attnviz.inspect(image, loaded)
    after = attnviz.inspect(image, loaded, interventions=spec)
    eff = after.intervention
    np.testing.assert_array_equal(eff.before.logits, plain.logits)
    x = plain.prepared.tensor
    with torch.no_grad(), intervene(loaded.model, spec):
        manual = loaded.model(x)[0].numpy()
    np.testing.assert_allclose(after.logits, manual, rtol=1e-5, atol=1e-5)
    top = plain.predictions[0]
    assert eff.top1_before == top and eff.prob_after == pytest.approx(float(after.probs[top.index]))
    assert eff.delta_top1_prob == pytest.approx(eff.prob_after - top.probability)
    p = torch.softmax(torch.from_numpy(plain.logits).double(), 0)
    q = torch.softmax(torch.from_numpy(after.logits).double(), 0)
    assert eff.kl == pytest.approx(float((p * (p.log() - q.log())).sum()), rel=1e-6, abs=1e-9) and eff.kl > 0
    assert eff.top1_changed == (after.predictions[0].index != top.index)
    assert after.gradcam_target.index == top.index  # after's Grad-CAM explains the same class
    assert not np.allclose(eff.gradcam_before, eff.gradcam_after)
    # all gates of the intervened run read 1 (CBAM multiplies by g: identity = 1)
    assert all(np.all(b.channel == 1) and np.all(b.spatial == 1) for b in after.blocks)
    assert after.summary()["intervention"]["interventions"] == {"*": "identity"}
    assert all_hooks_empty(loaded.model)


def test_inspect_rejects_k_beyond_the_block_before_running_it(builtin_cbam):
    loaded, image = builtin_cbam
    with pytest.raises(ValueError, match=r"k must be in 0\.\.128"):
        attnviz.inspect(image, loaded, interventions={"layer4.0": ChannelKnockout(top=129)})
    with pytest.raises(KeyError, match="blocks:"):
        attnviz.inspect(image, loaded, interventions={"layer5.0": "mean"})
    assert all_hooks_empty(loaded.model)


@pytest.mark.parametrize("attn", ["se", "eca", "cbam"])
def test_timm_attention_modules_get_the_same_semantics(attn):
    """timm's SEModule / EcaModule / CbamModule: identity = the block without its attention,
    exactly; knocking out every channel zeroes the attention module's output."""
    import copy

    from timm.models.resnet import BasicBlock, ResNet

    from attnviz.capture import attention_module

    torch.manual_seed(0)  # zero_init_last=False: else the residual branch is 0 and attention moot
    model = ResNet(block=BasicBlock, layers=[1, 1, 1, 1], block_args=dict(attn_layer=attn), num_classes=5,
                   zero_init_last=False).eval().double()
    plain = copy.deepcopy(model)
    for m in plain.modules():
        if isinstance(m, BasicBlock):
            m.se = nn.Identity()
    x = x64()
    seen = []
    h = attention_module(model, "layer2.0").register_forward_hook(lambda _m, _i, o: seen.append(o.clone()))
    try:
        with torch.no_grad():
            ref, with_attn = plain(x), model(x)
            with intervene(model, {"*": "identity"}):
                out = model(x)
            with intervene(model, {"layer2.0": ChannelKnockout(top=128)}):
                model(x)
    finally:
        h.remove()
    assert (with_attn - ref).abs().max() > 1e-2 and (out - ref).abs().max() <= 1e-10
    assert torch.count_nonzero(seen[-1]) == 0 and all_hooks_empty(model)
