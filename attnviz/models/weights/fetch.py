"""HTTP downloads that continue where an interrupted one stopped and report their progress.

torch hub's downloader starts from zero after every interruption and has no progress hook;
a ResNet-50 is ~100 MB, so a dropped connection on a slow link, or a restarted server, would
pay for the whole file again. Here the bytes received so far stay in the caller's ``.part``
file and the next try asks only for the rest (HTTP ``Range``). The caller verifies the
finished file and moves it into place: a cache file is never half-written.
"""
from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

try:  # POSIX: several processes (the app's preload, a CLI download) share one .part file
    import fcntl
except ImportError:  # pragma: no cover - Windows: only the in-process lock applies
    fcntl = None  # type: ignore[assignment]

#: ``on_progress(bytes_so_far, total_or_None)``
Progress = Callable[[int, "int | None"], None]

CHUNK = 1 << 20
USER_AGENT = "attnviz (python urllib)"


class IncompleteDownload(OSError):
    """The connection ended before the announced size arrived (the ``.part`` file keeps the rest)."""


@contextmanager
def exclusive(part: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``part`` (created if missing) across processes.

    The lock is re-taken when another process renamed or deleted the file while this one
    waited, so two processes never append to the same bytes.
    """
    while True:
        fh = open(part, "ab")  # noqa: SIM115 - held open for the lock's lifetime
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            same = os.stat(part).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        fh.close()
    try:
        yield
    finally:
        fh.close()  # releases the lock


def _content_range_start(value: str | None) -> tuple[int, int | None] | None:
    m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (value or "").strip())
    if not m:
        return None
    return int(m.group(1)), None if m.group(2) == "*" else int(m.group(2))


def _open(url: str, have: int, timeout: float) -> tuple[Any, int, int | None]:
    """The response for ``url`` from byte ``have`` on, and the offset it really starts at."""
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # what we hold is not a prefix the server knows: start over
            return _open(url, 0, timeout)
        raise
    length = resp.headers.get("Content-Length")
    if have and resp.status == 206:
        start, total = _content_range_start(resp.headers.get("Content-Range")) or (-1, None)
        if start == have:
            return resp, have, total
        resp.close()
        return _open(url, 0, timeout)
    return resp, 0, int(length) if length and length.isdigit() else None


def download_url(url: str, part: Path, *, progress: bool = True, on_progress: Progress | None = None,
                 timeout: float = 60.0) -> None:
    """Download ``url`` into ``part``, continuing the bytes already in it when the server allows.

    Raises urllib's errors as they come (the caller turns them into one message) and
    :class:`IncompleteDownload` when fewer bytes than announced arrived; either way the bytes
    received stay in ``part`` for the next try. A server that ignores ``Range`` sends the
    whole file again, which then replaces ``part``.
    """
    have = part.stat().st_size if part.is_file() else 0
    resp, start, total = _open(url, have, timeout)
    with resp:
        with open(part, "r+b" if part.exists() else "wb") as out:
            out.seek(start)
            out.truncate()
            _copy(resp, out, start, total, progress, on_progress, Path(part).name)
    got = part.stat().st_size
    if total is not None and got != total:
        raise IncompleteDownload(f"the connection closed after {got} of {total} bytes")


def _copy(resp, out: BinaryIO, done: int, total: int | None, progress: bool,
          on_progress: Progress | None, label: str) -> None:
    from tqdm.auto import tqdm

    with tqdm(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
              disable=not progress, desc=label) as bar:
        if on_progress is not None:
            on_progress(done, total)
        while chunk := resp.read(CHUNK):
            out.write(chunk)
            done += len(chunk)
            bar.update(len(chunk))
            if on_progress is not None:
                on_progress(done, total)
        out.flush()
