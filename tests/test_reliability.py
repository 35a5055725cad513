"""Bad models fail fast and clearly; threads, shape churn and random corruption break nothing."""
from __future__ import annotations

import threading
import time
import tracemalloc

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import gpuinfer
from tests.model_zoo import SHARED_MODELS, shared_available
from tests.tiny_models import conv_net, conv_net_feeds


def _model(nodes, inputs, outputs, inits=(), opset=17):
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits)),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _fast(fn):
    start = time.perf_counter()
    fn()
    assert time.perf_counter() - start < 1.0, "a bad model must be refused in under a second"


def test_opset_newer_than_supported():
    model = conv_net()
    model.opset_import[0].version = onnx.defs.onnx_opset_version() + 5
    with pytest.raises(gpuinfer.InvalidModelError, match="opset"):
        _fast(lambda: gpuinfer.InferenceSession(model))


def test_duplicate_output_names():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Neg", ["x"], ["y"], name="b")]
    with pytest.raises(gpuinfer.InvalidModelError, match="'y'"):
        _fast(lambda: gpuinfer.InferenceSession(_model(nodes, [x], [y])))


def test_initializer_data_not_matching_its_shape():
    model = conv_net()
    init = model.graph.initializer[0]
    init.raw_data = init.raw_data[:16]
    with pytest.raises(gpuinfer.InvalidModelError):
        _fast(lambda: gpuinfer.InferenceSession(model))


def test_huge_constant_refused_at_load():
    shape = numpy_helper.from_array(np.array([1 << 20, 1 << 20, 64], dtype=np.int64), "shape")
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    y.type.tensor_type.shape.dim.add()
    model = _model([helper.make_node("ConstantOfShape", ["shape"], ["y"], name="huge")], [], [y], [shape])
    with pytest.raises(gpuinfer.InvalidModelError, match="huge"):
        _fast(lambda: gpuinfer.InferenceSession(model))


def test_planning_beyond_memory_refused_before_allocating():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])
    shape = numpy_helper.from_array(np.array([1 << 18, 1 << 18], dtype=np.int64), "shape")
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    nodes = [helper.make_node("Expand", ["x", "shape"], ["big"]),
             helper.make_node("ReduceSum", ["big"], ["y"], keepdims=0)]
    model = _model(nodes, [x], [y], [shape], opset=11)
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode="per_tensor")
    with pytest.raises(gpuinfer.MemoryLimitError, match="bytes"):
        _fast(lambda: sess.run(None, {"x": np.ones((1, 1), np.float32)}))
    assert sess.held_bytes == 0


def test_missing_external_data(tmp_path):
    model = conv_net()
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(gpuinfer.ModelLoadError, match="external data"):
        _fast(lambda: gpuinfer.InferenceSession(str(path)))


