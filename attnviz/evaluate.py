"""``python -m attnviz evaluate``: do the maps point at the object that decides the class?

On held-out synthetic images (a seed never used in training) it measures, per built-in
variant: accuracy; the **pointing game** (the fraction of images whose map maximum, after
bilinear upsampling to the image, falls on the target's mask) for every spatial map source
— each spatial gate (CBAM, BAM, 1×1 spatial attention), Grad-CAM — against a center and a
uniform-random baseline; and **deletion / insertion AUC** (Petsiuk et al., 2018): pixels are
removed from (or revealed on) a blurred copy in the order of the map, and the mean
probability of the predicted class over the steps is the AUC (deletion: lower is better;
insertion: higher is better).
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .inspection import inspect_batch
from .models import LoadedModel, load_model, variants
from .synthetic import generate

#: Everything from this line on in the ``--out`` file is written by hand and kept on rewrites.
NOTES_MARKER = "<!-- notes below are written by hand; `attnviz evaluate --out` keeps them -->"
TEST_SEED = 2000  # train uses 0 and validation 1000 (see the checkpoints' sidecars)
#: The pointing game's tolerance (Zhang et al., 2016): 15 px on 224-px inputs, scaled to the input.
TOLERANCE_AT_224 = 15.0


@dataclass
class SourceScores:
    pointing: float  # with the tolerance (Zhang et al.: 15 px at 224 px)
    pointing_exact: float  # the peak pixel itself on the mask
    deletion: float | None = None
    insertion: float | None = None


@dataclass
class VariantReport:
    variant: str
    accuracy: float
    n: int
    sources: dict[str, SourceScores] = field(default_factory=dict)
    tolerance: float = 0.0
    map_sizes: dict[str, str] = field(default_factory=dict)


def dilate(masks: torch.Tensor, radius: float) -> torch.Tensor:
    """Masks [N, H, W] grown by a disk of ``radius`` pixels (the pointing game's tolerance)."""
    r = int(np.floor(radius))
    if r <= 0:
        return masks
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius**2).float()[None, None]
    return F.conv2d(masks[:, None].float(), disk, padding=r)[:, 0] > 0


