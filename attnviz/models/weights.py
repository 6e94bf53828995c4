"""Reading, converting and fetching weights safely.

Only safetensors files or ``torch.load(weights_only=True)`` are read: a pickle that would run
code is refused. Converters map each source's key layout onto the model's state dict:

========================  ===============================================================
``attnviz``               attnviz's own :class:`~attnviz.models.resnet.AttentionResNet` keys
``torchvision``           torchvision ResNets (same keys as attnviz's plain ResNet)
``timm``                  timm models, loaded into ``timm.create_model`` unchanged
``cadene_senet``          the SENet authors' Caffe model as ported by Cadene (timm ``legacy_seresnet``)
``eca_authors``           the ECA-Net authors' release (``layerX.Y.eca.conv.weight``)
``pytorchcv_cbam``        pytorchcv ``cbam_resnet*`` (the CBAM authors' weights)
``pytorchcv_bam``         pytorchcv ``bam_resnet*`` (the BAM authors' weights)
========================  ===============================================================

Downloads happen only when :func:`resolve_file` is called, never at import: URLs go to the
torch hub cache (``$TORCH_HOME/hub/checkpoints``), Hugging Face files to the hub cache
(``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE`` honoured). Checksums are verified; a file
that does not match is deleted from the cache.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import socket
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import torch
from torch import nn

from .zoo import WeightsSource


class WeightsError(RuntimeError):
    """A weights file is missing, unsafe, corrupt, or does not fit the architecture."""


class WeightsUnavailableError(WeightsError):
    """Weights are neither cached on this machine nor downloadable right now."""


#: Layouts :func:`convert_state_dict` understands (plus ``"auto"``).
FORMATS: dict[str, str] = {
    "attnviz": "attnviz's AttentionResNet (conv1, layerX.Y.attn.*, bamN.*, fc)",
    "torchvision": "torchvision ResNet (conv1, layerX.Y.convK, downsample, fc)",
    "timm": "timm model state dict (e.g. layerX.Y.se.*), loaded into timm unchanged",
    "cadene_senet": "SENet authors' Caffe model via Cadene/timm legacy_seresnet (layer0.*, se_module, last_linear)",
    "eca_authors": "ECA-Net authors' release (layerX.Y.eca.conv.weight, module. prefix)",
    "pytorchcv_cbam": "pytorchcv cbam_resnet (features.stageN.unitM.body/cbam, output)",
    "pytorchcv_bam": "pytorchcv bam_resnet (features.stageN.unitM.res_unit/bam, output)",
}

_WEIGHT_SUFFIXES = (".pth", ".pt", ".pth.tar", ".tar", ".bin", ".ckpt", ".safetensors")
_UNWRAP_KEYS = ("state_dict", "model", "model_state_dict")
_PREFIXES = ("module.", "_orig_mod.")
_MAX_MEMBER_BYTES = 8 << 30  # refuse zip members claiming more than 8 GiB (zip bombs)


# --------------------------------------------------------------------------- reading


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


# --------------------------------------------------------------------------- converters

_Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]


def _rule(pattern: str, build: Callable[[re.Match[str]], str] | str) -> _Rule:
    rx = re.compile(pattern)
    if isinstance(build, str):
        template = build
        return rx, lambda m: m.expand(template)
    return rx, build


def _unit(m: re.Match[str]) -> str:
    """``features.stageN.unitM`` -> ``layerN.(M-1)``."""
    return f"layer{int(m['stage'])}.{int(m['unit']) - 1}"


_UNIT = r"^features\.stage(?P<stage>\d+)\.unit(?P<unit>\d+)\."
_PYTORCHCV_COMMON: list[_Rule] = [
    _rule(r"^features\.init_block\.conv\.conv\.(?P<p>.+)$", r"conv1.\g<p>"),
    _rule(r"^features\.init_block\.conv\.bn\.(?P<p>.+)$", r"bn1.\g<p>"),
    _rule(r"^output\.(?P<p>.+)$", r"fc.\g<p>"),
]

_RULES: dict[str, list[_Rule]] = {
    "cadene_senet": [
        _rule(r"^layer0\.conv1\.(?P<p>.+)$", r"conv1.\g<p>"),
        _rule(r"^layer0\.bn1\.(?P<p>.+)$", r"bn1.\g<p>"),
        _rule(r"^(?P<b>layer\d+\.\d+)\.se_module\.(?P<p>fc[12]\..+)$", r"\g<b>.attn.\g<p>"),
        _rule(r"^last_linear\.(?P<p>.+)$", r"fc.\g<p>"),
    ],
    "eca_authors": [
        _rule(r"^(?P<b>layer\d+\.\d+)\.eca\.(?P<p>.+)$", r"\g<b>.attn.\g<p>"),
    ],
    "pytorchcv_cbam": [
        *_PYTORCHCV_COMMON,
        _rule(_UNIT + r"body\.conv(?P<k>\d)\.conv\.(?P<p>.+)$", lambda m: f"{_unit(m)}.conv{m['k']}.{m['p']}"),
        _rule(_UNIT + r"body\.conv(?P<k>\d)\.bn\.(?P<p>.+)$", lambda m: f"{_unit(m)}.bn{m['k']}.{m['p']}"),
        _rule(_UNIT + r"identity_conv\.conv\.(?P<p>.+)$", lambda m: f"{_unit(m)}.downsample.0.{m['p']}"),
        _rule(_UNIT + r"identity_conv\.bn\.(?P<p>.+)$", lambda m: f"{_unit(m)}.downsample.1.{m['p']}"),
        _rule(_UNIT + r"cbam\.ch_gate\.mlp\.(?P<p>fc[12]\..+)$", lambda m: f"{_unit(m)}.attn.channel.mlp.{m['p']}"),
        _rule(_UNIT + r"cbam\.sp_gate\.conv\.conv\.(?P<p>.+)$", lambda m: f"{_unit(m)}.attn.spatial.conv.{m['p']}"),
        _rule(_UNIT + r"cbam\.sp_gate\.conv\.bn\.(?P<p>.+)$", lambda m: f"{_unit(m)}.attn.spatial.bn.{m['p']}"),
    ],
    "pytorchcv_bam": [
        *_PYTORCHCV_COMMON,
        _rule(_UNIT + r"res_unit\.body\.conv(?P<k>\d)\.conv\.(?P<p>.+)$", lambda m: f"{_unit(m)}.conv{m['k']}.{m['p']}"),
        _rule(_UNIT + r"res_unit\.body\.conv(?P<k>\d)\.bn\.(?P<p>.+)$", lambda m: f"{_unit(m)}.bn{m['k']}.{m['p']}"),
        _rule(_UNIT + r"res_unit\.identity_conv\.conv\.(?P<p>.+)$", lambda m: f"{_unit(m)}.downsample.0.{m['p']}"),
        _rule(_UNIT + r"res_unit\.identity_conv\.bn\.(?P<p>.+)$", lambda m: f"{_unit(m)}.downsample.1.{m['p']}"),
        # BAM sits at the entrance of stage N (N >= 2), i.e. after stage N-1: attnviz's bam{N-1}.
        _rule(_UNIT + r"bam\.ch_att\.init_fc\.fc\.(?P<p>.+)$",
              lambda m: f"bam{int(m['stage']) - 1}.channel_branch.fc1.{m['p']}"),
        _rule(_UNIT + r"bam\.ch_att\.init_fc\.bn\.(?P<p>.+)$",
              lambda m: f"bam{int(m['stage']) - 1}.channel_branch.bn1.{m['p']}"),
        _rule(_UNIT + r"bam\.ch_att\.final_fc\.(?P<p>.+)$",
              lambda m: f"bam{int(m['stage']) - 1}.channel_branch.fc2.{m['p']}"),
        _rule(_UNIT + r"bam\.sp_att\.init_conv\.conv\.(?P<p>.+)$",
              lambda m: f"bam{int(m['stage']) - 1}.spatial_branch.reduce.{m['p']}"),
        _rule(_UNIT + r"bam\.sp_att\.init_conv\.bn\.(?P<p>.+)$",
              lambda m: f"bam{int(m['stage']) - 1}.spatial_branch.reduce_bn.{m['p']}"),
        _rule(_UNIT + r"bam\.sp_att\.dil_convs\.conv(?P<i>\d+)\.conv\.(?P<p>.+)$",
              lambda m: f"bam{int(m['stage']) - 1}.spatial_branch.dil{int(m['i']) - 1}.{m['p']}"),
        _rule(_UNIT + r"bam\.sp_att\.dil_convs\.conv(?P<i>\d+)\.bn\.(?P<p>.+)$",
              lambda m: f"bam{int(m['stage']) - 1}.spatial_branch.dil{int(m['i']) - 1}_bn.{m['p']}"),
        _rule(_UNIT + r"bam\.sp_att\.final_conv\.(?P<p>.+)$",
              lambda m: f"bam{int(m['stage']) - 1}.spatial_branch.final.{m['p']}"),
    ],
}


def _apply_rules(state: dict[str, torch.Tensor], rules: list[_Rule], fmt: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        new = key
        for rx, build in rules:
            m = rx.match(key)
            if m:
                new = build(m)
                break
        # Keys no rule knows are kept as they are, so load_into names them if they do not fit.
        if new in out:
            raise WeightsError(f"{fmt}: keys {origin[new]!r} and {key!r} both map to {new!r}")
        out[new], origin[new] = value, key
    return out


def convert_state_dict(state: dict[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    """Map a source layout (``WeightsSource.format``, or ``"auto"``) onto the model's own keys."""
    state = _strip_prefixes(state)
    if fmt == "auto":
        fmt = detect_format(state)
    if fmt in ("attnviz", "torchvision", "timm"):
        return state
    if fmt in _RULES:
        return _apply_rules(state, _RULES[fmt], fmt)
    raise WeightsError(f"no converter for weights format {fmt!r}; supported: {', '.join(FORMATS)}, auto")


