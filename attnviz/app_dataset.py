"""The app's "Dataset" tab, without gradio: safe extraction of an uploaded zip of images,
a bounded analysis run, and the figures / files the tab shows.

An upload is refused (:class:`UploadError`, one line saying what is accepted) when it is not a
zip, holds a name that would land outside the scratch folder (absolute, ``..``, drive letters,
links), declares more than :data:`MAX_ZIP_BYTES` uncompressed or compresses suspiciously well
(a zip bomb), has more than :data:`MAX_ZIP_FILES` members, or holds no images. Extraction
writes only inside the given scratch folder and never more bytes than each member declared.
"""
from __future__ import annotations

import shutil
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .analysis import Analysis, SourceError, analyze
from .analysis.plots import excitation_figure, save_png, saturation_figure, spatial_figure, specificity_figure
from .analysis.sources import IMAGE_SUFFIXES
from .inputs.gate import FileRefused, one_line, open_file

MAX_ZIP_FILES = 5000
MAX_ZIP_BYTES = 512 * 2**20  # uncompressed total
MAX_ZIP_FILE_BYTES = 512 * 2**20  # the zip file itself (the app's upload limit is lower)
MAX_RATIO = 100  # uncompressed / compressed, per member above 1 MB (images barely compress)
MAX_APP_IMAGES = 2000
ZIP_ACCEPTED = (f"a .zip of images ({', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES)}), either in one "
                f"subfolder per class or loose, at most {MAX_ZIP_FILES} files and {MAX_ZIP_BYTES // 2**20} MB "
                "uncompressed, names inside the archive only (no absolute paths, '..' or links)")


