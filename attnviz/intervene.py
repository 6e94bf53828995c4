"""Interventions on attention gates: replace what a gate outputs, see what the model does then.

``with intervene(model, {"layer4.0": "identity"}): model(x)`` runs the model with that block's
attention switched off. It uses capture's mechanism: a forward hook on the gate module (the
``nn.Sigmoid`` whose output the block multiplies by) that *returns* a replaced output. Hooks act
only on forwards run by the thread that entered the context (another thread's request on a
shared model is never affected) and are removed on exit, also after an exception; the model's
parameters, train/eval mode and forward are left untouched.

What each replacement means, per gate (``g`` is what the gate outputs, as capture reports it):

========================  ==============================  =================================
spec                      SE / ECA / CBAM (``x * g``)     BAM (``x * (1 + g)``, joint gate)
========================  ==============================  =================================
``"identity"``            ``g = 1``: block output = x     ``g = 0``: block output = x
``"mean"``                g's mean over channels          g's mean over channels and pixels
                          (spatial gate: over pixels)
``0.5`` (a float)         ``g = 0.5`` everywhere          ``g = 0.5`` (multiplier 1.5)
``ChannelKnockout(...)``  ``g = 0`` on those channels     ``g = -1`` on those channels
tensor                    the gate values themselves      the gate values themselves
========================  ==============================  =================================

So "identity" always means *block removed* and a knockout always makes the chosen channels of
the attention block's output exactly 0 (in a residual block that is the residual branch of
those channels; BAM sits between stages, so there the whole feature is 0). For BAM the knockout
value -1 lies outside the sigmoid's range on purpose: it is the gate for which ``1 + g = 0``.
Knockouts act on the channel gate (CBAM: its channel gate; the spatial gate then sees the
knocked-out channels as zeros, as it would in the block). Top-k / bottom-k are chosen per
image from the gate this block computes in the same forward, before it is replaced: with one
block intervened that is exactly the unmodified forward's gate (ties: lower channel first, as
in :func:`attnviz.inspection.channel_stats`).

timm's Gather-Excite with an extent has a joint gate applied as ``x * g``: it is removed with
``g = 1`` and knocked out with ``g = 0``, as a channel gate. Gates that no hook can replace are
refused by name and left out by ``"*"``: selection weights over kernel branches (SelectiveKernel,
ResNeSt's SplitAttn: a softmax, not a gate), GlobalContext's softmax over positions and LightCBAM's
channel gate (plain functions applied to a submodule's output). GlobalContext's channel gate
(when it fuses by scaling) is replaced as any channel gate; its additive context path stays.

Keys are block names (``"layer4.0"``, ``"bam2"``), ``"block:channel"`` / ``"block:spatial"``
for one gate of a CBAM block, or ``"*"`` for every block (a named block overrides ``"*"``).
"""
from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import nn

from .capture import GateSite, find_gates


@dataclass(frozen=True, eq=False)
class ChannelKnockout:
    """Knock out channels of a block: exactly one of ``top`` (the k channels with the highest
    gate), ``bottom`` (the k lowest), ``indices`` (these channels) or ``mask`` (a boolean
    ``[B, C]`` or ``[C]`` tensor: per-image channel sets, for batched deletion curves)."""

    top: int | None = None
    bottom: int | None = None
    indices: Sequence[int] | None = None
    mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        given = [n for n in ("top", "bottom", "indices", "mask") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"ChannelKnockout takes exactly one of top=, bottom=, indices=, mask=; got {given or 'none'}")
        for name in ("top", "bottom"):
            k = getattr(self, name)
            if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
                raise ValueError(f"ChannelKnockout({name}=...) must be an integer >= 0, got {k!r}")
        if self.indices is not None:
            object.__setattr__(self, "indices", tuple(int(i) for i in self.indices))

    def describe(self) -> str:
        if self.top is not None:
            return f"knockout top {self.top}"
        if self.bottom is not None:
            return f"knockout bottom {self.bottom}"
        if self.indices is not None:
            return f"knockout channels {list(self.indices)}"
        return f"knockout mask {list(self.mask.shape)}"