def _supported_layouts() -> str:
    return "; ".join(f"{k}: {v}" for k, v in FORMATS.items())


def detect_format(state: dict[str, torch.Tensor]) -> str:
    """The source layout of a state dict, from its key names (see :data:`FORMATS`)."""
    keys = list(_strip_prefixes(state))

    def has(pattern: str) -> bool:
        rx = re.compile(pattern)
        return any(rx.search(k) for k in keys)

    if has(r"^features\.init_block\."):
        if has(r"\.cbam\.(ch|sp)_gate\."):
            return "pytorchcv_cbam"
        if has(r"\.bam\.(ch|sp)_att\."):
            return "pytorchcv_bam"
    elif has(r"^layer0\.conv1\.") or has(r"^layer\d+\.\d+\.se_module\.") or has(r"^last_linear\."):
        return "cadene_senet"
    elif has(r"^layer\d+\.\d+\.eca\."):
        return "eca_authors"
    elif has(r"^layer\d+\.\d+\.attn\.") or has(r"^bam\d+\.(channel|spatial)_branch\."):
        return "attnviz"
    elif has(r"^layer\d+\.\d+\.se\.") or has(r"^conv1\.\d+\.weight$"):
        return "timm"
    elif has(r"^conv1\.weight$") and has(r"^layer1\.0\.conv1\.weight$"):
        return "torchvision"
    sample = ", ".join(keys[:6]) + (" …" if len(keys) > 6 else "")
    raise WeightsError(
        f"unrecognised checkpoint layout (keys: {sample}); supported layouts: {_supported_layouts()}"
    )


