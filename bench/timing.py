"""How the bench scripts time things, read memory and describe the machine, and how they write
their Markdown: shared by ``bench/bench.py``'s benchmarks and the stand-alone scripts beside it.

* :class:`Timer`, :class:`Results` (medians, p90, ratios of paired samples) and
  :func:`run_round_robin` (every row once per repeat, the order rotated, after warm-ups);
* :func:`abba` and :func:`paired_median`: two callables side by side, alternating which runs
  first, judged on the median of the per-pair ratios (a load swing hits both of a pair);
* :func:`machine_info`, :class:`LoadSampler`, :func:`rss_bytes`;
* :func:`fmt`, :func:`replace_between` and :func:`keep_below`: Markdown numbers and reports
  rewritten in place without losing what others wrote in the same file.
"""
from __future__ import annotations

import dataclasses
import gc
import os
import platform
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

Task = tuple[str, str, Callable[[], object]]  # (row, variant, fn)


# --------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------
class Timer:
    """Wall time of one call; synchronised around it on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def ms(fn: Callable[[], object]) -> float:
    """Milliseconds one call of ``fn`` takes (CPU: no synchronisation)."""
    t0 = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - t0)


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return statistics.median(ms(fn) for _ in range(repeats))


def abba(a: Callable[[], object], b: Callable[[], object], repeats: int,
         warmup: int = 3) -> tuple[list[float], list[float]]:
    """Milliseconds of ``a`` and ``b`` run side by side ``repeats`` times, alternating which goes
    first (after ``warmup`` untimed pairs)."""
    for _ in range(warmup):
        a(), b()
    ta: list[float] = []
    tb: list[float] = []
    for i in range(repeats):
        if i % 2:
            tb.append(ms(b)), ta.append(ms(a))
        else:
            ta.append(ms(a)), tb.append(ms(b))
    return ta, tb


def _per_repeat(samples: Sequence[float], repeats: int) -> np.ndarray:
    """``samples`` (in repeat order, the same number from each repeat) as one median per repeat."""
    return np.median(np.asarray(samples, dtype=float).reshape(repeats, -1), axis=1)


def paired_median(num: Sequence[float], den: Sequence[float]) -> float:
    """Median of ``num[i] / den[i]``: each sample against the one measured beside it, so the
    machine's speed swings cancel where the ratio of two separate medians drifts with them. A
    row timed k times per repeat (the bare forward of the ABBA rows) is first reduced to its
    median in each repeat, so a row timed once per repeat is paired with its own repeat."""
    if len(num) and len(den) and len(num) != len(den) and max(len(num), len(den)) % min(len(num), len(den)) == 0:
        repeats = min(len(num), len(den))
        return float(np.median(_per_repeat(num, repeats) / _per_repeat(den, repeats)))
    n = min(len(num), len(den))
    return float(np.median(np.asarray(num[:n]) / np.asarray(den[:n])))


@dataclasses.dataclass
class Series:
    row: str
    variant: str
    times: list[float] = dataclasses.field(default_factory=list)  # seconds

    @property
    def median_ms(self) -> float:
        return 1e3 * float(np.median(self.times)) if self.times else float("nan")

    @property
    def p90_ms(self) -> float:
        return 1e3 * float(np.percentile(self.times, 90)) if self.times else float("nan")


class Results:
    def __init__(self) -> None:
        self.series: dict[tuple[str, str], Series] = {}
        self.order: list[tuple[str, str]] = []
        # section -> (% of all CPUs used by other processes, % used by the bench and its servers)
        self.contention: dict[str, tuple[float, float]] = {}

    def add(self, row: str, variant: str, seconds: float) -> None:
        key = (row, variant)
        if key not in self.series:
            self.series[key] = Series(row, variant)
            self.order.append(key)
        self.series[key].times.append(seconds)

    def get(self, row: str, variant: str) -> Series | None:
        return self.series.get((row, variant))

    def med(self, row: str, variant: str) -> float:
        s = self.get(row, variant)
        return s.median_ms if s else float("nan")

    def paired_ratio(self, num: tuple[str, str], den: tuple[str, str]) -> float:
        """Median over repeats of num/den measured in the same repeat."""
        a, b = self.get(*num), self.get(*den)
        if not a or not b:
            return float("nan")
        return paired_median(a.times, b.times)


def cpu_snapshot(pids: list[int]) -> tuple[int, int, int]:
    """(busy, total) jiffies of the whole machine and the jiffies used by ``pids``."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    own = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            own += int(stat[11]) + int(stat[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total - idle, total, own


