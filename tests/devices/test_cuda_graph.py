"""CUDA graph capture and replay (runtime/cuda_graph.py) on the strict stand-in.

The stand-in's capture is CUDA's: a sync, an upload, a host read, a ``cudaMalloc``, an allocation
outside the graph's pool or work on another stream raises and invalidates the capture; a replay is
one counted launch that re-runs the recorded operations on the same buffers.  Sessions: replay
equals eager on the static-shape shared models, a replayed run costs one graph launch plus the feed
and output copies, each input-shape signature gets its own graph, graphs leave with their plans,
and what cannot be captured runs eagerly with its reason in the report.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
from onnx import TensorProto, helper

import gpuinfer
from gpuinfer.backends.strict import STRICT
from gpuinfer.backends.strict.counters import CaptureViolation
from gpuinfer.backends.strict.memory import SPACE
from gpuinfer.errors import GpuinferError
from tests.model_zoo import model_case, shared_available
from tests.tiny_models import conv_net, conv_net_feeds

cp = STRICT
RUNS_BEFORE_REPLAY = 2  # a warm-up run and a sizing run


@pytest.fixture(autouse=True)
def no_capture_left_open():
    """A test that fails mid-capture must not leave the stand-in capturing for the next one."""
    yield
    if SPACE.capture.active:
        try:
            SPACE.capture.end()
        except CaptureViolation:
            pass


def counted(fn):
    before = cp.counters.snapshot()
    result = fn()
    return result, cp.counters.delta(before, cp.counters.snapshot())


def graph_session(model, mode="arena", **kwargs):
    return gpuinfer.InferenceSession(model, device="strict", memory_mode=mode, cuda_graph=True, **kwargs)


# --- the stand-in's capture ---------------------------------------------------------------------
def _capture_fails_with(action, match):
    x = cp.asarray(np.arange(4, dtype=np.float32))
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        with pytest.raises(CaptureViolation, match=match):
            action(x)
        with pytest.raises(CaptureViolation, match="invalidated"):
            stream.end_capture()


@pytest.mark.parametrize("action, match", [
    (lambda x: x.get(), "device-to-host read"),
    (lambda x: float(x[0]), "device-to-host read"),
    (lambda x: x.set(np.zeros(4, np.float32)), "upload"),
    (lambda x: cp.asarray(np.ones(4, np.float32)), "upload"),
    (lambda x: cp.cuda.Memory(1024), "cudaMalloc"),
    (lambda x: cp.cuda.get_current_stream().synchronize(), "synchronize"),
    (lambda x: cp.cuda.Device().synchronize(), "synchronize"),
])
def test_capture_refuses_what_cuda_refuses(action, match):
    _capture_fails_with(action, match)


def test_capture_refuses_allocations_outside_its_pool():
    """Only the allocator current at begin_capture (the graph's private pool) may hand out memory."""
    graph_pool = cp.cuda.MemoryPool()
    graph_pool.malloc(4096)  # a cached block: serving it needs no cudaMalloc

    def other_allocator(x):
        with cp.cuda.using_allocator(cp.get_default_memory_pool().malloc):
            return x * 2

    x = cp.asarray(np.arange(4, dtype=np.float32))
    stream = cp.cuda.Stream(non_blocking=True)
    with cp.cuda.using_allocator(graph_pool.malloc), stream:
        stream.begin_capture()
        with pytest.raises(CaptureViolation, match="outside the capture's pool"):
            other_allocator(x)
        with pytest.raises(CaptureViolation):
            stream.end_capture()


def test_capture_refuses_work_on_another_stream():
    x = cp.asarray(np.arange(4, dtype=np.float32))
    stream = cp.cuda.Stream(non_blocking=True)
    stream.begin_capture()  # capturing, but the block below runs on the legacy stream
    with pytest.raises(CaptureViolation, match="other than the capturing"):
        cp.multiply(x, 2, out=x)
    with pytest.raises(CaptureViolation):
        stream.end_capture()


def test_replay_reruns_the_recorded_work_on_the_same_buffers_as_one_launch():
    x = cp.asarray(np.arange(4, dtype=np.float32))
    y = cp.empty((4,), np.float32)
    stream = cp.cuda.Stream(non_blocking=True)
    pool = cp.cuda.MemoryPool()
    cached = [pool.malloc(16) for _ in range(2)]
    del cached  # two blocks kept in the pool: serving them during capture needs no cudaMalloc
    with stream, cp.cuda.using_allocator(pool.malloc):
        stream.begin_capture()
        t = cp.multiply(x, 3)  # a temporary from the graph's pool
        cp.add(t, 1, out=y)
        with pytest.raises(CaptureViolation):
            cp.cuda.Stream(non_blocking=True).synchronize()  # forbidden while any capture runs
    # the violation invalidated that capture; capture again, cleanly
    with pytest.raises(CaptureViolation):
        stream.end_capture()
    with stream, cp.cuda.using_allocator(pool.malloc):
        stream.begin_capture()
        t = cp.multiply(x, 3)
        cp.add(t, 1, out=y)
        graph = stream.end_capture()
    with pytest.raises(CaptureViolation, match="graph launch"):
        with stream:
            stream.begin_capture()
            graph.launch(stream)
    with pytest.raises(CaptureViolation):
        stream.end_capture()
    x.set(np.array([1, 2, 3, 4], np.float32))
    _, d = counted(lambda: graph.launch(stream))
    assert d["launches"] == 1 and d["graph_launches"] == 1 and d["syncs"] == 0
    assert y.get().tolist() == [4.0, 7.0, 10.0, 13.0]


# --- sessions -------------------------------------------------------------------------------------
def _warm(sess, feeds, **kwargs):
    for _ in range(RUNS_BEFORE_REPLAY):
        sess.run(None, feeds, **kwargs)


@pytest.mark.parametrize("mode", ["arena", "per_tensor"])
def test_replay_matches_eager_and_costs_one_launch_plus_copies(mode):
    feeds = conv_net_feeds(2, 24, 24)
    expected = gpuinfer.InferenceSession(conv_net(), device="cpu").run(None, feeds)
    sess = graph_session(conv_net(), mode)
    _warm(sess, feeds)
    assert sess.memory_report().cuda_graph.startswith("eager")
    for seed in (1, 2):  # the captured run, then a replay with other data
        feeds = conv_net_feeds(2, 24, 24, seed=seed)
        expected = gpuinfer.InferenceSession(conv_net(), device="cpu").run(None, feeds)
        got, d = counted(lambda: sess.run(None, feeds))
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-5)
    report = sess.memory_report()
    assert report.cuda_graph == "replayed"
    # one graph launch; the feed goes up (one upload) and the output comes down (one read)
    assert (d["launches"], d["graph_launches"], d["uploads"], d["syncs"]) == (1, 1, 1, 1)
    assert d["outside_bytes"] == 0
    assert report.graph_pool_bytes >= feeds["x"].nbytes  # the input buffer at least
    assert report.held_bytes_after_run >= report.graph_pool_bytes


