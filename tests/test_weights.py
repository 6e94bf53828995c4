"""Offline proofs for attnviz.models.weights.

The real weight files cannot be downloaded here, so for every ImageNet variant the *source*
library's own architecture is built at random init (BatchNorm statistics randomised too),
saved in that source's exact file format, and put where the download would put it: torch
hub's ``download_url_to_file`` (the network boundary) is replaced by a copy of the prepared
file, HF files sit in a fake hub cache under a temporary ``HF_HOME``. Everything after that,
checksum verification and unzipping included, runs for real: ``resolve_file`` →
``read_state_dict`` → ``convert_state_dict`` → ``load_into`` into ``variant.build()``, then
logits and attention gates are compared with the source model's own.

Each ResNet-50 pair is built once (module-scoped fixture).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import shlex
import shutil
import socket
import urllib.error
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn

from attnviz.capture import capture
from attnviz.models import weights as W
from attnviz.models.resnet import AttentionResNet
from attnviz.models.zoo import IMAGENET_VARIANTS, Variant, WeightsSource

VARIANTS = {v.name: v for v in IMAGENET_VARIANTS}
# The comparisons run both models in float64 (float32 weights widened exactly): float32
# convolutions take different kernels on different CPUs and differ by ~1e-5 after 16 blocks,
# which says nothing about the conversion. In float64 the same network agrees to ~1e-13 and a
# wrong mapping is off by O(0.1-10), so these bounds separate the two on any machine.
LOGIT_TOL = 1e-9
GATE_TOL = 1e-10
REAL_DOWNLOAD = torch.hub.download_url_to_file
PYTORCHCV = "https://github.com/osmr/imgclsmob/releases/download"


# --------------------------------------------------------------------------- helpers


def randomise_(model: nn.Module, seed: int) -> nn.Module:
    """Random BN affine, running stats and biases, so that a wrong mapping cannot hide.

    Running stats are first calibrated on one random batch (as training would) and then
    perturbed: activations stay O(1) through 16 blocks, as in a trained network, so logits are
    O(1-10) and a 1e-4 tolerance is meaningful.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.8 + 0.6)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
            elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch sets the stats exactly
        batch = 2 if any(isinstance(m, nn.BatchNorm1d) for m in bns) else 1  # BN1d needs 2 samples
        model.train()(torch.randn(batch, 3, 224, 224, generator=g))
        for m in bns:
            m.momentum = 0.1
            std = m.running_var.sqrt()
            m.running_mean.add_(torch.randn(m.running_mean.shape, generator=g) * 0.2 * std)
            m.running_var.mul_(torch.rand(m.running_var.shape, generator=g) * 0.8 + 0.6)
            m.num_batches_tracked.fill_(int(torch.randint(1, 10**6, (1,), generator=g)))
    return model.eval()


def digest(path: Path, algo: str) -> str:
    return hashlib.new(algo, path.read_bytes()).hexdigest()  # test files are small


class FakeNet:
    """Stands in for ``torch.hub.download_url_to_file``: serves prepared files by URL."""

    def __init__(self) -> None:
        self.files: dict[str, Path | bytes] = {}
        self.calls: list[str] = []

    def download_url_to_file(self, url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        self.calls.append(url)
        if url not in self.files:
            raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))
        src = self.files[url]
        if isinstance(src, bytes):
            Path(dst).write_bytes(src)
        else:
            shutil.copyfile(src, dst)


