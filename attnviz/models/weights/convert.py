"""Key conversion: each source layout's key names mapped onto AttentionResNet's state dict.

Each layout is a table of (pattern, replacement) rules, applied first match wins; layouts whose
keys already fit (``attnviz``, ``torchvision``, ``timm``) pass through unchanged.
"""
from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import nn

from .errors import WeightsError
from .files import _strip_prefixes

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
