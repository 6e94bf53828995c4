"""Offline proofs for attnviz.models.preload and the download path under it, over real HTTP:
a loopback stand-in for the Hugging Face Hub (``HF_ENDPOINT``) and for release URLs serves files
in the source's exact format, built from the source library's architecture at random init."""
from __future__ import annotations

import dataclasses
import socket
import zipfile
from pathlib import Path

import pytest
import torch

from attnviz.models import default_variant_name, get_variant, load_model, preload, zoo
from attnviz.models import weights as W
from attnviz.models.weights import hub

from .hub_standin import HubStandIn, sha256_of, timm_safetensors
from .weights_support import digest, tiny_source

SE = get_variant("seresnet50")  # hosted on the Hugging Face Hub by timm


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty TORCH_HOME / HF_HOME, network settings cleared, built-in default as the start."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", *preload.OFFLINE_VARS, preload.ENV,
                "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(preload, "_current", None)  # the process's preload status, restored after
    assert zoo.get_variant(default_variant_name()).builtin
    return tmp_path


@pytest.fixture(scope="module")
def se_file(tmp_path_factory) -> Path:
    """timm's seresnet50 at random init, saved as the hub's model.safetensors."""
    return timm_safetensors("seresnet50", tmp_path_factory.mktemp("published") / "model.safetensors")


def _hub_files(tmp: Path) -> list[str]:
    root = tmp / "hf" / "hub"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _run(names: list[str]) -> preload.PreloadStatus:
    status = preload.start(names)
    assert status.done.wait(120), status.line()
    return status


# --------------------------------------------------------------------------- offline and config


@pytest.mark.parametrize("var", preload.OFFLINE_VARS)
def test_offline_setting_attempts_nothing(caches, monkeypatch, var):
    with HubStandIn() as standin:
        monkeypatch.setenv("HF_ENDPOINT", standin.url)
        monkeypatch.setenv(var, "1")
        status = preload.start(["seresnet50", "cbam_resnet50"])
        assert status.done.is_set() and status.items() == []  # no thread was started
        assert var in status.line() and "not fetched" in status.line()
        assert standin.requests == []
    assert default_variant_name() == "shapes_cbam_resnet"


def test_names_from_setting():
    assert preload.parse_names(None)[0] == "cbam_resnet50"
    assert sorted(preload.parse_names("all")) == sorted(v.name for v in zoo.IMAGENET_VARIANTS)
    assert preload.parse_names("none") == [] and preload.parse_names("0") == []
    assert preload.parse_names(" seresnet50, cbam_resnet50,seresnet50") == ["seresnet50", "cbam_resnet50"]
    with pytest.raises(ValueError, match=r"ATTNVIZ_PRELOAD='shapes_se_resnet'.*expected a comma-separated"):
        preload.parse_names("shapes_se_resnet")


# --------------------------------------------------------------------------- success


def test_preload_fetches_into_cache_and_switches_default(caches, monkeypatch, se_file):
    with HubStandIn() as standin:
        standin.add_hf(SE.weights.hf_repo, SE.weights.hf_filename, se_file)
        monkeypatch.setenv("HF_ENDPOINT", standin.url)
        seen = []
        real_update = preload.PreloadStatus.update
        monkeypatch.setattr(preload.PreloadStatus, "update",
                            lambda self, n, **c: (seen.append(c.get("state")), real_update(self, n, **c)))
        status = _run(["seresnet50"])
    item = status.get("seresnet50")
    assert item.state == "ready", item.message
    assert "downloading" in seen and item.done == item.total == se_file.stat().st_size
    assert status.default_ready.is_set() and default_variant_name() == "seresnet50"
    path = W.resolve_file(SE.weights, download=False)
    assert sha256_of(path) == sha256_of(se_file)
    assert not any(".incomplete" in f for f in _hub_files(caches))
    loaded = load_model("seresnet50", device="cpu")  # the file is timm's exact layout
    with torch.no_grad():
        assert loaded.model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def _cbam_release(tmp: Path) -> tuple[Path, str]:
    """pytorchcv's cbam_resnet50 at random init, zipped as pytorchcv publishes it; (zip, SHA-1 of .pth)."""
    from pytorchcv.model_provider import get_model

    torch.manual_seed(0)
    pth = tmp / "cbam_resnet50-0505-00000000.pth"
    torch.save(get_model("cbam_resnet50", pretrained=False).state_dict(), pth)
    out = tmp / f"{pth.name}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:  # storing is faster; reading is the same
        zf.write(pth, arcname=pth.name)
    return out, digest(pth, "sha1")


def test_cbam_from_release_url_becomes_default(caches, monkeypatch, se_file):
    """The CBAM weights are a GitHub release zip: its URL and SHA-1 point at the stand-in's file."""
    with HubStandIn() as standin:
        zpath, sha1 = _cbam_release(caches)
        cbam = get_variant("cbam_resnet50")
        moved = dataclasses.replace(cbam, weights=dataclasses.replace(
            cbam.weights, url=standin.add_url(zpath.name, zpath), sha1=sha1))
        monkeypatch.setattr(zoo, "_registry", {**zoo.variants(), "cbam_resnet50": moved})
        standin.add_hf(SE.weights.hf_repo, SE.weights.hf_filename, se_file)
        monkeypatch.setenv("HF_ENDPOINT", standin.url)
        status = _run(["cbam_resnet50", "seresnet50"])
    assert [i.state for i in status.items()] == ["ready", "ready"], status.line()
    assert default_variant_name() == "cbam_resnet50"  # CBAM first, whatever else arrived
    cache = caches / "torch" / "hub" / "checkpoints"
    assert sorted(p.name for p in cache.iterdir()) == [zpath.name[:-4]]  # only the verified .pth


