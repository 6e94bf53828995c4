"""Fetch ImageNet weights in the background at start-up, so that an online deployment opens on a
pretrained model instead of the synthetic-shapes demo.

    status = preload.start()            # ATTNVIZ_PRELOAD, else the ImageNet CBAM first, then the rest
    status.line()                       # 'ImageNet weights: cbam_resnet50 downloading 42 % · ...'
    status.default_ready.wait()         # set once a fetched variant became default_variant_name()

Nothing is attempted, and nothing costs start-up time, when ``HF_HUB_OFFLINE``,
``TRANSFORMERS_OFFLINE`` or ``ATTNVIZ_OFFLINE`` is set or the list is ``none``. Otherwise one
daemon thread fetches the variants one after another through the zoo's own download path
(:func:`attnviz.models.weights.resolve_file`: verified checksums, resumable ``.part`` files,
never a half-written cache file); a variant whose host name does not resolve is skipped
without a download attempt. Each variant's state is waiting, downloading (with its percentage),
ready, failed (with the reason) or skipped; failures are also logged.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from . import weights as W
from .loading import default_variant_name
from .zoo import IMAGENET_VARIANTS, get_variant

log = logging.getLogger("attnviz.preload")

ENV = "ATTNVIZ_PRELOAD"
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "ATTNVIZ_OFFLINE")
FIRST = "cbam_resnet50"  # the mission's block; the default as soon as its weights are here
_OFF = ("none", "off", "0", "false", "no")

State = Literal["waiting", "downloading", "ready", "failed", "skipped"]


def default_names() -> list[str]:
    """Every ImageNet variant of the zoo, the CBAM one first."""
    names = [v.name for v in IMAGENET_VARIANTS]
    return [FIRST, *(n for n in names if n != FIRST)] if FIRST in names else names


def parse_names(spec: str | None, *, what: str = ENV) -> list[str]:
    """The variants to fetch: ``None``/empty/``all`` the defaults, ``none`` nothing, else a comma list."""
    text = (spec or "").strip()
    if text.lower() in ("", "all"):
        return default_names()
    if text.lower() in _OFF:
        return []
    allowed = default_names()
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in allowed:
            raise ValueError(f"{what}={spec!r}: {n!r} is not an ImageNet variant; expected a comma-separated "
                             f"list of {', '.join(allowed)}, or 'all' or 'none'")
    return list(dict.fromkeys(names))


def offline_reason(env: Mapping[str, str] | None = None) -> str | None:
    """Why no download may be attempted (an offline setting), or None."""
    env = os.environ if env is None else env
    for var in OFFLINE_VARS:
        if env.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{var} is set"
    return None


@dataclass(frozen=True)
class Item:
    """One variant's preload state; ``done``/``total`` count bytes while downloading."""

    name: str
    state: State = "waiting"
    done: int = 0
    total: int | None = None
    message: str = ""

    def text(self) -> str:
        if self.state == "downloading":
            if self.total:
                return f"{self.name} downloading {100 * self.done // self.total} %"
            return f"{self.name} downloading {self.done / 2**20:.0f} MB"
        if self.state in ("failed", "skipped"):
            return f"{self.name} {self.state}: {self.message}"
        return f"{self.name} {self.state}"


class PreloadStatus:
    """Thread-safe progress of one preload: read by the UI while the preload thread writes it."""

    def __init__(self, names: list[str], note: str = "") -> None:
        self._lock = threading.Lock()
        self._items = {n: Item(n) for n in names}
        self.note = note  # why nothing was attempted, when nothing was
        self.default_ready = threading.Event()  # a fetched ImageNet variant is now the default
        self.done = threading.Event()

    def items(self) -> list[Item]:
        with self._lock:
            return list(self._items.values())

    def get(self, name: str) -> Item:
        with self._lock:
            return self._items[name]

    def update(self, name: str, **changes: object) -> None:
        with self._lock:
            self._items[name] = replace(self._items[name], **changes)  # type: ignore[arg-type]

    @property
    def running(self) -> bool:
        return not self.done.is_set()

    def line(self) -> str:
        """One line for a status bar: every variant's state, or why nothing is fetched."""
        if self.note:
            return f"ImageNet weights: not fetched ({self.note})"
        return "ImageNet weights: " + " · ".join(i.text() for i in self.items())


_current: PreloadStatus | None = None


def current() -> PreloadStatus | None:
    """The status of the preload this process started, if any."""
    return _current


def start(names: list[str] | None = None) -> PreloadStatus:
    """Start fetching ``names`` (default: ``$ATTNVIZ_PRELOAD``, see :func:`parse_names`) in a daemon
    thread and return its status at once; offline or with nothing to fetch, no thread starts."""
    global _current
    if names is None:
        names = parse_names(os.environ.get(ENV))
    reason = offline_reason()
    if reason or not names:
        status = PreloadStatus([], note=reason or "nothing to preload")
        status.done.set()
    else:
        status = PreloadStatus(list(names))
        threading.Thread(target=run, args=(status,), name="attnviz-preload", daemon=True).start()
    _current = status
    return status


def _host(name: str) -> str | None:
    src = get_variant(name).weights
    if src.url:
        return src.url
    if src.hf_repo:
        from huggingface_hub import constants

        return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    return None


def _default_or_none() -> str | None:
    try:
        return default_variant_name()
    except W.WeightsError:  # no built-in checkpoint and nothing cached (yet)
        return None


def run(status: PreloadStatus) -> None:
    """Fetch every variant of ``status`` in turn (what :func:`start`'s thread runs)."""
    from .weights.hub import _unresolvable_host

    try:
        before = _default_or_none()
        for item in status.items():
            url = _host(item.name)
            unreachable = _unresolvable_host(url) if url else None
            if unreachable and not W.is_available(get_variant(item.name).weights):
                status.update(item.name, state="skipped", message=unreachable)
                log.warning("preload %s skipped: %s", item.name, unreachable)
                continue
            if fetch_one(status, item.name) and _default_or_none() != before:
                status.default_ready.set()
    finally:
        status.done.set()


def fetch_one(status: PreloadStatus, name: str) -> bool:
    """Download one variant's weights into the cache, recording its progress; True when ready."""
    source = get_variant(name).weights

    def progress(done: int, total: int | None) -> None:
        status.update(name, state="downloading", done=done, total=total)

    try:
        path = W.resolve_file(source, download=True, progress=False, on_progress=progress)
    except Exception as e:  # any failure is this variant's, reported; the others still run
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        status.update(name, state="failed", message=getattr(e, "reason", None) or first)
        log.warning("preload %s failed: %s", name, e)
        return False
    status.update(name, state="ready", message=str(path))
    log.info("preload %s ready: %s", name, path)
    return True
