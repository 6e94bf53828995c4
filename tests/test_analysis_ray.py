"""The Ray engine (optional dependency): a local Ray with 2 CPUs gives the local engine's numbers."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_analysis import CBAM, assert_same, double, folder  # noqa: F401 - the fixture

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]


def test_ray_engine_equals_local_engine(folder):  # noqa: F811
    from attnviz.analysis import analyze

    loaded = double(CBAM)
    local = analyze(folder, loaded, batch_size=4, num_workers=0)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        seen = []
        on_ray = analyze(folder, loaded, batch_size=4, engine="ray", progress=lambda d, t: seen.append((d, t)))
    finally:
        ray.shutdown()
    assert_same(on_ray, local)  # float64 gates: equal up to the rounding of the fold order
    assert on_ray.skipped == local.skipped and len(on_ray.skipped) == 1
    assert seen[-1] == (13, 13)
