"""The channel-attention part of ``python -m attnviz evaluate``: channel-deletion AUCs per block
(gate vs random vs activation-norm order, :func:`attnviz.channel_deletion`) and the cascading
randomization sanity check (:mod:`attnviz.sanity`), on the same held-out synthetic images."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .capture import find_gates
from .channel_deletion import DeletionCurves, channel_deletion
from .sanity import SanityReport, cascading_randomization
from .sanity import markdown as sanity_markdown
from .synthetic import generate


@dataclass
class ChannelReport:
    variant: str
    n: int
    steps: int
    deletion: list[DeletionCurves] = field(default_factory=list)
    sanity: SanityReport | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant, "n": self.n, "steps": self.steps,
            "channel_deletion": [{"block": d.block, "channels": d.channels, "auc": d.auc} for d in self.deletion],
            "sanity": None if self.sanity is None else {
                "steps": self.sanity.steps, "spearman": self.sanity.spearman, "ssim": self.sanity.ssim,
                "survivors": self.sanity.survivors},
        }


def evaluate_channels(loaded: Any, n: int, *, seed: int, steps: int = 16) -> ChannelReport:
    """Channel deletion for every block with a channel gate, then the sanity check."""
    size = loaded.preprocess.input_size
    images = [generate(i, seed=seed, size=size).image for i in range(n)]
    report = ChannelReport(loaded.name, n, steps)
    from .preprocess import prepare

    prepared = [prepare(im, loaded.preprocess) for im in images]
    for site in find_gates(loaded.model):
        if {"channel", "joint"} & set(site.gates):
            report.deletion.append(channel_deletion(loaded, prepared, site.name, steps=steps, seed=seed))
    report.sanity = cascading_randomization(loaded, prepared, seed=seed)
    return report


def markdown(reports: Sequence[ChannelReport], command: str) -> str:
    """The channel-deletion table and the sanity-check tables (empty when nothing was run)."""
    reports = [r for r in reports if r.deletion or r.sanity is not None]
    if not reports:
        return ""
    lines = [
        "",
        "## Channel deletion: does the gate rank the channels the decision depends on?",
        "",
        f"Command: `{command}`. Channels of one block are knocked out cumulatively (their block",
        "output set to 0) in the order of the gate (highest first), a random order, and the",
        "activation norm of the block's output channel (highest first); AUC = mean probability of the",
        "class the unmodified model predicted over the knocked-out fraction 0..1 (lower: the order",
        "found the channels that matter). Gate < random means the gate ranks faithfully.",
        "",
        "| variant | block | channels | gate AUC ↓ | random AUC | activation-norm AUC | gate beats random |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        for i, d in enumerate(r.deletion):
            name = f"{r.variant} (n={r.n}, {r.steps} steps)" if i == 0 else ""
            beats = "yes" if d.gate_beats_random else "no"
            lines.append(f"| {name} | {d.block} | {d.channels} | {d.auc['gate']:.3f} | {d.auc['random']:.3f} | "
                         f"{d.auc['activation']:.3f} | {beats} |")
    total = sum(len(r.deletion) for r in reports)
    wins = sum(bool(d.gate_beats_random) for r in reports for d in r.deletion)
    act = sum(d.auc["activation"] < d.auc["gate"] for r in reports for d in r.deletion)
    lines += ["", f"Gate order beats random in {wins} of {total} blocks; the activation-norm order beats the "
                  f"gate order in {act} of {total}.", ""]
    sanity = [r.sanity for r in reports if r.sanity is not None]
    return "\n".join(lines) + "\n" + (sanity_markdown(sanity, command) if sanity else "")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m attnviz.evaluate_channels``: only these tables (what ``evaluate`` adds to its
    own, on the same images: the first ``--n`` held-out images of ``--seed``)."""
    import argparse

    from .evaluate import TEST_SEED
    from .models import load_model, variants

    parser = argparse.ArgumentParser(prog="python -m attnviz.evaluate_channels", description=main.__doc__)
    parser.add_argument("--variants", nargs="+", default=["builtin"])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--seed", type=int, default=TEST_SEED)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    names = [v.name for v in variants().values() if v.builtin] if args.variants == ["builtin"] else args.variants
    command = (f"python -m attnviz.evaluate_channels --variants {' '.join(args.variants)} --n {args.n} "
               f"--steps {args.steps} --seed {args.seed}")
    reports = [evaluate_channels(load_model(name, device=args.device), args.n, seed=args.seed, steps=args.steps)
               for name in names]
    print(markdown(reports, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
