"""Where an analysis gets its images: a folder, a CSV/TSV list or the built-in synthetic set.

:func:`resolve_source` turns what the user typed into a :class:`ResolvedSource` — a fixed,
ordered list of items ``(reference, label)`` — or raises :class:`SourceError` with one line
saying what was wrong and what is accepted. The order is deterministic (sorted paths), so
item ``i`` is the same image in every process and every run: shards are item ranges and a
resumed run skips the ranges already done.

:class:`ItemsDataset` decodes and preprocesses items in DataLoader workers with the model's
own :class:`~attnviz.preprocess.PreprocessConfig`; a file that cannot be decoded becomes a
placeholder carrying its error, so it is counted and listed instead of stopping the run.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..inputs.gate import FileRefused, one_line, open_file
from ..preprocess import PreprocessConfig, prepare

#: File name endings read as images in folders (others are ignored, not reported).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
#: The synthetic held-out stream: a seed used neither in training (0) nor validation (1000).
SYNTHETIC_SEED = 2000
SYNTHETIC_PREFIX = "synthetic:"
#: The largest list file read (a row is ~50 bytes: about 10^7 rows).
MAX_LIST_BYTES = 512 * 2**20
LIST_ACCEPTED = "a .csv (comma) or .tsv (tab) file of 'path,label' rows"
ACCEPTED = ("a folder of class subfolders (ImageFolder), a folder of images, a .csv/.tsv file of "
            "'path,label' rows, or synthetic:N (the built-in held-out synthetic set)")


class SourceError(ValueError):
    """A source that cannot be analysed; ``str(err)`` is one line naming it and what is accepted."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))  # a path may hold a newline; the message may not


@dataclass(frozen=True)
class ResolvedSource:
    """The ordered items of a source. ``labels[i]`` indexes ``classes`` (``-1``: unlabelled);
    ``refs[i]`` is a file path, or the sample index for the synthetic set."""

    kind: str  # "imagefolder" | "folder" | "table" | "synthetic"
    description: str
    refs: tuple[Any, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]  # label names; empty when unlabelled
    synthetic_size: int = 0

    @property
    def labelled(self) -> bool:
        return bool(self.classes)

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def fingerprint(self) -> str:
        """Identifies the exact item list, so merged shards and resumed runs are checked to be
        parts of the same source."""
        h = hashlib.sha256(f"{self.kind}|{self.synthetic_size}|{'|'.join(self.classes)}".encode())
        for ref, label in zip(self.refs, self.labels):
            h.update(f"\n{ref}\t{label}".encode("utf-8", "surrogateescape"))
        return h.hexdigest()[:16]

    def name_of(self, i: int) -> str:
        """How item ``i`` is named in lists of skipped files."""
        ref = self.refs[i]
        return f"synthetic #{ref}" if self.kind == "synthetic" else str(ref)


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def _from_folder(root: Path) -> ResolvedSource:
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    per_class = [(d.name, sorted(p for p in d.rglob("*") if _is_image(p))) for d in subdirs]
    per_class = [(name, files) for name, files in per_class if files]
    loose = sorted(p for p in root.iterdir() if _is_image(p))
    if per_class and not loose:  # ImageFolder: one class per subfolder holding images
        refs = tuple(str(p) for _, files in per_class for p in files)
        labels = tuple(k for k, (_, files) in enumerate(per_class) for _ in files)
        classes = tuple(name for name, _ in per_class)
        return ResolvedSource("imagefolder", f"{root} (ImageFolder, {len(classes)} classes)", refs, labels, classes)
    files = sorted(p for p in root.rglob("*") if _is_image(p))
    if not files:
        raise SourceError(f"{root}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} files); "
                          f"accepted: {ACCEPTED}")
    return ResolvedSource("folder", f"{root} (unlabelled images)", tuple(str(p) for p in files),
                          (-1,) * len(files), ())


