"""One call from an image and a model to everything attnviz shows: :func:`inspect`.

    import attnviz
    result = attnviz.inspect("cat.jpg", "se_resnet50")
    result.predictions[0], result.block("layer4.2").channel, result.gradcam
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .capture import capture, readout_dtype
from .gradcam import gradcam as gradcam_hook
from .models.loading import LoadedModel, load_model, wrap_model
from .models.zoo import Variant
from .preprocess import Geometry, PreparedImage, prepare

ImageSource = Any  # path, bytes, PIL image or numpy array: see attnviz.inputs.load_image
ModelSpec = str | Variant | LoadedModel | nn.Module | None
Amp = Literal["bf16", "fp16"]
AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    probability: float


@dataclass(frozen=True)
class ChannelStats:
    """Statistics of one block's channel gate.

    ``entropy`` is the Shannon entropy of the weights normalised to sum to 1, divided by
    ``log(C)``: 1.0 when all channels are weighted alike, towards 0 when few dominate.
    ``top_channels`` are ``(channel index, weight)`` pairs, highest first.
    """

    mean: float
    std: float
    min: float
    max: float
    entropy: float
    top_channels: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class SpatialStats:
    """Statistics of one spatial map; ``peak`` is the (row, col) of its maximum as fractions
    of the map's height and width (cell centres), i.e. where on the model-view image it lies."""

    mean: float
    std: float
    min: float
    max: float
    peak: tuple[float, float]


@dataclass(frozen=True)
class BranchStats:
    """Statistics of selection weights over K branches: ``mean`` weight of each branch over the
    channels, and ``share`` of each branch: the fraction of channels whose largest weight it has
    (ties: lower branch first)."""

    mean: tuple[float, ...]
    share: tuple[float, ...]


@dataclass
class BlockResult:
    """One attention block's gates for one image: ``channel`` [C], ``spatial`` [H, W] and, for
    selection attention (SelectiveKernel, SplitAttn), ``branches`` [K, C], softmax weights over K
    kernel branches per channel (such blocks have no ``channel``: see
    :class:`attnviz.capture.BlockCapture`). Statistics are computed on first access (many
    callers only need the arrays)."""

    name: str
    kind: str
    stage: int | None
    channel: np.ndarray | None
    spatial: np.ndarray | None
    branches: np.ndarray | None = None

    @cached_property
    def channel_stats(self) -> ChannelStats | None:
        return None if self.channel is None else channel_stats(self.channel)

    @cached_property
    def spatial_stats(self) -> SpatialStats | None:
        return None if self.spatial is None else spatial_stats(self.spatial)

    @cached_property
    def branch_stats(self) -> BranchStats | None:
        return None if self.branches is None else branch_stats(self.branches)