def put_in_hf_cache(hf_home: Path, repo: str, filename: str, tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``filename`` into the hub cache layout (blobs + snapshot link + refs/main)."""
    from safetensors.torch import save_file

    repo_dir = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    commit = hashlib.sha1(repo.encode()).hexdigest()
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    tmp = repo_dir / "blobs" / "incoming"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    blob = repo_dir / "blobs" / digest(tmp, "sha256")
    tmp.rename(blob)
    snap = repo_dir / "snapshots" / commit / filename
    snap.parent.mkdir(parents=True, exist_ok=True)
    snap.symlink_to(os.path.relpath(blob, snap.parent))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snap


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
    net.files[W._fetch_url(v.weights.url)] = path  # the zoo's Google Drive URL
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
        mp.setattr(torch.hub, "download_url_to_file", net.download_url_to_file)
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


# --------------------------------------------------------------------------- checksums


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """An empty TORCH_HOME, a fake network and a tiny weights file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    net = FakeNet()
    monkeypatch.setattr(torch.hub, "download_url_to_file", net.download_url_to_file)
    pth = tmp_path / "tiny.pth"
    torch.save({"fc.weight": torch.randn(3, 2), "fc.bias": torch.randn(3)}, pth)
    return net, pth, tmp_path / "torch" / "hub" / "checkpoints"


def _src(**kw) -> WeightsSource:
    return WeightsSource(**{"format": "torchvision", "description": "tiny test weights", "license": "-", **kw})


def _zip_of(pth: Path, out: Path, arcname: str) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(pth, arcname=arcname)
    return out


def test_url_sha256_prefix_checked_and_bad_file_removed(tiny):
    net, pth, cache = tiny
    good = digest(pth, "sha256")[:8]
    bad = format(int(good, 16) ^ 0xFFFFFFFF, "08x")
    ok = _src(url=f"https://download.pytorch.org/models/tiny-{good}.pth")
    net.files[ok.url] = pth
    assert W.resolve_file(ok, progress=False) == cache / f"tiny-{good}.pth"
    wrong = _src(url=f"https://download.pytorch.org/models/tiny-{bad}.pth")
    net.files[wrong.url] = pth
    with pytest.raises(W.WeightsError, match="checksum mismatch") as e:
        W.resolve_file(wrong, progress=False)
    assert not isinstance(e.value, W.WeightsUnavailableError)
    assert "deleted" in str(e.value) and bad in str(e.value)
    assert sorted(p.name for p in cache.iterdir()) == [f"tiny-{good}.pth"]


def test_full_sha256_checked(tiny):
    net, pth, cache = tiny
    url = "https://example.org/weights/tiny.pth"
    net.files[url] = pth
    with pytest.raises(W.WeightsError, match="SHA256"):
        W.resolve_file(_src(url=url, sha256="0" * 64), progress=False)
    assert list(cache.iterdir()) == []
    assert W.resolve_file(_src(url=url, sha256=digest(pth, "sha256")), progress=False).is_file()


def test_pytorchcv_sha1_of_unzipped_pth_checked(tiny):
    net, pth, cache = tiny
    z = _zip_of(pth, pth.with_name("tiny-0000-deadbeef.pth.zip"), "tiny-0000-deadbeef.pth")
    url = f"{PYTORCHCV}/v0/tiny-0000-deadbeef.pth.zip"
    net.files[url] = z
    with pytest.raises(W.WeightsError, match="SHA1") as e:
        W.resolve_file(_src(url=url, sha1="0" * 40, format="pytorchcv_cbam"), progress=False)
    assert "deleted" in str(e.value)
    assert list(cache.iterdir()) == []  # neither the .pth nor the .zip is kept
    src = _src(url=url, sha1=digest(pth, "sha1"), format="pytorchcv_cbam")
    path = W.resolve_file(src, progress=False)
    assert path.name == "tiny-0000-deadbeef.pth" and digest(path, "sha1") == src.sha1
    assert [p.name for p in cache.iterdir()] == [path.name]


def test_corrupted_cached_file_is_rejected_and_removed(tiny):
    net, pth, cache = tiny
    z = _zip_of(pth, pth.with_name("t.pth.zip"), "t.pth")
    src = _src(url="https://example.org/t.pth.zip", sha1=digest(pth, "sha1"))
    net.files[src.url] = z
    path = W.resolve_file(src, progress=False)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")  # bit rot / tampering
    with pytest.raises(W.WeightsError, match="checksum mismatch"):
        W.resolve_file(src, progress=False)
    assert not path.exists() and not W.is_available(src)
    assert W.resolve_file(src, progress=False) == path  # next run downloads a fresh copy
    assert len(net.calls) == 2


def test_not_a_zip_download_is_rejected(tiny):
    net, pth, cache = tiny
    src = _src(url="https://example.org/t.pth.zip", sha1="0" * 40)
    net.files[src.url] = b"PK\x03\x04 truncated garbage"
    with pytest.raises(W.WeightsError, match="not a valid zip"):
        W.resolve_file(src, progress=False)
    assert list(cache.iterdir()) == []


def test_web_page_instead_of_file_is_rejected(tiny):
    net, pth, cache = tiny
    src = VARIANTS["eca_resnet50"].weights
    net.files[W._fetch_url(src.url)] = b"<!DOCTYPE html><html><body>Google Drive - quota exceeded</body></html>"
    with pytest.raises(W.WeightsUnavailableError, match="web page") as e:
        W.resolve_file(src, progress=False)
    msg = str(e.value)
    assert "--weights FILE" in msg and "Baidu" in msg and "eca_resnet50" in msg
    assert list(cache.iterdir()) == []


# --------------------------------------------------------------------------- offline


def test_offline_url_gives_one_clear_message(tiny):
    net, pth, cache = tiny  # the fake network knows no file: name resolution fails
    v = VARIANTS["cbam_resnet50"]
    with pytest.raises(W.WeightsUnavailableError) as e:
        W.resolve_file(v.weights, progress=False)
    msg = str(e.value)
    assert v.weights.description in msg and "'cbam_resnet50'" in msg
    assert v.weights.url in msg
    assert str(cache) in msg and "TORCH_HOME" in msg
    assert "--weights FILE" in msg and "python -m attnviz download cbam_resnet50" in msg
    assert "Temporary failure in name resolution" in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no urllib traceback chained
    assert not W.is_available(v.weights)


def test_real_urllib_failure_is_wrapped(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(torch.hub, "download_url_to_file", REAL_DOWNLOAD)
    with socket.socket() as s:  # a local port nobody listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = _src(url=f"http://127.0.0.1:{port}/models/tiny-deadbeef.pth")
    with pytest.raises(W.WeightsUnavailableError, match="no connection") as e:
        W.resolve_file(src, progress=False)
    assert src.url in str(e.value) and e.value.__cause__ is None
    assert list((tmp_path / "hub" / "checkpoints").iterdir()) == []


def test_download_disabled_and_not_cached(tiny):
    v = VARIANTS["resnet50"]
    with pytest.raises(W.WeightsUnavailableError, match="downloading is turned off"):
        W.resolve_file(v.weights, download=False)
    assert tiny[0].calls == []


def test_hf_offline_and_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    v = VARIANTS["seresnet50"]
    assert not W.is_available(v.weights)
    with pytest.raises(W.WeightsUnavailableError) as e:
        W.resolve_file(v.weights)
    msg = str(e.value)
    assert "HF_HUB_OFFLINE" in msg and v.weights.hf_repo in msg and "model.safetensors" in msg
    assert str(tmp_path / "hf" / "hub") in msg and "--weights FILE" in msg


def test_hf_connection_error_is_wrapped(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)

    def no_network(*a, **k):
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub "
                                      "and we cannot find the requested files in the local cache.")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(W, "_unresolvable_host", lambda url: None)  # as if DNS worked
    with pytest.raises(W.WeightsUnavailableError, match="LocalEntryNotFoundError") as e:
        W.resolve_file(VARIANTS["ecaresnet50d"].weights)
    assert e.value.__cause__ is None and "timm/ecaresnet50d.miil_in1k" in str(e.value)


def test_hf_download_goes_to_hf_home_then_cache_is_used(tmp_path, monkeypatch):
    import huggingface_hub

    hf_home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    calls = []

    def fake_download(repo_id, filename, *, cache_dir, **kwargs):  # the network boundary
        calls.append((repo_id, filename, Path(cache_dir), kwargs))
        return str(put_in_hf_cache(hf_home, repo_id, filename, {"w": torch.ones(2)}))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(W, "_unresolvable_host", lambda url: None)  # as if DNS worked
    src = VARIANTS["seresnet50"].weights
    assert not W.is_available(src)
    path = W.resolve_file(src, progress=False)
    assert calls[0][:3] == (src.hf_repo, "model.safetensors", hf_home / "hub")
    assert "tqdm_class" in calls[0][3]  # progress=False silences the bar
    assert W.is_available(src) and W.resolve_file(src) == path and len(calls) == 1
    assert torch.equal(W.read_state_dict(path)["w"], torch.ones(2))


def test_hf_without_dns_fails_fast_without_retries(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)

    def no_dns(host, *a, **k):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("should not retry"))
    with pytest.raises(W.WeightsUnavailableError, match="cannot resolve huggingface.co") as e:
        W.resolve_file(VARIANTS["seresnet50"].weights)
    assert str(tmp_path / "hf" / "hub") in str(e.value)