def test_external_data_present_loads(tmp_path):
    feeds = conv_net_feeds()
    expected = gpuinfer.InferenceSession(conv_net(), device="cpu").run(None, feeds)[0]
    path = tmp_path / "m.onnx"
    onnx.save_model(conv_net(), str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    np.testing.assert_array_equal(gpuinfer.InferenceSession(str(path), device="cpu").run(None, feeds)[0], expected)


def test_nan_inf_computed_not_rejected():
    x = conv_net_feeds()["x"].copy()
    x[0, 0, 0, 0] = np.nan
    x[0, 1, 5, 5] = np.inf
    out = gpuinfer.InferenceSession(conv_net(), device="cpu").run(None, {"x": x})[0]
    assert np.isnan(out).any()


def test_zero_sized_batch():
    sess = gpuinfer.InferenceSession(conv_net(), device="cpu", memory_mode="arena")
    out = sess.run(None, {"x": np.zeros((0, 3, 16, 16), np.float32)})[0]
    assert out.shape == (0, 8, 8, 8)


@pytest.mark.parametrize("mode", gpuinfer.MEMORY_MODES)
def test_eight_threads_share_one_session(mode):
    sess = gpuinfer.InferenceSession(conv_net(), device="cpu", memory_mode=mode)
    feeds = [conv_net_feeds(1, 12, 12, seed=s) for s in range(8)]
    expected = [gpuinfer.InferenceSession(conv_net(), device="cpu").run(None, f)[0] for f in feeds]
    failures = []

    def worker(i):
        for _ in range(100):
            got = sess.run(None, feeds[i])[0]
            if not np.array_equal(got, expected[i]):
                failures.append(i)
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, f"{mode}: threads {sorted(set(failures))} got wrong outputs"


@pytest.mark.parametrize("mode", gpuinfer.MEMORY_MODES)
def test_shape_churn_stays_flat(mode):
    """Input shapes change every few runs: plans are reused, the cache is bounded, nothing grows."""
    shapes = [(1, 16, 16), (2, 12, 20), (1, 24, 8), (3, 8, 8)]
    if tracemalloc.is_tracing():
        tracemalloc.clear_traces()  # snapshots below then cover this test's allocations only
    sess = gpuinfer.InferenceSession(conv_net(), device="cpu", memory_mode=mode, plan_cache_size=2,
                                     sample_memory=True)
    held, traced = [], []
    for i in range(160):
        n, h, w = shapes[(i // 3) % len(shapes)]
        out = sess.run(None, conv_net_feeds(n, h, w, seed=i))
        del out
        if i >= 48 and i % 12 == 11:  # the same point of the shape cycle each time
            held.append(sess.held_bytes)
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)])
            traced.append(sum(s.size for s in snap.statistics("filename")))
    assert len(sess._plans) <= 2
    assert max(held) == min(held), f"{mode}: pool bytes moved between {min(held)} and {max(held)}"
    assert max(traced) - min(traced) < (1 << 20), f"{mode}: numpy memory grew by {max(traced) - min(traced)}"


def _fuzz_source() -> bytes:
    if shared_available():
        return (SHARED_MODELS / "mtcnn_rnet.onnx").read_bytes()
    return conv_net().SerializeToString()


FUZZ_BYTES = _fuzz_source()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(FUZZ_BYTES) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.booleans())
def test_fuzzed_models_only_raise_gpuinfer_errors(edits, truncate):
    data = bytearray(FUZZ_BYTES)
    for pos, value in edits:
        data[pos] = value
    if truncate:
        data = data[: edits[0][0]]
    try:
        sess = gpuinfer.InferenceSession(bytes(data), device="cpu", memory_mode="arena")
        feeds = {}
        for inp in sess.get_inputs():
            shape = [d if isinstance(d, int) else 2 for d in inp.shape]
            feeds[inp.name] = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        sess.run(None, feeds)
    except gpuinfer.GpuinferError:
        pass


@st.composite
def _bad_feeds(draw):
    """Feeds for conv_net that are wrong in one or more ways: names, ranks, dims, dtypes, values."""
    name = draw(st.sampled_from(["x", "x", "x", "y", ""]))
    rank = draw(st.integers(0, 5))
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=rank, max_size=rank)))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.bool_, np.uint8]))
    fill = draw(st.sampled_from([0.0, 1.0, np.nan, np.inf, -1e30]))
    with np.errstate(invalid="ignore"):  # NaN/inf cast to integer dtypes: garbage values are the point
        feeds = {name: np.full(shape, fill).astype(dtype)}
    if draw(st.booleans()):
        feeds["extra"] = np.zeros(1, np.float32)
    return feeds


@pytest.fixture(scope="module")
def fuzz_session():
    return gpuinfer.InferenceSession(conv_net(), device="cpu", memory_mode="arena")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_bad_feeds())
def test_fuzzed_feeds_only_raise_gpuinfer_errors(fuzz_session, feeds):
    try:
        out = fuzz_session.run(None, feeds)
    except gpuinfer.GpuinferError:
        return
    # accepted feeds are well-formed ones: the output has the model's shape
    assert out[0].shape[1:2] == (8,)