@dataclass
class Inspection:
    """Everything attnviz computed for one image on one model.

    Maps are in model-input coordinates: draw them on :meth:`view`, the exact image region
    the model saw (its crop box in the original image is ``geometry.crop_box``).
    """

    variant: str
    weights: str
    device: str
    predictions: list[Prediction]
    logits: np.ndarray
    probs: np.ndarray
    blocks: list[BlockResult]
    gradcam: np.ndarray | None
    gradcam_target: Prediction | None
    prepared: PreparedImage = field(repr=False)
    timings: dict[str, float] = field(default_factory=dict)
    amp: str | None = None  # "bf16" / "fp16": the forward ran under that autocast; None: float32
    #: set by ``inspect(..., interventions=...)``: an :class:`attnviz.effects.InterventionEffect`
    intervention: Any = None
    #: the model that produced this, kept for on-demand re-runs (:meth:`channel_map`)
    loaded: LoadedModel | None = field(default=None, repr=False, compare=False)

    @property
    def geometry(self) -> Geometry:
        return self.prepared.geometry

    def view(self, max_side: int = 448):
        """The image region the model saw, as a square PIL image."""
        return self.prepared.view(max_side)

    def block(self, name: str) -> BlockResult:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(f"no block {name!r}; blocks: {[b.name for b in self.blocks]}")

    @property
    def channel_blocks(self) -> list[BlockResult]:
        return [b for b in self.blocks if b.channel is not None]

    @property
    def spatial_blocks(self) -> list[BlockResult]:
        return [b for b in self.blocks if b.spatial is not None]

    @property
    def branch_blocks(self) -> list[BlockResult]:
        return [b for b in self.blocks if b.branches is not None]

    def channel_map(self, block: str, channel: int):
        """One channel's feature map in ``block``, before and after its gate (a
        :class:`attnviz.drilldown.ChannelMap`); re-runs the plain model (no interventions) up to
        that block on demand, once per block (the block's maps are then kept on this result)."""
        from .drilldown import channel_map

        return channel_map(self, block, channel)

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable summary (what the CLI writes as ``<stem>.json``)."""
        g = self.geometry
        return {
            "variant": self.variant,
            "weights": self.weights,
            "random_init": bool(self.loaded is not None and self.loaded.random_init),  # untrained: UIs warn
            "device": self.device,
            "amp": self.amp,
            "input_size": g.input_size,
            "image_size": list(g.original_size),
            "crop_box": [round(c, 3) for c in g.crop_box],
            "predictions": [p.__dict__ for p in self.predictions],
            "gradcam_target": None if self.gradcam_target is None else self.gradcam_target.__dict__,
            "blocks": [
                {
                    "name": b.name,
                    "kind": b.kind,
                    "stage": b.stage,
                    "channels": None if b.channel is None else int(b.channel.size),
                    "spatial_shape": None if b.spatial is None else list(b.spatial.shape),
                    "channel_stats": None if b.channel_stats is None else {
                        **{k: v for k, v in b.channel_stats.__dict__.items() if k != "top_channels"},
                        "top_channels": [{"channel": i, "weight": w} for i, w in b.channel_stats.top_channels],
                    },
                    "spatial_stats": None if b.spatial_stats is None else b.spatial_stats.__dict__,
                    "branches_shape": None if b.branches is None else list(b.branches.shape),
                    "branch_stats": None if b.branch_stats is None else {
                        k: list(v) for k, v in b.branch_stats.__dict__.items()},
                }
                for b in self.blocks
            ],
            "timings_ms": self.timings,
            **({"intervention": self.intervention.summary()} if self.intervention is not None else {}),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """Raw arrays by NPZ key: ``logits``, ``probs``, ``channel/<block>`` [C],
        ``spatial/<block>`` [H, W], ``branches/<block>`` [K, C], ``gradcam`` [h, w] (absent
        when not computed)."""
        out: dict[str, np.ndarray] = {"logits": self.logits, "probs": self.probs}
        for b in self.blocks:
            for role in ("channel", "spatial", "branches"):
                values = getattr(b, role)
                if values is not None:
                    out[f"{role}/{b.name}"] = values
        if self.gradcam is not None:
            out["gradcam"] = self.gradcam
        before = None if self.intervention is None else self.intervention.before
        if before is not None:  # the plain forward of an intervened inspection
            out["before/logits"], out["before/probs"] = before.logits, before.probs
            if before.gradcam is not None:
                out["before/gradcam"] = before.gradcam
        return out


def channel_stats(w: np.ndarray, top_k: int = 5) -> ChannelStats:
    w = np.asarray(w, dtype=np.float64)
    total = w.sum()
    if w.size > 1 and total > 0:
        p = w / total
        nz = p[p > 0]
        entropy = float(-(nz * np.log(nz)).sum() / np.log(w.size))
    else:
        entropy = 1.0 if w.size == 1 else 0.0
    top = np.argsort(-w, kind="stable")[:top_k]  # ties: lower channel index first
    return ChannelStats(
        mean=float(w.mean()), std=float(w.std()), min=float(w.min()), max=float(w.max()),
        entropy=entropy, top_channels=tuple((int(i), float(w[i])) for i in top),
    )


def branch_stats(w: np.ndarray) -> BranchStats:
    w = np.asarray(w, dtype=np.float64)
    k = w.shape[0]
    winners = np.bincount(np.argmax(w, axis=0), minlength=k)  # argmax: ties go to the lower branch
    return BranchStats(mean=tuple(float(v) for v in w.mean(1)),
                       share=tuple(float(v) for v in winners / max(w.shape[1], 1)))


def spatial_stats(m: np.ndarray) -> SpatialStats:
    h, w = m.shape
    r, c = np.unravel_index(int(np.argmax(m)), m.shape)
    return SpatialStats(
        mean=float(m.mean()), std=float(m.std()), min=float(m.min()), max=float(m.max()),
        peak=((r + 0.5) / h, (c + 0.5) / w),
    )


def resolve_model(model: ModelSpec, *, weights: Any = None, device: Any = None) -> LoadedModel:
    """A :class:`LoadedModel` from a variant name, Variant, LoadedModel or your own module."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, nn.Module):
        return wrap_model(model)
    return load_model(model, weights=weights, device=device)


