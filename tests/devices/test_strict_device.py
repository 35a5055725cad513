"""The CUDA path, run on the strict stand-in: the rules a GPU run must keep, checked per model.

In a steady-state run on every model and mode: no device-to-host sync (If/Loop conditions
aside), no upload beyond the feeds, no byte allocated outside the counting hook; every memory
mode gives the numpy device's outputs; out-of-memory comes out as ``DeviceMemoryError``.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import gpuinfer
from gpuinfer.backends.strict import STRICT
from gpuinfer.backends.strict.memory import SPACE
from tests.model_zoo import model_case, shared_available
from tests.tiny_models import conv_net, conv_net_feeds

MODES = list(gpuinfer.MEMORY_MODES)
# shufflenet: AveragePool's per-position divisor table was uploaded every run (3 uploads; 7 on
# inception_v2) until it was kept on the device (ops/pool.py)
CENSUS_MODELS = ["light/resnet50", "light/squeezenet", "light/inception_v1", "light/shufflenet"] + (
    ["shared/u2netp.onnx", "shared/silero_vad.onnx", "shared/all-MiniLM-L6-v2_int8w.onnx",
     "shared/ch_ppocr_mobile_v2.0_cls_infer.onnx", "shared/mtcnn_onet.onnx"] if shared_available() else [])


def steady_run(sess, feeds):
    """Counters of one run after a warm-up, feeds already on the device, outputs left there."""
    device_feeds = {k: STRICT.asarray(np.asarray(v)) for k, v in feeds.items()}
    sess.run(None, device_feeds, output_device="cuda")
    STRICT.counters.syncs_by_op.clear()
    before = STRICT.counters.snapshot()
    sess.run(None, device_feeds, output_device="cuda")
    delta = STRICT.counters.delta(before, STRICT.counters.snapshot())
    # If/Loop conditions, and the one read after the run of device-side index checks, are allowed
    control = sum(n for op, n in STRICT.counters.syncs_by_op.items()
                  if op in ("If", "Loop", "Scan", "deferred checks"))
    return delta, control


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model_id", CENSUS_MODELS)
def test_steady_state_run_has_no_sync_no_upload_no_hidden_allocation(model_id, mode):
    source, feeds = model_case(model_id)
    sess = gpuinfer.InferenceSession(source, device="strict", memory_mode=mode)
    d, control = steady_run(sess, feeds)
    assert d["syncs"] - control == 0, STRICT.counters.syncs_by_op
    assert d["uploads"] == 0, STRICT.counters.upload_sites[-5:]
    assert d["outside_bytes"] == 0


# u2netp: 11,096 launches a run before the CUDA kernels; 693 with im2col columns banded at 16 MiB
# (whole-image columns took the arena from 105 to 560 MB); 376 with narrow convolutions as one
# direct kernel and Sigmoid as one launch (ops/gpu/conv.py, ops/gpu/activation.py).  Issue 15 asks
# for at most 600 and 250.
@pytest.mark.parametrize("model_id, budget", [("light/resnet50", 250)] + (
    [("shared/u2netp.onnx", 600)] if shared_available() else []))
def test_launches_per_run_stay_within_budget(model_id, budget):
    source, feeds = model_case(model_id)
    sess = gpuinfer.InferenceSession(source, device="strict", memory_mode="arena")
    d, _ = steady_run(sess, feeds)
    assert d["launches"] <= budget


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_matches_the_numpy_device(mode):
    feeds = conv_net_feeds(2, 32, 32)
    expected = gpuinfer.InferenceSession(conv_net(), device="cpu").run(None, feeds)
    sess = gpuinfer.InferenceSession(conv_net(), device="strict", memory_mode=mode)
    for _ in range(2):
        got = sess.run(None, feeds)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
            assert isinstance(g, np.ndarray)


def test_feeds_are_counted_in_the_peak():
    """Feeds go up inside the hook's scope (they were uploaded before it, and missing)."""
    feeds = conv_net_feeds(1, 64, 64)
    sess = gpuinfer.InferenceSession(conv_net(), device="strict", memory_mode="arena")
    sess.run(None, feeds)
    sess.run(None, feeds)
    report = sess.memory_report()
    feed_bytes = sum(v.nbytes for v in feeds.values())
    assert report.peak_bytes >= report.planned_bytes + feed_bytes


@pytest.mark.parametrize("mode", ["per_tensor", "reuse", "arena"])
def test_kept_buffers_are_allocated_once(mode):
    """The first plan already knows the CUDA kernels' scratch: no re-plan after the first run, so
    the kept buffers are allocated once (they were allocated, dropped and allocated again)."""
    feeds = conv_net_feeds(1, 32, 32)
    sess = gpuinfer.InferenceSession(conv_net(), device="strict", memory_mode=mode)
    sess.run(None, feeds)
    held = sess.held_bytes
    assert held > 0 and not sess.plan_for(feeds).from_run
    d, _ = steady_run(sess, feeds)
    assert sess.held_bytes == held
    assert d["hook_allocations"] <= len(sess.get_outputs())  # outputs are the caller's: fresh each run