def test_device_feeds_and_device_outputs_on_replay():
    feeds = conv_net_feeds(1, 16, 16)
    sess = graph_session(conv_net())
    device_feeds = {k: cp.asarray(v) for k, v in feeds.items()}
    _warm(sess, device_feeds, output_device="cuda")
    first = sess.run(None, device_feeds, output_device="cuda")[0]
    got, d = counted(lambda: sess.run(None, device_feeds, output_device="cuda"))
    # one copy of the feed into the graph's input buffer, one graph launch; nothing read back
    assert (d["launches"], d["graph_launches"], d["uploads"], d["syncs"]) == (2, 1, 0, 0)
    assert got[0] is first  # the graph's own output buffer: valid until the next run
    expected = gpuinfer.InferenceSession(conv_net(), device="cpu").run(None, feeds)[0]
    np.testing.assert_allclose(got[0].get(), expected, rtol=1e-5, atol=1e-5)


def test_each_signature_gets_its_own_graph_and_eviction_drops_graphs():
    small, large = conv_net_feeds(1, 16, 16), conv_net_feeds(1, 32, 32)
    sess = graph_session(conv_net(), plan_cache_size=2)
    for _ in range(RUNS_BEFORE_REPLAY + 1):
        sess.run(None, small)
        sess.run(None, large)
    assert sess._graphs.graphs == 2
    both = sess.memory_report().graph_pool_bytes
    for feeds in (small, large):
        expected = gpuinfer.InferenceSession(conv_net(), device="cpu").run(None, feeds)[0]
        np.testing.assert_allclose(sess.run(None, feeds)[0], expected, rtol=1e-5, atol=1e-5)
        assert sess.memory_report().cuda_graph == "replayed"
    third = conv_net_feeds(2, 16, 16)
    sess.run(None, third)  # a third signature evicts the least recent plan, and its graph
    assert sess._graphs.graphs == 1
    assert 0 < sess.memory_report().graph_pool_bytes < both