def _peak_hits(maps: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
    """maps [N, h, w] → upsample to the mask size → is the argmax pixel on the mask?"""
    n, hh, ww = masks.shape
    up = F.interpolate(maps[:, None].float(), size=(hh, ww), mode="bilinear", align_corners=False)[:, 0]
    idx = up.flatten(1).argmax(1)
    return masks.flatten(1)[torch.arange(n), idx].numpy()


def _blurred(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(x.shape[1], 1, 1, 1)
    pad = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    x = F.conv2d(pad, k, groups=x.shape[1])
    pad = F.pad(x, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(pad, k.transpose(2, 3), groups=x.shape[1])


@torch.inference_mode()
def deletion_insertion(
    loaded: LoadedModel, x: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor, steps: int = 16,
    batch: int = 64,
) -> tuple[float, float]:
    """Mean deletion and insertion AUC of ``maps`` [N, h, w] for inputs ``x`` [N, 3, H, W]."""
    n, _, hh, ww = x.shape
    base = _blurred(x, sigma=hh / 16)
    up = F.interpolate(maps[:, None].float(), size=(hh, ww), mode="bilinear", align_corners=False)
    # rank[i, p] = position of pixel p in the map's descending order
    order = up.flatten(1).argsort(1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(hh * ww).expand(n, -1).contiguous())
    rank = rank.view(n, 1, hh, ww)
    fracs = torch.linspace(0, 1, steps + 1)
    curves = {"deletion": torch.empty(n, steps + 1), "insertion": torch.empty(n, steps + 1)}
    net, dev = loaded.model, loaded.device
    for s, frac in enumerate(fracs):
        chosen = rank < int(round(float(frac) * hh * ww))
        for kind, img in (("deletion", torch.where(chosen, base, x)), ("insertion", torch.where(chosen, x, base))):
            probs = []
            for i in range(0, n, batch):
                logits = net(img[i:i + batch].to(dev))
                probs.append(torch.softmax(logits.float(), 1).gather(1, classes[i:i + batch, None].to(dev)).cpu())
            curves[kind][:, s] = torch.cat(probs)[:, 0]
    # trapezoid over the fraction axis: AUC in [0, 1]
    auc = {k: float(torch.trapezoid(v, fracs, dim=1).mean()) for k, v in curves.items()}
    return auc["deletion"], auc["insertion"]


def evaluate_variant(
    loaded: LoadedModel, n: int = 500, *, seed: int = TEST_SEED, n_auc: int = 200, steps: int = 16,
    batch: int = 50, tolerance: float | None = None,
) -> VariantReport:
    size = loaded.preprocess.input_size
    tolerance = TOLERANCE_AT_224 * size / 224 if tolerance is None else tolerance
    samples = [generate(i, seed=seed, size=size) for i in range(n)]
    masks = torch.from_numpy(np.stack([s.mask for s in samples]))
    labels = torch.tensor([s.label for s in samples])
    preds, cam, spatial = [], [], {}
    tensors = []
    for i in range(0, n, batch):
        results = inspect_batch([s.image for s in samples[i:i + batch]], loaded, topk=1)
        for r in results:
            preds.append(r.predictions[0].index)
            cam.append(torch.from_numpy(r.gradcam))
            tensors.append(r.prepared.tensor)
            for b in r.spatial_blocks:
                spatial.setdefault(f"{b.name} ({b.kind} spatial gate)", []).append(torch.from_numpy(b.spatial))
    pred_t = torch.tensor(preds)
    report = VariantReport(loaded.name, float((pred_t == labels).float().mean()), n)
    sources = {"Grad-CAM": torch.stack(cam), **{k: torch.stack(v) for k, v in spatial.items()}}
    hh, ww = masks.shape[1:]
    yy, xx = torch.meshgrid(torch.arange(hh) + 0.5, torch.arange(ww) + 0.5, indexing="ij")
    center = -((yy - hh / 2) ** 2 + (xx - ww / 2) ** 2)
    rng = torch.Generator().manual_seed(seed)
    sources["baseline: center"] = center.expand(n, hh, ww)
    sources["baseline: uniform random"] = torch.rand(n, hh, ww, generator=rng)
    x = torch.cat(tensors)[:n_auc]
    grown = dilate(masks, tolerance)
    report.map_sizes = {k: "×".join(map(str, v.shape[1:])) for k, v in sources.items() if not k.startswith("baseline")}
    report.tolerance = tolerance
    for name, maps in sources.items():
        scores = SourceScores(pointing=float(_peak_hits(maps, grown).mean()),
                              pointing_exact=float(_peak_hits(maps, masks).mean()))
        if n_auc > 0:
            scores.deletion, scores.insertion = deletion_insertion(
                loaded, x, maps[:n_auc], pred_t[:n_auc], steps=steps)
        report.sources[name] = scores
    return report


def markdown(reports: Sequence[VariantReport], command: str) -> str:
    lines = [
        "# Evaluation of the built-in models",
        "",
        f"Held-out synthetic images (seed {TEST_SEED}, never used in training). Command: `{command}`.",
        "Pointing game: share of images whose map maximum (after bilinear upsampling to the image) lies on",
        "the target's mask, within the standard tolerance of Zhang et al. (15 px at 224 px, scaled to the",
        "input: ±6.4 px on the built-ins' 96-px images), and exactly on it (higher is better).",
        "Deletion / insertion AUC: mean probability of the predicted class while pixels are blurred away",
        "(deletion, lower is better) or revealed (insertion, higher is better) in the map's order.",
        "",
        "| variant | accuracy | map source | map size | pointing game | pointing (exact) | deletion AUC ↓ | insertion AUC ↑ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        for i, (name, s) in enumerate(r.sources.items()):
            acc = f"{100 * r.accuracy:.1f} % (n={r.n})" if i == 0 else ""
            fmt = (lambda v: "" if v is None else f"{v:.3f}")
            lines.append(f"| {r.variant if i == 0 else ''} | {acc} | {name} | {r.map_sizes.get(name, '')} | "
                         f"{100 * s.pointing:.1f} % | {100 * s.pointing_exact:.1f} % | "
                         f"{fmt(s.deletion)} | {fmt(s.insertion)} |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variants", nargs="+", default=["builtin"],
                        help="variant names, or 'builtin' for every built-in model (default)")
    parser.add_argument("--n", type=int, default=500, help="held-out images for accuracy and pointing game")
    parser.add_argument("--n-auc", type=int, default=200, help="images for deletion/insertion (0: skip)")
    parser.add_argument("--steps", type=int, default=16, help="deletion/insertion steps")
    parser.add_argument("--faithfulness-n", type=int, default=None,
                        help="images for channel deletion and the randomization sanity check "
                             "(default: min(32, --n-auc); 0: skip)")
    parser.add_argument("--seed", type=int, default=TEST_SEED)
    parser.add_argument("--tolerance", type=float, default=None,
                        help="pointing-game tolerance in pixels (default: 15 px at 224 px, scaled to the input)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the table here (e.g. docs/EVALUATION.md)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")


def run(args: argparse.Namespace) -> int:
    names = [v.name for v in variants().values() if v.builtin] if args.variants == ["builtin"] else args.variants
    reports, channel_reports = [], []
    faith_n = min(32, args.n_auc) if args.faithfulness_n is None else args.faithfulness_n
    for name in names:
        t0 = time.perf_counter()
        loaded = load_model(name, device=args.device)
        if loaded.variant.classes is None:
            raise SystemExit(f"attnviz: error: {name} is not a synthetic-shapes model; evaluate needs a built-in")
        reports.append(evaluate_variant(loaded, args.n, seed=args.seed, n_auc=args.n_auc, steps=args.steps,
                                        tolerance=args.tolerance))
        if faith_n > 0:
            from .evaluate_channels import evaluate_channels

            channel_reports.append(evaluate_channels(loaded, faith_n, seed=args.seed, steps=args.steps))
        print(f"{name}: accuracy {100 * reports[-1].accuracy:.1f} % ({time.perf_counter() - t0:.0f} s)", flush=True)
    command = "python -m attnviz evaluate " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if k in ("variants", "n", "n_auc", "steps", "seed"))
    if faith_n != min(32, args.n_auc):
        command += f" --faithfulness-n {faith_n}"
    from .evaluate_channels import markdown as channels_markdown

    table = markdown(reports, command) + channels_markdown(channel_reports, command)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        old = args.out.read_text() if args.out.is_file() else ""
        notes = old[old.index(NOTES_MARKER):] if NOTES_MARKER in old else ""
        args.out.write_text(table + ("\n" + notes if notes else ""))
    if args.json:
        channels_json = {c.variant: c.to_json() for c in channel_reports}
        args.json.write_text(json.dumps([{
            "variant": r.variant, "accuracy": r.accuracy, "n": r.n,
            "sources": {k: s.__dict__ for k, s in r.sources.items()},
            "channels": channels_json.get(r.variant),
        } for r in reports], indent=2))
    return 0
