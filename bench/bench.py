#!/usr/bin/env python
"""attnviz benchmark: one run, one image, one set of weights, every tool side by side.

    python bench/bench.py [--repeats 10] [--warmup 3] [--skip-cli] [--skip-app] [--requests 500]
                          [--out BENCHMARKS.md] [--device cpu|cuda] [--amp bf16|fp16]

What is timed (batch 1, 224 px, medians and p90 over ``--repeats`` runs after ``--warmup``):

1. bare forward of each ResNet-50 variant under ``torch.inference_mode()`` (the limit);
2. ``attnviz.capture`` around that forward;
3. ``attnviz.inspect`` (from the image file: decoding and preprocessing included) without and
   with Grad-CAM, each alone and followed by ``export.figures`` (every rendered output), and
   ``export.figures`` alone on a fixed result; with Grad-CAM also on the prepared tensor the
   peers get (their comparison targets use that row);
4. torchcam's and pytorch-grad-cam's ``GradCAM`` on the same model and input tensor
   (hooks, forward, backward, map);
4b. ``python -m attnviz inspect`` throughput (images/s) on 16 images, with and without figures;
5. the Gradio app's ``/inspect`` and ``/compare`` round trips through ``gradio_client`` next
   to a trivial echo app (``bench/echo_app.py``: Gradio's own floor, with one image and with
   as many files as the response) and next to the library's full inspection of the same model;
6. memory: RSS after building every ImageNet architecture, and the app server's RSS growth
   over ``--requests`` ``/inspect`` requests.

Every row of one section runs in the same loop, round-robin, the order rotated each repeat,
so drift from other processes on the machine hits all rows alike. ImageNet weights are not
downloaded: each variant is built at random init from a fixed seed, and that one model
object serves every tool. On CUDA, timings are synchronised and extra rows (channels-last,
``--amp`` autocast) and ``inspect_batch`` throughput (batch 16/32) are reported.

Results are printed and written to ``--out`` (default ``BENCHMARKS.md`` at the repo root);
anything below the marker line in that file is kept across runs.

Each benchmark is its own script beside this one, runnable alone with the same options:
``library.py`` (1-4), ``accelerator.py`` (CUDA rows), ``cli_throughput.py`` (4b),
``app_roundtrip.py`` (5, 6) and ``rss.py`` (6); ``timing.py`` is how they all time, and
``report.py`` turns the results into targets, tables and the Markdown.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np

import workload  # first: puts the repository on sys.path
import app_roundtrip
import cli_throughput
import library
from report import evaluate_targets, print_console, write_markdown
from timing import LoadSampler


def measure(run: workload.Run) -> None:
    """Every section in turn, in one process: the models are built once, first (their RSS)."""
    workload.prepare(run)
    library.run_section(run)  # rows 1-4 (and the accelerator rows, interleaved)
    if run.args.skip_cli:
        run.skip("CLI throughput skipped: --skip-cli")
    else:
        cli_throughput.run_section(run)
    if run.args.skip_app:  # rows 5-6
        run.skip("app rows skipped: --skip-app")
    else:
        app_roundtrip.run_section(run)


def report(run: workload.Run, load_start: float, samples: list[float]) -> None:
    """The targets, the console tables and the Markdown file."""
    s = samples or [load_start]
    run.report["load"] = {"start": load_start, "end": os.getloadavg()[0], "median": float(np.median(s)),
                          "max": float(max(s)), "n": len(s)}
    targets = evaluate_targets(run.results, run.report, run.variants)
    print_console(run.results, targets, run.variants, run.report)
    ld = run.report["load"]
    print(f"\nload average (1 min): start {ld['start']:.2f}, during median {ld['median']:.2f} / "
          f"max {ld['max']:.2f}, end {ld['end']:.2f}")
    for label, (others, own) in run.results.contention.items():
        print(f"CPU during the timed {label} runs: other processes {others:.0f}% of the machine, "
              f"bench + servers {own:.0f}%")
    out = Path(run.args.out)
    write_markdown(out, report=run.report, results=run.results, targets=targets, variants=run.variants)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    run = workload.new_run(workload.parse_args(argv, __doc__.split("\n\n")[0]))
    load_start = os.getloadavg()[0]
    sampler = LoadSampler()
    sampler.start()
    try:
        measure(run)
    finally:
        sampler.stop()
        shutil.rmtree(run.tmp, ignore_errors=True)
    report(run, load_start, sampler.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