class UploadError(ValueError):
    """An upload the Dataset tab refuses; str() is one line ending with what is accepted."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"{one_line(problem)}; accepted: {ZIP_ACCEPTED}")


def _safe_name(info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":") or "\x00" in name:
        raise UploadError(f"the zip holds an unsafe file name {name[:80]!r}")
    path = PurePosixPath(name)
    if any(part == ".." for part in path.parts):
        raise UploadError(f"the zip holds a name that leaves its folder ({name[:80]!r})")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UploadError(f"the zip holds a link ({name[:80]!r})")
    return path


def _check_members(zf: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    infos = zf.infolist()
    if len(infos) > MAX_ZIP_FILES:
        raise UploadError(f"the zip has {len(infos)} members, more than {MAX_ZIP_FILES}")
    total = sum(i.file_size for i in infos)
    if total > MAX_ZIP_BYTES:
        raise UploadError(f"the zip would unpack to {total / 2**20:.0f} MB, more than {MAX_ZIP_BYTES // 2**20} MB")
    members = []
    for info in infos:
        path = _safe_name(info)
        if info.file_size > 2**20 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise UploadError(f"{info.filename[:80]!r} compresses {info.file_size // max(info.compress_size, 1)}:1, "
                              "refused as a possible zip bomb")
        if not info.is_dir() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            members.append((info, path))
    if not members:
        raise UploadError("the zip holds no images")
    return members


def extract_images(zip_path: str | Path, dest: Path) -> Path:
    """Unpack the images of ``zip_path`` into ``dest`` (created; nothing is written outside it)."""
    try:  # through the file gate: a regular file within the size limit, else refused unread
        fh = open_file(zip_path, accepted="a .zip file", max_bytes=MAX_ZIP_FILE_BYTES)
    except FileRefused as e:
        raise UploadError(f"{e.source}: {e.problem}") from None
    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, ValueError):
        fh.close()
        raise UploadError(f"{Path(zip_path).name} is not a zip archive") from None
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    with fh, zf:
        for info, path in _check_members(zf):
            target = (root / Path(*path.parts)).resolve()
            if root not in target.parents:  # belt and braces after _safe_name
                raise UploadError(f"the zip holds a name that leaves its folder ({info.filename[:80]!r})")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    # Never more than the member declared: a lying header cannot fill the disk.
                    copied = _copy_bounded(src, out, info.file_size)
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as e:
                raise UploadError(f"{info.filename[:80]!r} cannot be unpacked ({type(e).__name__})") from None
            if copied > info.file_size:
                raise UploadError(f"{info.filename[:80]!r} unpacks to more than it declares")
    return dest


def _copy_bounded(src: Any, out: Any, limit: int) -> int:
    copied = 0
    while True:
        chunk = src.read(min(1 << 20, limit + 1 - copied))
        if not chunk:
            return copied
        copied += len(chunk)
        if copied > limit:
            return copied
        out.write(chunk)


def _dataset_root(folder: Path) -> Path:
    """Zips usually wrap everything in one top folder: its subfolders are then the classes."""
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
        if len(entries) != 1 or not entries[0].is_dir():
            return folder
        folder = entries[0]


@dataclass
class DatasetViews:
    """What the tab shows for one analysis: figure files, the summary, the analysis file."""

    excitation: str | None
    specificity: str | None
    saturation: str | None
    spatial: str | None
    summary: dict
    analysis_file: str
    blocks: list[str]
    classes: list[str]


def run_analysis(source: str, loaded: Any, scratch: Path, *, max_images: int,
                 progress: Callable[[int, int], None] | None = None) -> Analysis:
    """Analyse ``source`` ("synthetic:N" or an uploaded zip) with at most ``max_images`` images.

    Decoding runs in this process (no DataLoader workers forked from a threaded server)."""
    if not source.startswith("synthetic:"):
        source = str(_dataset_root(extract_images(source, scratch / "images")))
    try:
        return analyze(source, loaded, num_workers=0, max_images=min(max_images, MAX_APP_IMAGES),
                       batch_size=32, progress=progress)
    except SourceError as e:
        raise UploadError(str(e).split("; accepted:")[0]) from None
    finally:
        shutil.rmtree(scratch / "images", ignore_errors=True)


def picked_figures(analysis: Analysis, folder: Path, blocks: list[str] | None = None,
                   classes: list[str] | None = None) -> tuple[str | None, str | None]:
    """The two figures that follow the block and class pickers, drawn into ``folder``: the
    excitation profiles and the deepest spatial block's mean map (None where there is none)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [b.name for b in analysis.channel_blocks]
    blocks = [b for b in (blocks or []) if b in names] or None
    classes = [c for c in (classes or []) if c in analysis.classes] or None
    excitation = spatial = None
    if analysis.channel_blocks and analysis.n_images:
        excitation = str(save_png(excitation_figure(analysis, blocks, classes), folder / "excitation.png"))
    spatial_blocks = [b.name for b in analysis.blocks if b.spatial_sum is not None]
    if spatial_blocks and analysis.n_images:
        spatial = str(save_png(spatial_figure(analysis, spatial_blocks[-1], classes), folder / "spatial.png"))
    return excitation, spatial


def views(analysis: Analysis, folder: Path, blocks: list[str] | None = None,
          classes: list[str] | None = None) -> DatasetViews:
    """Draw the tab's figures for ``analysis`` into ``folder`` and save the analysis there."""
    excitation, spatial = picked_figures(analysis, folder, blocks, classes)
    specificity = saturation = None
    if analysis.channel_blocks and analysis.n_images:
        specificity = str(save_png(specificity_figure(analysis), folder / "specificity.png"))
    if analysis.blocks and analysis.n_images:
        saturation = str(save_png(saturation_figure(analysis), folder / "saturation.png"))
    path = analysis.save(folder / "analysis.npz")
    return DatasetViews(excitation=excitation, specificity=specificity, saturation=saturation, spatial=spatial,
                        summary=analysis.summary(), analysis_file=str(path),
                        blocks=[b.name for b in analysis.channel_blocks], classes=list(analysis.classes))