@pytest.mark.parametrize("backing", ["pool", "cuda_malloc"])
def test_device_out_of_memory_is_a_device_memory_error_with_the_size(backing):
    feeds = conv_net_feeds(4, 128, 128)
    # the session's own check would refuse first (MemoryLimitError): a limit the plan fits lets the
    # run start, and the device itself runs out, as when another process takes the memory meanwhile
    sess = gpuinfer.InferenceSession(conv_net(), device="strict", memory_mode="reduce", device_allocator=backing,
                                     memory_limit_bytes=1 << 40)
    saved = SPACE.capacity
    SPACE.capacity = SPACE.used + 64 * 1024
    try:
        with pytest.raises(gpuinfer.errors.DeviceMemoryError) as info:
            sess.run(None, feeds)
    finally:
        SPACE.capacity = saved
    assert info.value.requested and info.value.requested > 0
    assert "reduce" in str(info.value) and "bytes" in str(info.value)


def test_weights_go_up_in_one_block_that_leaves_with_the_session():
    """Weights are uploaded once, into one block the session owns (a direct cudaMalloc), not as
    arrays of CuPy's default pool, which keeps freed blocks cached: before, ``del`` left every
    weight's bytes reserved there.  The device's address space gets them back when the session goes."""
    import gc

    from gpuinfer.backends.cuda.device import WEIGHT_ALIGN
    from gpuinfer.backends.strict.memory import get_default_memory_pool

    pool = get_default_memory_pool()
    gc.collect()
    space_before, pool_before, blocks_before = SPACE.used, pool.total_bytes(), len(SPACE.blocks)
    model = conv_net(channels=64)
    weights = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    sess = gpuinfer.InferenceSession(model, device="strict", memory_mode="arena")
    assert pool.total_bytes() == pool_before, "weights went into CuPy's default pool"
    assert len(SPACE.blocks) == blocks_before + 1, "the weights are not in one block"
    assert weights <= SPACE.used - space_before <= weights + WEIGHT_ALIGN * len(model.graph.initializer)
    feeds = conv_net_feeds()
    np.testing.assert_allclose(sess.run(None, feeds)[0], gpuinfer.InferenceSession(model, device="cpu").run(None, feeds)[0],
                               rtol=1e-5, atol=1e-6)
    del sess
    gc.collect()
    assert pool.total_bytes() == pool_before and SPACE.used == space_before


def test_no_room_for_the_weights_is_a_device_memory_error_at_creation():
    saved = SPACE.capacity
    SPACE.capacity = SPACE.used + 1024  # less than conv_net(64)'s 150 KB of weights
    try:
        with pytest.raises(gpuinfer.errors.DeviceMemoryError, match="weights") as info:
            gpuinfer.InferenceSession(conv_net(channels=64), device="strict")
    finally:
        SPACE.capacity = saved
    assert info.value.requested and info.value.requested > 1024


def test_string_constants_stay_on_the_host_and_their_ops_run_there():
    labels = helper.make_tensor("labels", TensorProto.STRING, [3], [b"a", b"bb", b"ccc"])
    nodes = [helper.make_node("Constant", [], ["s"], value=labels),
             helper.make_node("StringNormalizer", ["s"], ["u"], case_change_action="UPPER"),
             helper.make_node("Relu", ["x"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("u", TensorProto.STRING, [3]),
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = gpuinfer.InferenceSession(model, device="strict")
    u, y = sess.run(None, {"x": np.array([-1, 0, 2], np.float32)})
    assert list(u) == ["A", "BB", "CCC"] and y.tolist() == [0.0, 0.0, 2.0]


def test_sequence_feeds_go_up_element_by_element():
    node = helper.make_node("SequenceAt", ["seq", "i"], ["y"])
    seq_type = helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, [2])
    graph = helper.make_graph([node], "g", [seq_type, helper.make_tensor_value_info("i", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = gpuinfer.InferenceSession(model, device="strict")
    y, = sess.run(None, {"seq": [np.array([1, 2], np.float32), np.array([3, 4], np.float32)],
                         "i": np.array(1, np.int64)})
    assert y.tolist() == [3.0, 4.0]


def test_cuda_only_arguments_are_refused_on_the_cpu():
    with pytest.raises(gpuinfer.GpuinferError, match="device_allocator"):
        gpuinfer.InferenceSession(conv_net(), device="cpu", device_allocator="async")
    sess = gpuinfer.InferenceSession(conv_net(), device="cpu")
    with pytest.raises(gpuinfer.GpuinferError, match="output_device"):
        sess.run(None, conv_net_feeds(1, 16, 16), output_device="cuda")


def test_async_backing_raises_the_release_threshold():
    gpuinfer.InferenceSession(conv_net(), device="strict", device_allocator="async")
    rt = STRICT.cuda.runtime
    assert rt.pool_attributes[(1, rt.cudaMemPoolAttrReleaseThreshold)] > 1 << 40


@pytest.mark.parametrize("model_id", ["light/resnet50", "light/vgg19"] + (
    ["shared/u2netp.onnx", "shared/ch_PP-OCRv4_det_infer.onnx"] if shared_available() else []))
def test_arena_stays_near_the_cpu_plan(model_id):
    """The CUDA kernels' scratch (im2col columns) may not blow the arena up: at most one column
    band over the numpy device's plan (whole-image columns made u2netp's 5.3x the CPU's)."""
    from gpuinfer.ops.gpu.conv import COLUMN_BUDGET

    source, feeds = model_case(model_id)
    plans = {}
    for device in ("cpu", "strict"):
        sess = gpuinfer.InferenceSession(source, device=device, memory_mode="arena")
        plans[device] = sess.plan_for(feeds).planned_bytes
    assert plans["strict"] <= plans["cpu"] + COLUMN_BUDGET, plans
