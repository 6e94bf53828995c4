"""What interventions, channel-deletion curves and channel drill-down cost, as ratios to the bare
forward measured side by side in the same run (A/B pairs, alternating order; median paired ratio).

* intervention forward: ``model(x)`` inside ``attnviz.intervene`` (identity on every block;
  top-k knockout on the last block) vs ``model(x)``: the hooks' own cost;
* ``inspect(..., interventions=...)`` vs ``inspect(...)``: the documented one more inspection;
* ``channel_deletion`` of the last channel block, one image, S steps × 3 orders in one batched
  forward, vs one bare forward;
* drill-down: ``result.channel_map(block, c)`` right after an inspection (first channel: one
  forward up to the block; next channel: cached), in ms.

    python bench/intervene.py [--variants shapes_cbam_resnet ...] [--repeats 30] [--steps 16] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import attnviz  # noqa: E402
from attnviz.synthetic import generate  # noqa: E402
from timing import abba, ms, paired_median  # noqa: E402  (bench/timing.py)

BUILTINS = ("shapes_se_resnet", "shapes_eca_resnet", "shapes_cbam_resnet", "shapes_bam_resnet")


def side_by_side(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median ms of ``a`` and the median of the paired ratios ``b / a`` (each ``b`` run against
    the ``a`` run beside it, alternating which goes first): a load swing hits both of a pair, so
    the paired ratio stays put where the ratio of two separate medians drifts."""
    ta, tb = abba(a, b, repeats)
    return statistics.median(ta), paired_median(tb, ta)


def bench_variant(name: str, repeats: int, steps: int) -> dict[str, float]:
    loaded = attnviz.load_model(name, device="cpu")
    net = loaded.model
    image = generate(0, seed=2000, size=loaded.preprocess.input_size).image
    x = attnviz.inspect(image, loaded, gradcam=False).prepared.tensor
    channel_blocks = [s.name for s in attnviz.find_gates(net) if {"channel", "joint"} & set(s.gates)]
    last = channel_blocks[-1]

    def bare():
        with torch.inference_mode():
            net(x)

    def under(spec):
        def run():
            with torch.inference_mode(), attnviz.intervene(net, spec):
                net(x)
        return run

    out: dict[str, float] = {}
    f, i = side_by_side(bare, under({"*": "identity"}), repeats)
    out.update(forward_ms=f, identity_ratio=i)
    _, out["knockout_ratio"] = side_by_side(bare, under({last: attnviz.ChannelKnockout(top=8)}), repeats)
    p, q = side_by_side(lambda: attnviz.inspect(image, loaded),
                        lambda: attnviz.inspect(image, loaded, interventions={"*": "identity"}), repeats)
    out.update(inspect_ms=p, inspect_intervened_ratio=q)
    _, d = side_by_side(bare, lambda: attnviz.channel_deletion(loaded, x, last, steps=steps), max(5, repeats // 3))
    out.update(deletion_ratio=d, deletion_rows=3 * (steps + 1))
    first, nxt = [], []
    for _ in range(repeats):
        r = attnviz.inspect(image, loaded)
        first.append(ms(lambda: r.channel_map(last, 0)))
        nxt.append(ms(lambda: r.channel_map(last, 1)))
    out.update(drill_first_ms=statistics.median(first), drill_next_ms=statistics.median(nxt), block=last)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(BUILTINS))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default); 1 is far steadier on a machine shared with "
                             "other jobs, where OpenMP teams wait for preempted workers")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, batch 1; medians of {args.repeats} "
          f"repeats; ratios: median of paired ratios to the bare forward / plain inspect run beside each")
    print(f"{'variant':<20} {'forward':>8} {'identity':>9} {'knockout':>9} {'inspect':>8} {'inspect+iv':>10} "
          f"{'deletion':>17} {'drill 1st':>9} {'drill next':>10}")
    for name in args.variants:
        r = bench_variant(name, args.repeats, args.steps)
        print(f"{name:<20} {r['forward_ms']:>6.2f}ms {r['identity_ratio']:>8.2f}x {r['knockout_ratio']:>8.2f}x "
              f"{r['inspect_ms']:>6.1f}ms {r['inspect_intervened_ratio']:>9.2f}x "
              f"{r['deletion_ratio']:>6.1f}x ({r['deletion_rows']} rows) {r['drill_first_ms']:>7.2f}ms "
              f"{r['drill_next_ms']:>8.3f}ms  [{r['block']}]", flush=True)


if __name__ == "__main__":
    main()
