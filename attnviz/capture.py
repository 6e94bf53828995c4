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
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from .blocks import AttentionBlock
from .gate_sites import Family, family_of_class

# Attribute names under which residual blocks hold their attention module; the reported
# block name is the residual block's ("layer3.4", not "layer3.4.attn"). timm's SelectiveKernel
# and SplitAttn replace a block's convolution: they keep their own name ("layer1.0.conv1").
_ATTN_ATTRS = ("attn", "se", "eca", "cbam", "attention", "attn_last", "se_module")
# attnviz/torchvision "layer1", BAM "bam1", timm "stages.0", EfficientNet "blocks.1", RegNet "s1"
_STAGE_RE = re.compile(r"(?:^|\.)(?:layer|bam|stage|stages\.|blocks\.|s)(\d+)(?:\.|$)")


@dataclass(frozen=True)
class GateSite:
    """One attention block found in a model: its name, kind, stage and gate modules.

    ``gates`` maps a role ("channel" / "spatial" / "joint" / "branches") to the module whose
    forward output capture hooks; where that output is not the gate itself, ``readers[role]``
    is the function the block applies to it (e.g. GlobalContext's softmax over positions).
    """

    name: str
    kind: str
    stage: int | None
    gates: dict[str, nn.Module]
    readers: dict[str, Callable[[torch.Tensor], torch.Tensor]] = field(default_factory=dict)
    #: True: a joint gate is applied as ``x * (1 + g)`` (BAM); False: as ``x * g`` (Gather-Excite)
    joint_residual: bool = True
    #: the attention module itself (its input is the feature before the gates), when known
    module: nn.Module | None = field(default=None, compare=False)

    def replaceable(self, role: str) -> bool:
        """Whether an intervention can replace this gate by replacing its module's output: not
        for gates read through a function, nor for selection weights over branches."""
        return role in self.gates and role not in self.readers and role != "branches"


@dataclass
class BlockCapture:
    """What one block's gates produced during the captured forward pass (on CPU).

    ``channel`` is ``[B, C]`` (one weight per channel) and ``spatial`` ``[B, H, W]`` where the
    block has such a gate, else ``None``. For a joint ``[B, C, H, W]`` gate (BAM, Gather-Excite
    with an extent), ``channel`` is its mean over pixels and ``spatial`` its mean over channels.
    ``branches`` is ``[B, K, C]`` for selection attention (SelectiveKernel, SplitAttn): the
    softmax weight of branch ``k`` for each channel, summing to 1 over the branches. Such blocks
    have no ``channel``: a share between branches does not amplify or suppress a channel, and
    reading branch 0's share as a channel gate would rank channels by an arbitrary branch.
    """

    name: str
    kind: str
    stage: int | None
    channel: torch.Tensor | None = None
    spatial: torch.Tensor | None = None
    branches: torch.Tensor | None = None


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


def _site_of(name: str, module: nn.Module, family: Family | None) -> GateSite | None:
    """The site of an attnviz attention block or of a timm attention module of ``family``
    (see gate_sites)."""
    if isinstance(module, AttentionBlock):
        block = _block_name(name)
        return GateSite(block, module.kind, _stage_of(block), module.gate_modules(), module=module)
    if family is None:
        return None
    taps = family.taps(module)
    if not taps:
        return None
    block = _block_name(name)
    return GateSite(block, family.kind, _stage_of(block), {role: t.module for role, t in taps.items()},
                    readers={role: t.read for role, t in taps.items() if t.read is not None},
                    joint_residual=family.joint_residual, module=module)


def find_gates(model: nn.Module) -> list[GateSite]:
    """Every attention block of ``model`` in forward order of definition.

    Finds attnviz's :class:`~attnviz.blocks.AttentionBlock` subclasses and timm's attention
    modules (SE in its variants, ECA, CBAM, Gather-Excite, GlobalContext, SelectiveKernel,
    SplitAttn: :data:`attnviz.gate_sites.FAMILIES`). For other architectures, pass ``gates``
    to :func:`capture`.
    """
    sites: list[GateSite] = []
    taken: set[str] = set()
    for name, module in model.named_modules():
        # family_of_class is cached per class: find_gates runs on every capture, over hundreds
        # of modules in a timm model
        family = family_of_class(type(module))
        if family is None and not isinstance(module, AttentionBlock):
            continue
        site = _site_of(name, module, family)
        if site is None:
            continue
        if site.name in taken:  # two attention modules in one residual block: keep both apart
            site = replace(site, name=name, stage=_stage_of(name))
        taken.add(site.name)
        sites.append(site)
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

    def make_hook(block: str, role: str, read: Callable[[torch.Tensor], torch.Tensor] | None):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if threading.get_ident() != owner:
                return  # another thread's forward on the shared model
            out = output.detach() if read is None else read(output.detach())
            b = out.shape[0]
            if role == "channel":
                # clone: the block's in-place ops could otherwise change what we keep.
                cap._pending.append((block, "channel", out.reshape(b, -1).clone()))
            elif role == "spatial":
                cap._pending.append((block, "spatial", out.reshape(b, *out.shape[-2:]).clone()))
            elif role == "branches":  # [B, K, C]
                cap._pending.append((block, "branches", out.reshape(b, out.shape[1], -1).clone()))
            else:  # joint [B, C, H, W]: reductions allocate new tensors already
                cap._pending.append((block, "channel", out.mean((2, 3))))
                cap._pending.append((block, "spatial", out.mean(1)))

        return hook

    try:
        for site in sites:
            for role, gate in site.gates.items():
                hook = make_hook(site.name, role, site.readers.get(role))
                handles.append(gate.register_forward_hook(hook))
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
        for role in ("channel", "spatial", "branches"):
            chunks = merged.get((site.name, role))
            if chunks:
                setattr(bc, role, chunks[0] if len(chunks) == 1 else torch.cat(chunks))
        if bc.channel is not None or bc.spatial is not None or bc.branches is not None:
            blocks[site.name] = bc
    cap.blocks = blocks


def attention_module(model: nn.Module, block: str) -> nn.Module:
    """The attention module of ``block`` (``layer4.0`` -> ``layer4.0.attn``, ``bam2`` itself)."""
    sites = {s.name: s for s in find_gates(model)}
    if block not in sites:
        raise KeyError(f"no attention block named {block!r}; blocks: {list(sites)}")
    site = sites[block]
    if "branches" in site.gates:  # SelectiveKernel / SplitAttn: a convolution over kernel branches
        raise ValueError(f"{block} ({site.kind}) selects between kernel branches: there is no one feature "
                         f"before its attention to compare channel by channel; see its branch weights")
    assert site.module is not None  # find_gates records the module of every site it finds
    return site.module


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