def test_manual_only_source_explains_how_to_get_it():
    src = _src(format="eca_authors", manual="fetch it from the authors' page and pass --weights FILE")
    assert not W.is_available(src)
    with pytest.raises(W.WeightsUnavailableError, match="authors' page"):
        W.resolve_file(src)


# --------------------------------------------------------------------------- safety


class RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo pwned > {shlex.quote(str(self.marker))}",)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["torch.save", "zip", "pickle-2", "pickle-5"])
def test_pickle_that_runs_code_is_refused(tmp_path, how):
    marker = tmp_path / "marker"
    payload = {"state_dict": {"fc.weight": torch.zeros(1)}, "extra": RunsCode(marker)}
    path = tmp_path / "evil.pth"
    if how.startswith("pickle"):
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=int(how[-1]))
    else:
        torch.save(payload, path)
    if how == "zip":
        path = _zip_of(path, tmp_path / "evil.pth.zip", "evil.pth")
    with pytest.raises(W.WeightsError) as e:
        W.read_state_dict(path)
    assert not marker.exists()
    msg = str(e.value)
    assert "Only safetensors files and torch files holding plain weights" in msg and "accepted" in msg
    if not how.startswith("pickle"):  # a raw pickle is already stopped at its tensor's storage
        assert "refused" in msg and "GLOBAL posix.system" in msg


