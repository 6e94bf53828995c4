"""The Ray engine (optional dependency): on a local Ray with 2 CPUs, two actors each fold their
share of the images into their own partial analysis, and the merge of the partials gives the
local engine's numbers."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from attnviz.models.loading import LoadedModel
from tests.test_analysis import CBAM, assert_same, double, folder  # noqa: F401 - the fixture
from tests.test_hostile_inputs import within

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        yield ray
    finally:
        ray.shutdown()


def test_ray_engine_equals_local_engine(folder, local_ray):  # noqa: F811
    from attnviz.analysis import analyze

    loaded = double(CBAM)
    local = analyze(folder, loaded, batch_size=4, num_workers=0)
    seen = []
    on_ray = analyze(folder, loaded, batch_size=4, engine="ray", ray_actors=2,
                     progress=lambda d, t: seen.append((d, t)))
    assert_same(on_ray, local)  # float64 gates: equal up to the rounding of the fold order
    assert on_ray.skipped == local.skipped and len(on_ray.skipped) == 1
    assert seen[-1] == (13, 13) and all(t == 13 for _, t in seen)


def test_each_actor_hands_back_one_partial_that_merges_to_the_whole(folder, local_ray):  # noqa: F811
    from attnviz.analysis import Analysis, analyze
    from attnviz.analysis.api import prepare_source
    from attnviz.analysis.engine_ray import RayActors

    loaded = double(CBAM)
    src = prepare_source(folder, loaded.preprocess.input_size, None, None)
    with RayActors(src, loaded, bins=20, actors=2) as pool:
        parts = ray.get(pool.start(list(range(len(src))), batch_size=4))
    assert len(parts) == 2  # one per actor, each a whole Analysis, not raw per-batch gates
    assert sorted(i for p in parts for i in p.items) == list(range(13))
    assert sum(p.analysis.n_images for p in parts) == 12 and sum(len(p.skipped_items) for p in parts) == 1
    for p in parts:
        assert p.analysis.n_images == int(p.analysis.confusion.sum())
        for b in p.analysis.blocks:  # a partial's counts are its own images', not the dataset's
            assert int(b.count.sum()) == p.analysis.n_images
    merged = Analysis.merge(*(p.analysis for p in parts))
    merged.ranges = [(0, 13)]
    local = analyze(folder, loaded, batch_size=4, num_workers=0)
    assert_same(merged, local)
    np.testing.assert_array_equal(merged.class_counts(), [4, 3, 5])


def assert_actors_freed() -> None:
    """Killed actors give their CPUs back (nothing leaks into the next run)."""
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2


class FailingForward(nn.Module):
    """The built-in CBAM model whose forward raises: what an actor meets with a broken model."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        raise RuntimeError("forward failed on purpose")


def test_an_actor_error_reaches_the_caller_and_frees_the_actors(folder, local_ray):  # noqa: F811
    from attnviz.analysis import analyze

    good = double(CBAM)
    broken = LoadedModel(good.variant, FailingForward(good.model), good.device, good.weights)
    with pytest.raises(RuntimeError, match="forward failed on purpose"):
        within(120, analyze, folder, broken, batch_size=4, engine="ray", ray_actors=2)
    assert_actors_freed()


@pytest.mark.parametrize("resources, actors, expected", [
    ({"CPU": 2.0}, None, (1, 1, 1.0, 0.0)),  # half the CPUs forward, half decode
    ({"CPU": 2.0}, 2, (2, 1, 0.5, 0.0)),  # more actors than half the CPUs: fractional reservations
    ({"CPU": 16.0}, None, (4, 2, 2.0, 0.0)),
    ({"CPU": 16.0, "GPU": 2.0}, None, (2, 4, 4.0, 1.0)),  # one actor per GPU
    ({"CPU": 16.0, "GPU": 1.0}, 2, (2, 4, 4.0, 0.5)),  # two actors share the GPU
])
def test_actor_plan_leaves_cpus_to_the_decoding_tasks(resources, actors, expected):
    from attnviz.analysis.engine_ray import ActorPlan

    plan = ActorPlan.for_cluster(resources, actors)
    assert (plan.actors, plan.threads, plan.cpus, plan.gpus) == expected
    assert plan.actors * plan.cpus <= resources["CPU"] / 2


class SlowForward(nn.Module):
    """The built-in model taking 0.3 s more per batch, so a run is still going when the
    driver takes the actors' partials for a checkpoint."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        time.sleep(0.3)
        return self.inner(x)


def test_an_interrupted_ray_run_resumes_from_its_checkpoint(folder, local_ray, tmp_path, monkeypatch):  # noqa: F811
    from attnviz.analysis import Analysis, analyze

    good = double(CBAM)
    loaded = LoadedModel(good.variant, SlowForward(good.model), good.device, good.weights)
    local = analyze(folder, loaded, batch_size=2, num_workers=0)
    checkpoint = tmp_path / "analysis.npz"

    def stop_after_a_checkpoint(done: int, total: int) -> None:
        if checkpoint.exists():  # the actors' partials were taken mid-run and saved
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # checkpoint_every=1: take at 1 batch x 2 images x 2 actors
        analyze(folder, loaded, batch_size=2, engine="ray", ray_actors=2, checkpoint=checkpoint,
                checkpoint_every=1, progress=stop_after_a_checkpoint)
    assert_actors_freed()
    partial = Analysis.load(checkpoint)
    assert 4 <= partial.n_done < 13 and not partial.complete
    assert partial.n_images + len(partial.skipped) == partial.n_done  # its ranges are the items it holds
    seen = []
    resumed = analyze(folder, loaded, batch_size=2, engine="ray", ray_actors=2, resume=partial,
                      progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (13 - partial.n_done,) * 2  # only the items the checkpoint lacks
    assert_same(resumed, local)
    assert resumed.skipped == local.skipped

    saves = []  # uninterrupted, partials taken mid-run and at the end merge to the same numbers
    save = Analysis.save
    monkeypatch.setattr(Analysis, "save", lambda self, path: saves.append(self.n_done) or save(self, path))
    whole = analyze(folder, loaded, batch_size=2, engine="ray", ray_actors=2, checkpoint=tmp_path / "c.npz",
                    checkpoint_every=1)
    assert len(saves) >= 2 and saves[0] < 13 and saves[-1] == 13
    assert_same(whole, local)
    assert_same(Analysis.load(tmp_path / "c.npz"), local)
