"""What an intervention did to a prediction: ``inspect(..., interventions=...)``.

The image is inspected twice on the same prepared tensor, once as it is and once inside
:func:`attnviz.intervene`: the returned :class:`~attnviz.inspection.Inspection` is the intervened
one, and its ``intervention`` an :class:`InterventionEffect` comparing it with the plain one.
Grad-CAM after the intervention explains the class the plain model predicted (or
``target_class``), so the two maps answer the same question.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .intervene import ChannelKnockout, Spec, check_knockout, describe_spec, intervene, plan


@dataclass
class InterventionEffect:
    """The plain inspection (``before``) and how the intervened one differs from it.

    ``delta_top1_prob`` is the change of the probability of the plain model's top-1 class
    (negative: the intervention hurt it); ``kl`` is ``KL(p_before || p_after)`` in nats.
    """

    interventions: dict[str, str]
    before: Any  # Inspection (typed loosely: inspection.py imports this module lazily)
    top1_before: Any  # Prediction
    top1_after: Any
    prob_before: float
    prob_after: float
    delta_top1_prob: float
    kl: float
    top1_changed: bool
    gradcam_before: np.ndarray | None
    gradcam_after: np.ndarray | None

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable: what ``attnviz inspect --intervene`` writes."""
        return {
            "interventions": self.interventions,
            "top1_before": self.top1_before.__dict__,
            "top1_after": self.top1_after.__dict__,
            "prob_before": self.prob_before,
            "prob_after": self.prob_after,
            "delta_top1_prob": self.delta_top1_prob,
            "kl": self.kl,
            "top1_changed": self.top1_changed,
            "predictions_before": [p.__dict__ for p in self.before.predictions],
        }


def kl_divergence(logits_p: np.ndarray, logits_q: np.ndarray) -> float:
    """``KL(softmax(p) || softmax(q))`` in float64 from logits (stable: log-softmax)."""
    lp = _log_softmax(np.asarray(logits_p, np.float64))
    lq = _log_softmax(np.asarray(logits_q, np.float64))
    return float(max(0.0, (np.exp(lp) * (lp - lq)).sum()))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def effect(before: Any, after: Any, interventions: Mapping[str, Spec]) -> InterventionEffect:
    """Compare two inspections of the same image (plain, intervened)."""
    top, after_top = before.predictions[0], after.predictions[0]
    p_after = float(after.probs[top.index])
    return InterventionEffect(
        interventions={k: describe_spec(v) for k, v in interventions.items()},
        before=before,
        top1_before=top,
        top1_after=after_top,
        prob_before=top.probability,
        prob_after=p_after,
        delta_top1_prob=p_after - top.probability,
        kl=kl_divergence(before.logits, after.logits),
        top1_changed=after_top.index != top.index,
        gradcam_before=before.gradcam,
        gradcam_after=after.gradcam,
    )


def check_interventions(loaded: Any, interventions: Mapping[str, Spec]) -> None:
    """KeyError / ValueError naming the valid blocks and ranges when ``interventions`` cannot be
    applied to ``loaded``'s model; costs one forward of a blank image (to count channels)."""
    import torch

    from .capture import capture

    edits = plan(loaded.model, interventions)
    if not any(isinstance(e.spec, ChannelKnockout) for e in edits):
        return
    size = loaded.preprocess.input_size
    x = torch.zeros(1, int(getattr(loaded.model, "in_chans", 3)), size, size, device=loaded.device)
    with torch.inference_mode(), capture(loaded.model) as cap:
        loaded.model(x)
    for e in edits:
        if e.block in cap.blocks and cap[e.block].channel is not None:
            check_knockout(e, cap[e.block].channel.shape[1])


def inspect_intervened(
    images: Sequence[Any], loaded: Any, interventions: Mapping[str, Spec], *,
    target_class: int | None = None, **kwargs: Any,
) -> list[Any]:
    """:func:`attnviz.inspect_batch` with and without ``interventions``; the intervened
    inspections, each with ``.intervention`` set. Impossible requests (unknown block, k larger
    than the block's channels) raise before the second forward."""
    from .inspection import inspect_batch
    from .preprocess import PreparedImage, prepare

    edits = plan(loaded.model, interventions)
    prepared = [im if isinstance(im, PreparedImage) else prepare(im, loaded.preprocess) for im in images]
    before = inspect_batch(prepared, loaded, target_class=target_class, **kwargs)
    channels = {b.name: b.channel.size for b in before[0].blocks if b.channel is not None}
    for e in edits:
        if e.block in channels:
            check_knockout(e, channels[e.block])
    # Grad-CAM after explains the class the plain model chose, image by image
    targets = target_class if target_class is not None else [r.predictions[0].index for r in before]
    with intervene(loaded.model, interventions):
        after = inspect_batch(prepared, loaded, target_class=targets, **kwargs)
    for b, a in zip(before, after):
        a.intervention = effect(b, a, interventions)
    return after
