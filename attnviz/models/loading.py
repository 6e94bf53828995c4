"""Load a variant with its weights onto a device, once: later calls reuse the loaded model."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..preprocess import PreprocessConfig
from . import weights as W
from .zoo import IMAGENET_VARIANTS, Variant, get_variant, variants

#: ImageNet variants tried for the default, in order, when their weights are cached.
DEFAULT_IMAGENET_ORDER = ("cbam_resnet50", "se_resnet50", "bam_resnet50", "eca_resnet50", "resnet50")
DEFAULT_BUILTIN = "shapes_cbam_resnet"


@dataclass
class LoadedModel:
    """A model in eval mode on its device, with what is needed to run and label it."""

    variant: Variant
    model: nn.Module
    device: torch.device
    weights: str  # human-readable: which weights are in use
    #: True when the model runs untrained (``random_init=True``): UIs should say so next to its output.
    random_init: bool = False

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.variant.preprocess

    @property
    def classes(self) -> tuple[str, ...]:
        return self.variant.class_names

    @property
    def warning(self) -> str | None:
        """What a UI must show beside this model's output, or None."""
        if self.random_init:
            return (f"{self.name} runs at random init (no pretrained weights): its predictions and gates "
                    "are those of an untrained network")
        return None


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_variant_name() -> str:
    """An ImageNet variant whose weights are already on this machine, else the built-in one.

    Asked again for every new app session, so a background preload switches it as soon as
    weights arrive: ``DEFAULT_IMAGENET_ORDER`` first, then any other ImageNet variant.
    """
    reg = variants()
    for name in dict.fromkeys((*DEFAULT_IMAGENET_ORDER, *(v.name for v in IMAGENET_VARIANTS))):
        if name in reg and W.is_available(reg[name].weights):
            return name
    if DEFAULT_BUILTIN in reg:
        return DEFAULT_BUILTIN
    builtins = [v.name for v in reg.values() if v.builtin]
    if builtins:
        return builtins[0]
    raise W.WeightsUnavailableError("no built-in checkpoint found and no ImageNet weights cached")


#: Models loaded from a user's own file (uploads) kept at once; older ones are forgotten so a
#: long-running server does not grow with every upload. The zoo's own weights, and files loaded
#: with ``keep_loaded=True`` (a server's configured checkpoints), stay loaded.
MAX_USER_WEIGHTS_LOADED = 2

_cache: dict[tuple, LoadedModel] = {}
_kept: set[tuple] = set()  # keys of user files loaded with keep_loaded=True
_cache_lock = threading.Lock()
_load_locks: dict[tuple, threading.Lock] = {}


#: What ``LoadedModel.weights`` says of a model loaded with ``random_init=True``.
RANDOM_INIT_WEIGHTS = "random init (untrained, no pretrained weights)"


def _choose_variant(variant: str | Variant | None, wpath: Path | None) -> Variant:
    """The variant named, else the one a self-describing ``weights`` file describes, else the default."""
    from .descriptions import variant_from_weights_file

    if isinstance(variant, Variant):
        return variant
    if variant:
        return get_variant(variant)
    described = variant_from_weights_file(wpath) if wpath is not None else None
    return described or get_variant(default_variant_name())


def load_model(
    variant: str | Variant | None = None,
    *,
    weights: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    download: bool = True,
    progress: bool = True,
    keep_loaded: bool = False,
    random_init: bool = False,
) -> LoadedModel:
    """Build ``variant`` and load its weights.

    ``variant`` is a name of :func:`~attnviz.models.variants`, ``"timm:NAME"`` for any timm model,
    or a :class:`Variant`; left out, it is the one ``weights`` describes (a file written by
    ``python -m attnviz train`` carries its architecture, classes and preprocessing), else
    :func:`default_variant_name`. ``weights`` is a local checkpoint file (safetensors or a torch
    state dict, keys with or without ``module.``, nested ``state_dict`` or not, in any supported
    source layout); without it the variant's own weights are used: the built-in file, or the
    download (cached by torch hub / the Hugging Face Hub). ``random_init=True`` skips the weights
    (a seeded, untrained model; ``LoadedModel.random_init`` and ``.warning`` say so).

    Each (variant, weights, device) is loaded once per process and shared; the returned model
    must be treated as read-only. Of models loaded from ``weights`` files only the last
    :data:`MAX_USER_WEIGHTS_LOADED` are kept, unless ``keep_loaded`` (for a fixed set of files,
    e.g. a server's ``--weights``).
    """
    if random_init and weights is not None:
        raise ValueError("give either weights=FILE (--weights) or random_init=True (--random-init), not both")
    wpath = Path(weights).resolve() if weights is not None else None
    v = _choose_variant(variant, wpath)
    dev = pick_device(device)
    key = (v.name, str(wpath) if wpath else None, wpath.stat().st_mtime_ns if wpath and wpath.exists() else None,
           str(dev), random_init)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            return hit
        lock = _load_locks.setdefault(key, threading.Lock())
    with lock:  # one load per key even when several requests ask at once
        with _cache_lock:
            hit = _cache.get(key)
        if hit is not None:
            return hit
        loaded = _load_uncached(v, wpath, dev, download=download, progress=progress, random_init=random_init)
        with _cache_lock:
            _cache[key] = loaded
            if keep_loaded:
                _kept.add(key)
            user_keys = [k for k in _cache if k[1] is not None and k not in _kept]  # oldest first
            for old in user_keys[:-MAX_USER_WEIGHTS_LOADED]:
                del _cache[old]
                _load_locks.pop(old, None)
        return loaded


