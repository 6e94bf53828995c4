#!/usr/bin/env python
"""RSS of the analysing process along one long ``attnviz.analyze`` run (is it flat in the
number of images?): prints (images done, RSS MB) every 640 images.

    python bench/analyze_rss.py [--images 9600] [--workers 1]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import attnviz  # noqa: E402


def rss_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=9600)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--model", default="shapes_se_resnet")
    args = p.parse_args()
    loaded = attnviz.load_model(args.model, device="cpu")
    print(f"before: {rss_mb():.0f} MB (model loaded)")
    marks: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        if done % 640 == 0 or done == total:
            marks.append((done, round(rss_mb())))

    attnviz.analyze(f"synthetic:{args.images}", loaded, num_workers=args.workers, progress=progress)
    print(marks)


if __name__ == "__main__":
    main()