def _read_rows(path: Path) -> list[list[str]]:
    """The non-empty rows of a list file. Bytes that are not UTF-8 are kept as they are (as
    ``surrogateescape`` characters), so a list of non-UTF-8 file names names the same files."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        rows = []
        # streamed row by row: a list near MAX_LIST_BYTES is never held whole as bytes and text
        with open_file(path, accepted=LIST_ACCEPTED, max_bytes=MAX_LIST_BYTES) as raw, io.TextIOWrapper(
                raw, encoding="utf-8-sig", errors="surrogateescape", newline="") as text:
            for r in csv.reader(text, delimiter=delimiter):
                if any("\0" in c for c in r):  # binary data, or UTF-16 text: not a list of UTF-8 (or byte) names
                    raise csv.Error("it holds NUL bytes: a binary file, or text saved as UTF-16; save it as UTF-8")
                if r and any(c.strip() for c in r):
                    rows.append(r)
    except FileRefused as e:
        raise SourceError(f"{path}: {e.problem}; accepted: {LIST_ACCEPTED}") from None
    except (OSError, csv.Error) as e:
        raise SourceError(f"{path}: unreadable list file ({type(e).__name__}: {e}); accepted: "
                          f"{LIST_ACCEPTED}") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] in (["path"], ["path", "label"]):
        rows = rows[1:]  # header
    return rows


def _from_table(path: Path) -> ResolvedSource:
    rows = _read_rows(path)
    if not rows:
        raise SourceError(f"{path}: the list has no rows; accepted: 'path,label' rows "
                          "(paths relative to the list's folder)")
    widths = {len(r) for r in rows}
    if not widths <= {1, 2} or len(widths) != 1:
        raise SourceError(f"{path}: every row must have the same 1 (path) or 2 (path,label) columns, "
                          f"found rows with {sorted(widths)} columns")
    base = path.parent
    refs = tuple(str(base / r[0].strip()) for r in rows)
    if widths == {1}:
        return ResolvedSource("table", f"{path} (unlabelled list)", refs, (-1,) * len(refs), ())
    names = [r[1].strip() for r in rows]
    if any(not n for n in names):
        raise SourceError(f"{path}: row {names.index('') + 1} has an empty label")
    classes = tuple(sorted(set(names)))
    index = {c: k for k, c in enumerate(classes)}
    return ResolvedSource("table", f"{path} ({len(classes)} classes)", refs,
                          tuple(index[n] for n in names), classes)


def _synthetic(spec: str, size: int) -> ResolvedSource:
    from ..synthetic import CLASSES

    text = spec[len(SYNTHETIC_PREFIX):]
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n <= 0:
        raise SourceError(f"{spec}: synthetic:N needs a positive number of images, e.g. synthetic:2000")
    from ..synthetic import generate

    # The label is drawn before anything size-dependent, so a 32-px render gives it cheaply.
    labels = tuple(generate(i, seed=SYNTHETIC_SEED, size=32).label for i in range(n))
    return ResolvedSource("synthetic", f"synthetic:{n} (held-out seed {SYNTHETIC_SEED}, {size} px)",
                          tuple(range(n)), labels, CLASSES, synthetic_size=size)


def resolve_source(source: str | os.PathLike, *, synthetic_size: int = 96) -> ResolvedSource:
    """The items of ``source`` (see :data:`ACCEPTED`); :class:`SourceError` if unusable."""
    text = os.fspath(source)
    if text.startswith(SYNTHETIC_PREFIX):
        return _synthetic(text, synthetic_size)
    path = Path(text)
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder; accepted: {ACCEPTED}")
    if path.is_dir():
        try:
            return _from_folder(path)
        except PermissionError as e:
            raise SourceError(f"{path}: cannot list the folder ({e.strerror})") from None
    if path.suffix.lower() in (".csv", ".tsv"):
        return _from_table(path)
    raise SourceError(f"{path}: not a folder nor a .csv/.tsv list; accepted: {ACCEPTED}")


def select(src: ResolvedSource, classes: list[str] | tuple[str, ...] | None = None,
           max_images: int | None = None) -> ResolvedSource:
    """Keep only ``classes`` (names of the source's labels) and at most ``max_images`` items.

    ``max_images`` takes an evenly spread, seeded subset in the source's order (not its first
    items, which in an ImageFolder would all be of the first class).
    """
    keep = np.arange(len(src))
    out_classes = src.classes
    if classes:
        if not src.labelled:
            raise SourceError(f"{src.description}: --classes needs a labelled source (class subfolders "
                              "or a 'path,label' list)")
        missing = [c for c in classes if c not in src.classes]
        if missing:
            shown = ", ".join(src.classes[:20]) + (" ..." if len(src.classes) > 20 else "")
            raise SourceError(f"classes {', '.join(missing)} do not exist in {src.description}; "
                              f"its classes: {shown}")
        wanted = [src.classes.index(c) for c in classes]
        keep = keep[np.isin(np.asarray(src.labels, dtype=np.int64), wanted)]
        remap = {old: new for new, old in enumerate(wanted)}
        out_classes = tuple(classes)
    else:
        remap = None
    if max_images is not None:
        if max_images <= 0:
            raise SourceError(f"max_images must be positive, got {max_images}")
        if len(keep) > max_images:
            chosen = np.random.default_rng(0).choice(len(keep), size=max_images, replace=False)
            keep = keep[np.sort(chosen)]
    labels = tuple(remap[src.labels[i]] if remap else src.labels[i] for i in keep)
    desc = src.description
    if classes or (max_images is not None and len(keep) < len(src)):
        desc += f", {len(keep)} of {len(src)} images"
    return ResolvedSource(src.kind, desc, tuple(src.refs[i] for i in keep), labels, out_classes,
                          src.synthetic_size)


class ItemsDataset(Dataset):
    """Items ``indices`` of ``src`` as ``(tensor [3,S,S] or None, label, index, error)``."""

    def __init__(self, src: ResolvedSource, indices: range | list[int], config: PreprocessConfig) -> None:
        self.src, self.indices, self.config = src, indices, config

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[torch.Tensor | None, int, int, str]:
        i = self.indices[k]
        try:
            if self.src.kind == "synthetic":
                from ..synthetic import generate

                image: Any = generate(self.src.refs[i], seed=SYNTHETIC_SEED, size=self.src.synthetic_size).image
            else:
                image = self.src.refs[i]
            return prepare(image, self.config).tensor[0], self.src.labels[i], i, ""
        except Exception as e:  # noqa: BLE001 - any undecodable file is listed, never fatal
            return None, self.src.labels[i], i, str(e).splitlines()[0] if str(e) else type(e).__name__


@dataclass
class Batch:
    x: torch.Tensor  # [n_ok, 3, S, S]
    labels: np.ndarray  # [n_ok] int64
    indices: np.ndarray  # [n_ok] item indices
    errors: list[tuple[int, str]]  # (item index, message) of items that could not be decoded
    size: int  # items in the batch, decoded or not


def collate(items: list[tuple[torch.Tensor | None, int, int, str]]) -> Batch:
    ok = [it for it in items if it[0] is not None]
    x = torch.stack([it[0] for it in ok]) if ok else torch.empty(0)
    return Batch(x=x, labels=np.asarray([it[1] for it in ok], dtype=np.int64),
                 indices=np.asarray([it[2] for it in ok], dtype=np.int64),
                 errors=[(it[2], it[3]) for it in items if it[0] is None], size=len(items))
