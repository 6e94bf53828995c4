"""Reading weights files safely: safetensors, ``torch.load(weights_only=True)``, or a zip of one.

The path goes through the file gate first (a regular file of at most :data:`MAX_WEIGHTS_BYTES`;
a FIFO or a device is refused unread). A pickle that would run code (or build arbitrary
objects) is refused: only tensors, numbers and strings load. A safetensors header is checked
before the file is mapped (its size, every tensor's dtype, shape and byte extent against the
file's real size), and a state dict holding NaN or Inf is refused naming the tensor.
"""
from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

import torch

from ...inputs.gate import FileRefused, check_file, one_line
from .errors import WeightsError

_WEIGHT_SUFFIXES = (".pth", ".pt", ".pth.tar", ".tar", ".bin", ".ckpt", ".safetensors")
_UNWRAP_KEYS = ("state_dict", "model", "model_state_dict")
_PREFIXES = ("module.", "_orig_mod.")
_MAX_MEMBER_BYTES = 8 << 30  # refuse zip members claiming more than 8 GiB (zip bombs)
MAX_WEIGHTS_BYTES = 16 << 30  # the largest checkpoint file read at all
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on its JSON header
ACCEPTED = ("safetensors files and torch files holding plain weights (tensors, numbers, strings: "
            "torch.load(weights_only=True)), or a .zip holding one such file")
#: safetensors dtype -> bits per element
_DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8,
               "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
               "I64": 64, "U64": 64, "F64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}


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


def _k(key: str) -> str:
    return repr(key[:60] + ("…" if len(key) > 60 else ""))


def _bad_header(name: str, problem: str) -> WeightsError:
    return WeightsError(f"{name}: not a valid safetensors file ({one_line(problem)}); accepted: {ACCEPTED}")


def _tensor_extent(key: str, entry: object, data_len: int, name: str) -> tuple[int, int]:
    """``(begin, end)`` of one tensor's bytes, after checking its dtype, shape and extent."""
    if not isinstance(entry, dict) or set(entry) - {"dtype", "shape", "data_offsets"}:
        raise _bad_header(name, f"the header entry of {_k(key)} is not a tensor description")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _DTYPE_BITS:
        raise _bad_header(name, f"tensor {_k(key)} has an unknown dtype {str(dtype)[:20]!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise _bad_header(name, f"tensor {_k(key)} has an invalid shape {str(shape)[:40]}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise _bad_header(name, f"tensor {_k(key)} has invalid data offsets {str(offsets)[:40]}")
    begin, end = offsets
    if end > data_len:
        raise _bad_header(name, f"the header claims tensor {_k(key)} at bytes {begin}..{end} of the data, "
                                f"but the file holds only {data_len} bytes of data")
    if math.prod(shape) * _DTYPE_BITS[dtype] != (end - begin) * 8:
        raise _bad_header(name, f"tensor {_k(key)}: shape {shape} of {dtype} does not fill its "
                                f"{end - begin} bytes")
    return begin, end


def check_safetensors_header(header: bytes, data_len: int, name: str) -> dict:
    """The parsed JSON header of a safetensors file whose data section is ``data_len`` bytes,
    after checking every tensor's dtype, shape and byte extent and that no two overlap;
    :class:`WeightsError` naming the file and the first problem otherwise."""
    try:
        meta = json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _bad_header(name, "its header is not JSON") from None
    if not isinstance(meta, dict):
        raise _bad_header(name, "its header is not a JSON object")
    extents = sorted((_tensor_extent(k, v, data_len, name), k) for k, v in meta.items() if k != "__metadata__")
    for ((_, end), key), ((begin, _), nxt) in zip(extents, extents[1:]):
        if begin < end:
            raise _bad_header(name, f"tensors {_k(key)} and {_k(nxt)} overlap")
    return meta


def _checked_safetensors_head(source: Path | bytes, name: str) -> dict:
    """Read and check the header of a safetensors file (or its bytes) without mapping it; the
    parsed header."""
    if isinstance(source, bytes):
        head, size = source[:8], len(source)
    else:
        size = source.stat().st_size
        with open(source, "rb") as f:
            head = f.read(8)
    n = int.from_bytes(head, "little") if len(head) == 8 else -1
    if n < 2 or n > MAX_HEADER_BYTES or 8 + n > size:
        raise _bad_header(name, f"its header claims {n} bytes; the file has {size} bytes and headers "
                                f"are at most {MAX_HEADER_BYTES >> 20} MB")
    if isinstance(source, bytes):
        header = source[8:8 + n]
    else:
        with open(source, "rb") as f:
            f.seek(8)
            header = f.read(n)
    return check_safetensors_header(header, size - 8 - n, name)


def _load_safetensors(data: Path | bytes, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load, load_file

    _checked_safetensors_head(data, name)
    try:
        return load(data) if isinstance(data, bytes) else load_file(str(data))
    except Exception as e:  # safetensors raises its own error types
        raise _bad_header(name, str(e)) from None


def _single_weights_member(zf: zipfile.ZipFile, what: str) -> zipfile.ZipInfo:
    """The one weights file inside a zip (pytorchcv's ``.pth.zip``), size-checked before reading."""
    files = [i for i in zf.infolist() if not i.is_dir()]
    weights = [i for i in files if i.filename.lower().endswith(_WEIGHT_SUFFIXES)]
    if len(weights) != 1:
        raise WeightsError(
            f"{what}: a zip archive must hold exactly one weights file "
            f"({', '.join(_WEIGHT_SUFFIXES)}); found {[i.filename[:80] for i in files][:8]}; accepted: {ACCEPTED}"
        )
    if weights[0].file_size > _MAX_MEMBER_BYTES:
        raise WeightsError(f"{what}: {weights[0].filename[:80]} claims {weights[0].file_size} bytes, more than "
                           f"{_MAX_MEMBER_BYTES >> 30} GiB; refused; accepted: {ACCEPTED}")
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
    try:
        check_file(path, accepted=ACCEPTED, max_bytes=MAX_WEIGHTS_BYTES)
    except FileRefused as e:
        raise WeightsError(f"weights file {path} does not exist" if e.problem == "no such file" else str(e)) from None
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
    _check_finite(state, path.name)
    return _strip_prefixes(state)


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string→string ``__metadata__`` of a safetensors file's header (``{}`` when it has none,
    or when the file is not safetensors at all); only the header is read, and checked as
    :func:`read_state_dict` checks it, not the tensors."""
    path = Path(path)
    if not path.is_file() or not _is_safetensors(path):
        return {}
    meta = _checked_safetensors_head(path, path.name).get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise _bad_header(path.name, "its __metadata__ is not a string-to-string map")
    return dict(meta)


def _check_finite(state: dict[str, torch.Tensor], name: str) -> None:
    """Refuse NaN/Inf anywhere: such weights would be drawn as garbage, never as an error."""
    for key, value in state.items():
        if (value.is_floating_point() or value.is_complex()) and value.numel():
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                bad = int(finite.numel() - finite.sum())
                raise WeightsError(f"{name}: tensor {_k(key)} holds {bad} non-finite value(s) (NaN or Inf) of "
                                   f"{value.numel()}; accepted: weights whose every value is finite")
