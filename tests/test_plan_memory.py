"""The plan before the first run: ``plan_memory`` reports what a run of a signature will take
without running it, and ``memory_mode="auto"`` picks the fastest mode whose plan fits."""
from __future__ import annotations

import logging

import numpy as np
import pytest

import gpuinfer
from gpuinfer.backends.strict import STRICT
from gpuinfer.plan import MODES
from tests.model_zoo import shared_available, shared_model_path
from tests.tiny_models import conv_net, conv_net_feeds

U2NETP = shared_model_path("u2netp.onnx")
needs_u2netp = pytest.mark.skipif(not shared_available() or not U2NETP.exists(), reason="u2netp.onnx not in /work/shared/models")
U2_SHAPE = {"input.1": (1, 3, 320, 320)}


@needs_u2netp
@pytest.mark.parametrize("mode", ["per_tensor", "arena"])
def test_plan_memory_matches_a_real_run_without_running(mode):
    sess = gpuinfer.InferenceSession(U2NETP, device="cpu", memory_mode=mode, profile=True)
    planned = sess.plan_memory(U2_SHAPE)
    assert sess.profile() == {}, "plan_memory ran kernels"
    with pytest.raises(gpuinfer.GpuinferError, match="no run yet"):
        sess.memory_report()
    # the tensors at the peak step sum to the lower bound, each with its producer and last reader
    assert sum(t.nbytes for t in planned.at_peak) == planned.lower_bound_bytes
    assert all("node " in t.produced_by and "node " in t.last_read_by for t in planned.at_peak)
    feeds = {"input.1": np.random.default_rng(0).standard_normal(U2_SHAPE["input.1"], dtype=np.float32)}
    fresh = gpuinfer.InferenceSession(U2NETP, device="cpu", memory_mode=mode)  # planned by its run only
    fresh.run(None, feeds)
    report = fresh.memory_report()
    assert planned.planned_bytes == report.planned_bytes
    assert planned.need_bytes == fresh.plan_for(feeds).need_bytes
    assert "nothing run" in planned.text() and "top tensors alive" in planned.text()


def test_plan_memory_launches_nothing_on_the_strict_device():
    model = conv_net(channels=8)
    sess = gpuinfer.InferenceSession(model.SerializeToString(), device="strict", memory_mode="arena")
    before = STRICT.counters.snapshot()
    planned = sess.plan_memory({"x": (1, 3, 16, 16)})
    delta = STRICT.counters.delta(before, STRICT.counters.snapshot())
    assert delta["launches"] == 0 and sess.held_bytes == 0, delta
    sess.run(None, conv_net_feeds())
    assert sess.memory_report().planned_bytes == planned.planned_bytes


def test_auto_picks_per_tensor_without_a_limit_and_a_leaner_mode_under_one(caplog):
    model = conv_net(channels=8).SerializeToString()
    feeds = conv_net_feeds(h=32, w=32)
    free = gpuinfer.InferenceSession(model, device="cpu", memory_mode="auto")
    with caplog.at_level(logging.INFO, logger="gpuinfer"):
        expected = gpuinfer.InferenceSession(model, device="cpu").run(None, feeds)
        got = free.run(None, feeds)
    assert free.memory_mode == "per_tensor"
    assert "chose 'per_tensor'" in free.memory_report().auto_choice
    np.testing.assert_array_equal(got[0], expected[0])
    needs = {m: gpuinfer.InferenceSession(model, device="cpu", memory_mode=m).plan_memory({"x": feeds["x"].shape}).need_bytes
             for m in MODES}
    limit = needs["per_tensor"] - 1
    tight = gpuinfer.InferenceSession(model, device="cpu", memory_mode="auto", memory_limit_bytes=limit)
    plan = tight.plan_memory({"x": feeds["x"].shape})
    assert tight.memory_mode != "per_tensor" and needs[tight.memory_mode] <= limit
    assert tight.memory_mode in plan.auto_choice and str(limit) in plan.auto_choice
    np.testing.assert_array_equal(tight.run(None, feeds)[0], expected[0])
    assert tight.memory_report().peak_bytes <= limit
    assert any("memory_mode='auto' chose" in r.getMessage() for r in caplog.records)


def test_auto_with_a_limit_nothing_fits_names_each_modes_need():
    model = conv_net(channels=8).SerializeToString()
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode="auto", memory_limit_bytes=1024)
    with pytest.raises(gpuinfer.MemoryLimitError) as err:
        sess.run(None, conv_net_feeds())
    for mode in MODES:
        assert f"{mode} " in str(err.value)
    assert "1024 bytes" in str(err.value)


def test_plan_memory_names_wrong_inputs():
    sess = gpuinfer.InferenceSession(conv_net().SerializeToString(), device="cpu")
    with pytest.raises(gpuinfer.InputError, match="unknown"):
        sess.plan_memory({"nope": (1, 3, 8, 8)})