def test_non_weights_files_are_rejected_cleanly(tmp_path):
    (tmp_path / "a.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(W.WeightsError, match="not a readable weights file"):
        W.read_state_dict(tmp_path / "a.pth")
    (tmp_path / "b.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(W.WeightsError, match="safetensors"):
        W.read_state_dict(tmp_path / "b.safetensors")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "c.pth")
    with pytest.raises(W.WeightsError, match="state dict of tensors"):
        W.read_state_dict(tmp_path / "c.pth")
    with pytest.raises(W.WeightsError, match="does not exist"):
        W.read_state_dict(tmp_path / "missing.pth")


# --------------------------------------------------------------------------- user checkpoints


@pytest.fixture(scope="module")
def small_cbam() -> nn.Module:
    torch.manual_seed(0)
    return randomise_(AttentionResNet(depth=10, attn="cbam", num_classes=7), 11)


@pytest.mark.parametrize("wrap", ["state_dict", "model", "model/state_dict"])
def test_user_checkpoint_with_module_prefix_and_nested_state_dict(tmp_path, small_cbam, wrap):
    path = tmp_path / "mine.pth.tar"
    payload: dict = {f"module.{k}": v for k, v in small_cbam.state_dict().items()}
    for key in reversed(wrap.split("/")):
        payload = {"epoch": 12, "arch": "cbam", key: payload}
    torch.save(payload, path)
    state = W.read_state_dict(path)
    assert W.detect_format(state) == "attnviz"
    model = AttentionResNet(depth=10, attn="cbam", num_classes=7)
    W.load_into(model, W.convert_state_dict(state, "auto"))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), small_cbam(x))


def test_user_checkpoint_that_does_not_fit_names_the_keys(tmp_path, small_cbam):
    from safetensors.torch import save_file

    path = tmp_path / "mine.safetensors"
    save_file(small_cbam.state_dict(), str(path))
    state = W.convert_state_dict(W.read_state_dict(path), "auto")
    with pytest.raises(W.WeightsError) as e:
        W.load_into(AttentionResNet(depth=10, attn="se", num_classes=7), state)
    msg = str(e.value)
    assert "missing keys: layer1.0.attn.fc1.bias" in msg
    assert "unexpected keys: layer1.0.attn.channel.mlp.fc1.bias" in msg
    with pytest.raises(W.WeightsError, match=r"shape mismatch: fc.bias \(7,\)≠\(1000,\), fc.weight \(7, 512\)≠\(1000, 512\)"):
        W.load_into(AttentionResNet(depth=10, attn="cbam"), state)


def test_unknown_layouts_and_formats_are_named():
    with pytest.raises(W.WeightsError) as e:
        W.detect_format({"encoder.block.0.weight": torch.zeros(1)})
    for fmt in W.FORMATS:
        assert fmt in str(e.value)
    with pytest.raises(W.WeightsError, match="no converter for weights format 'caffe2'"):
        W.convert_state_dict({"a": torch.zeros(1)}, "caffe2")
