"""Reading weights files safely: safetensors, ``torch.load(weights_only=True)``, or a zip of one.

A pickle that would run code (or build arbitrary objects) is refused: only tensors, numbers
and strings load.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch

from .errors import WeightsError

_WEIGHT_SUFFIXES = (".pth", ".pt", ".pth.tar", ".tar", ".bin", ".ckpt", ".safetensors")
_UNWRAP_KEYS = ("state_dict", "model", "model_state_dict")
_PREFIXES = ("module.", "_orig_mod.")
_MAX_MEMBER_BYTES = 8 << 30  # refuse zip members claiming more than 8 GiB (zip bombs)


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < n < path.stat().st_size


_TORCH_BOILERPLATE = ("weights only load failed", "please file an issue", "check the documentation", "re-running")


def _torch_error_detail(e: BaseException) -> str:
    """The informative line of a torch.load error (torch wraps it in a long generic text)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln:  # the object the file wanted to build or call
            ln = ln[ln.index("WeightsUnpickler error:") + 23:] if "WeightsUnpickler error:" in ln else ln
            return ln.split(". Please use", 1)[0].strip()
    useful = [ln for ln in lines if not ln.lower().lstrip("(0123456789) ").startswith(_TORCH_BOILERPLATE)]
    detail = (useful or lines or [type(e).__name__])[0]
    return detail.removeprefix("WeightsUnpickler error:").strip() or type(e).__name__


def _torch_load(source: Path | io.BytesIO, name: str) -> object:
    accepted = (
        "Only safetensors files and torch files holding plain weights (tensors, numbers, strings: "
        "torch.load(weights_only=True)) are accepted"
    )
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:
        detail = _torch_error_detail(e)
        if "GLOBAL" in str(e):
            raise WeightsError(
                f"{name}: refused: loading it would import and call code named in the file ({detail}). "
                f"{accepted}; re-save the model's state_dict() with torch.save or safetensors if you "
                "trust the file."
            ) from None
        raise WeightsError(
            f"{name}: not a readable weights file ({type(e).__name__}: {detail}). {accepted}, or a .zip "
            "holding one such file."
        ) from None


def _load_safetensors(data: Path | bytes, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load, load_file

    try:
        return load(data) if isinstance(data, bytes) else load_file(str(data))
    except Exception as e:  # safetensors raises its own error types
        raise WeightsError(f"{name}: not a valid safetensors file ({e})") from None


def _single_weights_member(zf: zipfile.ZipFile, what: str) -> zipfile.ZipInfo:
    """The one weights file inside a zip (pytorchcv's ``.pth.zip``), size-checked before reading."""
    files = [i for i in zf.infolist() if not i.is_dir()]
    weights = [i for i in files if i.filename.lower().endswith(_WEIGHT_SUFFIXES)]
    if len(weights) != 1:
        raise WeightsError(
            f"{what}: a zip archive must hold exactly one weights file "
            f"({', '.join(_WEIGHT_SUFFIXES)}); found {[i.filename for i in files][:8]}"
        )
    if weights[0].file_size > _MAX_MEMBER_BYTES:
        raise WeightsError(f"{what}: {weights[0].filename} claims {weights[0].file_size} bytes; refused")
    return weights[0]


def _read_zip_archive(path: Path) -> object:
    """A ``.zip`` that holds one weights file (pytorchcv's ``.pth.zip``)."""
    try:
        with zipfile.ZipFile(path) as zf:
            info = _single_weights_member(zf, path.name)
            data = zf.read(info)
    except zipfile.BadZipFile as e:
        raise WeightsError(f"{path.name}: corrupt zip archive ({e})") from None
    inner = f"{path.name}:{info.filename}"
    if info.filename.lower().endswith(".safetensors"):
        return _load_safetensors(data, inner)
    return _torch_load(io.BytesIO(data), inner)


def _is_torch_zip(path: Path) -> bool:
    with zipfile.ZipFile(path) as zf:
        return any(n == "data.pkl" or n.endswith("/data.pkl") for n in zf.namelist())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: safetensors, or a torch file loaded with weights_only.

    Also reads a ``.zip`` holding one such file (pytorchcv's ``.pth.zip``). Nested
    ``state_dict``/``model`` dicts are unwrapped and a ``module.`` prefix stripped. A pickle
    that would run code (or build arbitrary objects) is refused with a :class:`WeightsError`.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if _is_safetensors(path):
        state: object = _load_safetensors(path, path.name)
    elif zipfile.is_zipfile(path) and not _is_torch_zip(path):
        state = _read_zip_archive(path)
    else:
        state = _torch_load(path, path.name)
    unwrapped = True
    while unwrapped and isinstance(state, dict):
        unwrapped = False
        for key in _UNWRAP_KEYS:
            if isinstance(state.get(key), dict):
                state, unwrapped = state[key], True
                break
    if not isinstance(state, dict) or not state:
        raise WeightsError(f"{path.name}: does not contain a state dict of tensors")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(
            f"{path.name}: does not contain a state dict of tensors (non-tensor entries: {bad[:8]})"
        )
    return _strip_prefixes(state)


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string→string ``__metadata__`` of a safetensors file's header (``{}`` when it has none,
    or when the file is not safetensors at all); only the header is read, not the tensors."""
    path = Path(path)
    if not path.is_file() or not _is_safetensors(path):
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types
        raise WeightsError(f"{path.name}: not a valid safetensors file ({e})") from None
