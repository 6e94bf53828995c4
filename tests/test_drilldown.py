"""Channel drill-down: the block's maps before/after its gates, on demand, cached, exact."""
from __future__ import annotations

import numpy as np
import pytest

import attnviz
from attnviz.capture import attention_module
from attnviz.drilldown import top_channel_maps
from attnviz.synthetic import generate


def _load(name: str):
    if name not in attnviz.variants():
        pytest.skip(f"built-in {name} missing")
    loaded = attnviz.load_model(name)
    return loaded, generate(2, seed=8, size=loaded.preprocess.input_size).image


def test_se_channel_after_is_before_times_its_gate():
    loaded, image = _load("shapes_se_resnet")
    result = attnviz.inspect(image, loaded)
    assert "_drilldown_maps" not in result.__dict__  # nothing captured by default
    gates = result.block("layer4.0").channel
    for c in (0, int(np.argmax(gates)), gates.size - 1):
        m = result.channel_map("layer4.0", c)
        assert m.before.shape == m.after.shape == (12, 12)  # the 12×12 last stage
        assert m.gate == float(gates[c]) and np.abs(m.before).sum() > 0
        np.testing.assert_array_equal(m.after, m.before * np.float32(m.gate))  # SE: x * g, exactly


def test_second_channel_reuses_the_block_and_no_hook_stays():
    loaded, image = _load("shapes_cbam_resnet")
    result = attnviz.inspect(image, loaded)
    calls = []
    h = loaded.model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        first = result.channel_map("layer3.0", 1)
        result.channel_map("layer3.0", 2)
        result.channel_map("layer3.0", 1)
    finally:
        h.remove()
    assert len(calls) == 1
    assert all(not m._forward_hooks for m in loaded.model.modules())
    # CBAM: after = before * channel gate * spatial gate, pixel by pixel
    spatial = result.block("layer3.0").spatial
    np.testing.assert_allclose(first.after, first.before * first.gate * spatial, rtol=1e-5, atol=1e-6)


def test_top_channels_follow_the_gate_order_and_errors_name_the_range():
    loaded, image = _load("shapes_cbam_resnet")
    result = attnviz.inspect(image, loaded)
    maps = top_channel_maps(result, "layer4.0", k=4)
    assert [m.channel for m in maps] == [i for i, _ in result.block("layer4.0").channel_stats.top_channels[:4]]
    with pytest.raises(ValueError, match=r"valid 0\.\.127"):
        result.channel_map("layer4.0", 128)
    with pytest.raises(KeyError, match="blocks:"):
        result.channel_map("layer9.9", 0)
    assert type(attention_module(loaded.model, "layer4.0")).__name__ == "CBAM"
