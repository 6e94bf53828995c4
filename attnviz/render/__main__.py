"""Timing: ``python -m attnviz.render`` prints the median cost of the typical per-model workload."""
from __future__ import annotations

import numpy as np
from PIL import Image

from . import channel_bar_chart, depth_overview, overlay


def _benchmark(repeats: int = 50) -> dict[str, tuple[float, float]]:
    """(wall, CPU) milliseconds per call for the typical per-model workload."""
    import time

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (448, 448, 3), dtype=np.uint8))
    amap = rng.random((14, 14)).astype(np.float32)
    w2048 = 1.0 / (1.0 + np.exp(-rng.normal(size=2048)))
    blocks = [
        (f"layer{li + 1}.{bi}", 1.0 / (1.0 + np.exp(-rng.normal(size=c))))
        for li, (nb, c) in enumerate([(3, 256), (4, 512), (6, 1024), (3, 2048)])
        for bi in range(nb)
    ]
    # warm caches (colour tables, font, glyphs)
    overlay(img, amap)
    channel_bar_chart(w2048, title="warm")
    depth_overview(blocks)

    def timeit(fn) -> tuple[float, float]:
        """Median wall and CPU (process) milliseconds of `repeats` single calls;
        CPU time is the fairer number on a shared, busy machine."""
        wall, cpu = [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        return float(np.median(wall)) * 1e3, float(np.median(cpu)) * 1e3

    res = {
        "channel_bar_chart 2048ch": timeit(lambda: channel_bar_chart(w2048, title="layer4.2 (SE)")),
        "overlay 448x448": timeit(lambda: overlay(img, amap, alpha=0.5)),
        "depth_overview 16 blocks": timeit(lambda: depth_overview(blocks)),
    }
    counter = iter(range(10**9))

    def whole_model() -> None:
        # fresh titles and gate values every run, so text is not served from cache
        run = next(counter)
        for name, wts in blocks:
            channel_bar_chart(np.roll(wts, run), title=f"{name} (SE) run {run}")
            overlay(img, amap)
        depth_overview([(f"{name}.{run}", wts) for name, wts in blocks])

    res["whole model (16 charts + 16 overlays + overview)"] = timeit(whole_model)
    return res


if __name__ == "__main__":
    for key, (wall_ms, cpu_ms) in _benchmark().items():
        print(f"{key:>50s}: {wall_ms:7.2f} ms wall, {cpu_ms:7.2f} ms CPU (median)")
