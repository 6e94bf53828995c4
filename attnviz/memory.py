"""Handing freed heap memory back to the OS (glibc's ``malloc_trim``).

A long-running process that allocates and frees many mid-sized buffers from several threads
(a server's request threads, a DataLoader's receiving thread) keeps its heap near the
high-water mark, fragmented across malloc arenas: RSS climbs for thousands of requests or
batches before it levels off, though nothing is kept alive. Trimming now and then keeps it flat.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
import time
from typing import Any


@functools.cache
def _malloc_trim() -> Any | None:
    # looked up once: find_library runs ``ldconfig -p`` in a subprocess
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_free_memory() -> bool:
    """Hand the memory freed inside the process back to the OS (glibc's ``malloc_trim``).

    A server's heap otherwise stays near its high-water mark: many short sessions leave it
    fragmented across the worker threads' malloc arenas. False where there is no glibc.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def trim_memory_every(interval_s: float) -> threading.Thread:
    """A daemon thread that calls :func:`release_free_memory` every ``interval_s`` seconds."""
    def loop() -> None:
        while release_free_memory():
            time.sleep(interval_s)

    thread = threading.Thread(target=loop, name="attnviz-malloc-trim", daemon=True)
    thread.start()
    return thread

