"""The kinds of bad input beyond image files: checkpoints, dataset sources and zips, app requests.

Each :class:`Case` has a maker and is a parameter of a test in tests/test_hostile_inputs.py or
tests/test_app_hostile.py; the plain :class:`~tests.corpus.Kind` entries name the existing test
that checks them. ``tests.corpus.all_kinds()`` lists them all for docs/ROBUSTNESS.md.
"""
from __future__ import annotations

import json
import stat
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .corpus import Kind, _fifo, _link

TB = 1 << 40


@dataclass(frozen=True)
class Case(Kind):
    """A kind with its maker: ``make(folder) -> path`` writes the input."""

    make: Callable[[Path], Path] | None = None


def _file(name: str, data: bytes | Callable[[], bytes]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data if isinstance(data, bytes) else data())
        return path
    return make


def _special(name: str, how: Callable[[Path], None]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        how(path)
        return path
    return make


def safetensors(header: dict, data: bytes = b"\0" * 16, claimed: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if claimed is None else claimed) + raw + data


def _tensor(dtype: str, shape: list[int], begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def _torch_file(name: str, state: Callable[[], dict]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        import torch

        path = folder / name
        torch.save(state(), path)
        return path
    return make


def _safetensors_file(name: str, state: Callable[[], dict]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        from safetensors.torch import save_file

        path = folder / name
        save_file(state(), str(path))
        return path
    return make


def _with_value(key: str, value: float) -> Callable[[], dict]:
    def state() -> dict:
        import torch

        t = torch.ones(4, 3)
        t[1, 2] = value
        return {"fc.bias": torch.zeros(4), key: t}
    return state


def _zip(name: str, members: dict[str, bytes]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        with zipfile.ZipFile(path, "w") as zf:
            for member, data in members.items():
                zf.writestr(member, data)
        return path
    return make


LIB = "library"
T_PATH = "test_file_gate.py::test_impossible_paths_are_refused_by_name"
PATHS: list[Case] = [
    Case("x…x.png (300 bytes)", "a file name longer than the file system allows", "cannot access file (File name too long)",
         LIB, T_PATH, lambda folder: folder / ("x" * 300 + ".png")),
    Case("a\\0b.png", "a path holding a NUL byte", "the file name contains a NUL byte", LIB, T_PATH,
         lambda folder: folder / "a\0b.png"),
    Case("/dev/zero", "/dev/zero itself", "zero: is a character device, not a regular file", LIB, T_PATH,
         lambda folder: Path("/dev/zero")),
]
LIB_CLI = "library, CLI (--weights)"
T_CKPT = "test_hostile_inputs.py::test_bad_checkpoint_is_refused_naming_it"
T_WF = "test_weights_files.py::"
CHECKPOINTS: list[Case] = [
    Case("lying_extent.safetensors", "a safetensors header claiming a 1 TB tensor in a 100-byte file",
         "the header claims tensor 'w' at bytes 0..1099511627776 of the data, but the file holds only 16", LIB_CLI, T_CKPT,
         _file("lying_extent.safetensors", safetensors({"w": _tensor("F32", [TB // 4], 0, TB)}))),
    Case("lying_length.safetensors", "a safetensors header length of 1 TB", "its header claims 1099511627776 bytes", LIB_CLI,
         T_CKPT, _file("lying_length.safetensors", safetensors({}, claimed=TB))),
    Case("not_json.safetensors", "a safetensors header that is not JSON", "its header is not JSON", LIB_CLI, T_CKPT,
         _file("not_json.safetensors", struct.pack("<Q", 6) + b"{'w':1" + b"\0" * 8)),
    Case("overlap.safetensors", "two tensors sharing bytes", "tensors 'a' and 'b' overlap", LIB_CLI, T_CKPT,
         _file("overlap.safetensors", safetensors({"a": _tensor("F32", [2], 0, 8), "b": _tensor("F32", [2], 4, 12)}))),
    Case("bad_dtype.safetensors", "an unknown dtype", "tensor 'a' has an unknown dtype 'Q99'", LIB_CLI, T_CKPT,
         _file("bad_dtype.safetensors", safetensors({"a": _tensor("Q99", [2], 0, 8)}))),
    Case("short_shape.safetensors", "a shape that does not fill its bytes", "tensor 'a': shape [3] of F32 does not fill its 8 bytes",
         LIB_CLI, T_CKPT, _file("short_shape.safetensors", safetensors({"a": _tensor("F32", [3], 0, 8)}))),
    Case("negative_shape.safetensors", "a negative dimension", "tensor 'a' has an invalid shape [-2]", LIB_CLI, T_CKPT,
         _file("negative_shape.safetensors", safetensors({"a": _tensor("F32", [-2], 0, 8)}))),
    Case("nan.safetensors", "a NaN in one weight", "tensor 'layer1.0.conv1.weight' holds 1 non-finite value(s) (NaN or Inf)",
         LIB_CLI, T_CKPT, _safetensors_file("nan.safetensors", _with_value("layer1.0.conv1.weight", float("nan")))),
    Case("inf.pth", "an Inf in one weight (torch file)", "tensor 'fc.weight' holds 1 non-finite value(s)", LIB_CLI, T_CKPT,
         _torch_file("inf.pth", _with_value("fc.weight", float("inf")))),
    Case("fifo.pth", "a FIFO given as the checkpoint", "is a FIFO (named pipe), not a regular file", LIB_CLI, T_CKPT,
         _special("fifo.pth", _fifo)),
    Case("dev_zero.safetensors", "a link to /dev/zero given as the checkpoint", "is a character device", LIB_CLI, T_CKPT,
         _special("dev_zero.safetensors", _link("/dev/zero"))),
    Case("folder.pth", "a directory given as the checkpoint", "is a directory", LIB_CLI, T_CKPT,
         _special("folder.pth", lambda p: p.mkdir())),
    Case("empty.pth", "an empty checkpoint file", "file is empty", LIB_CLI, T_CKPT, _file("empty.pth", b"")),
    Case("two_weights.zip", "a zip holding two weights files", "must hold exactly one weights file", LIB_CLI, T_CKPT,
         _zip("two_weights.zip", {"a.pth": b"x", "b.safetensors": b"y"})),
]
CHECKPOINTS_CHECKED_ELSEWHERE: list[Kind] = [
    Kind("evil.pth", "a torch.save pickle whose unpickling calls os.system", "refused: loading it would import and call code "
         "named in the file (GLOBAL posix.system …); the marker file is never created", LIB_CLI,
         T_WF + "test_pickle_that_runs_code_is_refused[torch.save]"),
    Kind("evil.pth.zip", "the same pickle inside a .zip", "refused (GLOBAL posix.system); marker never created", LIB_CLI,
         T_WF + "test_pickle_that_runs_code_is_refused[zip]"),
    Kind("evil-raw.pth", "a raw pickle (protocol 2 and 5) that would call os.system",
         "Only safetensors files and torch files holding plain weights … are accepted; marker never created", LIB_CLI,
         T_WF + "test_pickle_that_runs_code_is_refused[pickle-2], ::test_pickle_that_runs_code_is_refused[pickle-5]"),
    Kind("a.pth", "text named .pth", "not a readable weights file", LIB_CLI, T_WF + "test_non_weights_files_are_rejected_cleanly"),
    Kind("b.safetensors", "16 zero bytes named .safetensors", "not a valid safetensors file", LIB_CLI,
         T_WF + "test_non_weights_files_are_rejected_cleanly"),
    Kind("c.pth", "a torch file of numbers, no tensors", "does not contain a state dict of tensors", LIB_CLI,
         T_WF + "test_non_weights_files_are_rejected_cleanly"),
    Kind("mine.safetensors (shapes)", "weights of the right blocks with other shapes",
         "shape mismatch: fc.bias (7,)≠(1000,), fc.weight (7, 512)≠(1000, 512)", LIB_CLI,
         T_WF + "test_user_checkpoint_that_does_not_fit_names_the_keys"),
    Kind("mine.safetensors (keys)", "weights of another block type", "missing keys: layer1.0.attn.fc1.bias …; "
         "unexpected keys: layer1.0.attn.channel.mlp.fc1.bias …", LIB_CLI,
         T_WF + "test_user_checkpoint_that_does_not_fit_names_the_keys"),
]


def _rows(name: str, rows: list[str], encoding: str = "utf-8") -> Callable[[Path], Path]:
    return _file(name, lambda: "".join(r + "\n" for r in rows).encode(encoding))


T_SRC = "test_hostile_inputs.py::test_bad_list_file_is_refused_naming_it"
T_AN = "test_analysis.py::test_bad_sources_give_one_line_errors"
SRC = "library, CLI (analyze)"
SOURCES: list[Case] = [
    Case("utf16.csv", "a list saved as UTF-16", "it holds NUL bytes: a binary file, or text saved as UTF-16", SRC, T_SRC,
         _rows("utf16.csv", ["path,label", "a.png,x"], "utf-16")),
    Case("header_only.csv", "a list with a header and no rows", "the list has no rows", SRC, T_SRC,
         _rows("header_only.csv", ["path,label"])),
    Case("empty_label.csv", "a row with an empty label", "row 2 has an empty label", SRC, T_SRC,
         _rows("empty_label.csv", ["a.png,x", "b.png, "])),
    Case("fifo.csv", "a FIFO given as the list", "is a FIFO (named pipe), not a regular file", SRC, T_SRC,
         _special("fifo.csv", _fifo)),
    Case("new\nline.csv", "a list whose name holds a newline (and no rows)", "the list has no rows", SRC, T_SRC,
         _rows("new\nline.csv", ["path,label"])),
    Case("huge_field.csv", "a 200 kB path field", "unreadable list file", SRC, T_SRC,
         _rows("huge_field.csv", ["x" * 200_000 + ".png,a"])),
]
SOURCES_CHECKED_ELSEWHERE: list[Kind] = [
    Kind("million.csv", "a list of 10^5 rows of missing files (10^6 measured: see below)", "finishes: every row counted as "
         "skipped, the first 100 listed", SRC, "test_hostile_inputs.py::test_list_of_100k_missing_files_finishes_with_a_count"),
    Kind("latin1.csv", "a list in latin-1 naming files whose names are latin-1 bytes, with a UTF-8 BOM list beside it",
         "ok: the same files are found", SRC, "test_hostile_inputs.py::test_lists_of_odd_names_and_hostile_rows"),
    Kind("rows → FIFO, /dev/zero", "list rows naming a FIFO and /dev/zero", "skipped at once and counted; the run finishes",
         SRC, "test_hostile_inputs.py::test_lists_of_odd_names_and_hostile_rows"),
    Kind("odd names/", "a folder of odd names (spaces, leading '-', '$()', emoji, 255 bytes, latin-1 bytes)",
         "ok: all analysed; the report writes \\xNN for non-UTF-8 bytes", SRC,
         "test_hostile_inputs.py::test_lists_of_odd_names_and_hostile_rows"),
    Kind("bin.csv", "binary bytes named .csv", "unreadable list file", SRC, T_AN),
    Kind("ragged.csv", "rows of 2 and 3 columns", "every row must have the same 1 (path) or 2 (path,label) columns", SRC, T_AN),
    Kind("notes.txt", "a text file that is not a list", "not a folder nor a .csv/.tsv list", SRC, T_AN),
    Kind("empty/", "a folder without images", "no images found", SRC, T_AN),
    Kind("synthetic:zero", "a synthetic set of no images", "synthetic:N needs a positive number", SRC, T_AN),
]

T_ZIP = "test_hostile_inputs.py::test_bad_zip_is_refused_before_anything_is_written"
T_AD = "test_app_dataset.py::test_bad_zips_are_refused_before_anything_is_written"
APPZ = "app (/analyze)"


def _zip_link(folder: Path) -> Path:
    path = folder / "link.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("dir/link.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    return path


ZIPS: list[Case] = [
    Case("backslash.zip", "a member named ..\\evil.png", "unsafe file name", APPZ, T_ZIP,
         _zip("backslash.zip", {"..\\evil.png": b"x"})),
    Case("dotdot_deep.zip", "a member named ok/../../../evil.png", "leaves its folder", APPZ, T_ZIP,
         _zip("dotdot_deep.zip", {"ok/../../../evil.png": b"x"})),
    Case("nested_link.zip", "a symlink member in a subfolder", "holds a link", APPZ, T_ZIP, _zip_link),
    Case("many.zip", "more members than the limit", "members, more than", APPZ, T_ZIP,
         _zip("many.zip", {f"{i}.png": b"x" for i in range(12)})),
    Case("long_member.zip", "a member whose name is 300 bytes", "cannot be unpacked", APPZ, T_ZIP,
         _zip("long_member.zip", {"d/" + "x" * 300 + ".png": b"x"})),
    Case("fifo.zip", "a FIFO given as the zip", "is a FIFO (named pipe), not a regular file", APPZ, T_ZIP,
         _special("fifo.zip", _fifo)),
]
ZIPS_CHECKED_ELSEWHERE: list[Kind] = [
    Kind("../evil.png", "a member leaving the folder", "leaves its folder", APPZ, T_AD),
    Kind("/tmp/evil.png", "an absolute member name", "unsafe file name", APPZ, T_AD),
    Kind("C:/evil.png", "a drive-letter member name", "unsafe file name", APPZ, T_AD),
    Kind("link.png", "a symlink member", "link", APPZ, T_AD),
    Kind("bomb.png (8 MB of zeros)", "a member compressing over 100:1", "refused as a possible zip bomb", APPZ, T_AD),
    Kind("notes.zip", "a zip without images", "the zip holds no images", APPZ, T_AD),
    Kind("photo.zip", "a PNG named .zip", "is not a zip archive", APPZ, "test_app_dataset.py::test_not_a_zip_and_too_large"),
    Kind("big.zip", "a zip unpacking to more than the limit", "would unpack to", APPZ,
         "test_app_dataset.py::test_not_a_zip_and_too_large"),
]

T_FD = "test_app_hostile.py::test_file_payloads_the_server_never_handed_out_are_refused"
APP = "app (HTTP API)"
APP_LIVE = "app (HTTP API, the app in the test's process)"
APP_KINDS: list[Kind] = [
    Kind("FileData /etc/passwd", "an image payload whose path is /etc/passwd", "was not uploaded by a user", APP, T_FD),
    Kind("FileData app.py", "an image payload pointing at the app's source", "was not uploaded by a user", APP, T_FD),
    Kind("FileData checkpoint", "an image payload pointing at a built-in checkpoint", "was not uploaded by a user", APP, T_FD),
    Kind("FileData weights", "a weights payload pointing at a built-in checkpoint", "was not uploaded by a user", APP, T_FD),
    Kind("FileData zip", "a zip payload pointing at /etc/passwd", "was not uploaded by a user", APP, T_FD),
    Kind("FileData cache", "an image payload pointing at the server's weights cache folder", "was not uploaded by a user", APP, T_FD),
    Kind("FileData ../", "a path inside the upload folder climbing out with ../", "was not uploaded by a user", APP, T_FD),
    Kind("FileData upload folder", "the upload folder itself", "is a directory", APP, T_FD),
    Kind("FileData scratch folder", "the app's output folder itself", "is a directory", APP, T_FD),
    Kind("FileData http://127.0.0.1", "a URL payload to a loopback address (SSRF)", "failed validation", APP, T_FD),
    Kind("GET file=/etc/passwd", "file routes outside the app's assets and outputs", "403/404",
         APP, "test_app_robustness.py::test_serves_no_file_outside_its_assets_and_outputs"),
    Kind("201 MB upload", "an upload over the 200 MB limit", "413; the client says 'maximum file size'", APP,
         "test_app.py::test_upload_over_size_limit_is_refused"),
    Kind("no image", "a request without an image", "No image: upload one …", APP, "test_app.py::test_missing_image"),
    Kind("queue full", "more waiting requests than ATTNVIZ_MAX_QUEUE", "HTTP 503 'Queue is full' at once", APP_LIVE,
         "test_app_hostile.py::test_full_queue_answers_busy_and_disconnects_leave_nothing"),
    Kind("disconnect", "clients that leave mid-request (running and queued)", "no hooks, no queued event, no unpacked "
         "images left; the next request answers the same", APP_LIVE,
         "test_app_hostile.py::test_full_queue_answers_busy_and_disconnects_leave_nothing"),
    Kind("300 requests", "300 requests' outputs", "at most ATTNVIZ_MAX_SCRATCH_FOLDERS folders kept, oldest removed",
         "app (scratch policy; live in bench/load_mixed.py)",
         "test_app_hostile.py::test_scratch_folders_stay_bounded_over_300_requests"),
]

OTHER_KINDS: list[Kind] = (PATHS + CHECKPOINTS + CHECKPOINTS_CHECKED_ELSEWHERE + SOURCES + SOURCES_CHECKED_ELSEWHERE + ZIPS
                           + ZIPS_CHECKED_ELSEWHERE + APP_KINDS)

__all__ = ["CHECKPOINTS", "OTHER_KINDS", "PATHS", "SOURCES", "ZIPS", "Case"]
