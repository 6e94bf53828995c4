"""Offline proofs for attnviz.models.weights.hub: checksums, cache placement and what happens
without a network (torch hub's downloader and the Hugging Face client replaced at their
network boundary; everything after it runs for real)."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from attnviz.models import weights as W
from attnviz.models.weights import fetch, hub

from .weights_support import (
    PYTORCHCV, REAL_DOWNLOAD, VARIANTS, FakeNet, digest, put_in_hf_cache, tiny_source, zip_of,
)


# --------------------------------------------------------------------------- checksums


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """An empty TORCH_HOME, a fake network and a tiny weights file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    net = FakeNet()
    monkeypatch.setattr(fetch, "download_url", net.download_url)
    pth = tmp_path / "tiny.pth"
    torch.save({"fc.weight": torch.randn(3, 2), "fc.bias": torch.randn(3)}, pth)
    return net, pth, tmp_path / "torch" / "hub" / "checkpoints"

def test_url_sha256_prefix_checked_and_bad_file_removed(tiny):
    net, pth, cache = tiny
    good = digest(pth, "sha256")[:8]
    bad = format(int(good, 16) ^ 0xFFFFFFFF, "08x")
    ok = tiny_source(url=f"https://download.pytorch.org/models/tiny-{good}.pth")
    net.files[ok.url] = pth
    assert W.resolve_file(ok, progress=False) == cache / f"tiny-{good}.pth"
    wrong = tiny_source(url=f"https://download.pytorch.org/models/tiny-{bad}.pth")
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
        W.resolve_file(tiny_source(url=url, sha256="0" * 64), progress=False)
    assert list(cache.iterdir()) == []
    assert W.resolve_file(tiny_source(url=url, sha256=digest(pth, "sha256")), progress=False).is_file()


def test_pytorchcv_sha1_of_unzipped_pth_checked(tiny):
    net, pth, cache = tiny
    z = zip_of(pth, pth.with_name("tiny-0000-deadbeef.pth.zip"), "tiny-0000-deadbeef.pth")
    url = f"{PYTORCHCV}/v0/tiny-0000-deadbeef.pth.zip"
    net.files[url] = z
    with pytest.raises(W.WeightsError, match="SHA1") as e:
        W.resolve_file(tiny_source(url=url, sha1="0" * 40, format="pytorchcv_cbam"), progress=False)
    assert "deleted" in str(e.value)
    assert list(cache.iterdir()) == []  # neither the .pth nor the .zip is kept
    src = tiny_source(url=url, sha1=digest(pth, "sha1"), format="pytorchcv_cbam")
    path = W.resolve_file(src, progress=False)
    assert path.name == "tiny-0000-deadbeef.pth" and digest(path, "sha1") == src.sha1
    assert [p.name for p in cache.iterdir()] == [path.name]


def test_corrupted_cached_file_is_rejected_and_removed(tiny):
    net, pth, cache = tiny
    z = zip_of(pth, pth.with_name("t.pth.zip"), "t.pth")
    src = tiny_source(url="https://example.org/t.pth.zip", sha1=digest(pth, "sha1"))
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
    src = tiny_source(url="https://example.org/t.pth.zip", sha1="0" * 40)
    net.files[src.url] = b"PK\x03\x04 truncated garbage"
    with pytest.raises(W.WeightsError, match="not a valid zip"):
        W.resolve_file(src, progress=False)
    assert list(cache.iterdir()) == []


def test_web_page_instead_of_file_is_rejected(tiny):
    net, pth, cache = tiny
    src = VARIANTS["eca_resnet50"].weights
    net.files[hub._fetch_url(src.url)] = b"<!DOCTYPE html><html><body>Google Drive - quota exceeded</body></html>"
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
    monkeypatch.setattr(fetch, "download_url", REAL_DOWNLOAD)
    with socket.socket() as s:  # a local port nobody listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = tiny_source(url=f"http://127.0.0.1:{port}/models/tiny-deadbeef.pth")
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
    monkeypatch.setattr(hub, "_unresolvable_host", lambda url: None)  # as if DNS worked
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
    monkeypatch.setattr(hub, "_unresolvable_host", lambda url: None)  # as if DNS worked
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
    src = tiny_source(format="eca_authors", manual="fetch it from the authors' page and pass --weights FILE")
    assert not W.is_available(src)
    with pytest.raises(W.WeightsUnavailableError, match="authors' page"):
        W.resolve_file(src)
