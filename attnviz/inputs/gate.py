"""The one door every user file goes through before anything reads it.

Images, dataset lists and zips, and checkpoints are all opened here first. A path is refused by
name, without being opened, unless it is a regular, non-empty file within the size limit: a FIFO
(which would block the reader until something writes to it), a device such as ``/dev/zero``
(endless), a socket or a directory never reaches a decoder. The file is then opened
non-blocking and checked again on the open descriptor, so a path swapped for a FIFO between
the check and the open is refused too.

:class:`FileRefused` is the one-line error: ``"<name>: <problem>; accepted: <what is>"``.
What a file *is* (its format, from its bytes) is :mod:`attnviz.inputs.sniff`'s.
"""
from __future__ import annotations

import os
import re
import stat
from typing import BinaryIO

#: Files larger than this are refused unread (callers pass their own limit where it differs).
MAX_FILE_BYTES: int = 1 << 30

_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def one_line(text: object) -> str:
    """Collapse whitespace / control characters so messages stay on one line; bytes of a file
    name that are not UTF-8 (Python keeps them as lone surrogates) are shown as ``\\xNN``."""
    text = str(text)
    if text.isprintable() and "  " not in text and text == text.strip():
        return text  # the common case, fast (a batch over 10^6 missing files formats 10^6 errors)
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return re.sub(r"\s+", " ", "".join(c if c.isprintable() else " " for c in text)).strip()


def display_name(path: str | bytes | os.PathLike) -> str:
    """How a path is named in messages: its last component (the whole path if it has none)."""
    text = os.fsdecode(path)
    base = os.path.basename(text.rstrip("/")) or text
    return one_line(base) or "file"


def megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n < 10 * 2**20 else f"{n / 2**20:.0f} MB"


class FileRefused(ValueError):
    """A file that may not be opened or used. ``str(err)`` is one line: the file's name, what is
    wrong, and what is accepted. Attributes ``source``, ``problem``, ``accepted``."""

    def __init__(self, source: str, problem: str, accepted: str = "") -> None:
        self.source = one_line(source) or "input"
        self.problem = one_line(problem)
        self.accepted = one_line(accepted)
        message = f"{self.source}: {self.problem}"
        if self.accepted:
            message += f"; accepted: {self.accepted}"
        super().__init__(message)

    def __reduce__(self):  # keep picklable (DataLoader workers) despite the custom signature
        return (type(self), (self.source, self.problem, self.accepted))


def check_stat(st: os.stat_result, name: str, accepted: str, max_bytes: int | None,
               error: type[FileRefused] = FileRefused) -> None:
    """Refuse anything but a regular, non-empty file of at most ``max_bytes``."""
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _NOT_REGULAR if test(st.st_mode)), "not a regular file")
        if kind == "a directory":
            raise error(name, "is a directory, not a file", accepted)
        raise error(name, f"is {kind}, not a regular file (refused without reading it)", accepted)
    if st.st_size == 0:
        raise error(name, "file is empty (0 bytes)", accepted)
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(name, f"file is {st.st_size:,} bytes, more than the limit of {max_bytes:,} bytes "
                          f"({megabytes(max_bytes)})", accepted)


def check_file(path: str | bytes | os.PathLike, *, accepted: str, max_bytes: int | None = MAX_FILE_BYTES,
               error: type[FileRefused] = FileRefused) -> os.stat_result:
    """The ``stat`` of ``path`` if it may be opened (see :func:`check_stat`); never opens it."""
    name = display_name(path)
    text = os.fsdecode(path)
    if "\0" in text:
        raise error(name, "the file name contains a NUL byte", accepted)
    try:
        st = os.stat(text)
    except FileNotFoundError:
        raise error(name, "no such file", accepted) from None
    except OSError as exc:  # ENAMETOOLONG, ELOOP (a symlink loop), EACCES on a folder, ...
        raise error(name, f"cannot access file ({exc.strerror or exc})", accepted) from None
    check_stat(st, name, accepted, max_bytes, error)
    return st


def open_file(path: str | bytes | os.PathLike, *, accepted: str, max_bytes: int | None = MAX_FILE_BYTES,
              error: type[FileRefused] = FileRefused) -> BinaryIO:
    """``path`` opened for binary reading, after :func:`check_file`; the caller closes it."""
    check_file(path, accepted=accepted, max_bytes=max_bytes, error=error)
    name = display_name(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(os.fsdecode(path), flags)
    except PermissionError:
        raise error(name, "permission denied", accepted) from None
    except OSError as exc:
        raise error(name, f"cannot read file ({exc.strerror or exc})", accepted) from None
    try:
        check_stat(os.fstat(fd), name, accepted, max_bytes, error)  # the same file we checked?
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


__all__ = ["MAX_FILE_BYTES", "FileRefused", "check_file", "check_stat", "display_name", "one_line",
           "open_file"]
