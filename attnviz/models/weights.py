"""Reading, converting and fetching weights safely.

Only safetensors files or ``torch.load(weights_only=True)`` are read: a pickle that would run
code is refused. Converters map each source's key layout onto the model's state dict.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .zoo import WeightsSource


class WeightsError(RuntimeError):
    """A weights file is missing, unsafe, corrupt, or does not fit the architecture."""


class WeightsUnavailableError(WeightsError):
    """Weights are neither cached on this machine nor downloadable right now."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: safetensors, or a torch file loaded with weights_only.

    Nested ``state_dict``/``model`` dicts are unwrapped and a ``module.`` prefix stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise WeightsError(f"{path.name}: not a valid safetensors file ({e})") from e
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise WeightsError(
                f"{path.name}: refused or unreadable as a weights-only torch file ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); accepted: .safetensors or a torch state dict"
            ) from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path.name}: does not contain a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def convert_state_dict(state: dict[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    """Map a source layout (``WeightsSource.format``) onto the model's own keys."""
    if fmt in ("attnviz", "torchvision", "timm", "auto"):
        return state
    raise WeightsError(f"no converter for weights format {fmt!r}")


def load_into(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``load_state_dict(strict=True)`` with an error that names the keys that do not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
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
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def is_available(source: WeightsSource) -> bool:
    """True when the weights are on this machine now (built-in file or a cached download)."""
    if source.path is not None:
        return source.path.is_file()
    return False


def resolve_file(source: WeightsSource, *, download: bool = True, progress: bool = True) -> Path:
    """Local path of the weights file, downloading it into the cache when needed."""
    if source.path is not None:
        if not source.path.is_file():
            raise WeightsUnavailableError(f"built-in checkpoint {source.path} is missing")
        return source.path
    raise WeightsUnavailableError(f"{source.description}: downloading is not implemented yet")