def load_into(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``load_state_dict(strict=True)`` with an error that names the keys that do not fit.

    BatchNorm's ``num_batches_tracked`` counters may be absent (files saved before PyTorch
    0.4.1, e.g. the Cadene SENet port): they do not affect inference and keep their value.
    """
    own = model.state_dict()
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" … (+{len(keys) - 8})" if len(keys) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if wrong:
            parts.append("shape mismatch: " + show([f"{k} {tuple(state[k].shape)}≠{tuple(own[k].shape)}" for k in wrong]))
        raise WeightsError("checkpoint does not fit this architecture; " + "; ".join(parts))
    full = {k: (state[k] if k in state else own[k]).to(own[k].dtype) for k in own}
    model.load_state_dict(full, strict=True)


# --------------------------------------------------------------------------- caches & downloads


def torch_cache_dir() -> Path:
    """Where URL downloads go: ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (``HF_HUB_CACHE``, ``HF_HOME``)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hf_offline() -> bool:
    return any(
        os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _fetch_url(url: str) -> str:
    """The URL as requested (without the ``#file-name`` fragment)."""
    return url.split("#", 1)[0]


def _download_name(url: str) -> str:
    """File name of a URL's download; a ``#name`` fragment names it when the path does not."""
    parts = urlsplit(url)
    name = parts.fragment or Path(parts.path).name
    if not name or "." not in name or not re.fullmatch(r"[\w.\-+]+", name):
        name = "weights-" + hashlib.sha1(_fetch_url(url).encode()).hexdigest()[:16] + ".bin"
    return name


def _is_zip_source(source: WeightsSource) -> bool:
    return source.url is not None and _download_name(source.url).lower().endswith(".zip")


def cached_path(source: WeightsSource) -> Path | None:
    """Where the file of a URL or Hugging Face source lives once downloaded (may not exist yet)."""
    if source.url:
        name = _download_name(source.url)
        return torch_cache_dir() / (name[:-4] if name.lower().endswith(".zip") else name)
    if source.hf_repo:
        found = _hf_cached(source)
        return Path(found) if found else None
    return None


def _hf_cached(source: WeightsSource) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(
            source.hf_repo, source.hf_filename or "model.safetensors", cache_dir=hf_cache_dir()
        )
    except Exception:  # a malformed cache counts as "not cached"
        return None
    return found if isinstance(found, str) and os.path.isfile(found) else None


def is_available(source: WeightsSource) -> bool:
    """True when the weights are on this machine now (built-in file or a cached download).

    Never touches the network.
    """
    if source.path is not None:
        return source.path.is_file()
    if source.url:
        path = cached_path(source)
        return path is not None and path.is_file()
    if source.hf_repo:
        return _hf_cached(source) is not None
    return False


def _variant_name(source: WeightsSource) -> str | None:
    from .zoo import IMAGENET_VARIANTS

    for v in IMAGENET_VARIANTS:
        if v.weights == source:
            return v.name
    return None


def _unavailable(
    source: WeightsSource, reason: str, *, tried: str, looked_in: Path, env: str, file: str | None = None
) -> WeightsUnavailableError:
    name = _variant_name(source)
    what = f"weights of {name!r} ({source.description})" if name else f"weights {source.description!r}"
    fetch = f"`python -m attnviz download {name}`" if name else "the download"
    lines = [
        f"The {what} are not on this machine and could not be fetched: {reason}.",
        f"  tried: {tried}",
        f"  looked in: {looked_in}{f' for {file}' if file else ''} (set {env} to use another cache)",
        f"  to get them: run {fetch} on a machine with internet access and copy that cache folder "
        "here, or download the file yourself and pass it with --weights FILE.",
    ]
    if source.manual:
        lines.append(f"  by hand: {source.manual}")
    return WeightsUnavailableError("\n".join(lines))


def _network_reason(e: BaseException) -> str:
    import urllib.error

    if isinstance(e, urllib.error.HTTPError):
        return f"the server answered HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return f"no connection ({e.reason})"
    text = str(e).strip().splitlines()[0].rstrip(".") if str(e).strip() else ""
    return f"{type(e).__name__}{': ' + text if text else ''}"


def _unresolvable_host(url: str) -> str | None:
    """Why ``url``'s host cannot be reached, when its name does not even resolve (no proxy set).

    Saves the Hugging Face client's retries with back-off (about half a minute of log noise)
    on a machine without network.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    host = urlsplit(url).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, 443)
    except OSError as e:
        return f"no connection (cannot resolve {host}: {e.strerror or e})"
    return None


_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_verified: dict[str, tuple[int, int]] = {}  # path -> (size, mtime_ns) already checked this process


def _lock_for(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(str(path), threading.Lock())


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _url_sha256_prefix(url: str) -> str | None:
    """The SHA-256 prefix in ``name-<hash>.ext`` for hosts that guarantee it (torch hub's check_hash)."""
    parts = urlsplit(url)
    if parts.hostname != "download.pytorch.org":
        return None
    m = re.search(r"-([a-f0-9]{6,})\.", Path(parts.path).name)
    return m.group(1) if m else None


def _checks(source: WeightsSource, *, file_is_download: bool) -> list[tuple[str, str, str]]:
    """(algorithm, expected hex, kind) checks for the cached file (or the raw download)."""
    zipped = _is_zip_source(source)
    checks = []
    if source.sha256 and (file_is_download or not zipped):
        checks.append(("sha256", source.sha256.lower(), "full"))
    elif source.url and (file_is_download or not zipped):
        prefix = _url_sha256_prefix(source.url)
        if prefix:
            checks.append(("sha256", prefix, "prefix"))
    if source.sha1 and not (file_is_download and zipped):
        checks.append(("sha1", source.sha1.lower(), "full"))
    return checks


def _verify(source: WeightsSource, path: Path, checks: list[tuple[str, str, str]], where: str) -> None:
    """Raise WeightsError (after deleting ``path``) when a checksum does not match."""
    for algo, expected, kind in checks:
        actual = _digest(path, algo)
        ok = actual.startswith(expected) if kind == "prefix" else actual == expected
        if not ok:
            path.unlink(missing_ok=True)
            _verified.pop(str(path), None)
            raise WeightsError(
                f"checksum mismatch for the {source.description} file {path.name}: {algo.upper()} is "
                f"{actual}, expected {expected}{'…' if kind == 'prefix' else ''}. The file was deleted "
                f"from {where}; run again to download a fresh copy (or pass a good file with --weights FILE)."
            )


def _looks_like_html(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml"))


def _resolve_url(source: WeightsSource, *, download: bool, progress: bool) -> Path:
    assert source.url is not None
    cache = torch_cache_dir()
    target = cached_path(source)
    assert target is not None
    url = _fetch_url(source.url)
    with _lock_for(target):
        if target.is_file():
            stamp = (target.stat().st_size, target.stat().st_mtime_ns)
            if _verified.get(str(target)) != stamp:
                _verify(source, target, _checks(source, file_is_download=False), str(cache))
                _verified[str(target)] = stamp
            return target
        if not download:
            raise _unavailable(source, "it is not in the cache and downloading is turned off",
                               tried=url, looked_in=cache, env="TORCH_HOME", file=target.name)
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _unavailable(source, f"cannot create the cache folder ({e})", tried=url,
                               looked_in=cache, env="TORCH_HOME", file=target.name) from None
        part = cache / f"{_download_name(source.url)}.{os.getpid()}.{threading.get_ident()}.part"
        try:
            try:
                torch.hub.download_url_to_file(url, str(part), progress=progress)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:  # urllib / http.client / ssl / socket errors: one clear message
                raise _unavailable(source, _network_reason(e), tried=url, looked_in=cache,
                                   env="TORCH_HOME", file=target.name) from None
            if not part.is_file() or part.stat().st_size == 0:
                raise _unavailable(source, "the download came back empty", tried=url, looked_in=cache,
                                   env="TORCH_HOME", file=target.name)
            if _looks_like_html(part):
                raise _unavailable(
                    source, "the server sent a web page instead of the weights file (a quota, sign-in "
                    "or confirmation page)", tried=url, looked_in=cache, env="TORCH_HOME", file=target.name,
                )
            _verify(source, part, _checks(source, file_is_download=True), str(cache))
            if _is_zip_source(source):
                _extract_single(source, part, target, cache)
            else:
                os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
        _verified[str(target)] = (target.stat().st_size, target.stat().st_mtime_ns)
        return target


def _extract_single(source: WeightsSource, archive: Path, target: Path, cache: Path) -> None:
    """Unpack the one weights file of a downloaded zip to ``target``, checking its SHA-1."""
    tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.unzip")
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                member = _single_weights_member(zf, f"{source.description}: downloaded {archive.name}")
                with zf.open(member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        except zipfile.BadZipFile as e:
            raise WeightsError(
                f"{source.description}: the download {archive.name} is not a valid zip archive ({e}); "
                f"it was deleted from {cache}, run again to retry"
            ) from None
        _verify(source, tmp, _checks(source, file_is_download=False), str(cache))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _quiet_tqdm() -> type:
    from tqdm.auto import tqdm

    class QuietTqdm(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return QuietTqdm


def _resolve_hf(source: WeightsSource, *, download: bool, progress: bool) -> Path:
    assert source.hf_repo is not None
    filename = source.hf_filename or "model.safetensors"
    cache = hf_cache_dir()
    tried = f"Hugging Face Hub repo {source.hf_repo}, file {filename}"
    # Released weights do not change: a cached file is used without asking the network.
    found = _hf_cached(source)
    if found is None:
        if not download:
            raise _unavailable(source, "it is not in the cache and downloading is turned off",
                               tried=tried, looked_in=cache, env="HF_HOME")
        if _hf_offline():
            raise _unavailable(source, "it is not in the cache and HF_HUB_OFFLINE is set",
                               tried=tried, looked_in=cache, env="HF_HOME")
        import huggingface_hub
        from huggingface_hub import constants

        unreachable = _unresolvable_host(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
        if unreachable:
            raise _unavailable(source, unreachable, tried=tried, looked_in=cache, env="HF_HOME")
        kwargs = {} if progress else {"tqdm_class": _quiet_tqdm()}
        try:
            found = huggingface_hub.hf_hub_download(source.hf_repo, filename, cache_dir=cache, **kwargs)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # offline, HTTP, repository/file not found: one clear message
            raise _unavailable(source, _network_reason(e), tried=tried, looked_in=cache,
                               env="HF_HOME") from None
    path = Path(found)
    if source.sha256:
        # The hub cache stores blobs under their own name; the snapshot entry is a link to one.
        blob = path.resolve()
        stamp = (blob.stat().st_size, blob.stat().st_mtime_ns)
        if _verified.get(str(blob)) != stamp:
            _verify(source, blob, [("sha256", source.sha256.lower(), "full")], str(cache))
            _verified[str(blob)] = stamp
    return path


def resolve_file(source: WeightsSource, *, download: bool = True, progress: bool = True) -> Path:
    """Local path of the weights file, downloading it into the cache when needed.

    Built-in files are returned as they are. URL sources are downloaded with torch hub's
    downloader into :func:`torch_cache_dir` (pytorchcv's ``.pth.zip`` is unpacked, keeping the
    ``.pth``); Hugging Face sources with ``hf_hub_download``. SHA-256 (full, or the prefix in a
    ``download.pytorch.org`` file name) and pytorchcv's SHA-1 are verified; a mismatching file
    is deleted and :class:`WeightsError` raised. When the file is not cached and cannot be
    downloaded, :class:`WeightsUnavailableError` says what was tried, where it looked and
    how to get the file.
    """
    if source.path is not None:
        if not source.path.is_file():
            raise WeightsUnavailableError(f"built-in checkpoint {source.path} is missing")
        return source.path
    if source.url:
        return _resolve_url(source, download=download, progress=progress)
    if source.hf_repo:
        return _resolve_hf(source, download=download, progress=progress)
    name = _variant_name(source)
    raise WeightsUnavailableError(
        f"The weights of {name or source.description!r} ({source.description}) cannot be downloaded "
        f"automatically; {source.manual or 'pass a checkpoint file with --weights FILE'}"
    )
