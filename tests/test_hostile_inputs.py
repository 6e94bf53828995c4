"""Hostile checkpoints, dataset lists and zips: each refused in one line naming the file, at once,
with nothing run or written; a list of 10^5 missing files finishes with a count; lists and
folders of odd names work. The CLI runs in-process (``attnviz.cli.main``)."""
from __future__ import annotations

import json
import os
import struct
import threading
import time
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from attnviz import app_dataset as D
from attnviz import cli
from attnviz.analysis import SourceError, analyze
from attnviz.inputs.gate import one_line
from attnviz.models import weights as W
from attnviz.models.weights.files import check_safetensors_header

from .corpus import LONG_NAME, NON_UTF8_NAME
from .corpus_kinds import CHECKPOINTS, SOURCES, ZIPS, Case, safetensors

BUILTIN = "shapes_cbam_resnet"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ODD_NAMES = ["with space.png", "-leading-dash.png", "$(touch PWNED).png", "emoji_🐱.png", LONG_NAME, NON_UTF8_NAME]


def within(seconds: float, fn, *args, **kwargs):
    """``fn(...)``'s result or exception, failing (not hanging) if it takes over ``seconds``."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{getattr(fn, '__name__', fn)} did not return within {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def _ids(cases: list[Case]) -> list[str]:
    return [c.name for c in cases]


@pytest.mark.parametrize("case", CHECKPOINTS, ids=_ids(CHECKPOINTS))
def test_bad_checkpoint_is_refused_naming_it(tmp_path, case):
    path = case.make(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(W.WeightsError) as info:
        within(20, W.read_state_dict, path)
    msg = str(info.value)
    assert time.perf_counter() - t0 < 5
    assert msg.startswith(f"{path.name}: ") and "\n" not in msg and "accepted" in msg, msg
    assert case.gets in msg, msg


@pytest.mark.parametrize("name", ["fifo.pth", "lying_extent.safetensors", "nan.safetensors"])
def test_cli_weights_is_refused_at_once(tmp_path, capsys, name):
    case = next(c for c in CHECKPOINTS if c.name == name)
    path = case.make(tmp_path)
    img = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(img)
    code = within(60, cli.main, ["inspect", "--variant", BUILTIN, "--weights", str(path), "--out", str(tmp_path / "o"),
                                 "-q", str(img)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"attnviz: error: {name}: ") and case.gets in err, err
    assert err.count("\n") == 1 and not (tmp_path / "o").exists()


@pytest.mark.parametrize("case", SOURCES, ids=_ids(SOURCES))
def test_bad_list_file_is_refused_naming_it(tmp_path, case):
    path = case.make(tmp_path)
    with pytest.raises(SourceError) as info:
        within(20, analyze, path, BUILTIN, num_workers=0)
    msg = str(info.value)
    assert msg.startswith(one_line(str(path)) + ": ") and "\n" not in msg and len(msg) < 600, msg
    assert case.gets in msg, msg


def test_list_of_100k_missing_files_finishes_with_a_count(tmp_path, capsys):
    n = 100_000
    path = tmp_path / "missing.csv"
    path.write_text("path,label\n" + "".join(f"gone/{i}.png,{'ab'[i % 2]}\n" for i in range(n)))
    t0 = time.perf_counter()
    code = cli.main(["analyze", str(path), "--model", BUILTIN, "--out", str(tmp_path / "out"), "--workers", "0",
                     "--batch-size", "256", "-q"])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 1 and len(lines) == 101 and lines[-1].startswith(f"attnviz: skipped {n - 100} more files")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images"] == 0 and len(summary["skipped"]) == n
    assert summary["skipped"][0]["error"].startswith("0.png: no such file")
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"… and {n - 100} more" in report
    print(f"{n} missing files: {elapsed:.1f} s")


def _odd_folder(root: Path) -> Path:
    folder = root / "odd"
    folder.mkdir()
    for i, name in enumerate(ODD_NAMES):
        Image.fromarray(np.full((40, 40, 3), 40 * i, np.uint8)).save(folder / name, format="PNG")
    return folder


def test_lists_of_odd_names_and_hostile_rows(tmp_path, capsys):
    folder = _odd_folder(tmp_path)
    a = analyze(folder, BUILTIN, num_workers=0)
    assert a.n_images == len(ODD_NAMES) and not a.skipped
    os.mkfifo(tmp_path / "pipe.png")
    rows = [f"odd/{n},x" for n in ODD_NAMES] + ["pipe.png,y", "/dev/zero,y", "odd/gone.png,y"]
    latin1 = tmp_path / "latin1.csv"  # the names' own bytes: latin-1 for the non-UTF-8 one
    latin1.write_bytes("path,label\n".encode() + b"".join(os.fsencode(r) + b"\n" for r in rows))
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfpath,label\n" + b"".join(os.fsencode(r) + b"\n" for r in rows))
    for path in (latin1, bom):
        out = tmp_path / f"out-{path.stem}"
        code = within(120, cli.main, ["analyze", str(path), "--model", BUILTIN, "--out", str(out), "--workers", "0", "-q"])
        err = capsys.readouterr().err
        assert code == 1 and err.count("attnviz: skipped") == 3, err
        assert "pipe.png: is a FIFO" in err and "zero: is a character device" in err and "gone.png: no such file" in err
        summary = json.loads((out / "summary.json").read_text())
        assert summary["images"] == len(ODD_NAMES) and len(summary["skipped"]) == 3
        assert "## Skipped files" in (out / "report.md").read_text()
    assert not (tmp_path / "PWNED").exists()


def test_odd_names_through_the_cli_inspect(tmp_path, capsys):
    folder = _odd_folder(tmp_path)
    names = sorted(os.listdir(folder))
    code = within(120, cli.main, ["inspect", "--variant", BUILTIN, "--out", str(tmp_path / "out"), "--no-figures", "-q",
                                  "--", *[str(folder / n) for n in names]])
    assert code == 0, capsys.readouterr().err
    written = sorted(os.listdir(tmp_path / "out"))
    assert len(written) == 2 * len(names) and all(len(os.fsencode(n)) <= 255 for n in written)


@pytest.mark.parametrize("case", ZIPS, ids=_ids(ZIPS))
def test_bad_zip_is_refused_before_anything_is_written(tmp_path, monkeypatch, case):
    monkeypatch.setattr(D, "MAX_ZIP_FILES", 10)
    path = case.make(tmp_path)
    dest = tmp_path / "dest"
    with pytest.raises(D.UploadError) as info:
        within(20, D.extract_images, path, dest)
    msg = str(info.value)
    assert "\n" not in msg and msg.endswith(D.ZIP_ACCEPTED) and case.gets in msg, msg
    assert not (tmp_path / "evil.png").exists() and not (tmp_path.parent / "evil.png").exists()
    assert not dest.exists() or not [p for p in dest.rglob("*") if p.is_file()]


# ------------------------------------------------------------------------------------------------
# fuzzing the header checks

DTYPES = ["F32", "F16", "BF16", "I64", "U8", "BOOL", "F4", "F6_E2M3", "Q99", "", 7]
TENSOR = st.fixed_dictionaries({
    "dtype": st.sampled_from(DTYPES),
    "shape": st.one_of(st.lists(st.integers(-2, 2**40), max_size=4), st.text(max_size=3)),
    "data_offsets": st.one_of(st.lists(st.integers(-8, 2**41), min_size=0, max_size=3), st.none()),
})
HEADERS = st.dictionaries(st.text(max_size=12), st.one_of(TENSOR, st.integers(), st.text(max_size=4)), max_size=5)


@FUZZ
@given(HEADERS, st.integers(0, 2**20))
def test_fuzz_safetensors_header_check(header, data_len):
    try:
        meta = check_safetensors_header(json.dumps(header).encode(), data_len, "f.safetensors")
    except W.WeightsError as e:
        assert str(e).startswith("f.safetensors: not a valid safetensors file (") and "\n" not in str(e)
    else:
        spans = sorted(tuple(v["data_offsets"]) for k, v in meta.items() if k != "__metadata__")
        assert all(0 <= b <= e <= data_len for b, e in spans)
        assert all(e1 <= b2 for (_, e1), (b2, _) in zip(spans, spans[1:]))


@FUZZ
@given(HEADERS, st.binary(max_size=64), st.one_of(st.none(), st.integers(0, 2**64 - 1)))
def test_fuzz_safetensors_files_only_ever_give_weights_errors(tmp_path_factory, header, data, claimed):
    path = tmp_path_factory.getbasetemp() / "fuzz.safetensors"
    path.write_bytes(safetensors(header, data, claimed))
    try:
        state = W.read_state_dict(path)
    except W.WeightsError as e:
        assert str(e).startswith("fuzz.safetensors: ") and "\n" not in str(e)
    else:
        assert state and all(v.numel() * v.element_size() <= len(data) for v in state.values())


@FUZZ
@given(st.text(max_size=40), st.booleans())
def test_fuzz_zip_member_names(name, link):
    import stat
    import zipfile

    info = zipfile.ZipInfo(name or "x")
    if link:
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
    try:
        path = D._safe_name(info)
    except D.UploadError as e:
        assert "\n" not in str(e)
    else:
        assert not link and isinstance(path, PurePosixPath) and not path.is_absolute()
        assert ".." not in path.parts and "\\" not in str(path) and "\0" not in str(path)


def test_safetensors_header_is_read_without_mapping_the_file(tmp_path, monkeypatch):
    """A lying header is refused by reading 8 + n bytes: safetensors' loader (which maps the
    file) is never called."""
    import safetensors.torch as S

    calls: list = []
    monkeypatch.setattr(S, "load_file", lambda *a, **k: calls.append(a))
    path = tmp_path / "lie.safetensors"
    path.write_bytes(safetensors({"w": {"dtype": "F32", "shape": [2**38], "data_offsets": [0, 2**40]}}))
    with pytest.raises(W.WeightsError, match="1099511627776"):
        W.read_state_dict(path)
    assert not calls
    with pytest.raises(W.WeightsError, match="headers are at most 100 MB"):
        W.read_state_dict(_write(tmp_path / "n.safetensors", struct.pack("<Q", 2**63) + b"{}"))
    assert not calls


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
