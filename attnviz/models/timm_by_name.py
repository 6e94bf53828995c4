"""Any timm model by name: ``timm:NAME`` (``--variant timm:efficientnet_b0``, ``load_model("timm:…")``).

The variant is made from timm's own ``pretrained_cfg``: its weights are the Hugging Face Hub
file timm itself would load (``hf_hub_id``/``model.safetensors``), fetched and cached by the
zoo's code (:mod:`.weights.hub`: the same ``HF_HOME`` cache, ``HF_HUB_OFFLINE`` and error paths
as the zoo's timm variants); its preprocessing is timm's data config; its class names are
ImageNet's when the head is an ImageNet head, else ``class N``.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import replace
from typing import Any

import torch

from ..preprocess import PreprocessConfig
from .timm_data import preprocess_from_data_config
from .weights.errors import WeightsUnavailableError
from .zoo import Variant, WeightsSource

TIMM_PREFIX = "timm:"


def _pretrained_cfg(model_name: str) -> dict[str, Any]:
    """timm's pretrained config of ``model_name`` (``arch`` or ``arch.tag``); KeyError, one line, if unknown."""
    try:
        import timm
        from timm.models import get_pretrained_cfg
    except ImportError:
        raise KeyError(f"{TIMM_PREFIX}{model_name}: needs timm (pip install timm)") from None
    arch = model_name.split(".", 1)[0]
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"{TIMM_PREFIX}{model_name}: timm has no model {arch!r}{hint} "
                       "(timm.list_models() lists them)")
    try:
        cfg = get_pretrained_cfg(model_name)
    except RuntimeError:  # an unknown pretrained tag
        tags = ", ".join(timm.list_pretrained(f"{arch}.*")[:8]) or "none"
        raise KeyError(f"{TIMM_PREFIX}{model_name}: timm has no weights tagged so; tags of {arch}: {tags}") from None
    return cfg.to_dict() if cfg is not None else {}


def _preprocess(pretrained_cfg: dict[str, Any]) -> PreprocessConfig:
    from timm.data import resolve_data_config

    return preprocess_from_data_config(
        resolve_data_config({}, pretrained_cfg=pretrained_cfg or {"input_size": (3, 224, 224)}))


def timm_class_names(pretrained_cfg: dict[str, Any]) -> tuple[str, ...] | None:
    """Class names of the head timm's weights have: None for ImageNet-1k (the zoo's ImageNet names),
    timm's label descriptions for its other ImageNet subsets, else ``class 0``, ``class 1``…"""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    n = int(pretrained_cfg.get("num_classes") or 1000)
    names = pretrained_cfg.get("label_descriptions") or pretrained_cfg.get("label_names")
    subset = infer_imagenet_subset(pretrained_cfg) if pretrained_cfg else None
    if not names and subset == "imagenet-1k" and n == 1000:
        return None
    if not names and subset:
        try:
            names = ImageNetInfo(subset).label_descriptions()
        except (FileNotFoundError, ValueError, KeyError):
            names = None
    offset = int(pretrained_cfg.get("label_offset") or 0)
    if names and offset + len(names) == n:
        return tuple(["background"] * offset + [str(x) for x in names])
    return tuple(f"class {i}" for i in range(n))


def _weights_source(model_name: str, cfg: dict[str, Any]) -> WeightsSource:
    license = str(cfg.get("license") or "see the model card")
    if cfg.get("custom_load"):
        return WeightsSource(format="timm", description=f"timm {model_name} weights (custom loader)", license=license,
                             manual=f"timm loads {model_name}'s weights with its own loader; pass a state dict "
                                    "with --weights FILE")
    if cfg.get("hf_hub_id"):
        return WeightsSource(format="timm", description=f"timm {model_name} pretrained weights ({cfg['hf_hub_id']})",
                             license=license, hf_repo=cfg["hf_hub_id"],
                             hf_filename=cfg.get("hf_hub_filename") or "model.safetensors")
    if cfg.get("url"):
        return WeightsSource(format="timm", description=f"timm {model_name} pretrained weights", license=license,
                             url=cfg["url"])
    return WeightsSource(format="timm", description=f"timm {model_name} (no pretrained weights in timm)",
                         license=license, manual="timm publishes no weights for it; pass --weights FILE")


def timm_variant(model_name: str) -> Variant:
    """The variant ``timm:<model_name>``: timm's architecture, its pretrained weights' source, its
    preprocessing and class names. KeyError (one line) for a name timm does not know."""
    if not model_name or not re.fullmatch(r"[\w.\-]+", model_name):
        raise KeyError(f"{TIMM_PREFIX}{model_name}: expected timm:NAME with a timm model name, "
                       "e.g. timm:efficientnet_b0 or timm:efficientnet_b0.ra_in1k")
    cfg = _pretrained_cfg(model_name)
    source = _weights_source(model_name, cfg)
    return Variant(
        name=f"{TIMM_PREFIX}{model_name}", block="custom", family="timm", origin="timm",
        description=f"timm {model_name} (attention modules found when it is inspected)",
        arch={"model_name": model_name}, preprocess=_preprocess(cfg), weights=source,
        classes=timm_class_names(cfg), metadata={"pretrained_cfg": cfg},
    )


def unavailable_in_one_line(v: Variant, error: WeightsUnavailableError) -> WeightsUnavailableError:
    """The zoo's (several-line) 'weights unavailable' message as one line, saying what to do instead."""
    first = str(error).splitlines()[0]
    reason = first.split("could not be fetched: ", 1)[-1].rstrip(".")
    where = f"{v.weights.hf_repo}/{v.weights.hf_filename}" if v.weights.hf_repo else (v.weights.url or "")
    if not v.weights.hf_repo and not v.weights.url:
        reason = v.weights.manual or "timm publishes no weights for it"
    looked = ""
    if v.weights.hf_repo:
        from .weights.hub import hf_cache_dir

        looked = f" (looked in {hf_cache_dir()}, set HF_HOME to use another cache)"
    return WeightsUnavailableError(
        f"{v.name}: its pretrained weights {where + ' ' if where else ''}are not on this machine and cannot be "
        f"fetched now: {reason}{looked}. Give a local file with --weights FILE (weights=FILE), or run it "
        "untrained with --random-init (random_init=True)"
    )


def _classifier_key(v: Variant) -> str | None:
    name = (v.metadata.get("pretrained_cfg") or {}).get("classifier")
    if name is None:
        try:
            with torch.device("meta"):
                model = v.build()
        except Exception:  # building is only to find the head's name
            return None
        name = getattr(model, "pretrained_cfg", {}).get("classifier")
    if isinstance(name, (list, tuple)):
        name = name[0] if name else None
    return f"{name}.weight" if name else None


def fit_head(v: Variant, state: dict[str, torch.Tensor]) -> Variant:
    """A timm variant whose classifier has as many outputs as the weights about to be loaded
    (a fine-tuned model's head), named ``class 0``, ``class 1``… when that differs from timm's."""
    key = _classifier_key(v)
    if key is None or key not in state:
        return v
    n_out = int(state[key].shape[0])
    if n_out == len(v.class_names):
        return v
    return replace(v, arch={**v.arch, "num_classes": n_out}, classes=tuple(f"class {i}" for i in range(n_out)))
