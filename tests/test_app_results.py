"""The server's result cache: an LRU bounded by bytes, reached only through unguessable tokens."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from attnviz.app_results import ResultCache, inspection_nbytes, light_inspection


def test_evicts_least_recently_used_to_stay_within_bytes():
    cache = ResultCache(max_bytes=100)
    a, b, c = cache.put("a", 40), cache.put("b", 40), cache.put("c", 10)
    assert len(cache) == 3 and cache.nbytes == 90
    assert cache.get(a) == "a"  # a is now the most recently used: b goes first
    d = cache.put("d", 40)
    assert cache.get(b) is None and [cache.get(t) for t in (a, c, d)] == ["a", "c", "d"]
    assert cache.nbytes == 90 <= cache.max_bytes
    cache.put("e", 95)  # evicts everything else
    assert len(cache) == 1 and cache.nbytes == 95


def test_an_owner_keeps_one_result():
    cache = ResultCache(max_bytes=100, max_items=3)
    other = cache.put("other", 10, owner=("s2", "inspect"))
    tokens = [cache.put(i, 10, owner=("s1", "inspect")) for i in range(50)]  # one busy session
    assert [cache.get(t) for t in tokens[:-1]] == [None] * 49 and cache.get(tokens[-1]) == 49
    assert cache.get(other) == "other" and len(cache) == 2 and cache.nbytes == 20
    compare = cache.put("cmp", 10, owner=("s1", "compare"))  # another tab of the same session
    assert cache.get(compare) == "cmp" and cache.get(tokens[-1]) == 49
    cache.drop(compare)
    assert cache._tokens.keys() == {("s1", "inspect"), ("s2", "inspect")}


def test_count_bound_evicts_oldest():
    cache = ResultCache(max_bytes=10**6, max_items=2)
    a, b, c = (cache.put(v, 1) for v in "abc")
    assert cache.get(a) is None and cache.get(b) == "b" and cache.get(c) == "c" and len(cache) == 2
    with pytest.raises(ValueError, match="max_items >= 1"):
        ResultCache(10, max_items=0)


def test_too_large_is_not_kept_and_drop_frees():
    cache = ResultCache(max_bytes=10)
    big = cache.put("big", 11)
    assert cache.get(big) is None and len(cache) == 0 and cache.nbytes == 0
    t = cache.put("x", 5)
    cache.drop(t)
    cache.drop(t)  # twice is harmless
    cache.drop(None)
    assert cache.get(t) is None and cache.nbytes == 0
    assert cache.get(None) is None and cache.get("") is None
    with pytest.raises(ValueError, match=">= 0"):
        ResultCache(-1)


def test_tokens_are_unique_and_unguessable():
    cache = ResultCache(max_bytes=10**9)
    tokens = {cache.put(i, 1) for i in range(2000)}
    assert len(tokens) == 2000
    assert all(len(t) >= 22 for t in tokens)  # 16 random bytes, url-safe base64
    assert cache.get("0") is None and cache.get("1") is None


def test_many_threads_keep_the_byte_count_exact():
    cache = ResultCache(max_bytes=5000)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(500):
                t = cache.put((k, i), 7 + i % 13)
                got = cache.get(t)
                assert got is None or got == (k, i)
                if i % 3 == 0:
                    cache.drop(t)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.nbytes == sum(item[1] for item in cache._items.values()) <= 5000


def test_inspection_size_counts_the_loaded_image(cbam_result):
    import dataclasses

    def with_image(image: Image.Image):  # a fresh PreparedImage: no cached views
        return dataclasses.replace(cbam_result, prepared=dataclasses.replace(cbam_result.prepared, image=image))

    small = inspection_nbytes(with_image(cbam_result.prepared.image))
    arrays = sum(a.nbytes for b in cbam_result.blocks for a in (b.channel, b.spatial) if a is not None)
    assert small >= arrays + cbam_result.prepared.tensor.numel() * 4
    photo = Image.fromarray(np.zeros((3000, 4000, 3), np.uint8))  # 12 megapixels: 36 MB of RGB
    big = with_image(photo)
    w, h = cbam_result.prepared.image.size
    assert inspection_nbytes(big) - small == 36_000_000 - 3 * w * h

    light = light_inspection(big, 448)  # what the app keeps: the view, no tensor, no model
    assert light.loaded is None and big.loaded is not None
    side = light.prepared.view(448).width  # the geometry's crop side, at most 448
    assert inspection_nbytes(light) == arrays + _other_arrays(big) + side * side * 3
    np.testing.assert_array_equal(light.blocks[-1].channel, big.blocks[-1].channel)


def _other_arrays(r) -> int:
    return sum(a.nbytes for a in (r.logits, r.probs, r.gradcam) if a is not None)
