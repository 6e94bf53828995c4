"""The web app over HTTP: ``python app.py`` on a free port, every named endpoint called through
gradio_client with real image files, bad inputs refused with clear errors while the server goes on."""
from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


# ----------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def builtins(app_server) -> dict:
    found = app_server.builtin_variants()
    if not found:
        pytest.skip("no built-in checkpoints")
    return found


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """Small real images (synthetic shapes as PNG and JPEG, an EXIF-rotated JPEG) and bad files."""
    from attnviz import synthetic

    d = tmp_path_factory.mktemp("images")
    out: dict[str, Path] = {}
    for i in range(3):
        s = synthetic.generate(i, seed=11, size=128)
        out[f"shapes{i}"] = d / f"shapes{i}.png"
        Image.fromarray(s.image).save(out[f"shapes{i}"])
    wide = Image.fromarray(synthetic.generate(5, seed=11, size=160).image).resize((240, 160))
    out["jpeg"] = d / "wide.jpg"
    wide.save(out["jpeg"], quality=90)
    # Stored 240x160 with EXIF orientation 6 ("rotate 90° clockwise to display"): shown 160x240.
    exif = Image.Exif()
    exif[0x0112] = 6
    out["exif"] = d / "rotated.jpg"
    wide.save(out["exif"], quality=90, exif=exif.tobytes())
    out["text"] = d / "notes.png"
    out["text"].write_text("this is a text file, not a PNG\n")
    data = out["jpeg"].read_bytes()
    out["truncated"] = d / "truncated.jpg"
    out["truncated"].write_bytes(data[: len(data) // 3])
    out["empty"] = d / "empty.png"
    out["empty"].write_bytes(b"")
    out["huge"] = d / "huge.png"  # header claims 30000x30000 (900 MP)
    out["huge"].write_bytes(_png_header_only(30000, 30000))
    return out


def asset_images() -> list[Path]:
    folder = ROOT / "assets"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _size(path: str) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def _not_blank(path: str) -> bool:
    with Image.open(path) as im:
        return float(np.asarray(im.convert("RGB"), dtype=np.float32).std()) > 2.0


# ----------------------------------------------------------------------------------------------
# checks


def check_predictions(summary: dict) -> None:
    preds = summary["predictions"]
    probs = [p["probability"] for p in preds]
    assert len(preds) == min(5, summary["num_classes"])
    assert probs == sorted(probs, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probs)
    assert sum(probs) <= 1.0 + 1e-5
    assert summary["total_probability"] == pytest.approx(1.0, abs=1e-4)


def check_inspect(out, variant: str | None = None) -> dict:
    summary, label, gradcam, spatial, overview, stats = out
    if variant is not None:
        assert summary["variant"] == variant
    assert summary["weights"] and summary["device"]
    check_predictions(summary)
    preds = summary["predictions"]
    assert label["label"] == preds[0]["label"]
    assert [c["label"] for c in label["confidences"]] == [p["label"] for p in preds]

    view = tuple(summary["view_size"])
    blocks = summary["blocks"]
    channel_blocks = [b for b in blocks if b["channels"]]
    spatial_blocks = [b for b in blocks if b["spatial_shape"]]
    # Grad-CAM and every spatial map are drawn on the model's view, at its size.
    assert _size(gradcam) == view and _not_blank(gradcam)
    assert len(spatial) == len(spatial_blocks) == len(summary["images"]["spatial_maps"])
    stages = []
    for item, name in zip(spatial, summary["images"]["spatial_maps"]):
        assert _size(item["image"]) == view
        assert name in item["caption"]
        stages.append(next(b["stage"] for b in blocks if b["name"] == name))
    assert stages == sorted(stages)  # grouped by stage
    assert summary["images"]["channel_charts"] == [b["name"] for b in channel_blocks]
    assert Path(overview).is_file() and _not_blank(overview)
    assert (stats is None) == (not channel_blocks)
    return summary


def check_files(files, summary: dict) -> None:
    """The downloads of an inspection (/inspect_files): the CLI's files, lossless figures."""
    preds, view = summary["predictions"], tuple(summary["view_size"])
    channel_blocks = [b for b in summary["blocks"] if b["channels"]]
    spatial_blocks = [b for b in summary["blocks"] if b["spatial_shape"]]
    by_suffix = {Path(f).suffix: Path(f) for f in files}
    assert set(by_suffix) == {".zip", ".json", ".npz"}
    saved = json.loads(by_suffix[".json"].read_text())
    assert saved["predictions"] == preds and saved["variant"] == summary["variant"]
    with zipfile.ZipFile(by_suffix[".zip"]) as zf:
        names = set(zf.namelist())
        assert {"input.png", "gradcam.png"} <= names
        assert {f"channels_{b['name']}.png" for b in channel_blocks} <= names
        assert {f"spatial_{b['name']}.png" for b in spatial_blocks} <= names
        with Image.open(io.BytesIO(zf.read("gradcam.png"))) as im:
            assert im.size == view and im.format == "PNG"
    with np.load(by_suffix[".npz"]) as npz:
        assert float(npz["probs"].sum()) == pytest.approx(1.0, abs=1e-4)
        assert npz["probs"].size == summary["num_classes"]
        for b in channel_blocks:
            assert npz[f"channel/{b['name']}"].shape == (b["channels"],)


# ----------------------------------------------------------------------------------------------
# tests


def test_lists_named_endpoints(app_server, client):
    info = client.view_api(print_info=False, return_format="dict")
    endpoints = info["named_endpoints"]
    for name in ("/inspect", "/inspect_files", "/compare", "/compare_images"):
        assert name in endpoints, sorted(endpoints)
        params = endpoints[name]["parameters"]
        assert not params[0]["parameter_has_default"]
        assert all(p["parameter_has_default"] for p in params[1:]), name


def test_inspect_default_call(client, images, builtins):
    """The README call: only the image; every other input has a default (the built-in model here)."""
    summary = check_inspect(client.predict(handle_file(str(images["shapes0"])), api_name="/inspect"))
    assert summary["variant"] in builtins
    assert summary["image_size"] == [128, 128]


def test_inspect_every_builtin_variant(client, images, builtins):
    for name, v in builtins.items():
        out = client.predict(handle_file(str(images["jpeg"])), name, 0.7, "viridis", api_name="/inspect")
        summary = check_inspect(out, name)
        check_files(client.predict(handle_file(str(images["jpeg"])), name, 0.7, "viridis",
                                   api_name="/inspect_files"), summary)
        kinds = {b["kind"] for b in summary["blocks"]}
        assert kinds <= ({v.block} if v.block != "none" else set())
        assert set(summary["predictions"][0]) >= {"index", "label", "probability"}
        assert summary["predictions"][0]["label"] in v.class_names


def test_inspect_applies_exif_orientation(client, images):
    summary = client.predict(handle_file(str(images["exif"])), api_name="/inspect")[0]
    assert summary["image_size"] == [160, 240]  # the file stores 240x160 and says "rotate"


def test_inspect_asset_images(client, builtins):
    """Every example image in assets/ (photos and synthetic shapes) on the built-in default model."""
    assets = asset_images()
    if not assets:
        pytest.skip("no images in assets/")
    for path in assets:
        summary = check_inspect(client.predict(handle_file(str(path)), api_name="/inspect"))
        with Image.open(path) as im:
            assert summary["image_size"] == list(im.size)


def test_compare_variants(client, images, builtins):
    summary, stats, gradcams, charts, overviews = client.predict(
        handle_file(str(images["shapes1"])), api_name="/compare")
    names = summary["variants"]
    assert 2 <= len(names) <= 5 and set(names) <= set(builtins)
    assert len(summary["results"]) == len(gradcams) == len(charts) == len(overviews) == len(names)
    for name, result, gc, ov in zip(names, summary["results"], gradcams, overviews):
        assert result["variant"] == name
        check_predictions(result)
        assert _size(gc["image"]) == tuple(result["view_size"])
        assert gc["caption"].startswith(f"{name}: {result['predictions'][0]['label']}")
        assert ov["caption"] == name
    top1 = {r["variant"]: r["predictions"][0]["label"] for r in summary["results"]}
    assert summary["top1"] == top1
    assert summary["agree"] == (len(set(top1.values())) == 1)
    assert _not_blank(stats)

    # A shared block: every variant shows its block of that name, else of that stage.
    pair = [n for n in builtins if builtins[n].block in ("cbam", "bam", "se", "eca")][:2]
    if len(pair) == 2:
        first = client.predict(handle_file(str(images["shapes1"])), pair, api_name="/compare")[0]
        slot = first["slots"][0]
        stage = next(b["stage"] for r in first["results"] for b in r["blocks"] if b["name"] == slot)
        summary, _, gradcams, charts, _ = client.predict(handle_file(str(images["shapes1"])), pair, slot,
                                                         api_name="/compare")
        assert summary["variants"] == pair and summary["selected_slot"] == slot and len(charts) == 2
        for r, chart in zip(summary["results"], charts):
            sel = next(b for b in r["blocks"] if b["name"] == r["selected_block"])
            assert sel["name"] == slot or sel["stage"] == stage
            assert chart["caption"] == f"{r['variant']}: {sel['name']}"


def test_compare_needs_two_variants(client, images, builtins):
    with pytest.raises(AppError, match="2 to 5 variants"):
        client.predict(handle_file(str(images["shapes0"])), [next(iter(builtins))], api_name="/compare")


def test_compare_images_similarity(client, images, builtins):
    variant = next((n for n, v in builtins.items() if v.block == "cbam"), None) or next(
        n for n, v in builtins.items() if v.block != "none")
    a, b = handle_file(str(images["shapes0"])), handle_file(str(images["shapes1"]))
    summary, chart, profiles, thumbs = client.predict([a, b, handle_file(str(images["shapes0"]))], variant,
                                                      api_name="/compare_images")
    assert summary["variant"] == variant
    assert len(summary["images"]) == len(thumbs) == 3
    sim = summary["similarity"]
    assert [s["block"] for s in sim] == summary["blocks"] and len(profiles) == len(sim) > 0
    for s in sim:
        for key in ("cosine_mean", "cosine_min", "centered_cosine_mean"):
            assert -1.0 <= s[key] <= 1.0
        m = np.asarray(s["cosine_matrix"])
        assert m.shape == (3, 3) and np.all(np.abs(m) <= 1.0)
        assert m[0, 2] == pytest.approx(1.0, abs=1e-5)  # the same image twice
        assert np.allclose(np.diag(m), 1.0, atol=1e-5)
    assert _not_blank(chart)

    same = client.predict([a, handle_file(str(images["shapes0"]))], variant, api_name="/compare_images")[0]
    assert all(s["cosine_mean"] == pytest.approx(1.0, abs=1e-5) for s in same["similarity"])


def test_compare_images_needs_two_images_and_channel_attention(client, images, builtins):
    with pytest.raises(AppError, match="2 to 8 images"):
        client.predict([handle_file(str(images["shapes0"]))], api_name="/compare_images")
    plain = next((n for n, v in builtins.items() if v.block == "none"), None)
    if plain:
        with pytest.raises(AppError, match="no channel attention"):
            client.predict([handle_file(str(images["shapes0"])), handle_file(str(images["shapes1"]))], plain,
                           api_name="/compare_images")


@pytest.mark.parametrize("kind", ["text", "truncated", "empty", "huge"])
def test_bad_image_is_refused_and_server_keeps_serving(client, images, kind):
    path = images[kind]
    with pytest.raises(AppError) as err:
        client.predict(handle_file(str(path)), api_name="/inspect")
    message = str(err.value)
    assert path.name in message and "accepted" in message and "PNG" in message, message
    summary = client.predict(handle_file(str(images["shapes2"])), api_name="/inspect")[0]
    check_predictions(summary)


def test_bad_image_among_compared_images(client, images):
    with pytest.raises(AppError, match="accepted"):
        client.predict([handle_file(str(images["shapes0"])), handle_file(str(images["text"]))],
                       api_name="/compare_images")


def test_missing_image(client):
    with pytest.raises(AppError, match="No image"):
        client.predict(None, api_name="/inspect")


def test_upload_over_size_limit_is_refused(app_server, client, images, tmp_path):
    import httpx

    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (201 * 1024 * 1024))  # launch(max_file_size="200mb")
    with pytest.raises(ValueError, match="maximum file size"):  # the client reads the limit from the app
        client.predict(handle_file(str(big)), api_name="/inspect")
    with open(big, "rb") as fh:  # and the server refuses it too
        r = httpx.post(app_server.url + "gradio_api/upload", files={"files": ("big.png", fh)}, timeout=60)
    assert r.status_code == 413
    check_predictions(client.predict(handle_file(str(images["shapes0"])), api_name="/inspect")[0])


def test_unavailable_imagenet_weights_give_a_clear_error(client, images):
    # The server runs with empty weight caches and HF_HUB_OFFLINE=1: a Hub variant cannot be had.
    from attnviz.models import variants

    name = next((n for n, v in variants().items() if v.weights.hf_repo), None)
    if name is None:
        pytest.skip("no Hugging Face Hub variant in the zoo")
    with pytest.raises(AppError) as err:
        client.predict(handle_file(str(images["shapes0"])), name, api_name="/inspect")
    assert name in str(err.value) and "--weights" in str(err.value)


def test_inspect_with_an_uploaded_checkpoint(client, images, builtins, app_server, tmp_path):
    """A user's own checkpoint (module. prefix, nested state_dict) of the chosen architecture."""
    import torch
    from safetensors.torch import load_file

    name = "shapes_cbam_resnet" if "shapes_cbam_resnet" in builtins else next(iter(builtins))
    state = load_file(str(builtins[name].weights.path))
    mine = tmp_path / "my_finetune.pth"
    torch.save({"state_dict": {f"module.{k}": v.float() for k, v in state.items()}}, mine)
    img = handle_file(str(images["shapes0"]))
    ref = client.predict(img, name, api_name="/inspect")[0]
    own = client.predict(img, name, 0.5, "jet", handle_file(str(mine)), api_name="/inspect")[0]
    assert own["weights"] == "local file my_finetune.pth"
    for a, b in zip(own["predictions"], ref["predictions"]):
        assert a["index"] == b["index"] and a["probability"] == pytest.approx(b["probability"], abs=1e-4)

    wrong = tmp_path / "plain_resnet.pth"  # no attention keys: does not fit a CBAM ResNet
    torch.save({k: v for k, v in state.items() if ".attn." not in k}, wrong)
    with pytest.raises(AppError, match=r"plain_resnet\.pth.*missing keys"):
        client.predict(img, name, 0.5, "jet", handle_file(str(wrong)), api_name="/inspect")
    check_predictions(client.predict(img, api_name="/inspect")[0])  # still serving
