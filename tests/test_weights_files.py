"""Offline proofs for attnviz.models.weights.files: code-running pickles are refused, non-weights
files fail cleanly, and user checkpoints (nested, ``module.``-prefixed) load."""
from __future__ import annotations

import os
import pickle
import shlex
from pathlib import Path

import pytest
import torch
from torch import nn

from attnviz.models import weights as W
from attnviz.models.resnet import AttentionResNet

from .weights_support import randomise_, zip_of


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
        path = zip_of(path, tmp_path / "evil.pth.zip", "evil.pth")
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