Spec = Union[str, float, int, ChannelKnockout, torch.Tensor]
NAMED_SPECS = ("identity", "mean")
#: The gate value that removes the block ("identity") and the one that zeroes a channel of its
#: output (knockout), per gate role: joint gates are BAM's, applied as ``x * (1 + g)``.
_REMOVED = {"channel": 1.0, "spatial": 1.0, "joint": 0.0}
_KNOCKED_OUT = {"channel": 0.0, "joint": -1.0}
#: A joint gate applied as ``x * g`` (timm's Gather-Excite with an extent) rather than BAM's
#: ``x * (1 + g)`` is removed and knocked out like a channel gate.
_PLAIN_JOINT_REMOVED, _PLAIN_JOINT_KNOCKED_OUT = 1.0, 0.0


@dataclass(frozen=True, eq=False)
class GateEdit:
    """One planned replacement: which gate of which block gets which spec."""

    block: str
    kind: str
    role: str
    gate: nn.Module = field(repr=False)
    spec: Spec
    #: False only for a joint gate applied as ``x * g`` (Gather-Excite), not ``x * (1 + g)`` (BAM)
    joint_residual: bool = True

    def describe(self) -> str:
        return describe_spec(self.spec)

    @property
    def removed_value(self) -> float:
        """The gate value that removes the block ("identity")."""
        return _REMOVED[self.role] if self.joint_residual else _PLAIN_JOINT_REMOVED

    @property
    def knocked_out_value(self) -> float:
        """The gate value that zeroes a channel of the block's output (a knockout)."""
        return _KNOCKED_OUT[self.role] if self.joint_residual else _PLAIN_JOINT_KNOCKED_OUT


def describe_spec(spec: Spec) -> str:
    """A short human-readable name of ``spec`` (for JSON and the app)."""
    if isinstance(spec, ChannelKnockout):
        return spec.describe()
    if isinstance(spec, torch.Tensor):
        return f"tensor {list(spec.shape)}"
    return spec if isinstance(spec, str) else f"constant {float(spec):g}"


def _check_spec(key: str, spec: Any) -> None:
    if isinstance(spec, (ChannelKnockout, torch.Tensor)):
        return
    if isinstance(spec, str):
        if spec not in NAMED_SPECS:
            raise ValueError(f"intervention for {key!r}: unknown replacement {spec!r}; expected "
                             f"'identity', 'mean', a number, ChannelKnockout(...) or a tensor")
        return
    if isinstance(spec, bool) or not isinstance(spec, numbers.Real) or not math.isfinite(spec):
        raise ValueError(f"intervention for {key!r}: expected 'identity', 'mean', a finite number, "
                         f"ChannelKnockout(...) or a tensor, got {spec!r}")


def _why_fixed(site: GateSite, roles: list[str]) -> str:
    return "; ".join(
        f"its {r} are softmax weights over kernel branches, which no gate value replaces" if r == "branches"
        else f"its {r} gate is a plain function of a submodule's output, so no hook can replace it"
        for r in roles)


def _edits_for_site(key: str, site: GateSite, role: str, spec: Spec, *, every: bool) -> list[GateEdit]:
    """The edits of ``spec`` on one site; with ``every`` ("*") gates that cannot be replaced (or
    knocked out) are left out rather than refused."""
    roles = list(site.gates)
    if role:
        if role not in site.gates:
            raise KeyError(f"{site.name} ({site.kind}) has no {role} gate; its gates: {roles}")
        roles = [role]
    fixed = [r for r in roles if not site.replaceable(r)]
    if fixed and not every:
        usable = [r for r in site.gates if site.replaceable(r)]
        hint = f"; replaceable: {[f'{site.name}:{r}' for r in usable]}" if usable else ""
        raise ValueError(f"{key!r}: {site.name} ({site.kind}) cannot be intervened on: {_why_fixed(site, fixed)}{hint}")
    roles = [r for r in roles if r not in fixed]
    if isinstance(spec, ChannelKnockout):
        roles = [r for r in roles if r in _KNOCKED_OUT]
        if not roles and not every:
            raise ValueError(f"{key!r}: ChannelKnockout needs a channel gate; {site.name} ({site.kind}) "
                             f"has only {list(site.gates)} gates")
    elif isinstance(spec, torch.Tensor) and len(roles) > 1:
        raise ValueError(f"{key!r}: a tensor replaces one gate; {site.name} has {roles}: use "
                         f"'{site.name}:{roles[0]}' or '{site.name}:{roles[1]}'")
    return [GateEdit(site.name, site.kind, r, site.gates[r], spec,
                     joint_residual=r != "joint" or site.joint_residual) for r in roles]


