"""The onnxruntime-shaped API: descriptions, output selection, kept values, reports, no growth."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import gpuinfer
from tests.model_zoo import reference_outputs
from tests.tiny_models import conv_net, conv_net_feeds

MODES = gpuinfer.MEMORY_MODES


def test_inputs_and_outputs_described_like_onnxruntime():
    sess = gpuinfer.InferenceSession(conv_net(), device="cpu")
    (inp,) = sess.get_inputs()
    assert (inp.name, inp.shape, inp.type) == ("x", ["N", 3, "H", "W"], "tensor(float)")
    (out,) = sess.get_outputs()
    assert out.name == "y" and out.type == "tensor(float)"
    assert sess.get_providers() == ["CPUExecutionProvider"]


def test_providers_argument_is_accepted():
    sess = gpuinfer.InferenceSession(conv_net(), providers=["CPUExecutionProvider"])
    assert sess.device == "cpu"
    with pytest.raises(gpuinfer.GpuinferError, match="unknown execution provider"):
        gpuinfer.InferenceSession(conv_net(), providers=["TensorrtExecutionProvider"])


@pytest.mark.parametrize("mode", MODES)
def test_matches_onnxruntime_in_every_mode(mode):
    model = conv_net()
    feeds = conv_net_feeds(2, 20, 12)
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode)
    np.testing.assert_allclose(sess.run(None, feeds)[0], reference_outputs(model.SerializeToString(), feeds)[0],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["reduce", "reuse", "arena"])
def test_freed_intermediate_raises_data_removed(mode):
    sess = gpuinfer.InferenceSession(conv_net(), device="cpu", memory_mode=mode)
    with pytest.raises(gpuinfer.DataRemovedError) as info:
        sess.run(["r1"], conv_net_feeds())
    assert "r1" in str(info.value) and mode in str(info.value) and "keep=" in str(info.value)


@pytest.mark.parametrize("mode", MODES)
def test_kept_intermediate_is_readable(mode):
    model = conv_net()
    feeds = conv_net_feeds()
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode, keep=["r1"])
    r1, y = sess.run(["r1", "y"], feeds)
    ref_r1 = gpuinfer.InferenceSession(model, device="cpu").run(["r1"], feeds)[0]
    np.testing.assert_array_equal(r1, ref_r1)
    assert y.shape == (1, 8, 8, 8)


def test_per_tensor_can_read_any_intermediate_and_gets_a_copy():
    sess = gpuinfer.InferenceSession(conv_net(), device="cpu", memory_mode="per_tensor")
    first = sess.run(["c2"], conv_net_feeds(seed=1))[0]
    again = first.copy()
    sess.run(["c2"], conv_net_feeds(seed=2))
    np.testing.assert_array_equal(first, again)  # the next run did not overwrite what we were given


def test_unknown_output_name():
    sess = gpuinfer.InferenceSession(conv_net(), device="cpu")
    with pytest.raises(gpuinfer.InputError, match="nope"):
        sess.run(["nope"], conv_net_feeds())


def test_report_fields():
    sess = gpuinfer.InferenceSession(conv_net(), device="cpu", memory_mode="arena", sample_memory=True)
    with pytest.raises(gpuinfer.GpuinferError, match="no run yet"):
        sess.memory_report()
    sess.run(None, conv_net_feeds())
    report = sess.memory_report()
    d = report.to_dict()
    for key in ("mode", "device", "peak_bytes", "lower_bound_bytes", "planned_bytes", "sampled_peak_bytes",
                "allocations", "alloc_seconds", "timeline"):
        assert key in d
    assert report.mode == "arena" and report.device == "cpu"
    assert len(report.timeline) == len(sess.graph.nodes)
    assert max(r.live_bytes for r in report.timeline) <= report.peak_bytes
    assert report.planned_bytes > 0 and report.peak_bytes >= report.planned_bytes


@pytest.mark.parametrize("mode", MODES)
def test_two_hundred_runs_do_not_grow(mode):
    feeds = conv_net_feeds(1, 24, 24)
    if tracemalloc.is_tracing():
        tracemalloc.clear_traces()  # snapshots below then cover this test's allocations only
    sess = gpuinfer.InferenceSession(conv_net(), device="cpu", memory_mode=mode, sample_memory=True)
    held, traced = [], []
    for _ in range(200):
        out = sess.run(None, feeds)
        del out
        held.append(sess.held_bytes)
        traced.append(_numpy_bytes_traced())
    assert len(set(held[1:])) == 1, f"{mode}: pool bytes changed across runs: {sorted(set(held))}"
    assert len(set(traced[1:])) == 1, f"{mode}: numpy bytes alive after a run changed: {sorted(set(traced))}"


def _numpy_bytes_traced() -> int:
    """Bytes of numpy data buffers alive now, as tracemalloc sees them (numpy's own trace domain).

    Python's object free lists keep small tuples and slices traced for a while, so the total of
    all domains creeps up for reasons that are not ours; numpy's domain is exact.
    """
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)])
    return sum(stat.size for stat in snap.statistics("filename"))


def test_memory_limit_fails_before_running():
    sess = gpuinfer.InferenceSession(conv_net(), device="cpu", memory_mode="per_tensor", memory_limit_bytes=1000)
    with pytest.raises(gpuinfer.MemoryLimitError, match="memory_limit_bytes"):
        sess.run(None, conv_net_feeds())
    assert sess.held_bytes == 0


def test_intra_op_threads_caps_blas_during_run():
    from threadpoolctl import threadpool_info

    seen = []
    model = conv_net()
    sess = gpuinfer.InferenceSession(model, device="cpu", intra_op_threads=1)
    from gpuinfer.runtime import executor

    original = executor.Executor.run

    def spy(self, *args, **kwargs):
        seen.extend(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")
        return original(self, *args, **kwargs)

    executor.Executor.run = spy
    try:
        got = sess.run(None, conv_net_feeds())[0]
    finally:
        executor.Executor.run = original
    assert seen and set(seen) == {1}
    np.testing.assert_array_equal(got, gpuinfer.InferenceSession(model, device="cpu").run(None, conv_net_feeds())[0])
    with pytest.raises(gpuinfer.GpuinferError, match="intra_op_threads"):
        gpuinfer.InferenceSession(model, intra_op_threads=0)


def test_sampler_stops_tracemalloc_when_its_last_session_goes():
    import gc

    gc.collect()
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc is already on (started outside gpuinfer or by a live session)")
    first = gpuinfer.InferenceSession(conv_net(), device="cpu", sample_memory=True)
    second = gpuinfer.InferenceSession(conv_net(), device="cpu", sample_memory=True)
    assert tracemalloc.is_tracing()
    del first
    gc.collect()
    assert tracemalloc.is_tracing(), "a session still samples"
    second.run(None, conv_net_feeds())
    assert second.memory_report().sampled_peak_bytes > 0
    del second
    gc.collect()
    assert not tracemalloc.is_tracing()
