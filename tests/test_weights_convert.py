"""Offline proofs that each ImageNet variant's weights convert exactly (attnviz.models.weights).

The real weight files cannot be downloaded here, so for every ImageNet variant the *source*
library's own architecture is built at random init (BatchNorm statistics randomised too),
saved in that source's exact file format, and put where the download would put it:
``fetch.download_url`` (the network boundary) is replaced by a copy of the prepared
file, HF files sit in a fake hub cache under a temporary ``HF_HOME``. Everything after that,
checksum verification and unzipping included, runs for real: ``resolve_file`` →
``read_state_dict`` → ``convert_state_dict`` → ``load_into`` into ``variant.build()``, then
logits and attention gates are compared with the source model's own.

Each ResNet-50 pair is built once (module-scoped fixture).
"""
from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn

from attnviz.capture import capture
from attnviz.models import weights as W
from attnviz.models.weights import fetch, hub
from attnviz.models.zoo import Variant, WeightsSource

from .weights_support import PYTORCHCV, VARIANTS, FakeNet, digest, put_in_hf_cache, randomise_

# The comparisons run both models in float64 (float32 weights widened exactly): float32
# convolutions take different kernels on different CPUs and differ by ~1e-5 after 16 blocks,
# which says nothing about the conversion. In float64 the same network agrees to ~1e-13 and a
# wrong mapping is off by O(0.1-10), so these bounds separate the two on any machine.
LOGIT_TOL = 1e-9
GATE_TOL = 1e-10


# --------------------------------------------------------------------------- helpers


def hook_gates(model: nn.Module, suffix: str, to_block: Callable[[str], str], role: str) -> tuple[list, dict]:
    """Hooks on the source model's own sigmoid modules (named ``*suffix``)."""
    got: dict[str, dict[str, torch.Tensor]] = {}
    handles = []
    for name, mod in model.named_modules():
        if name.endswith(suffix):
            block = to_block(name)

            def hook(_m, _i, out, block=block):
                out = out.detach().clone()
                b = out.shape[0]
                if role == "channel":
                    got.setdefault(block, {})["channel"] = out.reshape(b, -1)
                elif role == "spatial":
                    got.setdefault(block, {})["spatial"] = out.reshape(b, *out.shape[-2:])
                else:  # joint [B, C, H, W], reported as attnviz's capture does
                    got.setdefault(block, {}).update(channel=out.mean((2, 3)), spatial=out.mean(1))

            handles.append(mod.register_forward_hook(hook))
    return handles, got


def stage_unit(name: str) -> str:
    """pytorchcv ``features.stageN.unitM...`` → attnviz ``layerN.(M-1)``."""
    parts = name.split(".")
    return f"layer{int(parts[1][5:])}.{int(parts[2][4:]) - 1}"


# --------------------------------------------------------------------------- ECA authors' model
# The ECA-Net authors' ResNet-50 (github BangguWu/ECANet, models/eca_resnet.py): torchvision's
# ResNet layout with an `eca` module (avg pool → Conv1d over channels → sigmoid) after bn3.