def run_round_robin(tasks: list[Task], *, repeats: int, warmup: int, timer: Timer,
                    results: Results, label: str, pids: list[int] | None = None) -> None:
    """Run every task once per repeat, in an order rotated each repeat; record after warm-up.

    Also records how much of the machine's CPU other processes used meanwhile (``pids``:
    this process and its servers)."""
    n = len(tasks)
    pids = [os.getpid(), *(pids or [])]
    t_start = time.perf_counter()
    snap = None
    for r in range(warmup + repeats):
        if r == warmup:
            snap = cpu_snapshot(pids)
        shift = (r * n // (warmup + repeats)) % n if n else 0
        for row, variant, fn in tasks[shift:] + tasks[:shift]:
            dt = timer(fn)
            if r >= warmup:
                results.add(row, variant, dt)
        gc.collect()
        phase = "warm-up" if r < warmup else "repeat"
        k = r + 1 if r < warmup else r - warmup + 1
        print(f"  [{label}] {phase} {k}/{warmup if r < warmup else repeats} done "
              f"({time.perf_counter() - t_start:.0f} s, load {os.getloadavg()[0]:.2f})",
              file=sys.stderr, flush=True)
    if snap is not None:
        busy, total, own = (b - a for a, b in zip(snap, cpu_snapshot(pids)))
        if total > 0:
            results.contention[label] = (100.0 * max(0, busy - own) / total, 100.0 * own / total)


# --------------------------------------------------------------------------------------
# the machine: load, memory, description
# --------------------------------------------------------------------------------------
class LoadSampler(threading.Thread):
    """Samples the 1-minute load average every few seconds while the bench runs."""

    def __init__(self, every_s: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.every_s = every_s
        self.samples: list[float] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop_event.wait(self.every_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=self.every_s + 1)


def rss_bytes(pid: int | None = None) -> tuple[int, str]:
    """Resident set size of a process (this one by default) and how it was read."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss, "psutil"
    except ImportError:
        pass
    status = Path(f"/proc/{pid if pid else 'self'}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.M)
    if not m:
        raise RuntimeError("no VmRSS in /proc/<pid>/status")
    return int(m.group(1)) * 1024, "/proc/<pid>/status VmRSS"


def peak_rss_bytes(pid: int | None = None) -> int | None:
    try:
        status = Path(f"/proc/{pid if pid else 'self'}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmHWM:\s+(\d+)\s+kB", status, re.M)
    return int(m.group(1)) * 1024 if m else None


def mb(n: float) -> float:
    return n / 2**20


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine_info(device: torch.device) -> dict[str, str]:
    import attnviz

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count() or 0
    info = {
        "CPU": cpu_model(),
        "cores": f"{os.cpu_count()} logical ({affinity} usable by this process)",
        "torch": torch.__version__,
        "torch threads": f"{torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op",
        "python": platform.python_version(),
        "OS": platform.platform(),
        "numpy / pillow": f"{np.__version__} / {package_version('pillow')}",
        "gradio / gradio_client": f"{package_version('gradio')} / {package_version('gradio_client')}",
        "torchcam / grad-cam": f"{package_version('torchcam')} / {package_version('grad-cam')}",
        "attnviz": attnviz.__version__,
    }
    if device.type == "cuda":
        info["GPU"] = torch.cuda.get_device_name(device)
        info["CUDA"] = str(torch.version.cuda)
    return info


# --------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------
def fmt(v: float, nd: int = 1) -> str:
    return "n/a" if v != v else f"{v:.{nd}f}"


def replace_between(path: Path, begin: str, end: str, text: str) -> None:
    """Put ``text`` (which starts with ``begin`` and ends with ``end``) in place of the part of
    ``path`` between those markers, or append it when the file has none."""
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + text.rstrip("\n") + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def keep_below(path: Path, marker: str, lines: list[str]) -> None:
    """Write ``lines`` and ``marker`` to ``path``, keeping whatever the file had below ``marker``
    (notes written by hand, other scripts' sections)."""
    kept = ""
    if path.exists():
        old = path.read_text()
        if marker in old:
            kept = old.split(marker, 1)[1]
    path.write_text("\n".join([*lines, marker]) + (kept if kept else "\n"))