def plan(model: nn.Module, interventions: Mapping[str, Spec]) -> list[GateEdit]:
    """The gate edits ``interventions`` asks for on ``model``; KeyError / ValueError naming what
    is valid when a block, gate or replacement does not exist."""
    sites = {s.name: s for s in find_gates(model)}
    if not sites:
        raise ValueError("the model has no attention blocks to intervene on")
    edits: dict[tuple[str, str], GateEdit] = {}
    # "*" first, so that a named block given beside it overrides it
    for key in sorted(interventions, key=lambda k: k.partition(":")[0] != "*"):
        spec = interventions[key]
        _check_spec(key, spec)
        block, _, role = key.partition(":")
        every = block == "*"
        if every:
            targets = list(sites.values())
        elif block in sites:
            targets = [sites[block]]
        else:
            raise KeyError(f"no attention block named {block!r}; blocks: {list(sites)} (or '*' for all)")
        matched = 0
        for site in targets:
            if every and role and role not in site.gates:
                continue
            for e in _edits_for_site(key, site, role, spec, every=every):
                edits[(e.block, e.role)] = e
                matched += 1
        if not matched:  # "*:spatial" on SE blocks, a knockout on spatial-only blocks, SK / ResNeSt
            gates = {s.name: [r for r in s.gates if s.replaceable(r)] for s in sites.values()}
            raise ValueError(f"{key!r} matches no gate that can be replaced; the blocks' replaceable gates: "
                             f"{gates}")
    order = {name: i for i, name in enumerate(sites)}
    return sorted(edits.values(), key=lambda e: (order[e.block], e.role))


def check_knockout(edit: GateEdit, channels: int) -> None:
    """ValueError naming the valid range when a knockout asks for channels the block lacks."""
    spec = edit.spec
    if not isinstance(spec, ChannelKnockout):
        return
    what = f"{describe_spec(spec)} on {edit.block}"
    k = spec.top if spec.top is not None else spec.bottom
    if k is not None and k > channels:
        raise ValueError(f"{what}: k must be in 0..{channels} ({edit.block} has {channels} channels)")
    if spec.indices is not None:
        bad = [i for i in spec.indices if not 0 <= i < channels]
        if bad:
            raise ValueError(f"{what}: channel indices {bad} out of range; valid 0..{channels - 1}")
    if spec.mask is not None and spec.mask.shape[-1] != channels:
        raise ValueError(f"{what}: mask has {spec.mask.shape[-1]} channels, {edit.block} has {channels}")


def _channel_values(edit: GateEdit, g: torch.Tensor) -> torch.Tensor:
    """[B, C]: one gate value per channel (BAM's joint gate: its mean over pixels, as capture)."""
    return g.mean((2, 3)) if edit.role == "joint" else g.reshape(g.shape[0], -1)


def _knockout_mask(edit: GateEdit, g: torch.Tensor) -> torch.Tensor:
    spec: ChannelKnockout = edit.spec  # type: ignore[assignment]
    values = _channel_values(edit, g)
    b, c = values.shape
    check_knockout(edit, c)
    if spec.mask is not None:
        mask = spec.mask.to(device=g.device, dtype=torch.bool)
        if mask.dim() == 1:
            return mask.expand(b, c)
        if mask.shape[0] != b:
            raise ValueError(f"knockout mask on {edit.block} has {mask.shape[0]} rows; the batch has {b}")
        return mask
    mask = torch.zeros(b, c, dtype=torch.bool, device=g.device)
    if spec.indices is not None:
        mask[:, list(spec.indices)] = True
        return mask
    k = spec.top if spec.top is not None else spec.bottom
    order = torch.argsort(values.detach(), dim=1, descending=spec.top is not None, stable=True)
    mask.scatter_(1, order[:, :k], True)
    return mask


