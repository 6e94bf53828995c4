"""Sanity check of the maps: cascading model-parameter randomization (Adebayo et al., 2018).

A copy of the model is randomized from the head down, one module at a time (``fc``, then the
residual blocks and BAM modules of the last stage to the first, then the stem); after each
step every map is computed again on the same images and compared with the trained model's:
Spearman rank correlation and SSIM (maps scaled to [0, 1]) for Grad-CAM and the spatial gates,
Spearman for the channel gates. A map that explains the model should change once the weights
it depends on are random; one that still resembles the original after the whole network is
randomized reflects the input or the architecture, not what was learned, and is flagged.

"Randomized" is PyTorch's construction-time init, re-drawn: every submodule with
``reset_parameters`` (convolutions and linear layers random, BatchNorm back to identity with
fresh running statistics). The caller's model is never changed: the steps run on a deep copy.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .similarity import minmax, spearman, ssim

#: A map whose mean Spearman correlation with the original stays above this after the whole
#: model is randomized is flagged as surviving randomization.
SURVIVES = 0.5


@dataclass
class SanityReport:
    """``spearman[source][i]`` / ``ssim[source][i]``: mean over images after ``steps[i]`` (and
    every step before it) was randomized; sources are "Grad-CAM", "<block> spatial" and
    "<block> channel" (no SSIM for channel gates)."""

    variant: str
    n: int
    steps: list[str]
    spearman: dict[str, list[float]] = field(default_factory=dict)
    ssim: dict[str, list[float]] = field(default_factory=dict)

    @property
    def survivors(self) -> list[str]:
        """Sources still correlated (> :data:`SURVIVES`) with the original after the last step."""
        return [s for s, v in self.spearman.items() if v and v[-1] > SURVIVES]


def randomization_steps(model: nn.Module) -> list[str]:
    """Module names with parameters from the head to the stem: ``fc``, ``layer4.1``, ``layer4.0``,
    ``bam3``, ``layer3.1``... and the stem modules last."""
    names: list[str] = []
    for name, child in reversed(list(model.named_children())):
        parts = reversed(list(child.named_children())) if isinstance(child, nn.Sequential) else [("", child)]
        for sub, module in parts:
            if any(True for _ in module.parameters()):
                names.append(f"{name}.{sub}" if sub else name)
    return names


def randomize_(module: nn.Module, seed: int) -> None:
    """Re-draw ``module``'s parameters (and BN statistics) with PyTorch's default init."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in module.modules():
            if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                m.reset_parameters()


def _maps(loaded: Any, prepared: Sequence[Any], batch: int) -> dict[str, list[np.ndarray]]:
    from .inspection import inspect_batch

    out: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(prepared), batch):
        for r in inspect_batch(prepared[i:i + batch], loaded, topk=1):
            out.setdefault("Grad-CAM", []).append(r.gradcam)
            for b in r.blocks:
                if b.spatial is not None:
                    out.setdefault(f"{b.name} spatial", []).append(b.spatial)
                if b.channel is not None:
                    out.setdefault(f"{b.name} channel", []).append(b.channel)
    return out


def cascading_randomization(
    model: Any, images: Sequence[Any], *, seed: int = 0, batch: int = 50,
) -> SanityReport:
    """Randomize a copy of ``model`` from the head down and compare every map after each step
    with the trained model's (see the module docstring). Grad-CAM explains each model's own
    top-1 class, as a user would see it."""
    from .inspection import resolve_model
    from .preprocess import PreparedImage, prepare

    loaded = resolve_model(model)
    prepared = [im if isinstance(im, PreparedImage) else prepare(im, loaded.preprocess) for im in images]
    original = _maps(loaded, prepared, batch)
    work = dataclasses.replace(loaded, model=copy.deepcopy(loaded.model).eval())
    steps = randomization_steps(work.model)
    report = SanityReport(loaded.name, len(prepared), steps)
    for i, name in enumerate(steps):
        randomize_(work.model.get_submodule(name), seed + i)
        now = _maps(work, prepared, batch)
        for source, maps in original.items():
            pairs = list(zip(maps, now[source]))
            report.spearman.setdefault(source, []).append(float(np.mean([spearman(a, b) for a, b in pairs])))
            if not source.endswith(" channel"):
                report.ssim.setdefault(source, []).append(
                    float(np.mean([ssim(minmax(a), minmax(b)) for a, b in pairs])))
    return report


def markdown(reports: Sequence[SanityReport], command: str) -> str:
    """One table per variant: a row per map source, a column per cumulative randomization step."""
    lines = [
        "## Sanity check: cascading model-parameter randomization",
        "",
        f"Command: `{command}`. Each column randomizes one more module, from the head down (Adebayo",
        "et al., 2018); cells: mean Spearman ρ / SSIM between the trained and the randomized model's map",
        f"(channel gates: ρ only). ⚠ = still ρ > {SURVIVES} after the whole model is randomized.",
        "",
    ]
    for r in reports:
        lines += [f"**{r.variant}** (n={r.n})", "",
                  "| map | " + " | ".join(f"+{s}" for s in r.steps) + " |",
                  "|---|" + "---|" * len(r.steps)]
        for source, rho in r.spearman.items():
            sims = r.ssim.get(source)
            cells = [f"{p:.2f}" + ("" if sims is None else f" / {sims[j]:.2f}") for j, p in enumerate(rho)]
            flag = " ⚠" if source in r.survivors else ""
            lines.append(f"| {source}{flag} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"