class AuthorsEcaLayer(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.avg_pool(x)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * self.sigmoid(y).expand_as(x)


def authors_eca_resnet50(k_sizes=(3, 5, 5, 7)) -> nn.Module:
    from torchvision.models.resnet import Bottleneck, ResNet

    class EcaBottleneck(Bottleneck):
        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.eca(self.bn3(self.conv3(out)))
            return self.relu(out + identity)

    model = ResNet(EcaBottleneck, [3, 4, 6, 3])
    for stage, k in zip((model.layer1, model.layer2, model.layer3, model.layer4), k_sizes):
        for block in stage:
            block.eca = AuthorsEcaLayer(k)
    return model


# --------------------------------------------------------------------------- per-variant preparation


@dataclass
class Prepared:
    source: WeightsSource  # the variant's source, checksums/URL adjusted to the prepared file
    model: nn.Module  # the source library's model
    gate_hooks: Callable[[nn.Module], tuple[list, dict]] | None  # None: capture() (timm) or no gates
    zip_file: Path | None = None
    expected_cache_name: str | None = None


def _torch_url_source(v: Variant, model: nn.Module, tmp: Path, net: FakeNet) -> Prepared:
    path = tmp / "resnet50.pth"
    torch.save(model.state_dict(), path)
    url = f"https://download.pytorch.org/models/resnet50-{digest(path, 'sha256')[:8]}.pth"
    net.files[url] = path
    return Prepared(dataclasses.replace(v.weights, url=url), model, None)


def prepare_resnet50(v, tmp, net, hf_home):
    import torchvision

    return _torch_url_source(v, randomise_(torchvision.models.resnet50(), 1), tmp, net)


def prepare_se_resnet50(v, tmp, net, hf_home):
    import timm

    model = randomise_(timm.create_model("legacy_seresnet50"), 2)
    # The Cadene port dates from 2017: legacy (non-zip) serialization, no num_batches_tracked.
    sd = {k: t for k, t in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp / "se_resnet50-ce0d4300.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    net.files[v.weights.url] = path  # the zoo's URL as it is (no hash is enforced for it)
    return Prepared(
        v.weights, model,
        lambda m: hook_gates(m, ".se_module.sigmoid", lambda n: n.rsplit(".se_module", 1)[0], "channel"),
    )


def _timm_hf_source(name: str, seed: int):
    def prepare(v, tmp, net, hf_home):
        import timm

        model = randomise_(timm.create_model(name), seed)
        put_in_hf_cache(hf_home, v.weights.hf_repo, v.weights.hf_filename, model.state_dict())
        return Prepared(v.weights, model, None)

    return prepare


def prepare_eca_resnet50(v, tmp, net, hf_home):
    model = randomise_(authors_eca_resnet50(), 4)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    # What the authors' main.py saves: a DataParallel model's state dict and training state.
    checkpoint = {
        "epoch": 100,
        "arch": "eca_resnet50",
        "state_dict": {f"module.{k}": t for k, t in model.state_dict().items()},
        "best_prec1": torch.tensor(77.42),
        "optimizer": sgd.state_dict(),
    }
    path = tmp / "eca_resnet50_k3557.pth.tar"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)  # PyTorch 1.0/1.1 era
    net.files[hub._fetch_url(v.weights.url)] = path  # the zoo's Google Drive URL
    return Prepared(
        v.weights, model,
        lambda m: hook_gates(m, ".eca.sigmoid", lambda n: n.rsplit(".eca", 1)[0], "channel"),
        expected_cache_name="eca_resnet50_k3557.pth.tar",
    )


def _pytorchcv_zip(v: Variant, model: nn.Module, tmp: Path, net: FakeNet, name: str, err: str, tag: str):
    pth = tmp / f"{name}.pth"
    torch.save(model.state_dict(), pth)
    sha1 = digest(pth, "sha1")
    stem = f"{name}-{err}-{sha1[:8]}.pth"
    zpath = tmp / f"{stem}.zip"
    # pytorchcv deflates its zips; storing is much faster here and reads through the same
    # code path (deflate itself is covered by the tiny-file tests below).
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_STORED) as zf:
        zf.write(pth, arcname=stem)
    pth.unlink()
    url = f"{PYTORCHCV}/{tag}/{stem}.zip"
    net.files[url] = zpath
    return dataclasses.replace(v.weights, url=url, sha1=sha1), zpath, stem


def prepare_cbam_resnet50(v, tmp, net, hf_home):
    from pytorchcv.model_provider import get_model

    model = randomise_(get_model("cbam_resnet50", pretrained=False), 6)
    source, zpath, stem = _pytorchcv_zip(v, model, tmp, net, "cbam_resnet50", "0505", "v0.0.537")

    def hooks(m):
        h1, got = hook_gates(m, ".cbam.ch_gate.sigmoid", stage_unit, "channel")
        h2, got2 = hook_gates(m, ".cbam.sp_gate.sigmoid", stage_unit, "spatial")
        return h1 + h2, (got, got2)

    return Prepared(source, model, hooks, zip_file=zpath, expected_cache_name=stem)


def prepare_bam_resnet50(v, tmp, net, hf_home):
    from pytorchcv.model_provider import get_model

    model = randomise_(get_model("bam_resnet50", pretrained=False), 7)
    source, zpath, stem = _pytorchcv_zip(v, model, tmp, net, "bam_resnet50", "0547", "v0.0.499")
    # BAM at the entrance of stage N (N >= 2) is attnviz's bam{N-1}.
    to_block = lambda n: f"bam{int(n.split('.')[1][5:]) - 1}"  # noqa: E731
    return Prepared(source, model, lambda m: hook_gates(m, ".bam.sigmoid", to_block, "joint"),
                    zip_file=zpath, expected_cache_name=stem)


PREPARE = {
    "resnet50": prepare_resnet50,
    "se_resnet50": prepare_se_resnet50,
    "seresnet50": _timm_hf_source("seresnet50", 3),
    "eca_resnet50": prepare_eca_resnet50,
    "ecaresnet50d": _timm_hf_source("ecaresnet50d", 5),
    "cbam_resnet50": prepare_cbam_resnet50,
    "bam_resnet50": prepare_bam_resnet50,
}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Temporary TORCH_HOME / HF_HOME and a fake network for the whole module."""
    root = tmp_path_factory.mktemp("weights-env")
    net = FakeNet()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(root / "torch"))
        mp.setenv("HF_HOME", str(root / "hf"))
        for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            mp.delenv(var, raising=False)
        mp.setattr(torch.hub, "_hub_dir", None)  # in case someone called torch.hub.set_dir
        mp.setattr(fetch, "download_url", net.download_url)
        yield {"root": root, "net": net, "hf_home": root / "hf", "files": root / "published"}


@dataclass
class Case:
    variant: Variant
    prepared: Prepared
    resolved: Path
    available_before: bool
    state: dict[str, torch.Tensor]
    src_logits: torch.Tensor
    our_logits: torch.Tensor
    src_gates: dict[str, dict[str, torch.Tensor]]
    our_gates: dict[str, dict[str, torch.Tensor]]
    extra: dict = field(default_factory=dict)


@pytest.fixture(scope="module", params=list(PREPARE))
def case(request, env) -> Case:
    name = request.param
    v = VARIANTS[name]
    torch.manual_seed(1234)
    tmp = env["files"] / name
    tmp.mkdir(parents=True)
    available_before = W.is_available(v.weights)  # before anything is placed in the caches
    prep = PREPARE[name](v, tmp, env["net"], env["hf_home"])
    # URL sources: nothing until resolve_file downloads; HF: the prepared hub cache counts.
    assert W.is_available(prep.source) == bool(prep.source.hf_repo)
    path = W.resolve_file(prep.source, progress=False)
    state = W.read_state_dict(path)
    ours = v.build()
    W.load_into(ours, W.convert_state_dict(state, prep.source.format))
    ours.eval()

    prep.model.double()
    ours.double()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    with torch.no_grad():
        if prep.gate_hooks is None:
            with capture(prep.model) as cap_src:
                src_logits = prep.model(x)
            src_gates = {b.name: _roles(b) for b in cap_src}
        else:
            handles, got = prep.gate_hooks(prep.model)
            try:
                src_logits = prep.model(x)
            finally:
                for h in handles:
                    h.remove()
            src_gates = _merge(got)
        with capture(ours) as cap:
            our_logits = ours(x)
    extra = {}
    if prep.zip_file is not None:
        extra["zip_state"] = W.read_state_dict(prep.zip_file)  # a user passing the .pth.zip itself
    result = Case(v, prep, path, available_before, state, src_logits, our_logits, src_gates,
                  {b.name: _roles(b) for b in cap}, extra)
    yield result
    del prep, ours, result


def _roles(b) -> dict[str, torch.Tensor]:
    return {r: t for r, t in (("channel", b.channel), ("spatial", b.spatial)) if t is not None}


def _merge(got) -> dict[str, dict[str, torch.Tensor]]:
    if isinstance(got, tuple):
        out: dict[str, dict[str, torch.Tensor]] = {}
        for part in got:
            for block, roles in part.items():
                out.setdefault(block, {}).update(roles)
        return out
    return got


# --------------------------------------------------------------------------- the variants


@pytest.mark.slow
def test_logits_match_source_model(case: Case):
    assert case.src_logits.dtype == case.our_logits.dtype == torch.float64
    diff = (case.src_logits - case.our_logits).abs().max().item()
    print(f"\n{case.variant.name}: max |logit diff| = {diff:.3g} (logit scale {case.src_logits.abs().max():.3g})")
    assert case.src_logits.abs().max() > 0.5, "logits too small for the comparison to mean anything"
    assert diff <= LOGIT_TOL


@pytest.mark.slow
def test_gates_match_source_model(case: Case):
    expected_blocks = {"none": 0, "bam": 3}.get(case.variant.block, 16)
    assert len(case.our_gates) == expected_blocks
    assert case.src_gates.keys() == case.our_gates.keys()
    worst = 0.0
    for block, roles in case.src_gates.items():
        assert roles.keys() == case.our_gates[block].keys(), block
        for role, t in roles.items():
            ours = case.our_gates[block][role]
            assert ours.shape == t.shape and ours.dtype == t.dtype == torch.float64, (block, role)
            diff = (ours - t).abs().max().item()
            worst = max(worst, diff)
            assert diff <= GATE_TOL, (block, role, diff)
            assert t.std() > 1e-3, (block, role)  # gates are not saturated/constant
    print(f"\n{case.variant.name}: max |gate diff| = {worst:.3g}")


@pytest.mark.slow
def test_detect_format_recognises_source_layout(case: Case):
    assert W.detect_format(case.state) == case.variant.weights.format
    auto = W.convert_state_dict(case.state, "auto")
    explicit = W.convert_state_dict(case.state, case.variant.weights.format)
    assert list(auto) == list(explicit)


@pytest.mark.slow
def test_download_lands_in_the_cache_once(case: Case, env):
    src = case.prepared.source
    assert not case.available_before
    assert W.is_available(src)
    if src.hf_repo:
        assert case.resolved.is_relative_to(env["hf_home"] / "hub")
        assert src.url is None
    else:
        cache = env["root"] / "torch" / "hub" / "checkpoints"
        assert W.torch_cache_dir() == cache
        assert case.resolved.parent == cache
        if case.prepared.expected_cache_name:
            assert case.resolved.name == case.prepared.expected_cache_name
        leftovers = [p.name for p in cache.iterdir() if p.suffix in (".zip", ".part", ".unzip")]
        assert leftovers == []  # the pytorchcv .zip is removed after unpacking, no partial files
        calls = len(env["net"].calls)
        assert W.resolve_file(src, download=False) == case.resolved
        assert len(env["net"].calls) == calls


@pytest.mark.slow
def test_pytorchcv_zip_can_be_passed_directly(case: Case):
    if "zip_state" not in case.extra:
        pytest.skip("only pytorchcv publishes .pth.zip files")
    zs = case.extra["zip_state"]
    assert zs.keys() == case.state.keys()
    assert all(torch.equal(zs[k], case.state[k]) for k in zs)


def test_unknown_layouts_and_formats_are_named():
    with pytest.raises(W.WeightsError) as e:
        W.detect_format({"encoder.block.0.weight": torch.zeros(1)})
    for fmt in W.FORMATS:
        assert fmt in str(e.value)
    with pytest.raises(W.WeightsError, match="no converter for weights format 'caffe2'"):
        W.convert_state_dict({"a": torch.zeros(1)}, "caffe2")