def test_arena_growth_drops_graphs_that_point_into_the_old_block():
    small, large = conv_net_feeds(1, 16, 16), conv_net_feeds(1, 48, 48)
    sess = graph_session(conv_net())
    for _ in range(RUNS_BEFORE_REPLAY + 1):
        sess.run(None, small)
    assert sess._graphs.graphs == 1
    sess.run(None, large)  # the shared arena grows: the small graph's pointers are stale
    got = sess.run(None, small)[0]
    expected = gpuinfer.InferenceSession(conv_net(), device="cpu").run(None, small)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert sess.memory_report().cuda_graph.startswith("eager")  # warming up again, not replaying


@pytest.mark.parametrize("mode", ["reduce", "reuse"])
def test_modes_without_fixed_addresses_run_eagerly_and_say_why(mode, caplog):
    feeds = conv_net_feeds(1, 16, 16)
    with caplog.at_level(logging.WARNING, logger="gpuinfer"):
        sess = graph_session(conv_net(), mode)
        for _ in range(RUNS_BEFORE_REPLAY + 2):
            sess.run(None, feeds)
    report = sess.memory_report()
    assert report.cuda_graph.startswith("eager: ") and f"memory_mode={mode!r}" in report.cuda_graph
    assert report.graph_pool_bytes == 0
    said = [r for r in caplog.records if "CUDA graphs off" in r.getMessage()]
    assert len(said) == 1  # said once, not per run


