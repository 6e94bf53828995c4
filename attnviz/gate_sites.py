"""Where the gates of timm's attention modules are: one table, class name -> kind and gate taps.

Each entry says which submodule's forward output :func:`attnviz.capture` hooks for each role of
a timm attention module, and, where that output is not yet the gate itself, the function the
module applies to it (``read``). Roles:

* ``channel`` [B, C]: what the module multiplies each channel by;
* ``spatial`` [B, H, W]: a map over positions (a gate, or GlobalContext's softmax attention);
* ``joint`` [B, C, H, W]: a gate over channels and pixels (Gather-Excite with an extent);
* ``branches`` [B, K, C]: selection weights over K kernel branches per channel (SelectiveKernel,
  ResNeSt's SplitAttn): softmax over the branches, summing to 1 for every channel.

Every value is read exactly: a tap hooks the module whose output *is* the gate the attention
module multiplies by, or the module that produces the gate's input, and then ``read`` applies
the very function (and reshape) the attention module applies. No value is ever derived by
dividing an output by an input.
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

Reader = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Tap:
    """Hook ``module``'s forward output; ``read`` turns it into the gate (None: it is the gate)."""

    module: nn.Module
    read: Reader | None = None


@dataclass(frozen=True)
class Family:
    """One timm attention module class: the kind attnviz reports and how to tap its gates."""

    kind: str
    taps: Callable[[nn.Module], dict[str, Tap]]
    #: False: a joint gate multiplies as ``x * g`` (attnviz's BAM uses ``x * (1 + g)``)
    joint_residual: bool = True


def _gate_tap(module: nn.Module, producer: str | None) -> Tap | None:
    """The tap of ``module.gate``: the gate module itself, or, when ``gate`` is a plain function
    (``torch.sigmoid``, ``F.hardsigmoid``), the submodule computing its input, read through it."""
    gate = module.gate
    if isinstance(gate, nn.Module):
        return Tap(gate)
    source = getattr(module, producer, None) if producer else None
    if source is None or not callable(gate):
        warnings.warn(f"{type(module).__name__}: its gate {gate!r} is a plain function whose input no single "
                      f"submodule computes; that gate is not captured", stacklevel=2)
        return None
    return Tap(source, gate)


def _taps(**roles: Tap | None) -> dict[str, Tap]:
    return {role: tap for role, tap in roles.items() if tap is not None}


def _se(module: nn.Module) -> dict[str, Tap]:
    # timm.layers SEModule (``gate`` after ``fc2``) and the legacy SENet one (``sigmoid``)
    if hasattr(module, "gate"):
        return _taps(channel=_gate_tap(module, "fc2"))
    return _taps(channel=Tap(module.sigmoid) if isinstance(getattr(module, "sigmoid", None), nn.Module) else None)


def _eca(module: nn.Module) -> dict[str, Tap]:
    # with use_mlp ("ecam") the gate's input comes from conv2, else from conv
    producer = "conv2" if getattr(module, "conv2", None) is not None else "conv"
    return _taps(channel=_gate_tap(module, producer))


def _cbam(module: nn.Module) -> dict[str, Tap]:
    # ChannelAttn calls fc2 twice (avg and max paths): only a gate module gives its input exactly
    return _taps(channel=_gate_tap(module.channel, None), spatial=_gate_tap(module.spatial, "conv"))


def _light_cbam(module: nn.Module) -> dict[str, Tap]:
    # LightChannelAttn.forward applies F.sigmoid to fc2's output, whatever its ``gate`` is
    return _taps(channel=Tap(module.channel.fc2, torch.sigmoid), spatial=_gate_tap(module.spatial, "conv"))


def _gather_excite(module: nn.Module) -> dict[str, Tap]:
    if module.extent > 0:  # pooled over windows, upsampled to the input: a gate per pixel
        return _taps(joint=_gate_tap(module, None))
    # global extent: one value per channel (a function gate is read from the mlp: no upsampling)
    return _taps(channel=_gate_tap(module, "mlp" if module.gather is None else None))


def _positions_softmax(logits: torch.Tensor) -> torch.Tensor:
    """GlobalContext's attention: softmax over the H*W positions of conv_attn's [B, 1, H, W]."""
    b, _, h, w = logits.shape
    return F.softmax(logits.reshape(b, 1, h * w), dim=-1).reshape(b, h, w)


def _global_context(module: nn.Module) -> dict[str, Tap]:
    spatial = Tap(module.conv_attn, _positions_softmax) if module.conv_attn is not None else None
    # the gate scales the feature only when the module fuses by scaling (timm's "gc", not "gca")
    channel = _gate_tap(module, "mlp_scale") if module.mlp_scale is not None else None
    return _taps(spatial=spatial, channel=channel)


def _per_branch(t: torch.Tensor) -> torch.Tensor:
    """SelectiveKernelAttn's [B, K, C, 1, 1] softmax as [B, K, C]."""
    return t.reshape(t.shape[0], t.shape[1], -1)


def _selective_kernel(module: nn.Module) -> dict[str, Tap]:
    return {"branches": Tap(module.attn, _per_branch)}


def _split_attn(module: nn.Module) -> dict[str, Tap]:
    radix = module.radix
    if radix == 1:  # RadixSoftmax is then a sigmoid: an SE-style channel gate
        return {"channel": Tap(module.rsoftmax)}
    # RadixSoftmax returns [B, radix * C] in the order SplitAttn multiplies it: (radix, C)
    return {"branches": Tap(module.rsoftmax, lambda t: t.reshape(t.shape[0], radix, -1))}


#: timm class name -> family. Matched along the class's MRO, for classes defined in timm, so a
#: subclass of a timm module is found too. ``timm.models.senet.SEModule`` shares its name with
#: ``timm.layers.SEModule``; :func:`_se` tells them apart by their attributes.
FAMILIES: dict[str, Family] = {
    "SEModule": Family("se", _se),
    "SqueezeExcite": Family("se", lambda m: _taps(channel=_gate_tap(m, "conv_expand"))),
    "SqueezeExciteCl": Family("se", lambda m: _taps(channel=_gate_tap(m, "fc2"))),
    "EffectiveSEModule": Family("ese", lambda m: _taps(channel=_gate_tap(m, "fc"))),
    "EcaModule": Family("eca", _eca),
    "CecaModule": Family("ceca", lambda m: _taps(channel=_gate_tap(m, "conv"))),
    "CbamModule": Family("cbam", _cbam),
    "LightCbamModule": Family("lcbam", _light_cbam),
    "GatherExcite": Family("ge", _gather_excite, joint_residual=False),
    "GlobalContext": Family("gc", _global_context),
    "SelectiveKernel": Family("sk", _selective_kernel),
    "SplitAttn": Family("splat", _split_attn),
}


@functools.lru_cache(maxsize=4096)
def family_of_class(module_class: type) -> Family | None:
    """The family of a module class (one MRO walk per class: find_gates runs on every capture)."""
    for cls in module_class.__mro__:
        if cls.__name__ in FAMILIES and cls.__module__.startswith("timm."):
            return FAMILIES[cls.__name__]
    return None

