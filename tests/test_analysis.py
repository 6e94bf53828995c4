"""attnviz.analyze: the streaming statistics against a direct numpy computation, shards and
merge, save/load, resume, sources and their errors, broken files, no ray on the local path."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import attnviz
from attnviz.analysis import Analysis, SourceError, analyze, resolve_source
from attnviz.analysis.stats import SATURATION_HIGH, SATURATION_LOW, quantile_from_hist
from attnviz.models.loading import LoadedModel
from attnviz.preprocess import prepare
from attnviz.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]
CBAM, BAM = "shapes_cbam_resnet", "shapes_bam_resnet"
RTOL, ATOL = 1e-12, 1e-14  # float64 model: batched vs one-image forwards differ by rounding only


def double(name: str) -> LoadedModel:
    """The built-in model in float64, so gates compare exactly in float64 terms."""
    loaded = attnviz.load_model(name, device="cpu")
    return LoadedModel(loaded.variant, copy.deepcopy(loaded.model).double(), loaded.device, loaded.weights)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """ImageFolder of 3 classes (4, 3, 5 images) plus one broken file in class b."""
    root = tmp_path_factory.mktemp("imagefolder")
    counts = {"a": 4, "b": 3, "c": 5}
    i = 0
    for name, n in counts.items():
        (root / name).mkdir()
        for j in range(n):
            Image.fromarray(generate(i, seed=31, size=96).image).save(root / name / f"{j}.png")
            i += 1
    (root / "b" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not the rest of a png")
    (root / "c" / "notes.txt").write_text("not an image: ignored")
    return root


def per_image_gates(loaded: LoadedModel, files: list[Path]) -> dict[str, dict[str, np.ndarray]]:
    """Gates of each image from its own forward under attnviz.capture: block -> role -> [N, ...]."""
    out: dict[str, dict[str, list]] = {}
    preds = []
    for f in files:
        x = prepare(f, loaded.preprocess).tensor.double()
        with attnviz.capture(loaded.model) as cap, torch.no_grad():
            preds.append(int(loaded.model(x).argmax(1)))
        for bc in cap:
            for role in ("channel", "spatial"):
                t = getattr(bc, role)
                if t is not None:
                    assert t.dtype == torch.float64
                    out.setdefault(bc.name, {}).setdefault(role, []).append(t[0].numpy())
    gates = {b: {r: np.stack(v) for r, v in roles.items()} for b, roles in out.items()}
    gates["_preds"] = {"top1": np.asarray(preds)}
    return gates


def test_statistics_equal_direct_numpy_computation(folder):
    loaded = double(CBAM)
    a = analyze(folder, loaded, batch_size=5, num_workers=0, bins=10)
    files = {k: sorted((folder / k).glob("[0-9].png")) for k in "abc"}
    labels = np.concatenate([np.full(len(files[k]), i) for i, k in enumerate("abc")])
    ref = per_image_gates(loaded, [f for k in "abc" for f in files[k]])

    assert a.classes == ("a", "b", "c") and a.grouping == "label"
    assert a.n_images == 12 and a.n_items == 13 and a.complete
    assert len(a.skipped) == 1 and a.skipped[0][0].endswith("zz_broken.png") and "\n" not in a.skipped[0][1]
    np.testing.assert_array_equal(a.class_counts(), [4, 3, 5])
    preds = ref.pop("_preds")["top1"]
    np.testing.assert_array_equal(a.confusion, [[np.sum((labels == k) & (preds == m)) for m in range(8)]
                                                for k in range(3)])
    assert a.accuracy() is None  # "a", "b", "c" are not the model's class names
    for b in a.blocks:
        ch, sp = ref[b.name]["channel"], ref[b.name]["spatial"]
        for k in range(3):
            x = ch[labels == k]
            np.testing.assert_allclose(b.mean[k], x.mean(0), rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(b.variance()[k], x.var(0), rtol=1e-9, atol=ATOL)
            edges_idx = np.clip(np.floor(x * 10), 0, 9).astype(int)
            np.testing.assert_array_equal(b.hist[k], [np.bincount(edges_idx[:, c], minlength=10)
                                                      for c in range(x.shape[1])])
            np.testing.assert_array_equal(b.low[k], (x < SATURATION_LOW).sum(0))
            np.testing.assert_array_equal(b.high[k], (x > SATURATION_HIGH).sum(0))
            np.testing.assert_allclose(b.spatial_mean()[k], sp[labels == k].mean(0), rtol=RTOL, atol=ATOL)
        between = sum((labels == k).sum() * ((ch[labels == k].mean(0) - ch.mean(0)) ** 2).sum() for k in range(3))
        eta2 = between / ((ch - ch.mean(0)) ** 2).sum()
        assert a.specificity()[b.name] == pytest.approx(eta2, rel=1e-10)
        sat = ((ch < SATURATION_LOW) | (ch > SATURATION_HIGH)).mean()
        assert a.saturation()[b.name] == pytest.approx(sat, abs=1e-15)
    assert a.specificity_baseline() == pytest.approx(2 / 11)


def test_bam_joint_gate_and_synthetic_accuracy():
    loaded = double(BAM)
    a = analyze("synthetic:16", loaded, batch_size=8, num_workers=0)
    src = resolve_source("synthetic:16", synthetic_size=96)
    files_free = [generate(i, seed=2000, size=96).image for i in range(16)]
    labels = np.asarray(src.labels)
    assert [s.label for s in map(lambda i: generate(i, seed=2000, size=96), range(16))] == list(labels)
    preds, chans = [], {}
    for img in files_free:
        x = prepare(img, loaded.preprocess).tensor.double()
        with attnviz.capture(loaded.model) as cap, torch.no_grad():
            preds.append(int(loaded.model(x).argmax(1)))
        for bc in cap:
            chans.setdefault(bc.name, []).append(bc.channel[0].numpy())
    assert a.accuracy() == pytest.approx(np.mean(np.asarray(preds) == labels))
    for b in a.blocks:
        assert b.kind == "bam" and b.spatial_sum is not None
        ch = np.stack(chans[b.name])
        for k in np.unique(labels):
            np.testing.assert_allclose(b.mean[k], ch[labels == k].mean(0), rtol=RTOL, atol=ATOL)


def assert_same(a: Analysis, b: Analysis) -> None:
    assert a._identity() == b._identity() and a.ranges == b.ranges
    np.testing.assert_array_equal(a.confusion, b.confusion)
    assert [x.name for x in a.blocks] == [x.name for x in b.blocks]
    for x, y in zip(a.blocks, b.blocks):
        for key in x.ARRAYS:
            u, v = getattr(x, key), getattr(y, key)
            assert (u is None) == (v is None), key
            if u is not None and u.dtype.kind == "f":
                np.testing.assert_allclose(u, v, rtol=RTOL, atol=ATOL, err_msg=key)
            elif u is not None:
                np.testing.assert_array_equal(u, v, err_msg=key)


def test_merge_of_two_shards_equals_single_run(folder):
    loaded = double(CBAM)
    full = analyze(folder, loaded, batch_size=4, num_workers=0)
    first = analyze(folder, loaded, batch_size=3, num_workers=0, stop=6)
    second = analyze(folder, loaded, batch_size=5, num_workers=0, start=6)
    assert first.ranges == [(0, 6)] and second.ranges == [(6, 13)] and not first.complete
    merged = Analysis.merge(second, first)
    assert_same(merged, full)
    assert merged.skipped == full.skipped and merged.complete
    with pytest.raises(ValueError, match="overlap"):
        Analysis.merge(first, first)
    other = analyze(folder, double(BAM), batch_size=4, num_workers=0, stop=2)
    with pytest.raises(ValueError, match="model"):
        Analysis.merge(first, other)


def test_workers_give_the_same_statistics(folder):
    loaded = double(CBAM)
    assert_same(analyze(folder, loaded, batch_size=4, num_workers=2),
                analyze(folder, loaded, batch_size=4, num_workers=0))


def test_save_load_round_trip(folder, tmp_path):
    a = analyze(folder, CBAM, batch_size=4, num_workers=0, device="cpu")
    path = a.save(tmp_path / "a.npz")
    b = Analysis.load(path)
    assert_same(a, b)
    assert b.skipped == a.skipped and b.summary() == a.summary()
    assert b.profiles(b.blocks[-1].name).shape == (3, b.blocks[-1].channels)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not an attnviz analysis file"):
        Analysis.load(tmp_path / "junk.npz")


def test_interrupted_run_resumes_from_its_checkpoint(folder, tmp_path):
    loaded = double(CBAM)
    ckpt = tmp_path / "partial.npz"
    seen = []

    def stop_after_two_batches(done: int, total: int) -> None:
        seen.append((done, total))
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        analyze(folder, loaded, batch_size=3, num_workers=0, checkpoint=ckpt, checkpoint_every=1,
                progress=stop_after_two_batches)
    partial = Analysis.load(ckpt)
    assert partial.ranges == [(0, 3)] and seen == [(3, 13), (6, 13)]  # saved after batch 1
    calls = []
    resumed = analyze(folder, loaded, batch_size=3, num_workers=0, resume=partial,
                      progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (10, 10)  # only the 10 missing items were analysed
    assert_same(resumed, analyze(folder, loaded, batch_size=3, num_workers=0))
    with pytest.raises(ValueError, match="source"):
        analyze("synthetic:5", loaded, resume=partial, num_workers=0)


def test_sources_csv_tsv_unlabelled_classes_and_max_images(folder, tmp_path):
    rows = [f"{k}/{j}.png,{k}" for k, n in (("a", 4), ("c", 5)) for j in range(n)]
    (folder / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    src = resolve_source(folder / "list.csv")
    assert src.classes == ("a", "c") and len(src) == 9 and Path(src.refs[0]) == folder / "a" / "0.png"
    (folder / "list.tsv").write_text("\n".join(r.replace(",", "\t") for r in rows))
    assert resolve_source(folder / "list.tsv").fingerprint == src.fingerprint  # the same items
    a = analyze(folder, CBAM, classes=["c", "a"], num_workers=0, device="cpu")
    assert a.classes == ("c", "a") and a.class_counts().tolist() == [5, 4]
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(5):
        Image.fromarray(generate(i, seed=2000, size=96).image).save(flat / f"{i}.jpg", quality=95)
    u = analyze(flat, CBAM, num_workers=0, device="cpu")
    assert u.grouping == "prediction" and u.classes == tuple(attnviz.get_variant(CBAM).class_names)
    assert np.all(u.confusion == np.diag(u.class_counts()))  # grouped by its own top-1
    assert u.accuracy() is None
    m = analyze("synthetic:40", CBAM, max_images=10, num_workers=0, device="cpu")
    assert m.n_items == 10 and m.n_images == 10 and (m.class_counts() > 0).sum() > 3  # spread, not a prefix


@pytest.mark.parametrize("make, match", [
    (lambda d: d / "missing", "no such file or folder"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no images found"),
    (lambda d: (d / "bin.csv").write_bytes(b"\xff\xfe\x00\x81garbage") and d / "bin.csv", "unreadable list"),
    (lambda d: (d / "ragged.csv").write_text("a.png,x\nb.png,y,z\n") and d / "ragged.csv", "same 1"),
    (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", "not a folder nor"),
    (lambda d: "synthetic:zero", "positive number"),
])
def test_bad_sources_give_one_line_errors(tmp_path, make, match):
    with pytest.raises(SourceError, match=match) as info:
        analyze(make(tmp_path), CBAM, num_workers=0)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 600


def test_unknown_class_names_are_listed(folder):
    with pytest.raises(SourceError) as info:
        analyze(folder, CBAM, classes=["a", "dog"], num_workers=0)
    msg = str(info.value)
    assert "dog" in msg and "a, b, c" in msg and "\n" not in msg


def test_quantiles_from_histogram_within_one_bin():
    rng = np.random.default_rng(0)
    x = rng.beta(2, 5, size=5000)
    hist = np.bincount(np.clip((x * 20).astype(int), 0, 19), minlength=20)
    for q in (0.1, 0.5, 0.9):
        assert abs(quantile_from_hist(hist[None], q)[0] - np.quantile(x, q)) <= 1 / 20


def test_local_path_never_imports_ray_and_attnviz_exports_analyze():
    code = ("import sys, attnviz\n"
            "assert 'attnviz.analysis' not in sys.modules, 'analysis imported eagerly'\n"
            "a = attnviz.analyze('synthetic:4', 'shapes_se_resnet', num_workers=0, device='cpu')\n"
            "assert isinstance(a, attnviz.Analysis) and a.n_images == 4\n"
            "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')]\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_amp_runs_the_forwards_under_autocast_and_fp16_on_a_cpu_is_refused_first():
    """bf16 autocast (CPU) gives the float32 run's statistics approximately (bf16 moves gates by up
    to ~6e-2 on the built-ins, BENCHMARKS.md); fp16 on a CPU is refused before any image is read."""
    plain = analyze("synthetic:16", "shapes_se_resnet", num_workers=0, device="cpu")
    bf16 = analyze("synthetic:16", "shapes_se_resnet", num_workers=0, device="cpu", amp="bf16")
    assert bf16.n_images == plain.n_images == 16
    for a, b in zip(plain.channel_blocks, bf16.channel_blocks):
        assert a.name == b.name and np.abs(a.mean - b.mean).max() < 0.1
    assert any(np.abs(a.mean - b.mean).max() > 0 for a, b in zip(plain.channel_blocks, bf16.channel_blocks)), \
        "bf16 ran: some gate moved"
    with pytest.raises(ValueError, match="fp16"):
        analyze("synthetic:16", "shapes_se_resnet", num_workers=0, device="cpu", amp="fp16")
