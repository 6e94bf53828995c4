"""Read-only capture of attention gates with forward hooks, for one forward pass.

``with capture(model) as cap: model(x)`` hooks the gate module of every attention block,
records what the gate outputs (exactly what its block multiplies by), and removes every
hook on exit, also after an exception. The model's forward, train/eval mode and grad mode
are left untouched. Hooks only record calls made from the thread that entered the context,
so several threads can inspect one shared model object at once.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from .blocks import AttentionBlock

# Attribute names under which residual blocks hold their attention module; the reported
# block name is the residual block's ("layer3.4", not "layer3.4.attn").
_ATTN_ATTRS = ("attn", "se", "eca", "cbam", "attention")
_STAGE_RE = re.compile(r"(?:^|\.)(?:layer|bam|stage|stages\.)(\d+)")


@dataclass(frozen=True)
class GateSite:
    """One attention block found in a model: its name, kind, stage and gate modules."""

    name: str
    kind: str
    stage: int | None
    gates: dict[str, nn.Module]  # role ("channel" / "spatial" / "joint") -> gate module


@dataclass
class BlockCapture:
    """What one block's gates produced during the captured forward pass (on CPU).

    ``channel`` is ``[B, C]`` (one weight per channel) and ``spatial`` ``[B, H, W]`` where the
    block has such a gate, else ``None``. For BAM's joint ``[B, C, H, W]`` gate, ``channel`` is
    its mean over pixels and ``spatial`` its mean over channels.
    """

    name: str
    kind: str
    stage: int | None
    channel: torch.Tensor | None = None
    spatial: torch.Tensor | None = None


@dataclass
class AttentionCapture:
    """Yielded by :func:`capture`; ``blocks`` is filled when the context exits."""

    sites: list[GateSite]
    blocks: dict[str, BlockCapture] = field(default_factory=dict)
    _pending: list[tuple[str, str, torch.Tensor]] = field(default_factory=list, repr=False)

    def __getitem__(self, name: str) -> BlockCapture:
        return self.blocks[name]

    def __iter__(self) -> Iterator[BlockCapture]:
        return iter(self.blocks.values())

    def __len__(self) -> int:
        return len(self.blocks)


def readout_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype results are read out in: float64 stays float64 (exactness checks run models in
    double); float32 and autocast's half/bf16 are read out as float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _stage_of(name: str) -> int | None:
    m = _STAGE_RE.search(name)
    return int(m.group(1)) if m else None


def _block_name(module_name: str) -> str:
    head, _, tail = module_name.rpartition(".")
    return head if head and tail in _ATTN_ATTRS else module_name


def _timm_gates(module: nn.Module) -> tuple[str, dict[str, nn.Module]] | None:
    """Gates of timm's own attention modules, so timm models can be inspected as they are."""
    cls = type(module).__name__
    if not type(module).__module__.startswith("timm."):
        return None
    if cls in ("SEModule", "EffectiveSEModule", "EcaModule", "CecaModule") and hasattr(module, "gate"):
        return ("eca" if "eca" in cls.lower() else "se"), {"channel": module.gate}
    if cls in ("CbamModule", "LightCbamModule"):
        return "cbam", {"channel": module.channel.gate, "spatial": module.spatial.gate}
    return None


def find_gates(model: nn.Module) -> list[GateSite]:
    """Every attention block of ``model`` in forward order of definition.

    Finds attnviz's :class:`~attnviz.blocks.AttentionBlock` subclasses and timm's SE / ECA /
    CBAM modules. For other architectures, pass ``gates`` to :func:`capture`.
    """
    sites = []
    for name, module in model.named_modules():
        if isinstance(module, AttentionBlock):
            kind, gates = module.kind, module.gate_modules()
        else:
            found = _timm_gates(module)
            if found is None:
                continue
            kind, gates = found
        block = _block_name(name)
        sites.append(GateSite(block, kind, _stage_of(block), gates))
    return sites


def _sites_from_names(model: nn.Module, gates: dict[str, str]) -> list[GateSite]:
    modules = dict(model.named_modules())
    sites = []
    for path, role in gates.items():
        if path not in modules:
            raise KeyError(f"no module named {path!r} in the model")
        if role not in ("channel", "spatial", "joint"):
            raise ValueError(f"gate role for {path!r} must be channel, spatial or joint, got {role!r}")
        block = _block_name(path.rpartition(".")[0] or path)
        sites.append(GateSite(block, "custom", _stage_of(block), {role: modules[path]}))
    return sites


