from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from attnviz import synthetic as S


def test_class_design_needs_both_shape_and_colour():
    assert len(S.CLASSES) == len(S.CLASS_COMBOS) == 8
    assert len(set(S.CLASS_COMBOS)) == 8
    assert set(S.CLASS_COMBOS).isdisjoint(S.DISTRACTOR_COMBOS)
    assert set(S.CLASS_COMBOS) | set(S.DISTRACTOR_COMBOS) == {(s, c) for s in S.SHAPES for c in S.COLOURS}
    for shape in S.SHAPES:  # every shape is in class and in non-class combinations
        assert any(s == shape for s, _ in S.CLASS_COMBOS)
        assert any(s == shape for s, _ in S.DISTRACTOR_COMBOS)
    for colour in S.COLOURS:
        assert any(c == colour for _, c in S.CLASS_COMBOS)
        assert any(c == colour for _, c in S.DISTRACTOR_COMBOS)
    assert S.CLASSES == tuple(f"{c} {s}" for s, c in S.CLASS_COMBOS)


def test_deterministic_per_seed_and_index():
    a, b = S.generate(7, seed=3), S.generate(7, seed=3)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.mask, b.mask)
    assert (a.label, a.box, a.objects) == (b.label, b.box, b.objects)
    # Order of generation does not matter: sample 7 alone equals sample 7 of a batch.
    images, labels, masks = S.make_batch(5, 4, seed=3, with_masks=True)
    assert np.array_equal(images[2], a.image) and labels[2] == a.label and np.array_equal(masks[2], a.mask)
    c = S.generate(8, seed=3)
    assert not np.array_equal(a.image, c.image)
    d = S.generate(7, seed=4)
    assert not np.array_equal(a.image, d.image)


@pytest.mark.parametrize("size", [S.DEFAULT_SIZE, 64])
def test_one_target_its_mask_box_and_label(size):
    n_distractors = Counter()
    for i in range(150):
        s = S.generate(i, seed=11, size=size)
        assert s.image.shape == (size, size, 3) and s.image.dtype == np.uint8
        assert s.mask.shape == (size, size) and s.mask.dtype == bool
        # exactly one object is a class combination: the target, and the label names it
        class_objects = [o for o in s.objects if (o.shape, o.colour) in S.CLASS_COMBOS]
        assert len(class_objects) == 1 and class_objects[0] is s.target and s.target.is_target
        assert S.CLASS_COMBOS[s.label] == (s.shape, s.colour)
        assert S.CLASSES[s.label] == f"{s.colour} {s.shape}"
        # distractors never form a class combination
        for o in s.distractors:
            assert not o.is_target and (o.shape, o.colour) in S.DISTRACTOR_COMBOS
        n_distractors[len(s.distractors)] += 1
        # mask non-empty, inside the (tight) box
        x0, y0, x1, y1 = s.box
        assert s.mask.sum() > 20
        assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
        assert s.mask[y0:y1, x0:x1].sum() == s.mask.sum()
        assert s.mask[y0].any() and s.mask[y1 - 1].any() and s.mask[:, x0].any() and s.mask[:, x1 - 1].any()
        # the mask's pixels are visible and show the target's colour
        mean_rgb = s.image[s.mask].astype(float).mean(0)
        assert np.abs(mean_rgb - np.array(S.RGB[s.colour])).max() < 50, (i, s.colour, mean_rgb)
        # and the target is not overlapped by any distractor (their circumcircles are apart)
        for o in s.distractors:
            dist = np.hypot(o.center[0] - s.target.center[0], o.center[1] - s.target.center[1])
            assert dist > o.radius + s.target.radius
    assert set(n_distractors) <= {2, 3, 4, 5} and len(n_distractors) >= 3


def test_class_balance():
    _, labels, _ = S.make_batch(0, 500, seed=0)
    counts = np.bincount(labels, minlength=len(S.CLASSES))
    assert counts.sum() == 500
    assert counts.min() >= 35 and counts.max() <= 95, counts  # expected 62.5 each


def test_backgrounds_vary():
    kinds = Counter(S.generate(i, seed=0).background for i in range(200))
    assert set(kinds) == {"noise", "stripes", "gradient", "checker", "rings"}


def test_make_dataset_and_normalisation_constants():
    images, labels, masks = S.make_dataset(300, seed=5, size=S.DEFAULT_SIZE)
    assert images.shape == (300, 96, 96, 3) and images.dtype == np.uint8
    assert labels.shape == (300,) and masks.shape == (300, 96, 96) and masks.dtype == bool
    s = S.generate(17, seed=5)
    assert np.array_equal(images[17], s.image) and labels[17] == s.label and np.array_equal(masks[17], s.mask)
    x = images.reshape(-1, 3) / 255.0
    assert np.allclose(x.mean(0), S.MEAN, atol=0.02)
    assert np.allclose(x.std(0), S.STD, atol=0.02)
    t = S.to_tensor(images[:4])
    assert tuple(t.shape) == (4, 3, 96, 96)
    assert abs(float(t.mean())) < 0.5


def test_torch_datasets():
    import torch

    ds = S.SyntheticDataset(10, seed=2, size=64, start=100)
    img, label = ds[3]
    s = S.generate(103, seed=2, size=64)
    assert img.dtype == torch.uint8 and tuple(img.shape) == (3, 64, 64)
    assert torch.equal(img.permute(1, 2, 0), torch.from_numpy(s.image.copy())) and label == s.label
    with pytest.raises(IndexError):
        ds[10]
    img_n, _ = S.SyntheticDataset(10, seed=2, size=64, start=100, normalize=True)[3]
    assert img_n.dtype == torch.float32 and torch.allclose(img_n, S.to_tensor(s.image[None])[0])

    xb, yb = S.SyntheticBatches(5, 4, seed=2, size=64)[2]
    assert tuple(xb.shape) == (4, 64, 64, 3) and tuple(yb.shape) == (4,)
    assert torch.equal(xb[1], torch.from_numpy(S.generate(9, seed=2, size=64).image.copy()))

    stream = iter(S.SyntheticStream(seed=2, size=64, start=100))
    first = [next(stream) for _ in range(5)]
    assert torch.equal(first[3][0], img) and first[3][1] == label


def test_target_free_samples_are_the_same_scene_without_the_target():
    a = S.generate(12, seed=9)
    b = S.generate(12, seed=9, with_target=False)
    assert b.label == S.NO_TARGET and not b.mask.any() and b.box == (0, 0, 0, 0)
    assert b.objects == a.objects[:-1] and not any(o.is_target for o in b.objects)
    assert np.array_equal(a.image[~a.mask], b.image[~a.mask])  # same background and distractors
    assert not np.array_equal(a.image[a.mask], b.image[a.mask])  # the target is gone


def test_streams_leave_out_every_kth_target():
    _, labels, masks = S.make_batch(0, 16, seed=4, with_masks=True, no_target_every=4)
    assert [i for i, y in enumerate(labels) if y == S.NO_TARGET] == [3, 7, 11, 15]
    assert all(m.any() == (y >= 0) for m, y in zip(masks, labels))
    _, plain, _ = S.make_batch(0, 16, seed=4)
    assert (plain >= 0).all() and np.array_equal(plain[labels >= 0], labels[labels >= 0])
    xb, yb = S.SyntheticBatches(2, 8, seed=4, size=64, no_target_every=4)[1]
    assert yb.tolist().count(S.NO_TARGET) == 2