# --------------------------------------------------------------------------- failures


def _refused_url() -> str:
    with socket.socket() as s:  # a port nobody listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# A 500 on the metadata request would be retried by the client for ~25 s: the file's GET fails here.
@pytest.mark.parametrize("fault, expected", [(404, "404"), (("GET", 500), "500"), ("refused", "Connection refused")])
def test_failed_hub_download_reports_and_leaves_nothing(caches, monkeypatch, se_file, fault, expected):
    with HubStandIn() as standin:
        path = standin.add_hf(SE.weights.hf_repo, SE.weights.hf_filename, se_file)
        if fault == "refused":
            monkeypatch.setenv("HF_ENDPOINT", _refused_url())
        else:
            standin.faults[path] = fault
            monkeypatch.setenv("HF_ENDPOINT", standin.url)
        status = _run(["seresnet50"])
    item = status.get("seresnet50")
    assert item.state == "failed" and expected in item.message and "\n" not in item.message
    assert f"seresnet50 failed: {item.message}" in status.line()
    assert not status.default_ready.is_set() and default_variant_name() == "shapes_cbam_resnet"
    assert not W.is_available(SE.weights)
    assert not any("blobs/" in f for f in _hub_files(caches))  # no blob, no partial download


def test_corrupted_hub_file_is_rejected_and_not_cached(caches, monkeypatch, se_file):
    with HubStandIn() as standin:  # the hub announces another SHA-256 than the bytes it sends
        standin.add_hf(SE.weights.hf_repo, SE.weights.hf_filename, se_file, etag="ab" * 32)
        monkeypatch.setenv("HF_ENDPOINT", standin.url)
        status = _run(["seresnet50"])
    item = status.get("seresnet50")
    assert item.state == "failed" and "checksum mismatch" in item.message and "ab" * 32 in item.message
    assert not W.is_available(SE.weights)
    assert not any("blobs/" in f or "snapshots/" in f for f in _hub_files(caches))


def test_url_failures_leave_no_file(caches):
    with HubStandIn() as standin:
        pth = caches / "tiny.pth"
        torch.save({"w": torch.ones(3)}, pth)
        good = standin.add_url("tiny.pth", pth)
        standin.faults["/files/tiny.pth"] = 500
        cache = caches / "torch" / "hub" / "checkpoints"
        for url, msg in [(good, "HTTP 500"), (standin.url + "/files/missing.pth", "HTTP 404"),
                         (_refused_url() + "/tiny.pth", "no connection")]:
            src = tiny_source(url=url)
            with pytest.raises(W.WeightsUnavailableError, match=msg):
                W.resolve_file(src, progress=False)
            assert list(cache.iterdir()) == []
        wrong = dataclasses.replace(src, url=good, sha256="0" * 64)
        del standin.faults["/files/tiny.pth"]
        with pytest.raises(W.WeightsError, match="checksum mismatch"):
            W.resolve_file(wrong, progress=False)
        assert list(cache.iterdir()) == []


def test_interrupted_url_download_resumes_without_a_partial_cache_file(caches):
    with HubStandIn() as standin:
        big = caches / "big.pth"
        torch.save({"w": torch.randn(300_000)}, big)  # ~1.2 MB: more than one chunk
        src = dataclasses.replace(get_variant("resnet50").weights, url=standin.add_url(big.name, big),
                                  sha256=sha256_of(big))
        standin.faults["/files/big.pth"] = ("drop", 500_000)
        with pytest.raises(W.WeightsUnavailableError, match="IncompleteRead|connection closed"):
            W.resolve_file(src, progress=False)
        cache = caches / "torch" / "hub" / "checkpoints"
        assert [(p.name, p.stat().st_size) for p in cache.iterdir()] == [("big.pth.part", 500_000)]
        assert not W.is_available(src)
        path = W.resolve_file(src, progress=False)  # continues from byte 500000
        assert standin.requests[-1] == ("GET", "/files/big.pth", "bytes=500000-")
        assert sha256_of(path) == sha256_of(big) and [p.name for p in cache.iterdir()] == ["big.pth"]


def test_unresolvable_host_is_skipped_without_attempt(caches, monkeypatch):
    monkeypatch.setattr(hub, "_unresolvable_host", lambda url: "no connection (cannot resolve github.com)")
    monkeypatch.setattr(W, "resolve_file", lambda *a, **k: pytest.fail("nothing may be attempted"))
    status = _run(["cbam_resnet50"])
    assert status.get("cbam_resnet50").state == "skipped" and "cannot resolve" in status.line()


def test_readme_front_matter_preloads_every_hub_variant():
    """The Spaces config fetches, at build time, exactly the hub files the zoo downloads."""
    import yaml

    front = (Path(__file__).resolve().parents[1] / "README.md").read_text().split("---\n")[1]
    entries = yaml.safe_load(front)["preload_from_hub"]
    want = {f"{v.weights.hf_repo} {v.weights.hf_filename}" for v in zoo.IMAGENET_VARIANTS if v.weights.hf_repo}
    assert sorted(entries) == sorted(want) and len(want) >= 2
