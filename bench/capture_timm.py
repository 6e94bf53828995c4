"""What capturing every attention gate costs on timm's attention CNNs (issue 20: <= 1.05x).

For each model (random init, eval, CPU, batch 1, the model's own input size from timm's data
config), the bare forward ``model(x)`` and the same forward inside ``attnviz.capture(model)``
(finding the gates, hooking them, reading every gate out: what ``inspect`` pays) run as ABBA
quadruples: bare, capture, capture, bare. Each quadruple gives two paired ratios (capture /
bare beside it), so a load swing hits both sides of a pair; the figure is the median over all
pairs. Also reported: the bare forward's median ms, the interquartile range of the ratios, the
median paired difference in ms, ``find_gates`` alone and the capture context's setup alone
(enter and exit without a forward: find, hook, unhook), the part of the cost that does not
depend on the input size.

    python bench/capture_timm.py [--models efficientnet_b0 ...] [--repeats 30] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import timm  # noqa: E402
import torch  # noqa: E402
from timm.data import resolve_data_config  # noqa: E402

import attnviz  # noqa: E402
from timing import abba, median_ms  # noqa: E402  (bench/timing.py)

MODELS = ("efficientnet_b0", "mobilenetv3_large_100", "skresnet18", "resnest14d")


def bench_model(name: str, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    size = resolve_data_config({}, model=model)["input_size"][-1]
    x = torch.randn(1, 3, size, size)

    def bare() -> None:
        with torch.inference_mode():
            model(x)

    def captured() -> None:
        with torch.inference_mode(), attnviz.capture(model):
            model(x)

    bare_ms, under_ms = abba(bare, captured, 2 * repeats)  # ABBA: pairs (a, b), (b, a) alternate
    ratios = [b / a for a, b in zip(bare_ms, under_ms)]
    find_ms = median_ms(lambda: attnviz.find_gates(model), 50, warmup=0)

    def setup_only() -> None:  # find the gates, hook them, unhook them: no forward
        with attnviz.capture(model):
            pass

    setup_ms = median_ms(setup_only, 50, warmup=0)
    quartiles = statistics.quantiles(ratios, n=4)
    return dict(size=size, blocks=len(attnviz.find_gates(model)), bare_ms=statistics.median(bare_ms),
                ratio=statistics.median(ratios), q1=quartiles[0], q3=quartiles[2], find_ms=find_ms,
                extra_ms=statistics.median(b - a for a, b in zip(bare_ms, under_ms)), setup_ms=setup_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=30, help="ABBA quadruples per model (2 pairs each)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (0: torch's default); 1 is far steadier on a shared machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, timm {timm.__version__}, {torch.get_num_threads()} thread(s), CPU, batch 1, "
          f"random init; {args.repeats} ABBA quadruples ({2 * args.repeats} pairs) per model; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    print(f"{'model':<24} {'input':>5} {'blocks':>6} {'bare fwd':>9} {'capture/bare':>13} {'IQR of ratios':>13} "
          f"{'extra':>8} {'find_gates':>10} {'setup':>7}")
    for name in args.models:
        r = bench_model(name, args.repeats)
        print(f"{name:<24} {r['size']:>5} {r['blocks']:>6} {r['bare_ms']:>7.1f}ms {r['ratio']:>12.3f}x "
              f"{r['q1']:>6.3f}-{r['q3']:<6.3f} {r['extra_ms']:>+6.2f}ms {r['find_ms']:>8.2f}ms {r['setup_ms']:>5.2f}ms", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
