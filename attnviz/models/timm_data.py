"""A timm model's own preprocessing (input size, crop, normalisation) as a PreprocessConfig."""
from __future__ import annotations

import math
import warnings

from torch import nn

from ..preprocess import PreprocessConfig

_INTERPOLATIONS = ("bilinear", "bicubic")


def is_timm_model(module: nn.Module) -> bool:
    """A model built by timm (it carries timm's ``pretrained_cfg``)."""
    return type(module).__module__.startswith("timm.") and hasattr(module, "pretrained_cfg")


def timm_preprocess(module: nn.Module) -> PreprocessConfig | None:
    """What ``timm.data.resolve_data_config`` says for ``module`` (:func:`preprocess_from_data_config`);
    None for models not built by timm."""
    if not is_timm_model(module):
        return None
    from timm.data import resolve_data_config

    return preprocess_from_data_config(resolve_data_config({}, model=module))


def preprocess_from_data_config(cfg: dict) -> PreprocessConfig:
    """timm's data config (``resolve_data_config``) as attnviz's preprocessing: the shorter side
    resized to ``floor(size / crop_pct)`` then a centred ``size`` crop, as timm's eval transform
    does, so the model sees the crop it was trained and evaluated on and every map lies on that
    crop."""
    _, height, width = cfg["input_size"]
    if height != width:
        warnings.warn(f"timm's input size {height}x{width} is not square; attnviz crops squares: using {height}",
                      stacklevel=3)
    if cfg.get("crop_mode", "center") != "center":
        warnings.warn(f"timm's crop mode {cfg['crop_mode']!r} is not reproduced; attnviz uses a centre crop",
                      stacklevel=3)
    interpolation = cfg.get("interpolation", "bilinear")
    if interpolation not in _INTERPOLATIONS:
        interpolation = "bicubic" if interpolation == "random" else "bilinear"
    return PreprocessConfig(
        input_size=height,
        resize_size=max(height, math.floor(height / (cfg.get("crop_pct") or 0.875))),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=interpolation,
    )