def _read_weights(v: Variant, wpath: Path | None, *, download: bool,
                  progress: bool) -> tuple[dict[str, torch.Tensor], str, str]:
    """The state dict to load (in the model's own keys), the file it came from, and the words for it."""
    if wpath is not None:
        own_file = v.weights.path is not None and v.weights.path.resolve() == wpath
        described = v.weights.description if own_file else f"local file {wpath.name}"
        state = W.read_state_dict(wpath)
        fmt = "timm" if v.family == "timm" else "auto"  # timm layouts are too many to detect
        return W.convert_state_dict(state, fmt), str(wpath), described
    try:
        path = W.resolve_file(v.weights, download=download, progress=progress)
    except W.WeightsUnavailableError as e:
        if v.origin != "timm":
            raise
        from .timm_by_name import unavailable_in_one_line

        raise unavailable_in_one_line(v, e) from None
    return W.convert_state_dict(W.read_state_dict(path), v.weights.format), str(path), v.weights.description


def _load_uncached(v: Variant, wpath: Path | None, dev: torch.device, *, download: bool, progress: bool,
                   random_init: bool = False) -> LoadedModel:
    if random_init:
        with torch.random.fork_rng(devices=[]):  # the same untrained model every time
            torch.manual_seed(0)
            model = v.build()
        described = RANDOM_INIT_WEIGHTS
    else:
        from .descriptions import check_head

        state, where, described = _read_weights(v, wpath, download=download, progress=progress)
        if v.family == "timm":
            from .timm_by_name import fit_head

            v = fit_head(v, state)
        check_head(v, state, where)
        model = v.build()
        W.load_into(model, state)
    model.eval().to(dev)
    return LoadedModel(variant=v, model=model, device=dev, weights=described, random_init=random_init)


def wrap_model(
    module: nn.Module,
    *,
    preprocess: PreprocessConfig | None = None,
    classes: tuple[str, ...] | list[str] | None = None,
    name: str | None = None,
    block: str = "custom",
) -> LoadedModel:
    """Wrap your own model (already loaded, any architecture) so it can be inspected.

    ``preprocess`` defaults to the model's own for a timm model (timm's data config: input
    size, crop, normalisation), else ImageNet's (resize 256, crop 224); ``classes`` to
    ImageNet's names when the model has 1000 outputs, else ``class 0``, ``class 1``...
    """
    from .timm_data import timm_preprocess
    from .zoo import WeightsSource

    params = next(module.parameters(), None)
    dev = params.device if params is not None else torch.device("cpu")
    v = Variant(
        name=name or getattr(module, "pretrained_cfg", {}).get("architecture") or type(module).__name__,
        block=block,  # type: ignore[arg-type]
        description="user model",
        arch={},
        preprocess=preprocess or timm_preprocess(module) or PreprocessConfig(),
        weights=WeightsSource(format="user", description="user model", license="user's"),
        classes=tuple(classes) if classes is not None else None,
    )
    return LoadedModel(variant=v, model=module, device=dev, weights="user model")


def clear_cache() -> None:
    """Forget loaded models (frees their memory once no one else holds them)."""
    with _cache_lock:
        _cache.clear()
        _load_locks.clear()
        _kept.clear()
