"""Common base of attention blocks: every block names the modules that produce its gates."""
from __future__ import annotations

from typing import ClassVar

from torch import nn

#: Roles a gate can play. ``channel`` gates output ``[B, C, 1, 1]``, ``spatial`` gates
#: ``[B, 1, H, W]``; a ``joint`` gate (BAM) outputs ``[B, C, H, W]``.
GATE_ROLES = ("channel", "spatial", "joint")


class AttentionBlock(nn.Module):
    """An attention block whose sigmoid gates are submodules.

    Subclasses take ``channels`` as first constructor argument (timm's ``attn_layer``
    convention) and return from :meth:`gate_modules` the module whose *output* is exactly
    the weight the block multiplies its input by. Capture hooks attach there, so the model's
    forward never has to be rewritten.
    """

    kind: ClassVar[str] = ""

    def gate_modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError
