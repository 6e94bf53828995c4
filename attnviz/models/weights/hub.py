"""Where downloaded weights live, fetching them, verifying their checksums, and offline behaviour.

Downloads happen only when :func:`resolve_file` is called, never at import: URLs go to the
torch hub cache (``$TORCH_HOME/hub/checkpoints``), Hugging Face files to the hub cache
(``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE`` honoured). Checksums are verified; a file
that does not match is deleted from the cache.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import threading
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import torch

from ..zoo import WeightsSource
from .errors import WeightsError, WeightsUnavailableError
from . import fetch
from .files import _single_weights_member


def torch_cache_dir() -> Path:
    """Where URL downloads go: ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (``HF_HUB_CACHE``, ``HF_HOME``)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hf_offline() -> bool:
    return any(
        os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _fetch_url(url: str) -> str:
    """The URL as requested (without the ``#file-name`` fragment)."""
    return url.split("#", 1)[0]


def _download_name(url: str) -> str:
    """File name of a URL's download; a ``#name`` fragment names it when the path does not."""
    parts = urlsplit(url)
    name = parts.fragment or Path(parts.path).name
    if not name or "." not in name or not re.fullmatch(r"[\w.\-+]+", name):
        name = "weights-" + hashlib.sha1(_fetch_url(url).encode()).hexdigest()[:16] + ".bin"
    return name


def _is_zip_source(source: WeightsSource) -> bool:
    return source.url is not None and _download_name(source.url).lower().endswith(".zip")


def cached_path(source: WeightsSource) -> Path | None:
    """Where the file of a URL or Hugging Face source lives once downloaded (may not exist yet)."""
    if source.url:
        name = _download_name(source.url)
        return torch_cache_dir() / (name[:-4] if name.lower().endswith(".zip") else name)
    if source.hf_repo:
        found = _hf_cached(source)
        return Path(found) if found else None
    return None


def _hf_cached(source: WeightsSource) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(
            source.hf_repo, source.hf_filename or "model.safetensors", cache_dir=hf_cache_dir()
        )
    except Exception:  # a malformed cache counts as "not cached"
        return None
    return found if isinstance(found, str) and os.path.isfile(found) else None


def is_available(source: WeightsSource) -> bool:
    """True when the weights are on this machine now (built-in file or a cached download).

    Never touches the network.
    """
    if source.path is not None:
        return source.path.is_file()
    if source.url:
        path = cached_path(source)
        return path is not None and path.is_file()
    if source.hf_repo:
        return _hf_cached(source) is not None
    return False


def _variant_name(source: WeightsSource) -> str | None:
    from ..zoo import IMAGENET_VARIANTS

    for v in IMAGENET_VARIANTS:
        if v.weights == source:
            return v.name
    return None


def _unavailable(
    source: WeightsSource, reason: str, *, tried: str, looked_in: Path, env: str, file: str | None = None
) -> WeightsUnavailableError:
    name = _variant_name(source)
    what = f"weights of {name!r} ({source.description})" if name else f"weights {source.description!r}"
    fetch = f"`python -m attnviz download {name}`" if name else "the download"
    lines = [
        f"The {what} are not on this machine and could not be fetched: {reason}.",
        f"  tried: {tried}",
        f"  looked in: {looked_in}{f' for {file}' if file else ''} (set {env} to use another cache)",
        f"  to get them: run {fetch} on a machine with internet access and copy that cache folder "
        "here, or download the file yourself and pass it with --weights FILE.",
    ]
    if source.manual:
        lines.append(f"  by hand: {source.manual}")
    err = WeightsUnavailableError("\n".join(lines))
    err.reason = reason  # type: ignore[attr-defined]  # the short why, for one-line status displays
    return err


def _network_reason(e: BaseException) -> str:
    import urllib.error

    if isinstance(e, urllib.error.HTTPError):
        return f"the server answered HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return f"no connection ({e.reason})"
    if type(e).__name__ == "LocalEntryNotFoundError" and e.__cause__ is not None:
        # The Hugging Face client's "check your connection" hides what happened: an HTTP
        # status after its retries, a refused connection; say that instead.
        return _network_reason(e.__cause__)
    text = str(e).strip().splitlines()[0].rstrip(".") if str(e).strip() else ""
    return f"{type(e).__name__}{': ' + text if text else ''}"


def _unresolvable_host(url: str) -> str | None:
    """Why ``url``'s host cannot be reached, when its name does not even resolve (no proxy set).

    Saves the Hugging Face client's retries with back-off (about half a minute of log noise)
    on a machine without network.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    host = urlsplit(url).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, 443)
    except OSError as e:
        return f"no connection (cannot resolve {host}: {e.strerror or e})"
    return None


_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_verified: dict[str, tuple[int, int]] = {}  # path -> (size, mtime_ns) already checked this process


def _lock_for(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(str(path), threading.Lock())


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _url_sha256_prefix(url: str) -> str | None:
    """The SHA-256 prefix in ``name-<hash>.ext`` for hosts that guarantee it (torch hub's check_hash)."""
    parts = urlsplit(url)
    if parts.hostname != "download.pytorch.org":
        return None
    m = re.search(r"-([a-f0-9]{6,})\.", Path(parts.path).name)
    return m.group(1) if m else None


def _checks(source: WeightsSource, *, file_is_download: bool) -> list[tuple[str, str, str]]:
    """(algorithm, expected hex, kind) checks for the cached file (or the raw download)."""
    zipped = _is_zip_source(source)
    checks = []
    if source.sha256 and (file_is_download or not zipped):
        checks.append(("sha256", source.sha256.lower(), "full"))
    elif source.url and (file_is_download or not zipped):
        prefix = _url_sha256_prefix(source.url)
        if prefix:
            checks.append(("sha256", prefix, "prefix"))
    if source.sha1 and not (file_is_download and zipped):
        checks.append(("sha1", source.sha1.lower(), "full"))
    return checks


def _verify(source: WeightsSource, path: Path, checks: list[tuple[str, str, str]], where: str) -> None:
    """Raise WeightsError (after deleting ``path``) when a checksum does not match."""
    for algo, expected, kind in checks:
        actual = _digest(path, algo)
        ok = actual.startswith(expected) if kind == "prefix" else actual == expected
        if not ok:
            path.unlink(missing_ok=True)
            _verified.pop(str(path), None)
            raise WeightsError(
                f"checksum mismatch for the {source.description} file {path.name}: {algo.upper()} is "
                f"{actual}, expected {expected}{'…' if kind == 'prefix' else ''}. The file was deleted "
                f"from {where}; run again to download a fresh copy (or pass a good file with --weights FILE)."
            )


def _looks_like_html(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml"))


def _fail_url(source: WeightsSource, reason: str, target: Path) -> WeightsUnavailableError:
    return _unavailable(source, reason, tried=_fetch_url(source.url or ""), looked_in=target.parent,
                        env="TORCH_HOME", file=target.name)


def _resolve_url(source: WeightsSource, *, download: bool, progress: bool,
                 on_progress: fetch.Progress | None = None) -> Path:
    assert source.url is not None
    cache = torch_cache_dir()
    target = cached_path(source)
    assert target is not None
    with _lock_for(target):
        if target.is_file():
            _verify_cached(source, target, cache)
            return target
        if not download:
            raise _fail_url(source, "it is not in the cache and downloading is turned off", target)
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _fail_url(source, f"cannot create the cache folder ({e})", target) from None
        # One stable name per file, so that an interrupted download continues next time.
        part = cache / f"{_download_name(source.url)}.part"
        with fetch.exclusive(part):
            if target.is_file():  # another process finished it while we waited
                part.unlink(missing_ok=True)
            else:
                _download_into(source, part, target, cache, progress, on_progress)
        _verified[str(target)] = (target.stat().st_size, target.stat().st_mtime_ns)
        return target


def _verify_cached(source: WeightsSource, target: Path, cache: Path) -> None:
    stamp = (target.stat().st_size, target.stat().st_mtime_ns)
    if _verified.get(str(target)) != stamp:
        _verify(source, target, _checks(source, file_is_download=False), str(cache))
        _verified[str(target)] = stamp


def _download_into(source: WeightsSource, part: Path, target: Path, cache: Path, progress: bool,
                   on_progress: fetch.Progress | None) -> None:
    """Fetch into ``part`` (kept after a network failure, for resuming), verify, move to ``target``."""
    assert source.url is not None
    keep = False
    try:
        try:
            fetch.download_url(_fetch_url(source.url), part, progress=progress, on_progress=on_progress)
        except BaseException as e:  # urllib / http.client / ssl / socket errors: one clear message
            keep = part.is_file() and part.stat().st_size > 0  # the next try continues from here
            if not isinstance(e, Exception):  # KeyboardInterrupt, SystemExit
                raise
            raise _fail_url(source, _network_reason(e), target) from None
        if not part.is_file() or part.stat().st_size == 0:
            raise _fail_url(source, "the download came back empty", target)
        if _looks_like_html(part):
            raise _fail_url(source, "the server sent a web page instead of the weights file (a quota, "
                            "sign-in or confirmation page)", target)
        _verify(source, part, _checks(source, file_is_download=True), str(cache))
        if _is_zip_source(source):
            _extract_single(source, part, target, cache)
        else:
            os.replace(part, target)
    finally:
        if not keep:
            part.unlink(missing_ok=True)


def _extract_single(source: WeightsSource, archive: Path, target: Path, cache: Path) -> None:
    """Unpack the one weights file of a downloaded zip to ``target``, checking its SHA-1."""
    tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.unzip")
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                member = _single_weights_member(zf, f"{source.description}: downloaded {archive.name}")
                with zf.open(member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        except zipfile.BadZipFile as e:
            raise WeightsError(
                f"{source.description}: the download {archive.name} is not a valid zip archive ({e}); "
                f"it was deleted from {cache}, run again to retry"
            ) from None
        _verify(source, tmp, _checks(source, file_is_download=False), str(cache))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _tqdm_class(progress: bool, on_progress: fetch.Progress | None) -> type:
    """A tqdm for the Hugging Face client: silent unless ``progress``, reporting to ``on_progress``."""
    from tqdm.auto import tqdm

    class ReportingTqdm(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = kwargs.get("disable", False) or not progress
            super().__init__(*args, **kwargs)
            self._done, self._total = int(kwargs.get("initial") or 0), kwargs.get("total")

        def update(self, n=1):
            self._done += int(n or 0)
            if on_progress is not None:
                on_progress(self._done, self._total)
            return super().update(n)

    return ReportingTqdm


def _hf_download(source: WeightsSource, filename: str, cache: Path, tried: str, progress: bool,
                 on_progress: fetch.Progress | None) -> str:
    if _hf_offline():
        raise _unavailable(source, "it is not in the cache and HF_HUB_OFFLINE is set",
                           tried=tried, looked_in=cache, env="HF_HOME")
    import huggingface_hub
    from huggingface_hub import constants

    # Read at call time (the client reads it once, at import), like the cache folder above.
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    unreachable = _unresolvable_host(endpoint)
    if unreachable:
        raise _unavailable(source, unreachable, tried=tried, looked_in=cache, env="HF_HOME")
    kwargs = {} if progress and on_progress is None else {"tqdm_class": _tqdm_class(progress, on_progress)}
    try:
        # The client downloads to a temporary name and renames it into the cache when complete.
        return huggingface_hub.hf_hub_download(source.hf_repo, filename, cache_dir=cache,
                                               endpoint=endpoint.rstrip("/"), **kwargs)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # offline, HTTP, repository/file not found: one clear message
        raise _unavailable(source, _network_reason(e), tried=tried, looked_in=cache, env="HF_HOME") from None


def _verify_hf_blob(source: WeightsSource, path: Path, cache: Path) -> None:
    """Check the blob behind a hub cache entry against the SHA-256 the hub publishes for it.

    The hub cache names a large file's blob after its LFS SHA-256 (the server's ETag), which the
    client itself does not check; a mismatching blob and its snapshot link are deleted.
    """
    blob = path.resolve()
    expected = source.sha256.lower() if source.sha256 else blob.name
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        return  # a small, non-LFS file: the hub publishes a git hash of it, not a SHA-256
    stamp = (blob.stat().st_size, blob.stat().st_mtime_ns)
    if _verified.get(str(blob)) != stamp:
        try:
            _verify(source, blob, [("sha256", expected, "full")], str(cache))
        except WeightsError:
            path.unlink(missing_ok=True)
            raise
        _verified[str(blob)] = stamp


def _resolve_hf(source: WeightsSource, *, download: bool, progress: bool,
                on_progress: fetch.Progress | None = None) -> Path:
    assert source.hf_repo is not None
    filename = source.hf_filename or "model.safetensors"
    cache = hf_cache_dir()
    tried = f"Hugging Face Hub repo {source.hf_repo}, file {filename}"
    # Released weights do not change: a cached file is used without asking the network.
    found = _hf_cached(source)
    if found is None:
        if not download:
            raise _unavailable(source, "it is not in the cache and downloading is turned off",
                               tried=tried, looked_in=cache, env="HF_HOME")
        found = _hf_download(source, filename, cache, tried, progress, on_progress)
    path = Path(found)
    _verify_hf_blob(source, path, cache)
    return path


def resolve_file(source: WeightsSource, *, download: bool = True, progress: bool = True,
                 on_progress: fetch.Progress | None = None) -> Path:
    """Local path of the weights file, downloading it into the cache when needed.

    Built-in files are returned as they are. URL sources are downloaded into
    :func:`torch_cache_dir` through a ``.part`` file that a later try continues (pytorchcv's
    ``.pth.zip`` is unpacked, keeping the ``.pth``); Hugging Face sources with
    ``hf_hub_download``. ``on_progress(bytes, total_or_None)`` is called as bytes arrive.
    SHA-256 (full, the prefix in a ``download.pytorch.org`` file name, or the hub's LFS
    SHA-256) and pytorchcv's SHA-1 are verified; a mismatching file is deleted and
    :class:`WeightsError` raised: the cache never holds a partial or unverified file. When the
    file is not cached and cannot be downloaded, :class:`WeightsUnavailableError` says what was
    tried, where it looked and how to get the file.
    """
    if source.path is not None:
        if not source.path.is_file():
            raise WeightsUnavailableError(f"built-in checkpoint {source.path} is missing")
        return source.path
    if source.url:
        return _resolve_url(source, download=download, progress=progress, on_progress=on_progress)
    if source.hf_repo:
        return _resolve_hf(source, download=download, progress=progress, on_progress=on_progress)
    name = _variant_name(source)
    raise WeightsUnavailableError(
        f"The weights of {name or source.description!r} ({source.description}) cannot be downloaded "
        f"automatically; {source.manual or 'pass a checkpoint file with --weights FILE'}"
    )
