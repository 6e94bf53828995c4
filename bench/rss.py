#!/usr/bin/env python
"""The memory rows of ``bench/bench.py`` (6): RSS of this process with every ImageNet
architecture built at once (measured first, before anything else runs), and an app server's RSS
growth over ``--requests`` ``/inspect`` requests (run by ``app_roundtrip.py`` on its server).

    python bench/rss.py [bench.py's options]      # the architectures' RSS alone, printed
"""
from __future__ import annotations

import gc
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from timing import mb, peak_rss_bytes, rss_bytes


def models_rss(build: Callable[[], dict]) -> tuple[dict, dict]:
    """The models ``build`` returns, and this process's RSS before and after building them next to
    the bytes of their parameters and buffers (the report's ``memory``)."""
    gc.collect()
    base, how = rss_bytes()
    models = build()
    gc.collect()
    loaded_rss, _ = rss_bytes()
    param_bytes = sum(t.numel() * t.element_size() for lm in models.values()
                      for t in [*lm.model.parameters(), *lm.model.buffers()])
    memory = {"base_mb": mb(base), "loaded_mb": mb(loaded_rss), "how": how,
              "n": len(models), "names": list(models), "param_mb": mb(param_bytes)}
    print(f"RSS: {mb(base):.0f} MB after imports, {mb(loaded_rss):.0f} MB with {len(models)} "
          f"ImageNet architectures", file=sys.stderr)
    return models, memory


def server_rss_growth(request: Callable[[], object], pid: int, requests: int, downloads: Path) -> dict:
    """A server's RSS after 20 warm-up ``request()`` calls and after ``requests`` more (the
    client's downloaded files in ``downloads`` removed every 50: they are not the server's)."""
    for _ in range(20):
        request()
    gc.collect()
    before, how = rss_bytes(pid)
    t0 = time.perf_counter()
    for i in range(requests):
        request()
        if (i + 1) % 100 == 0:
            print(f"  [app rss] {i + 1}/{requests} requests, server RSS "
                  f"{mb(rss_bytes(pid)[0]):.1f} MB", file=sys.stderr, flush=True)
        if (i + 1) % 50 == 0:
            shutil.rmtree(downloads, ignore_errors=True)  # the client's downloads, not the server's
    after, _ = rss_bytes(pid)
    return {
        "requests": requests, "before_mb": mb(before), "after_mb": mb(after),
        "growth_mb": mb(after - before), "peak_mb": mb(peak_rss_bytes(pid) or 0), "how": how,
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    from workload import build_imagenet_models, parse_args

    args = parse_args(argv, __doc__.split("\n\n")[0])
    torch.set_num_threads(args.threads)
    _, memory = models_rss(lambda: build_imagenet_models(torch.device(args.device)))
    print(f"{memory['loaded_mb'] - memory['base_mb']:+.0f} MB for {memory['n']} architectures "
          f"({memory['param_mb']:.0f} MB of parameters and buffers; read with {memory['how']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
