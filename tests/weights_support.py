"""Stand-ins shared by the weights tests: random-but-realistic models, a fake network, a fake
Hugging Face cache, tiny weights sources and zips."""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import urllib.error
import zipfile
from pathlib import Path

import torch
from torch import nn

from attnviz.models.zoo import IMAGENET_VARIANTS, WeightsSource

VARIANTS = {v.name: v for v in IMAGENET_VARIANTS}
from attnviz.models.weights import fetch

REAL_DOWNLOAD = fetch.download_url
PYTORCHCV = "https://github.com/osmr/imgclsmob/releases/download"


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
    """Stands in for ``fetch.download_url`` (the network boundary): serves prepared files by URL."""

    def __init__(self) -> None:
        self.files: dict[str, Path | bytes] = {}
        self.calls: list[str] = []

    def download_url(self, url: str, dst: Path, *, progress: bool = True, on_progress=None) -> None:
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


def tiny_source(**kw) -> WeightsSource:
    """A torchvision-layout source for the tiny test weights; ``kw`` sets url, checksums, format."""
    return WeightsSource(**{"format": "torchvision", "description": "tiny test weights", "license": "-", **kw})


def zip_of(pth: Path, out: Path, arcname: str) -> Path:
    """``pth`` deflated into the zip ``out`` as ``arcname`` (as pytorchcv publishes its weights)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(pth, arcname=arcname)
    return out
