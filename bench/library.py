#!/usr/bin/env python
"""The library rows of ``bench/bench.py`` (1-4): per ResNet-50 variant, batch 1, 224 px,

1. the bare forward under ``torch.inference_mode()`` (the limit), and
2. ``attnviz.capture`` around it, back to back in ABBA pairs (``--limit-pairs`` per repeat);
3. ``attnviz.inspect`` from the image file without and with Grad-CAM, each alone and followed
   by ``export.figures``, ``export.figures`` alone on a fixed result, and with Grad-CAM on the
   prepared tensor the peers get (``--amp``: also under autocast);
4. torchcam's and pytorch-grad-cam's ``GradCAM`` on the same model and tensor.

All in one round-robin loop (on CUDA with the accelerator rows of ``accelerator.py``); with
``--amp``, also the autocast checks against float32 on the built-in models.

    python bench/library.py [bench.py's options]      # these rows alone, timings printed
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import workload  # noqa: F401  (first: puts the repository on sys.path)
import attnviz
from accelerator import accel_tasks, batch_throughput
from attnviz import export
from attnviz.preprocess import PreparedImage, prepare
from timing import Task, run_round_robin
from workload import Run, main_alone


def fresh(result: attnviz.Inspection) -> attnviz.Inspection:
    """The same result with an empty view cache, so rendering pays for the view again."""
    p = result.prepared
    return dataclasses.replace(result, prepared=PreparedImage(tensor=p.tensor, image=p.image,
                                                              geometry=p.geometry))


def peer_tasks(name: str, model: torch.nn.Module, x: torch.Tensor) -> list[Task]:
    """torchcam's and pytorch-grad-cam's Grad-CAM on ``model`` and the prepared tensor ``x``
    (hooks, forward, backward, map for the top-1 class)."""
    from pytorch_grad_cam import GradCAM as PgcGradCAM
    from torchcam.methods import GradCAM as TorchcamGradCAM

    def torchcam() -> None:
        extractor = TorchcamGradCAM(model, target_layer="layer4")
        try:
            scores = model(x)
            cams = extractor(int(scores[0].argmax()), scores)
            cams[0].cpu()
        finally:
            extractor.remove_hooks()

    def pgc() -> None:
        with PgcGradCAM(model=model, target_layers=[model.layer4]) as cam:
            cam(input_tensor=x, targets=None)  # None: the top-1 class; returns the 224x224 map
        model.zero_grad(set_to_none=True)  # pytorch-grad-cam backprops into .grad

    return [("torchcam GradCAM", name, torchcam), ("pytorch-grad-cam GradCAM", name, pgc)]


def library_tasks(name: str, loaded: attnviz.LoadedModel, image: Path, device: torch.device,
                  fixed: attnviz.Inspection, limit_pairs: int = 1, amp: str | None = None) -> list[Task]:
    """Rows 1-4 of one variant. Bare forward and capture run ``limit_pairs`` times per repeat,
    back to back in ABBA order: their target has the thinnest margin (5 %), and with 10 samples
    the ratio of medians swings more than that under this machine's noise."""
    model = loaded.model
    prepared = prepare(image, loaded.preprocess)
    x = prepared.tensor.to(device)

    def bare() -> None:
        with torch.inference_mode():
            model(x)

    def cap() -> None:
        with attnviz.capture(model), torch.inference_mode():
            model(x)

    def inspect_only(gc_: bool) -> Callable[[], object]:
        return lambda: attnviz.inspect(image, loaded, gradcam=gc_)

    def inspect_full(gc_: bool) -> Callable[[], object]:
        return lambda: export.figures(attnviz.inspect(image, loaded, gradcam=gc_))

    abba = [("bare forward", name, bare), ("capture", name, cap), ("capture", name, cap), ("bare forward", name, bare)]
    limit_rows = (abba * limit_pairs)[:2 * limit_pairs]
    return [
        *limit_rows,
        ("inspect gradcam=False", name, inspect_only(False)),
        ("inspect gradcam=False + figures", name, inspect_full(False)),
        ("inspect gradcam=True", name, inspect_only(True)),
        # the peers' input: the same preprocessed tensor, no decoding
        ("inspect gradcam=True (tensor input)", name, lambda: attnviz.inspect(prepared, loaded, gradcam=True)),
        ("inspect gradcam=True + figures", name, inspect_full(True)),
        ("figures (render only)", name, lambda: export.figures(fresh(fixed))),
        *peer_tasks(name, model, x),
    ] + ([(f"inspect gradcam=True (tensor input, amp={amp})", name,
           lambda: attnviz.inspect(prepared, loaded, gradcam=True, amp=amp))] if amp else [])


def amp_checks(amp: str, device: torch.device, n_images: int = 64) -> list[dict]:
    """``inspect(..., amp=amp)`` against float32 on the trained built-in models (ImageNet weights
    are random here, where top-1 margins are meaningless): top-1 agreement, largest differences."""
    from attnviz.synthetic import generate

    rows = []
    for name, v in attnviz.variants().items():
        if not v.builtin:
            continue
        loaded = attnviz.load_model(name, device=device)
        same, gate_err, cam_err, prob_err = 0, 0.0, 0.0, 0.0
        for i in range(n_images):
            img = generate(i % len(v.class_names), seed=70_000 + i, size=v.input_size).image
            prepared = prepare(img, loaded.preprocess)
            exact = attnviz.inspect(prepared, loaded)
            fast = attnviz.inspect(prepared, loaded, amp=amp)
            same += exact.predictions[0].index == fast.predictions[0].index
            for a, b in zip(exact.blocks, fast.blocks):
                for role in ("channel", "spatial"):
                    x, y = getattr(a, role), getattr(b, role)
                    if x is not None:
                        gate_err = max(gate_err, float(np.abs(x - y).max()))
            cam_err = max(cam_err, float(np.abs(exact.gradcam - fast.gradcam).max()))
            prob_err = max(prob_err, float(np.abs(exact.probs - fast.probs).max()))
        rows.append({"variant": name, "n": n_images, "top1_same": same, "gate_err": gate_err,
                     "cam_err": cam_err, "prob_err": prob_err})
        print(f"  [amp {amp}] {name}: top-1 {same}/{n_images}, gate err {gate_err:.2e}", file=sys.stderr)
    return rows


def run_section(run: Run) -> None:
    """Rows 1-4 of every variant in one interleaved loop; then, on CUDA, batch throughput, and
    with ``--amp`` the autocast checks."""
    args = run.args
    tasks: list[Task] = []
    checks: list[dict] = []
    for name in run.variants:
        loaded = run.models[name]
        fixed = attnviz.inspect(run.image, loaded, gradcam=True)
        tasks += library_tasks(name, loaded, run.image, run.device, fixed, args.limit_pairs, args.amp)
        if run.accel_rows:
            tasks += accel_tasks(name, loaded, run.image, run.device, args.amp, checks)
    run.report["accel_checks"] = checks
    run_round_robin(tasks, repeats=args.repeats, warmup=args.warmup, timer=run.timer,
                    results=run.results, label="library")
    if run.accel_rows:
        run.report["throughput"] = batch_throughput(
            {n: run.models[n] for n in run.variants}, run.image, run.timer, args.repeats, args.warmup,
            run.results) if run.device.type == "cuda" else []
    if args.amp:
        run.report["amp_checks"] = amp_checks(args.amp, run.device)


if __name__ == "__main__":
    sys.exit(main_alone(run_section, __doc__.split("\n\n")[0]))