def test_data_dependent_shapes_run_eagerly_and_say_why():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, None)
    graph = helper.make_graph([helper.make_node("NonZero", ["x"], ["y"])], "nz", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    sess = graph_session(model)
    feeds = {"x": np.array([0, 1, 0, 2, 3, 0], np.float32)}
    for _ in range(RUNS_BEFORE_REPLAY + 2):
        got = sess.run(None, feeds)[0]
    np.testing.assert_array_equal(got, np.array([[1, 3, 4]]))
    status = sess.memory_report().cuda_graph
    assert status.startswith("eager: ") and ("data-dependent" in status or "capture failed" in status), status


@pytest.mark.skipif(not shared_available(), reason="shared models folder absent")
def test_control_flow_runs_eagerly_and_names_the_node():
    source, feeds = model_case("shared/silero_vad.onnx")
    sess = graph_session(source)
    for _ in range(RUNS_BEFORE_REPLAY + 1):
        got = sess.run(None, feeds)
    status = sess.memory_report().cuda_graph
    assert status.startswith("eager: ") and "(If," in status and "control flow" in status
    expected = gpuinfer.InferenceSession(source, device="cpu").run(None, feeds)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def test_cpu_sessions_refuse_cuda_graph_and_ignore_the_provider_option():
    with pytest.raises(GpuinferError, match="cuda_graph=True needs a CUDA session"):
        gpuinfer.InferenceSession(conv_net(), device="cpu", cuda_graph=True)
    sess = gpuinfer.InferenceSession(conv_net(), device="cpu", providers=[
        ("CUDAExecutionProvider", {"enable_cuda_graph": "1"}), "CPUExecutionProvider"])
    sess.run(None, conv_net_feeds())
    assert sess.memory_report().cuda_graph == "off"


def test_onnxruntime_provider_option_turns_graphs_on():
    sess = gpuinfer.InferenceSession(conv_net(), device="strict", memory_mode="arena", providers=[
        ("CUDAExecutionProvider", {"enable_cuda_graph": "1"})])
    feeds = conv_net_feeds()
    for _ in range(RUNS_BEFORE_REPLAY + 2):
        sess.run(None, feeds)
    assert sess.memory_report().cuda_graph == "replayed"


# --- the shared models ------------------------------------------------------------------------------
# Fully static after the feeds' shapes are known, at small shapes where the model allows (CI-cheap).
_RNG = np.random.default_rng(7)
SMALL_FEEDS = {
    "ch_PP-OCRv4_det_infer.onnx": {"x": _RNG.standard_normal((1, 3, 64, 64)).astype(np.float32)},
    "ch_PP-OCRv4_rec_infer.onnx": {"x": _RNG.standard_normal((1, 3, 48, 64)).astype(np.float32)},
    "nudenet_320n.onnx": {"images": _RNG.standard_normal((1, 3, 64, 64)).astype(np.float32)},
    "mtcnn_pnet.onnx": {"input_1": _RNG.standard_normal((1, 24, 32, 3)).astype(np.float32)},
}
STATIC_SHARED = ["u2netp.onnx", "mtcnn_onet.onnx", "mtcnn_rnet.onnx", "mtcnn_pnet.onnx",
                 "ch_ppocr_mobile_v2.0_cls_infer.onnx", "ch_PP-OCRv4_det_infer.onnx",
                 "ch_PP-OCRv4_rec_infer.onnx", "nudenet_320n.onnx", "all-MiniLM-L6-v2_int8w.onnx"]


@pytest.mark.skipif(not shared_available(), reason="shared models folder absent (../shared/models)")
@pytest.mark.parametrize("name", STATIC_SHARED)
def test_replay_equals_eager_on_the_shared_models(name):
    source, feeds = model_case(f"shared/{name}")
    feeds = SMALL_FEEDS.get(name, feeds)
    eager = gpuinfer.InferenceSession(source, device="strict", memory_mode="arena").run(None, feeds)
    sess = graph_session(source)
    _warm(sess, feeds)
    sess.run(None, feeds)  # captured
    got, d = counted(lambda: sess.run(None, feeds))
    report = sess.memory_report()
    assert report.cuda_graph == "replayed", report.cuda_graph
    for g, e in zip(got, eager):
        np.testing.assert_array_equal(g, e)  # the same kernels on the same data: bit for bit
    # device-side index checks (Gather's) add their one read after the run, and a stack of them
    deferred = len(next(iter(sess._graphs._entries.values())).deferred)
    assert d["graph_launches"] == 1 and d["launches"] == 1 + (deferred > 1) and d["uploads"] == len(feeds)
    assert d["syncs"] == len(got) + (deferred > 0)  # one read per output, nothing else


def test_text_report_shows_the_graph_pool_only_when_there_is_one():
    from gpuinfer.cli.measure import ModeResult
    from gpuinfer.cli.tables import memory_report_text

    feeds = conv_net_feeds()
    texts = []
    for graphs in (False, True):
        sess = gpuinfer.InferenceSession(conv_net(), device="strict", memory_mode="arena", cuda_graph=graphs)
        for _ in range(RUNS_BEFORE_REPLAY + 2):
            out = sess.run(None, feeds)
        report = sess.memory_report()
        texts.append(memory_report_text(ModeResult("arena", "strict", report, [0.1, 0.1], ["y"], out)))
    assert "graph pool" not in texts[0]
    assert "graph pool" in texts[1] and "replayed" in texts[1]


def test_first_fit_never_overlaps_and_a_sized_pool_serves_the_same_requests():
    from gpuinfer.backends.cuda.graph_pool import FirstFit, GraphPoolExhausted

    rng = np.random.default_rng(3)
    events = []  # the same request sequence, replayed on a pool of the measured size
    live: list[int] = []
    for _ in range(400):
        if live and rng.random() < 0.45:
            events.append(("free", live.pop(int(rng.integers(len(live))))))
        else:
            events.append(("alloc", int(rng.integers(1, 20_000))))
            live.append(len(events) - 1)

    def play(fit):
        spans = {}
        for i, (kind, arg) in enumerate(events):
            if kind == "alloc":
                start = fit.alloc(arg)
                for s, e in spans.values():
                    assert start + arg <= s or start >= e, "overlapping allocations"
                spans[i] = (start, start + arg)
            else:
                fit.free(spans.pop(arg)[0])
        return fit.high_water

    need = play(FirstFit())
    assert play(FirstFit(need)) == need
    assert need < sum(arg for kind, arg in events if kind == "alloc")  # freed space was reused
    with pytest.raises(GraphPoolExhausted):
        play(FirstFit(need - 512))
