"""The app's Dataset tab: safe zip extraction (not a zip, traversal, links, bombs, no images),
a bounded analysis and its figures, and the running app's ``/analyze`` endpoint."""
from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from attnviz import app_dataset as D
from attnviz.analysis import Analysis
from attnviz.synthetic import CLASSES, generate

BUILTIN = "shapes_cbam_resnet"


def png_bytes(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(generate(i, seed=2000, size=96).image).save(buf, format="PNG")
    return buf.getvalue()


def make_zip(path: Path, members: dict[str, bytes], *, links: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


@pytest.fixture(scope="module")
def good_zip(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("zips")
    members = {f"data/{CLASSES[generate(i, seed=2000, size=32).label]}/{i}.png": png_bytes(i) for i in range(12)}
    members["data/readme.txt"] = b"ignored"
    return make_zip(d / "good.zip", members)


def test_good_zip_extracts_inside_the_scratch_folder(good_zip, tmp_path):
    out = D.extract_images(good_zip, tmp_path / "x")
    files = sorted(p.relative_to(out) for p in out.rglob("*.png"))
    assert len(files) == 12 and all(p.parts[0] == "data" for p in files)
    assert not list(out.rglob("*.txt"))  # only images are unpacked


@pytest.mark.parametrize("members, links, match", [
    ({"../evil.png": b"x"}, (), "leaves its folder"),
    ({"a/../../evil.png": b"x"}, (), "leaves its folder"),
    ({"/tmp/evil.png": b"x"}, (), "unsafe file name"),
    ({"C:/evil.png": b"x"}, (), "unsafe file name"),
    ({"ok.png": b"x"}, ("link.png",), "link"),
    ({"bomb.png": b"\0" * (8 * 2**20)}, (), "zip bomb"),
    ({"notes.txt": b"hello"}, (), "no images"),
])
def test_bad_zips_are_refused_before_anything_is_written(tmp_path, members, links, match):
    z = make_zip(tmp_path / "bad.zip", members, links=links)
    dest = tmp_path / "dest"
    with pytest.raises(D.UploadError, match=match) as info:
        D.extract_images(z, dest)
    assert "\n" not in str(info.value) and "accepted: a .zip of images" in str(info.value)
    assert not (tmp_path / "evil.png").exists()
    assert not dest.exists() or not list(dest.rglob("*"))  # every member is checked before any write


def test_not_a_zip_and_too_large(tmp_path, monkeypatch):
    fake = tmp_path / "photo.zip"
    fake.write_bytes(png_bytes(0))
    with pytest.raises(D.UploadError, match="not a zip archive"):
        D.extract_images(fake, tmp_path / "d")
    monkeypatch.setattr(D, "MAX_ZIP_BYTES", 1000)
    big = make_zip(tmp_path / "big.zip", {"a.png": png_bytes(1)})
    with pytest.raises(D.UploadError, match="would unpack to"):
        D.extract_images(big, tmp_path / "d2")


def test_run_analysis_on_a_zip_and_views(good_zip, tmp_path):
    import attnviz

    loaded = attnviz.load_model(BUILTIN, device="cpu")
    a = D.run_analysis(str(good_zip), loaded, tmp_path, max_images=100)
    assert a.n_images == 12 and not (tmp_path / "images").exists()  # unpacked images are removed
    # The zip's single top folder is skipped: its subfolders are the classes, named as the model's.
    assert a.grouping == "label" and set(a.classes) <= set(CLASSES) and a.accuracy() is not None
    v = D.views(a, tmp_path / "views", blocks=["layer4.0"], classes=[a.classes[0]])
    for f in (v.excitation, v.specificity, v.saturation, v.spatial):
        assert Path(f).is_file()
    assert Analysis.load(v.analysis_file).n_images == 12 and v.blocks == [b.name for b in a.blocks]


def test_analyze_endpoint(client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    out = client.predict("Built-in synthetic set", None, 16, BUILTIN, api_name="/analyze")
    summary, excitation, _spec, _sat, spatial, analysis_file = out[:6]
    assert summary["images"] == 16 and summary["model"] == BUILTIN and summary["accuracy"] is not None
    assert Path(excitation).is_file() and Path(spatial).is_file()
    assert Analysis.load(analysis_file).n_images == 16
    fake = tmp_path / "x.zip"
    fake.write_text("not a zip")
    with pytest.raises(AppError, match="not a zip archive"):
        client.predict("Uploaded zip of images", handle_file(str(fake)), 16, BUILTIN, api_name="/analyze")