def check_amp(amp: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device`` (None: float32); ValueError if not usable there."""
    if amp is None:
        return None
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(f"fp16 autocast needs a CUDA device, not {device.type} (there float16 convolutions "
                         "are tens of times slower than float32); use bf16 or float32")
    return AMP_DTYPES[amp]


def amp_autocast(amp: str | None, device: torch.device) -> contextlib.AbstractContextManager:
    """torch.autocast for ``amp`` on ``device`` (a no-op context for None; see :func:`check_amp`)."""
    dtype = check_amp(amp, device)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _input_dtype(net: nn.Module) -> torch.dtype:
    """The model's floating dtype (a model cast with ``.double()`` gets float64 inputs)."""
    for p in net.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def inspect_batch(
    images: Sequence[ImageSource | PreparedImage],
    model: ModelSpec = None,
    *,
    weights: Any = None,
    device: Any = None,
    topk: int = 5,
    gradcam: bool = True,
    target_class: int | Sequence[int] | None = None,
    amp: Amp | None = None,
    interventions: Mapping[str, Any] | None = None,
) -> list[Inspection]:
    """Inspect several images in one forward pass (see :func:`inspect`); ``target_class`` may
    also be one class per image."""
    loaded = resolve_model(model, weights=weights, device=device)
    if interventions:
        from .effects import inspect_intervened

        return inspect_intervened(images, loaded, interventions, topk=topk, gradcam=gradcam,
                                  target_class=target_class, amp=amp)
    net, dev = loaded.model, loaded.device
    autocast = amp_autocast(amp, dev)
    if net.training:
        import warnings

        warnings.warn("model is in training mode: BatchNorm uses batch statistics; call .eval() first",
                      stacklevel=2)
    t0 = time.perf_counter()
    prepared = [im if isinstance(im, PreparedImage) else prepare(im, loaded.preprocess) for im in images]
    x = torch.cat([p.tensor for p in prepared]).to(dev, _input_dtype(net), non_blocking=True)
    t1 = time.perf_counter()
    logits, cap, cam_maps, cam_idx, t_fwd = _batched_forward(net, x, autocast, gradcam, target_class)
    logits = logits.to(readout_dtype(logits.dtype))
    probs_t = torch.softmax(logits, dim=1)
    logits_np = logits.cpu().numpy()
    probs_np = probs_t.cpu().numpy()
    _sync(dev)
    t2 = time.perf_counter()

    results = _per_image_results(loaded, prepared, logits_np, probs_np, cap, topk=topk, amp=amp,
                                 cam_maps=cam_maps, cam_idx=cam_idx)
    _stamp_timings(results, (t0, t1, t_fwd, t2, time.perf_counter()), gradcam=gradcam)
    return results


def _batched_forward(net: nn.Module, x: torch.Tensor, autocast: contextlib.AbstractContextManager, gradcam: bool,
                     target_class: int | Sequence[int] | None
                     ) -> tuple[torch.Tensor, Any, np.ndarray | None, list[int] | None, float]:
    """One forward of the batch with every gate captured (and Grad-CAM's hook when ``gradcam``):
    the logits, the capture, the Grad-CAM maps and their classes (None without Grad-CAM), and
    when the forward itself ended (``time.perf_counter``; Grad-CAM's backward comes after)."""
    cam_maps = cam_idx = None
    with capture(net) as cap:
        if gradcam:
            with gradcam_hook(net) as gc, torch.no_grad(), autocast:
                logits = net(x)
            t_fwd = time.perf_counter()
            cam = gc.compute(logits, target_class)
            cam_maps = cam.maps.detach().cpu().numpy()
            cam_idx = cam.class_index.cpu().tolist()
            logits = logits.detach()
        else:
            with torch.inference_mode(), autocast:
                logits = net(x)
            t_fwd = time.perf_counter()
    return logits, cap, cam_maps, cam_idx, t_fwd


def _stamp_timings(results: list[Inspection], stamps: tuple[float, ...], *, gradcam: bool) -> None:
    """Per-image ms of each phase, from the clock at: start, input ready, forward done, Grad-CAM
    and read-out done, results built."""
    t0, t1, t_fwd, t2, t3 = stamps
    n = len(results)
    timings = {
        "preprocess_ms": 1e3 * (t1 - t0) / n,
        "forward_ms": 1e3 * (t_fwd - t1) / n,
        "gradcam_ms": 1e3 * (t2 - t_fwd) / n if gradcam else 0.0,
        "postprocess_ms": 1e3 * (t3 - t2) / n,
        "total_ms": 1e3 * (t3 - t0) / n,
    }
    for r in results:
        r.timings = {k: round(v, 3) for k, v in timings.items()}


def _per_image_results(loaded: LoadedModel, prepared: list[PreparedImage], logits: np.ndarray,
                       probs: np.ndarray, cap, *, topk: int, amp: str | None,
                       cam_maps: np.ndarray | None, cam_idx: list[int] | None) -> list[Inspection]:
    """One :class:`Inspection` per image of a batched forward (row ``i`` of every array)."""
    classes = loaded.classes
    n_out = logits.shape[1]
    if len(classes) != n_out:
        classes = tuple(f"class {i}" for i in range(n_out))
    k = min(topk, n_out)
    results = []
    for i, prep in enumerate(prepared):
        order = np.argsort(-probs[i], kind="stable")[:k]
        preds = [Prediction(int(j), classes[j], float(probs[i, j])) for j in order]
        blocks = [BlockResult(name=bc.name, kind=bc.kind, stage=bc.stage,
                              channel=None if bc.channel is None else bc.channel[i].numpy(),
                              spatial=None if bc.spatial is None else bc.spatial[i].numpy(),
                              branches=None if bc.branches is None else bc.branches[i].numpy())
                  for bc in cap]
        target = None
        if cam_idx is not None:
            j = cam_idx[i]
            target = Prediction(int(j), classes[j], float(probs[i, j]))
        results.append(Inspection(
            variant=loaded.name, weights=loaded.weights, device=str(loaded.device), predictions=preds,
            logits=logits[i], probs=probs[i], blocks=blocks,
            gradcam=None if cam_maps is None else cam_maps[i], gradcam_target=target, prepared=prep, amp=amp,
            loaded=loaded,
        ))
    return results


def inspect(
    image: ImageSource | PreparedImage,
    model: ModelSpec = None,
    *,
    weights: Any = None,
    device: Any = None,
    topk: int = 5,
    gradcam: bool = True,
    target_class: int | None = None,
    amp: Amp | None = None,
    interventions: Mapping[str, Any] | None = None,
) -> Inspection:
    """Run ``model`` on ``image`` once and return predictions, every gate and Grad-CAM.

    Args:
        image: a path, bytes, PIL image or numpy array (see :func:`attnviz.inputs.load_image`).
        model: a variant name (``attnviz.variants()``), a loaded model, or your own ``nn.Module``
            (its attention gates must be attnviz blocks or timm attention modules, see
            :func:`attnviz.capture`; a timm model takes its preprocessing from timm's data config).
            ``None`` picks the default: cached ImageNet weights, else the built-in model.
        weights: a local checkpoint file to use instead of the variant's own weights.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when present.
        topk: how many predictions to return.
        gradcam: also compute Grad-CAM on the last stage (about the cost of the head only).
        target_class: the class Grad-CAM explains; default the top-1 prediction.
        amp: ``"bf16"`` runs the forward under bfloat16 autocast (CPUs with native bf16, or
            CUDA), ``"fp16"`` under float16 autocast (CUDA only). Faster (a ResNet-50 inspection
            in 0.77-0.89x the float32 time on a 2-core CPU with AVX512-BF16) but approximate: on the built-in models bf16
            kept every top-1 while gates moved by up to 6e-2 and Grad-CAM by 1e-2 (see
            BENCHMARKS.md). The model itself is not changed. ``None`` (default): float32.
        interventions: ``{"layer4.0": "identity", ...}`` (see :func:`attnviz.intervene`): the
            result is the intervened inspection and ``result.intervention`` compares it with the
            plain one (prediction, delta of the top-1 probability, KL, Grad-CAM before/after).
            Costs one more inspection.
    """
    return inspect_batch([image], model, weights=weights, device=device, topk=topk,
                         gradcam=gradcam, target_class=target_class, amp=amp,
                         interventions=interventions)[0]
