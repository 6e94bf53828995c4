"""Why the app runs every torch call on one thread (``attnviz.app_logic.TorchThread``).

torch's OpenMP runtime (libgomp) gives each thread that runs a parallel op its own team of
workers; while the teams together hold more threads than there are CPUs, idle workers no longer
spin and every parallel region pays a sleep and a wake-up. A web server hands events to whichever
worker thread is free, so without a dedicated thread a second long-lived thread ends up running
forwards. This script times a ResNet-50 forward (batch 1, 224 px, ``inference_mode``) in rounds:

* *one torch thread*: called from rotating caller threads through ``TorchThread``, the only
  thread that ever ran torch;
* *second thread alive*: the same model on a second long-lived thread, the first one's team
  still there (what a server without ``TorchThread`` gets once its events move threads);
* *one torch thread, second alive*: back on ``TorchThread`` while that second thread lives.

    python bench/omp_threads.py [--runs 20] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import queue
import statistics
import sys
import threading
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torchvision  # noqa: E402

from attnviz.app_logic import TorchThread  # noqa: E402
from timing import cpu_model, median_ms  # noqa: E402  (bench/timing.py)


class LongLivedThread:
    """A second thread that stays alive between calls, like a server's worker thread."""

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, done = job
            done.put(fn())

    def call(self, fn: Callable[[], float]) -> float:
        done: queue.Queue = queue.Queue()
        self._jobs.put((fn, done))
        return done.get()

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="timed forwards per cell (after 3 warm-ups)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the three settings")
    args = ap.parse_args(argv)

    torch_thread = TorchThread("bench-torch")
    x = torch.randn(1, 3, 224, 224)

    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        return torchvision.models.resnet50().eval()

    model = torch_thread.call(build)  # even building (random init) runs parallel ops

    def forwards() -> float:
        with torch.inference_mode():
            return median_ms(lambda: model(x), args.runs, warmup=3)

    def via_torch_thread() -> float:
        out: list[float] = []
        caller = threading.Thread(target=lambda: out.append(torch_thread.call(forwards)))
        caller.start()
        caller.join()
        return out[0]

    print(f"# OpenMP teams and forward time: {cpu_model()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    print("| round | one torch thread ms | second thread alive ms | one torch thread, second alive ms |"
          " second / one |")
    print("|---:|---:|---:|---:|---:|")
    ratios = []
    for r in range(args.rounds):
        alone = via_torch_thread()
        second = LongLivedThread()
        try:
            on_second = second.call(forwards)
            back = via_torch_thread()
        finally:
            second.stop()  # its team goes with it
        ratios.append(on_second / alone)
        print(f"| {r + 1} | {alone:.1f} | {on_second:.1f} | {back:.1f} | {ratios[-1]:.2f} |")
    print(f"\nmedian second / one: {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