def _as_gate_tensor(edit: GateEdit, t: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    t = t.to(device=g.device, dtype=g.dtype)
    per_image = math.prod(g.shape[1:])
    if t.numel() == per_image:
        return t.reshape(1, *g.shape[1:]).expand_as(g)
    if t.numel() == g.numel():
        return t.reshape(g.shape)
    if edit.role == "joint" and t.numel() == g.shape[1]:
        return t.reshape(1, -1, 1, 1).expand_as(g)
    raise ValueError(f"tensor for the {edit.role} gate of {edit.block}: {t.numel()} values do not fit its "
                     f"output {list(g.shape)}; give {per_image} values (one image) or {g.numel()} (the batch)")


def replaced_gate(edit: GateEdit, g: torch.Tensor) -> torch.Tensor:
    """What the gate outputs instead of ``g`` under ``edit`` (see the module's table)."""
    spec = edit.spec
    if isinstance(spec, ChannelKnockout):
        mask = _knockout_mask(edit, g)
        shape = (g.shape[0], -1, 1, 1) if edit.role == "joint" else g.shape
        return g.masked_fill(mask.reshape(shape), edit.knocked_out_value)
    if isinstance(spec, torch.Tensor):
        return _as_gate_tensor(edit, spec, g)
    if spec == "identity":
        return torch.full_like(g, edit.removed_value)
    if spec == "mean":
        # per image, over every value of the gate: channels of a channel gate, pixels of a spatial
        # one, both for BAM's joint gate
        return g.reshape(g.shape[0], -1).mean(1).reshape(-1, *[1] * (g.dim() - 1)).expand_as(g)
    return torch.full_like(g, float(spec))


@dataclass
class InterventionContext:
    """Yielded by :func:`intervene`: the planned edits and how often each gate was replaced."""

    edits: list[GateEdit]
    calls: dict[tuple[str, str], int] = field(default_factory=dict)


@contextmanager
def intervene(model: nn.Module, interventions: Mapping[str, Spec]) -> Iterator[InterventionContext]:
    """Run the forwards inside the block with the gates replaced as ``interventions`` says.

    Only forwards from the calling thread are changed; every hook is removed on exit.
    """
    edits = plan(model, interventions)
    ctx = InterventionContext(edits)
    owner = threading.get_ident()

    def make_hook(edit: GateEdit):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if threading.get_ident() != owner:
                return None  # another thread's forward on the shared model
            key = (edit.block, edit.role)
            ctx.calls[key] = ctx.calls.get(key, 0) + 1
            return replaced_gate(edit, output)

        return hook

    handles = []
    try:
        for edit in edits:
            handles.append(edit.gate.register_forward_hook(make_hook(edit)))
        yield ctx
    finally:
        for h in handles:
            h.remove()


def parse_spec(text: str) -> Spec:
    """A spec from text (CLI, app): ``identity``, ``mean``, a number, ``top=K``, ``bottom=K`` or
    ``channels=3,7,9``."""
    t = text.strip()
    if t in NAMED_SPECS:
        return t
    name, eq, value = t.partition("=")
    try:
        if eq and name in ("top", "bottom"):
            return ChannelKnockout(**{name: int(value)})
        if eq and name == "channels":
            return ChannelKnockout(indices=[int(v) for v in value.split(",") if v.strip()])
        return float(t)
    except ValueError:
        raise ValueError(f"cannot read intervention {text!r}; expected identity, mean, a number, "
                         f"top=K, bottom=K or channels=I,J,...") from None


def parse_interventions(items: Sequence[str]) -> dict[str, Spec]:
    """``["layer4.0=identity", "layer3.0=top=5"]`` -> ``{"layer4.0": "identity", ...}``."""
    out: dict[str, Spec] = {}
    for item in items:
        block, eq, spec = item.partition("=")
        if not eq or not block.strip():
            raise ValueError(f"cannot read {item!r}; expected BLOCK=SPEC, e.g. layer4.0=identity or '*=mean'")
        out[block.strip()] = parse_spec(spec)
    return out
