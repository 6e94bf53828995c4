"""What is trained: the variants, their architectures, and the models they start from.

The built-in models are small ResNets built from scratch; mode B attaches attention blocks to
a pretrained torchvision ResNet, whose state dict fills everything but the blocks and ``fc``.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import synthetic
from ..models.resnet import AttentionResNet

#: CLI variant name → attention block kind (``None``: the plain ResNet).
VARIANTS: dict[str, str | None] = {"resnet": None, "se": "se", "eca": "eca", "cbam": "cbam", "bam": "bam"}

#: The built-in models' architecture (``AttentionResNet(**SYNTHETIC_ARCH, attn=..., ...)``): a
#: ResNet-10 with a stride-2 3×3 stem, no max-pool and stride 1 in the last stage, so 96 px inputs
#: give 48/24/12/12 px stages: Grad-CAM and the last spatial gates get 8 px cells for ~17 px
#: targets (a 6×6 last stage, 16 px cells, put Grad-CAM's maximum off the target in 5-18 % of images).
SYNTHETIC_ARCH: dict[str, Any] = {
    "depth": 10,
    "widths": [16, 32, 64, 128],
    "stem_width": 16,
    "stem_kernel_size": 3,
    "stem_stride": 2,
    "stem_pool": "none",
    "stage_strides": [1, 2, 2, 1],
}
#: Per-block kwargs for the narrow synthetic models (reduction 16 would leave 1 hidden unit).
SYNTHETIC_ATTN_KWARGS: dict[str, dict[str, Any]] = {
    "se": {"reduction": 4},
    "eca": {},
    "cbam": {"reduction": 4},
    "bam": {"reduction": 4},
}

TORCHVISION_ARCHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50}


def checkpoint_name(variant: str, prefix: str = "shapes", suffix: str = "resnet") -> str:
    """``shapes_resnet`` for the plain model, ``shapes_se_resnet`` etc. for the others."""
    return f"{prefix}_{suffix}" if variant == "resnet" else f"{prefix}_{variant}_{suffix}"


def synthetic_arch(variant: str, widths: Sequence[int] | None = None) -> dict[str, Any]:
    """``AttentionResNet`` kwargs of the built-in model ``variant``."""
    attn = VARIANTS[variant]
    arch = {
        "depth": SYNTHETIC_ARCH["depth"], "num_classes": len(synthetic.CLASSES), "attn": attn,
        "attn_kwargs": dict(SYNTHETIC_ATTN_KWARGS.get(attn or "", {})), "stage_attn_kwargs": None,
        **{k: v for k, v in SYNTHETIC_ARCH.items() if k != "depth"},
    }
    arch["widths"] = list(widths) if widths is not None else list(SYNTHETIC_ARCH["widths"])
    if widths is not None:
        arch["stem_width"] = int(widths[0])
    return arch


def torchvision_arch(arch: str, variant: str, num_classes: int) -> dict[str, Any]:
    """``AttentionResNet`` kwargs matching torchvision's ``arch`` with attention ``variant``."""
    return {
        "depth": TORCHVISION_ARCHS[arch], "num_classes": num_classes, "attn": VARIANTS[variant],
        "attn_kwargs": {}, "stage_attn_kwargs": None, "widths": [64, 128, 256, 512], "stem_width": 64,
        "stem_kernel_size": 7, "stem_stride": 2, "stem_pool": "max",
    }


def is_attention_key(key: str) -> bool:
    """Whether a state-dict key belongs to an attention block (absent from torchvision's ResNets)."""
    return ".attn." in key or key.startswith("bam")


def load_backbone(model: AttentionResNet, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Load a torchvision ResNet state dict into ``model`` except its ``fc`` (replaced for the new
    classes). Raises unless the only missing keys are attention-block keys and nothing is
    unexpected; returns the missing (attention) keys."""
    state = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches (e.g. a ResNet-50 file for a ResNet-18)
        raise ValueError(f"backbone weights do not match the ResNet: {e}") from None
    bad_missing = [k for k in missing if not (is_attention_key(k) or k.startswith("fc."))]
    if unexpected or bad_missing:
        raise ValueError(
            "backbone weights do not match the ResNet: "
            f"missing non-attention keys {bad_missing[:8]}, unexpected keys {list(unexpected)[:8]}"
        )
    return [k for k in missing if is_attention_key(k)]


def pretrained_state_dict(arch: str, weights_file: Path | None = None) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for ``arch`` (downloaded once to the torch hub cache, checked
    against the hash in their file name), or the state dict stored in ``weights_file``.

    Raises SystemExit with one line naming ``--backbone-weights`` when they cannot be had."""
    from ..models import weights as W
    from ..models.zoo import WeightsSource

    if weights_file is not None:
        try:
            return W.read_state_dict(weights_file)
        except W.WeightsError as e:
            raise SystemExit(f"error: --backbone-weights {weights_file}: {e}") from None
    import torchvision

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    source = WeightsSource(format="torchvision", description=f"torchvision {arch} ImageNet",
                           license="BSD-3-Clause", url=weights.url)
    try:
        return W.read_state_dict(W.resolve_file(source, progress=True))
    except W.WeightsError as e:
        reason = str(e).splitlines()[0].split("could not be fetched: ", 1)[-1].rstrip(".")
        raise SystemExit(
            f"error: torchvision's {arch} ImageNet weights (the backbone) are not on this machine and cannot be "
            f"downloaded: {reason}. Pass --backbone-weights FILE (a torchvision {arch} state dict, e.g. "
            f"{Path(weights.url).name} copied into {W.torch_cache_dir()}), or --backbone-weights none to train "
            "the whole ResNet from random init"
        ) from None


def _trainable(name: str) -> bool:
    """With a frozen backbone, only attention blocks and the new ``fc`` learn."""
    return is_attention_key(name) or name.startswith("fc.")


def build_synthetic_model(arch: dict[str, Any], seed: int, device: torch.device, channels_last: bool) -> nn.Module:
    """A fresh built-in model (call after ``torch.manual_seed(seed)``)."""
    np.random.seed(seed)
    model = AttentionResNet(**arch).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def build_on_backbone(arch: dict[str, Any], backbone: dict[str, torch.Tensor] | None, freeze: bool,
                      device: torch.device, name: str, backbone_name: str) -> nn.Module:
    """A ResNet with fresh attention blocks and ``fc`` on the pretrained ``backbone`` (call after
    ``torch.manual_seed``); ``freeze`` leaves only blocks and ``fc`` trainable. Without a
    ``backbone`` (``--backbone-weights none``) the whole ResNet starts at random init."""
    model = AttentionResNet(**arch)
    if backbone is None:
        print(f"[{name}] no backbone weights (--backbone-weights none): the whole {backbone_name} starts at "
              "random init", flush=True)
    else:
        attn_keys = load_backbone(model, backbone)
        print(f"[{name}] loaded {backbone_name} backbone; {len(attn_keys)} attention tensors and fc start fresh",
              flush=True)
    if freeze:
        for pname, p in model.named_parameters():
            p.requires_grad_(_trainable(pname))
    return model.to(device, memory_format=torch.channels_last)


def frozen_bn_eval(model: nn.Module) -> None:
    """Keep a frozen backbone's BatchNorm statistics: its BN layers stay in eval mode."""
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and not _trainable(mod_name + "."):
            mod.eval()
