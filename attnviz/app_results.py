"""Where a server keeps inspection results between a request and its follow-ups.

A browser session's follow-ups (the selected block's chart, the downloads, another opacity, the
compare columns) need the :class:`~attnviz.inspection.Inspection` of its last request. Keeping it
in the session's ``gr.State`` made memory grow with every new session, and a session that only
calls the API never ends. Instead the state holds a random token and the results live here: one
process-wide LRU bounded by bytes. A token is only ever handed to the session that made the
result, so sessions cannot reach each other's results; an evicted or expired result is ``None``
and the follow-up asks the user to run the request again.
"""
from __future__ import annotations

import dataclasses
import secrets
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from .inspection import Inspection

#: Default bound of a server's result cache (``ATTNVIZ_RESULT_CACHE_MB``).
DEFAULT_MAX_MB = 64


def light_inspection(result: Inspection, view_size: int) -> Inspection:
    """``result`` as a server keeps it: every array, the view at ``view_size`` (all its follow-ups
    draw on that one), no model input or full-size image, and no reference to the model (a kept
    result must not pin an uploaded checkpoint's model that the loader has let go)."""
    return dataclasses.replace(result, prepared=result.prepared.light_copy(view_size), loaded=None)


def _arrays_nbytes(result: Inspection) -> int:
    arrays = [result.logits, result.probs, result.gradcam,
              *(a for b in result.blocks for a in (b.channel, b.spatial, b.branches))]
    return sum(a.nbytes for a in arrays if a is not None)


def inspection_nbytes(result: Inspection) -> int:
    """What keeping ``result`` costs: its arrays, the model input and the loaded image with its
    cached views (the image dominates for photos: 36 MB for 12 megapixels)."""
    total = _arrays_nbytes(result) + result.prepared.nbytes()
    before = getattr(result.intervention, "before", None)
    if before is not None:  # the plain inspection of an intervened one (same image)
        total += _arrays_nbytes(before)
    return total


class ResultCache:
    """Thread-safe LRU of results under random tokens, bounded by their total size in bytes and,
    optionally, by their number (a server keeps no more results than it keeps sessions to ask
    for them: Gradio drops the least recently active sessions beyond its capacity).

    A result larger than the whole bound is not kept (its token then finds nothing).
    """

    def __init__(self, max_bytes: int, max_items: int | None = None) -> None:
        if max_bytes < 0 or (max_items is not None and max_items < 1):
            raise ValueError(f"max_bytes must be >= 0 and max_items >= 1, got {max_bytes} and {max_items}")
        self.max_bytes, self.max_items = max_bytes, max_items
        self._items: OrderedDict[str, tuple[Any, int, Hashable]] = OrderedDict()
        self._tokens: dict[Hashable, str] = {}  # owner -> its one kept token
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, value: Any, nbytes: int, owner: Hashable | None = None) -> str:
        """Keep ``value`` (``nbytes`` large) and return its new token; evicts the least recently
        used. An ``owner`` (e.g. a session and tab) keeps one result: its previous one is dropped,
        so one busy session cannot push everybody else's results out."""
        token = secrets.token_urlsafe(16)
        with self._lock:
            if owner is not None and owner in self._tokens:
                self._pop(self._tokens[owner])
            if nbytes > self.max_bytes:
                return token
            self._items[token] = (value, nbytes, owner)
            self._bytes += nbytes
            if owner is not None:
                self._tokens[owner] = token
            while self._bytes > self.max_bytes or (self.max_items and len(self._items) > self.max_items):
                self._pop(next(iter(self._items)))
        return token

    def _pop(self, token: str) -> None:
        item = self._items.pop(token, None)
        if item is not None:
            self._bytes -= item[1]
            if item[2] is not None and self._tokens.get(item[2]) == token:
                del self._tokens[item[2]]

    def get(self, token: str | None) -> Any | None:
        """The value kept under ``token`` (now the most recently used), or None when it is gone."""
        if not token:
            return None
        with self._lock:
            item = self._items.get(token)
            if item is None:
                return None
            self._items.move_to_end(token)
            return item[0]

    def drop(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._pop(token)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)
