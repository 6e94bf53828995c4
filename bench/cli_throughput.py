#!/usr/bin/env python
"""The CLI rows of ``bench/bench.py`` (4b): ``python -m attnviz inspect`` throughput (images/s)
on ``CLI_IMAGES`` copies of the image, with and without figures, for one ResNet-50 (random init,
saved as the ``--weights`` file) and the default built-in model.

    python bench/cli_throughput.py [bench.py's options]      # these rows alone, timings printed
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import torch

import workload  # noqa: F401  (first: puts the repository on sys.path)
import attnviz
from timing import Results
from workload import RESNET50S, Run, main_alone

CLI_IMAGES = 16


def _cli_runs(models: dict[str, attnviz.LoadedModel], tmp: Path) -> list[tuple[str, list[str]]]:
    """(variant, its CLI arguments): one ResNet-50 with its weights saved for ``--weights``, and
    the default built-in model."""
    from safetensors.torch import save_file

    runs: list[tuple[str, list[str]]] = []
    name = next((n for n in ("cbam_resnet50", *RESNET50S) if n in models), None)
    if name is not None:
        weights = tmp / f"{name}.safetensors"
        save_file({k: v.detach().cpu().contiguous() for k, v in models[name].model.state_dict().items()}, str(weights))
        runs.append((name, ["--variant", name, "--weights", str(weights)]))
    builtin = attnviz.default_variant_name()
    if attnviz.variants().get(builtin) is not None and attnviz.variants()[builtin].builtin:
        runs.append((builtin, ["--variant", builtin]))
    return runs


def cli_throughput(models: dict[str, attnviz.LoadedModel], image: Path, device: torch.device,
                   tmp: Path, repeats: int, warmup: int, results: Results) -> list[dict]:
    """``python -m attnviz inspect`` on ``CLI_IMAGES`` copies of the image (run in this process:
    the model is loaded once, by the warm-up), with and without figures, for one ResNet-50 (its
    random-init weights saved as the ``--weights`` file) and the default built-in model."""
    from attnviz import cli

    folder = tmp / "cli_images"
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(CLI_IMAGES):
        paths.append(folder / f"image_{i:02d}{image.suffix}")
        shutil.copyfile(image, paths[-1])
    rows = []
    for variant, args in _cli_runs(models, tmp):
        for figures in (True, False):
            row = f"CLI inspect, {CLI_IMAGES} images" + ("" if figures else ", --no-figures")
            argv = ["inspect", *map(str, paths), "--out", str(tmp / "cli_out"), "--device", device.type, "-q",
                    *args, *([] if figures else ["--no-figures"])]
            for r in range(warmup + repeats):
                shutil.rmtree(tmp / "cli_out", ignore_errors=True)
                t0 = time.perf_counter()
                status = cli.main(argv)
                dt = time.perf_counter() - t0
                if status != 0:
                    raise RuntimeError(f"attnviz inspect exited with {status} ({variant})")
                if r >= warmup:
                    results.add(row, variant, dt)
            med = results.med(row, variant)
            rows.append({"variant": variant, "figures": figures, "median_ms": med,
                         "images_per_s": 1e3 * CLI_IMAGES / med})
            print(f"  [cli] {variant} figures={figures}: {1e3 * CLI_IMAGES / med:.1f} images/s",
                  file=sys.stderr, flush=True)
    shutil.rmtree(tmp / "cli_out", ignore_errors=True)
    return rows


def run_section(run: Run) -> None:
    run.report["cli"] = cli_throughput(run.models, run.image, run.device, run.tmp, run.args.repeats,
                                       run.args.warmup, run.results)


if __name__ == "__main__":
    sys.exit(main_alone(run_section, __doc__.split("\n\n")[0]))
