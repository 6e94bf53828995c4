#!/usr/bin/env python
"""The accelerator rows of ``bench/bench.py`` (CUDA): each ResNet-50 variant channels-last (and,
with ``--amp``, under autocast) for the bare forward, capture and ``inspect``, checked against
float32 (top-1, gates, logits); and ``inspect_batch`` throughput at batch 16 and 32.

``bench/bench.py`` runs these rows in the library rows' loop (``library.py``); alone:

    python bench/accelerator.py --device cuda [--amp bf16|fp16] [bench.py's options]
"""
from __future__ import annotations

import contextlib
import copy
import sys
from pathlib import Path

import torch

import workload  # noqa: F401  (first: puts the repository on sys.path)
import attnviz
from attnviz.inspection import AMP_DTYPES
from attnviz.preprocess import prepare
from timing import Results, Task, Timer, run_round_robin
from workload import Run, main_alone


def _gates(cap) -> dict[tuple[str, str], torch.Tensor]:
    out = {}
    for bc in cap:
        for role in ("channel", "spatial"):
            t = getattr(bc, role)
            if t is not None:
                out[(bc.name, role)] = t.float()
    return out


def _reference(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict, int, float]:
    """float32's logits, gates, top-1 and top-1 margin: what the other modes are checked against."""
    with attnviz.capture(model) as cap_ref, torch.inference_mode():
        ref_logits = model(x).float()
    top2 = ref_logits[0].topk(2)
    return ref_logits, _gates(cap_ref), int(top2.indices[0]), float(top2.values[0] - top2.values[1])


def accel_tasks(name: str, loaded: attnviz.LoadedModel, image: Path, device: torch.device,
                amp: str | None, checks: list[dict]) -> list[Task]:
    """channels-last (and autocast) copies of one model; checks top-1 and gates vs fp32."""
    model = loaded.model
    x = prepare(image, loaded.preprocess).tensor.to(device)
    ref_logits, ref_gates, ref_top1, margin = _reference(model, x)

    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    cl_loaded = attnviz.wrap_model(cl_model, preprocess=loaded.preprocess, name=name, block=loaded.variant.block)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    modes: list[tuple[str, torch.dtype | None]] = [("channels-last", None)]
    if amp:
        modes.append((f"channels-last + autocast {amp}", AMP_DTYPES[amp]))

    tasks: list[Task] = []
    for label, dtype in modes:
        def ctx(dtype=dtype):
            if dtype is None:
                return contextlib.nullcontext()
            return torch.autocast(device_type=device.type, dtype=dtype)

        with ctx(), attnviz.capture(cl_model) as cap, torch.inference_mode():
            logits = cl_model(x_cl).float()
        gates = _gates(cap)
        err = max((float((gates[k].cpu() - ref_gates[k].cpu()).abs().max()) for k in ref_gates), default=0.0)
        top1 = int(logits[0].argmax())
        checks.append({
            "variant": name, "mode": label, "top1_same": top1 == ref_top1, "fp32_top1": ref_top1,
            "top1": top1, "fp32_margin": margin, "max_gate_err": err,
            "logit_err": float((logits - ref_logits).abs().max()),
        })

        def bare(ctx=ctx) -> None:
            with ctx(), torch.inference_mode():
                cl_model(x_cl)

        def capt(ctx=ctx) -> None:
            with ctx(), attnviz.capture(cl_model), torch.inference_mode():
                cl_model(x_cl)

        def insp(ctx=ctx) -> None:
            with ctx():
                attnviz.inspect(image, cl_loaded, gradcam=True)

        tasks += [
            (f"bare forward [{label}]", name, bare),
            (f"capture [{label}]", name, capt),
            (f"inspect gradcam=True [{label}]", name, insp),
        ]
    return tasks


def batch_throughput(models: dict[str, attnviz.LoadedModel], image: Path, timer: Timer,
                     repeats: int, warmup: int, results: Results) -> list[dict]:
    rows = []
    for name, loaded in models.items():  # the variants asked for (--variants), in their order
        prepared = prepare(image, loaded.preprocess)
        for bs in (16, 32):
            batch = [prepared] * bs
            fn = lambda batch=batch: attnviz.inspect_batch(batch, loaded, gradcam=True)  # noqa: E731
            for r in range(warmup + repeats):
                dt = timer(fn)
                if r >= warmup:
                    results.add(f"inspect_batch gradcam=True, batch {bs}", name, dt)
            med = results.med(f"inspect_batch gradcam=True, batch {bs}", name)
            rows.append({"variant": name, "batch": bs, "median_ms": med, "images_per_s": 1e3 * bs / med})
            print(f"  [throughput] {name} batch {bs}: {1e3 * bs / med:.1f} images/s", file=sys.stderr)
    return rows


def run_section(run: Run) -> None:
    """These rows alone (``bench/bench.py`` interleaves them with the library rows instead)."""
    checks: list[dict] = []
    tasks = [t for name in run.variants
             for t in accel_tasks(name, run.models[name], run.image, run.device, run.args.amp, checks)]
    run.report["accel_checks"] = checks
    run_round_robin(tasks, repeats=run.args.repeats, warmup=run.args.warmup, timer=run.timer,
                    results=run.results, label="accelerator")
    if run.device.type == "cuda":
        run.report["throughput"] = batch_throughput({n: run.models[n] for n in run.variants}, run.image,
                                                    run.timer, run.args.repeats, run.args.warmup, run.results)
    for c in checks:
        print(f"  [check] {c['variant']} {c['mode']}: top-1 same {c['top1_same']}, "
              f"gate err {c['max_gate_err']:.2e}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main_alone(run_section, __doc__.split("\n\n")[0]))
