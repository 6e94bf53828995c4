"""Grad-CAM (Selvaraju et al., 2017) on a model's last stage: the common spatial baseline.

A forward hook on the target layer keeps its output ``A``; ``torch.autograd.grad`` of the
class score with respect to ``A`` gives the channel weights ``mean(dScore/dA)``; the map is
``ReLU(Σ_k w_k A_k)``. No parameter's ``.grad`` is touched.

When the forward runs without grad (the fast path), the hook hands the rest of the network
a leaf copy of ``A`` that requires grad and switches grad on for the head only, so only
pooling and the classifier are recorded: Grad-CAM then costs about one plain forward. With
grad already on, the output is left as it is and the full graph is used (read-only: an
outer training loop still gets its gradients).
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .capture import readout_dtype


def timm_last_stage(model: nn.Module) -> str | None:
    """The module timm's own ``feature_info`` names for a timm model's last feature level
    (``layer4``, ``blocks.6``, ``s4``, ``final_conv``...), or None for other models."""
    if not type(model).__module__.startswith("timm."):
        return None
    info = getattr(model, "feature_info", None)
    try:
        name = info[-1]["module"] if isinstance(info, list) else info.module_name()[-1]
        model.get_submodule(name)
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    return name


def default_target_layer(model: nn.Module) -> str:
    """Name of the last stage: attnviz's own ``stage_names``, timm's ``feature_info`` (any timm
    CNN), else a guess (torchvision ``layer4``, ``stages.N``, ``features.N``)."""
    names = getattr(model, "stage_names", None)
    if names:
        return names[-1]
    from_timm = timm_last_stage(model)
    if from_timm is not None:
        return from_timm
    children = dict(model.named_children())
    for candidate in ("layer4", "stages", "features"):
        if candidate in children:
            mod = children[candidate]
            if candidate == "layer4":
                return candidate
            last = list(mod.named_children())
            if last:
                return f"{candidate}.{last[-1][0]}"
    raise ValueError(
        "cannot guess Grad-CAM's target layer for this model; pass target_layer='module.path'"
    )


@dataclass
class GradCamResult:
    """``maps`` [B, h, w] in [0, 1] (each normalised by its max), ``raw`` before normalising,
    ``class_index`` [B] the class each map explains."""

    maps: torch.Tensor
    raw: torch.Tensor
    class_index: torch.Tensor


class GradCamRecorder:
    """Yielded by :func:`gradcam`; call :meth:`compute` with the logits of the forward pass."""

    def __init__(self) -> None:
        self.activation: torch.Tensor | None = None
        # False when the caller's own graph runs through the activation: keep it usable.
        self.owns_graph = True

    def compute(self, logits: torch.Tensor, class_index: torch.Tensor | int | None = None) -> GradCamResult:
        if self.activation is None:
            raise RuntimeError("Grad-CAM's target layer did not run in this forward pass")
        if not logits.requires_grad:
            raise RuntimeError(
                "logits carry no graph: run the forward inside gradcam() without inference_mode"
            )
        b = logits.shape[0]
        if class_index is None:
            idx = logits.detach().argmax(1)
        else:
            idx = torch.as_tensor(class_index, device=logits.device).reshape(-1).expand(b)
        score = logits.gather(1, idx.view(b, 1)).sum()
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(score, self.activation, retain_graph=not self.owns_graph)
        # float32 (float64 for a double model) whatever the forward ran in (autocast): the sum
        # runs over up to 2048 channels
        dtype = readout_dtype(self.activation.dtype)
        act = self.activation.detach().to(dtype)
        weights = grad.to(dtype).mean((2, 3), keepdim=True)
        raw = torch.relu((weights * act).sum(1))
        peak = raw.flatten(1).amax(1).clamp_min(1e-12).view(b, 1, 1)
        return GradCamResult(maps=raw / peak, raw=raw, class_index=idx)


@contextmanager
def gradcam(model: nn.Module, target_layer: str | nn.Module | None = None) -> Iterator[GradCamRecorder]:
    """Record the target layer's output during the forward pass run inside the block.

    ``target_layer`` defaults to the model's last stage. Use as::

        with gradcam(model) as gc, torch.no_grad():
            logits = model(x)
        cam = gc.compute(logits)

    The hook is removed and grad mode restored on exit, also after an exception.
    """
    if target_layer is None:
        target_layer = default_target_layer(model)
    layer = model.get_submodule(target_layer) if isinstance(target_layer, str) else target_layer
    recorder = GradCamRecorder()
    owner = threading.get_ident()
    entry_grad = torch.is_grad_enabled()
    forced: list[bool] = []

    def on_layer(_m: nn.Module, _i: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if threading.get_ident() != owner:
            return None
        if torch.is_inference_mode_enabled():
            raise RuntimeError("Grad-CAM needs autograd: use torch.no_grad(), not inference_mode")
        if torch.is_grad_enabled():
            recorder.activation, recorder.owns_graph = output, False
            return None
        leaf = output.detach().requires_grad_(True)
        recorder.activation, recorder.owns_graph = leaf, True
        forced.append(True)
        torch.set_grad_enabled(True)  # record the head only; restored when the model returns
        return leaf

    def on_model_end(_m: nn.Module, _i: tuple, _o: torch.Tensor) -> None:
        if threading.get_ident() == owner and forced:
            forced.clear()
            torch.set_grad_enabled(False)

    handles = [layer.register_forward_hook(on_layer), model.register_forward_hook(on_model_end)]
    try:
        yield recorder
    finally:
        for h in handles:
            h.remove()
        if forced:  # the forward raised after the head switched grad on
            torch.set_grad_enabled(entry_grad)