@contextmanager
def capture(
    model: nn.Module,
    *,
    gates: dict[str, str] | None = None,
    only: Iterable[str] | None = None,
) -> Iterator[AttentionCapture]:
    """Hook the attention gates of ``model`` for the forward pass(es) run inside the block.

    Args:
        model: any ``nn.Module``; attnviz and timm attention blocks are found automatically.
        gates: for other models, ``{"module.path.to.sigmoid": "channel" | "spatial" | "joint"}``.
        only: restrict to these block names (e.g. ``["layer4.2"]``).

    Several forward passes inside one context are concatenated along the batch axis.
    Results are moved to the CPU in one transfer when the context exits.
    """
    sites = _sites_from_names(model, gates) if gates else find_gates(model)
    if only is not None:
        wanted = set(only)
        missing = wanted - {s.name for s in sites}
        if missing:
            raise KeyError(f"no attention block named {sorted(missing)}; blocks: {[s.name for s in sites]}")
        sites = [s for s in sites if s.name in wanted]
    cap = AttentionCapture(sites)
    owner = threading.get_ident()
    handles = []

    def make_hook(block: str, role: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if threading.get_ident() != owner:
                return  # another thread's forward on the shared model
            out = output.detach()
            b = out.shape[0]
            if role == "channel":
                # clone: the block's in-place ops could otherwise change what we keep.
                cap._pending.append((block, "channel", out.reshape(b, -1).clone()))
            elif role == "spatial":
                cap._pending.append((block, "spatial", out.reshape(b, *out.shape[-2:]).clone()))
            else:  # joint [B, C, H, W]: reductions allocate new tensors already
                cap._pending.append((block, "channel", out.mean((2, 3))))
                cap._pending.append((block, "spatial", out.mean(1)))

        return hook

    try:
        for site in sites:
            for role, gate in site.gates.items():
                handles.append(gate.register_forward_hook(make_hook(site.name, role)))
        yield cap
    finally:
        for h in handles:
            h.remove()
    _collect(cap)


def _collect(cap: AttentionCapture) -> None:
    pending, cap._pending = cap._pending, []
    if not pending:
        cap.blocks = {}
        return
    # One device→host transfer for everything instead of one per hook.
    tensors = [t for _, _, t in pending]
    wide = any(t.dtype == torch.float64 for t in tensors)
    dtype = readout_dtype(torch.float64 if wide else tensors[0].dtype)
    flat = torch.cat([t.reshape(-1).to(dtype) for t in tensors]).cpu()
    parts = flat.split([t.numel() for t in tensors])
    merged: dict[tuple[str, str], list[torch.Tensor]] = {}
    for (block, role, t), part in zip(pending, parts):
        merged.setdefault((block, role), []).append(part.view(t.shape))
    blocks: dict[str, BlockCapture] = {}
    for site in cap.sites:
        bc = BlockCapture(site.name, site.kind, site.stage)
        for role in ("channel", "spatial"):
            chunks = merged.get((site.name, role))
            if chunks:
                setattr(bc, role, chunks[0] if len(chunks) == 1 else torch.cat(chunks))
        if bc.channel is not None or bc.spatial is not None:
            blocks[site.name] = bc
    cap.blocks = blocks


def attention_module(model: nn.Module, block: str) -> nn.Module:
    """The attention module of ``block`` (``layer4.0`` -> ``layer4.0.attn``, ``bam2`` itself)."""
    sites = find_gates(model)
    if block not in {s.name for s in sites}:
        raise KeyError(f"no attention block named {block!r}; blocks: {[s.name for s in sites]}")
    gate_ids = {id(g) for s in sites if s.name == block for g in s.gates.values()}
    # the residual block "layer4.0" also holds the gates: the attention module is the deepest match
    found = [module for name, module in model.named_modules()
             if _block_name(name) == block and any(id(m) in gate_ids for m in module.modules())]
    return found[-1]


BlockIOCallback = Callable[[torch.Tensor, torch.Tensor], None]


@contextmanager
def block_io(model: nn.Module, block: str, on_io: BlockIOCallback) -> Iterator[nn.Module]:
    """Call ``on_io(entering, leaving)`` with the feature map entering ``block``'s attention
    module and the one leaving it (gates applied), for each forward run inside the context.

    The on-demand companion of :func:`capture` (channel drill-down, activation norms): same
    rules — calls from other threads are ignored, the hook is removed on exit, also after an
    exception. ``on_io`` may raise to stop a forward early once the block has run.
    """
    owner = threading.get_ident()

    def hook(_module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if threading.get_ident() == owner:
            on_io(inputs[0].detach(), output.detach())

    module = attention_module(model, block)
    handle = module.register_forward_hook(hook)
    try:
        yield module
    finally:
        handle.remove()
