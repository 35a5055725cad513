"""Ops on the strict CuPy stand-in (device="strict"): the CUDA device's code path, checked without a GPU.

Each test here failed before its op stopped relying on numpy-only behaviour: ``where=`` on ufuncs
(Shrink, OneHot), ``multiply.at`` and atomics' dtypes (Scatter reductions), the index range check
that a device can only run deferred (Gather/Scatter), and CPU cache-sized tiles that multiplied a
GPU's launches with the input size (Conv, kn2row, pooling, chunked activations).  References are
onnxruntime and the numpy device.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import gpuinfer
from gpuinfer.backends import make_backend
from gpuinfer.backends.numpy_backend import CACHE_TILE_BYTES
from gpuinfer.backends.strict import STRICT
from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.context import StandaloneContext
from gpuinfer.ops.registry import lookup
from tests.node_helpers import run_onnxruntime, single_node_model

RNG = np.random.default_rng(15)


def _run(model: onnx.ModelProto, feeds: dict, device: str) -> list:
    sess = gpuinfer.InferenceSession(model.SerializeToString(), device=device)
    return [np.asarray(v) for v in sess.run(None, feeds)]


def _on_both(op_type, inputs, opset, constant_inputs=(), **attrs):
    """(strict outputs, numpy outputs, the strict run's syncs caused by the op)."""
    model = single_node_model(op_type, inputs, opset=opset, constant_inputs=constant_inputs, **attrs)
    fed = [x for i, x in enumerate(inputs) if i not in constant_inputs]
    feeds = {v.name: x for v, x in zip(model.graph.input, fed)}
    cpu = _run(model, feeds, "cpu")
    before = dict(STRICT.counters.syncs_by_op)
    strict = _run(model, feeds, "strict")
    op_syncs = STRICT.counters.syncs_by_op.get(op_type, 0) - before.get(op_type, 0)
    return strict, cpu, op_syncs


# --- where= on ufuncs ------------------------------------------------------------------------------

SHRINK_X = np.array([-np.inf, -3.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 3.0, np.inf, np.nan], np.float32)


@pytest.mark.parametrize("attrs", [{}, dict(lambd=1.0, bias=0.25), dict(lambd=1.5, bias=1.5),
                                   dict(lambd=-0.5, bias=0.25)])  # negative lambd: both ranges overlap
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_shrink_on_strict_matches_numpy_and_onnxruntime(attrs, dtype):
    x = SHRINK_X.astype(dtype)
    strict, cpu, syncs = _on_both("Shrink", [x], 9, **attrs)
    np.testing.assert_array_equal(strict[0], cpu[0])
    assert strict[0].dtype == cpu[0].dtype
    assert syncs == 0
    if attrs.get("lambd", 0.5) >= 0:  # onnxruntime and numpy agree on overlapping ranges only here
        ref = run_onnxruntime(single_node_model("Shrink", [x], opset=9, **attrs), {"in0": x})[0]
        np.testing.assert_array_equal(strict[0], ref)


def test_shrink_on_strict_integers_and_in_place_chunks():
    x = RNG.integers(-5, 6, 1000).astype(np.int32)
    strict, cpu, _ = _on_both("Shrink", [x], 9, lambd=1.5, bias=2.0)
    np.testing.assert_array_equal(strict[0], cpu[0])


ONEHOT_TYPES = [  # (indices, depth, values) dtypes onnxruntime has a OneHot kernel for
    (np.int64, np.int64, np.float32), (np.int32, np.float32, np.float32), (np.float32, np.int64, np.int64)]


@pytest.mark.parametrize("axis", [-1, 0, 1, -2])
@pytest.mark.parametrize("types", ONEHOT_TYPES, ids=lambda t: "-".join(np.dtype(d).name for d in t))
def test_onehot_on_strict_matches_onnxruntime(axis, types):
    idx = np.array([[1, -1, 9, -12], [0, 4, -5, 2]]).astype(types[0])  # -12 and 9: off everywhere
    depth = np.array(5, types[1])
    values = np.array([2, 7], types[2])
    strict, cpu, syncs = _on_both("OneHot", [idx, depth, values], 11, constant_inputs=(1, 2), axis=axis)
    ref = run_onnxruntime(single_node_model("OneHot", [idx, depth, values], opset=11, constant_inputs=(1, 2),
                                            axis=axis), {"in0": idx})[0]
    np.testing.assert_array_equal(strict[0], ref)
    np.testing.assert_array_equal(cpu[0], ref)
    assert syncs == 0  # depth is a constant: a host value, no device read


def test_onehot_on_strict_int_values():
    idx = np.array([3, 0, -1], np.int64)
    strict, cpu, _ = _on_both("OneHot", [idx, np.array([4], np.int64), np.array([-1, 9], np.int32)], 11,
                              constant_inputs=(1, 2))
    np.testing.assert_array_equal(strict[0], cpu[0])
    assert strict[0].dtype == np.int32


# --- Scatter reductions without ufunc.at -----------------------------------------------------------

def _scatter_elements_case(dtype, n=40, size=6):
    data = RNG.integers(-3, 4, (3, size)).astype(dtype)
    idx = RNG.integers(-size, size, (3, n)).astype(np.int64)  # many duplicates, negatives too
    upd = RNG.integers(-3, 4, (3, n)).astype(dtype)
    if np.dtype(dtype).kind == "u":
        data, upd = np.abs(data), np.abs(upd)
    return data, idx, upd


@pytest.mark.parametrize("reduction", ["mul", "add", "max", "min"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64, np.int64, np.int32, np.int8, np.uint8])
def test_scatter_elements_reductions_on_strict(reduction, dtype):
    """multiply.at does not exist on CuPy; int64/int8/uint8 (and float16 for max/min) have no atomics."""
    data, idx, upd = _scatter_elements_case(dtype)
    strict, cpu, syncs = _on_both("ScatterElements", [data, idx, upd], 18, axis=1, reduction=reduction)
    assert syncs == 0
    assert strict[0].dtype == cpu[0].dtype
    if np.dtype(dtype).kind == "f":
        np.testing.assert_allclose(strict[0], cpu[0], rtol=2e-3 if dtype == np.float16 else 1e-6)
    else:
        np.testing.assert_array_equal(strict[0], cpu[0])


@pytest.mark.parametrize("reduction", ["mul", "add", "max", "min"])
def test_scatter_elements_reductions_on_strict_match_onnxruntime(reduction):
    data, idx, upd = _scatter_elements_case(np.float32)
    strict, _, _ = _on_both("ScatterElements", [data, idx, upd], 18, axis=1, reduction=reduction)
    model = single_node_model("ScatterElements", [data, idx, upd], opset=18, axis=1, reduction=reduction)
    ref = run_onnxruntime(model, {"in0": data, "in1": idx, "in2": upd})[0]
    np.testing.assert_allclose(strict[0], ref, rtol=1e-6)


@pytest.mark.parametrize("reduction", ["mul", "add", "max", "min"])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_scatter_nd_reductions_on_strict(reduction, dtype):
    """Slices (ScatterND's updates are rows of the flattened data) reduced at repeated tuples."""
    data = RNG.integers(-3, 4, (4, 3, 5)).astype(dtype)
    idx = RNG.integers(-4, 4, (7, 2, 1)).astype(np.int64)
    upd = RNG.integers(-3, 4, (7, 2, 3, 5)).astype(dtype)
    strict, cpu, syncs = _on_both("ScatterND", [data, idx, upd], 18, reduction=reduction)
    assert syncs == 0
    np.testing.assert_allclose(strict[0], cpu[0], rtol=1e-6)
    model = single_node_model("ScatterND", [data, idx, upd], opset=18, reduction=reduction)
    ref = run_onnxruntime(model, {"in0": data, "in1": idx, "in2": upd})[0]
    np.testing.assert_allclose(strict[0], ref, rtol=1e-6)


def test_segmented_scatter_matches_ufunc_at_exactly():
    """The device fallback against numpy's ufunc.at on random runs of duplicates (integers: exact)."""
    from gpuinfer.ops.indexing import _segmented_scatter

    for _ in range(60):
        n_rows, n, r = int(RNG.integers(1, 8)), int(RNG.integers(0, 50)), int(RNG.integers(1, 4))
        target = RNG.integers(-3, 4, (n_rows, r)).astype(np.int64)
        pos = RNG.integers(0, n_rows, n)
        vals = RNG.integers(-3, 4, (n, r)).astype(np.int64)
        for name in ("multiply", "add", "maximum", "minimum"):
            ref = target.copy()
            getattr(np, name).at(ref, pos, vals)
            dev = STRICT.asarray(target)
            _segmented_scatter(STRICT, getattr(STRICT, name), dev, STRICT.asarray(pos), STRICT.asarray(vals))
            np.testing.assert_array_equal(dev.get(), ref)


# --- the index range check: deferred on a device ---------------------------------------------------

class _DeferringContext(StandaloneContext):
    """A standalone context on the strict device with the deferred-check hook the runtime is asked for."""

    def __init__(self, **kw):
        super().__init__(device=make_backend("strict"), **kw)
        self.checks = []

    def defer_check(self, flag, message):
        self.checks.append((flag, message))


RANGE_CASES = [  # (op, opset, attrs, inputs as host arrays, whether some index is out of range)
    ("Gather", 13, {"axis": 1}, [np.ones((2, 4), np.float32), np.array([0, -4, 3])], False),
    ("Gather", 13, {"axis": 1}, [np.ones((2, 4), np.float32), np.array([0, 4])], True),
    ("Gather", 13, {"axis": 0}, [np.ones((2, 4), np.float32), np.array([-3], np.int32)], True),
    ("GatherElements", 13, {"axis": 1}, [np.ones((2, 4), np.float32), np.array([[0, 1], [3, -4]])], False),
    ("GatherElements", 13, {"axis": 1}, [np.ones((2, 4), np.float32), np.array([[0, 1], [3, 9]])], True),
    ("GatherND", 13, {}, [np.ones((2, 4), np.float32), np.array([[1, 3], [0, -4]])], False),
    ("GatherND", 13, {}, [np.ones((2, 4), np.float32), np.array([[1, 3], [2, 0]])], True),
    ("ScatterElements", 18, {"axis": 1, "reduction": "mul"},
     [np.ones((2, 4), np.float32), np.array([[0, -1]]), np.ones((1, 2), np.float32)], False),
    ("ScatterElements", 18, {"axis": 1},
     [np.ones((2, 4), np.float32), np.array([[0, 5]]), np.ones((1, 2), np.float32)], True),
    ("ScatterND", 18, {}, [np.ones((2, 4), np.float32), np.array([[-3]]), np.ones((1, 4), np.float32)], True),
]


@pytest.mark.parametrize("op_type,opset,attrs,inputs,bad", RANGE_CASES)
def test_index_range_check_is_deferred_on_a_device(op_type, opset, attrs, inputs, bad):
    ctx = _DeferringContext(attrs=attrs, opset=opset, op_type=op_type)
    dev = [STRICT.asarray(x) for x in inputs]
    syncs = STRICT.counters.syncs
    lookup(op_type, opset).kernel(ctx, *dev)
    assert STRICT.counters.syncs == syncs, "the range check read the device mid-run"
    assert ctx.checks, f"{op_type} handed no deferred range check to the context"
    flags = [bool(flag.get()) for flag, _ in ctx.checks]
    assert any(flags) == bad
    assert all("out of range" in message and op_type in message for _, message in ctx.checks)
    if bad:  # the same call on the numpy device raises at once
        with pytest.raises(NodeExecutionError, match="out of range"):
            lookup(op_type, opset).kernel(StandaloneContext(attrs=attrs, opset=opset, op_type=op_type), *inputs)


def test_index_range_check_without_the_hook_costs_no_sync():
    ctx = StandaloneContext(attrs={"axis": 0}, opset=13, device=make_backend("strict"), op_type="Gather")
    syncs = STRICT.counters.syncs
    lookup("Gather", 13).kernel(ctx, STRICT.asarray(np.ones((3,), np.float32)), STRICT.asarray(np.array([7])))
    assert STRICT.counters.syncs == syncs


def test_session_raises_on_out_of_range_gather_after_the_run():
    """Needs the runtime side (``RunContext.defer_check``); skipped until the runtime has it."""
    from gpuinfer.runtime.context import RunContext

    if not hasattr(RunContext, "defer_check"):
        pytest.skip("the runtime has no ctx.defer_check(flag, message) yet")
    x, idx = np.ones((2, 4), np.float32), np.array([0, 4])
    model = single_node_model("Gather", [x, idx], opset=13, axis=1)
    sess = gpuinfer.InferenceSession(model.SerializeToString(), device="strict")
    with pytest.raises(Exception, match="out of range"):
        sess.run(None, {"in0": x, "in1": idx})
    sess.run(None, {"in0": x, "in1": np.array([0, 3])})  # a good run after a bad one


# --- no library identity checks in ops -------------------------------------------------------------

def test_ops_ask_capabilities_not_the_array_library():
    ops_dir = Path(__file__).resolve().parents[2] / "gpuinfer" / "ops"
    pattern = re.compile(r"\bxp\s+is\s+(not\s+)?np\b|xp\.__name__")
    offenders = [f"{p.name}:{i}" for p in sorted(ops_dir.glob("*.py"))
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if pattern.search(line.split("#")[0])]
    assert not offenders, offenders


# --- tiles sized for the device --------------------------------------------------------------------

CUDA_TILE = make_backend("strict").caps.tile_bytes


def test_conv_geometry_tiles_follow_the_device():
    from gpuinfer.ops import conv as conv_module
    from gpuinfer.ops.conv import _conv_scratch, conv_geometry

    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    x_shape, w_shape = (1, 16, 192, 192), (32, 16, 3, 3)
    row = 16 * 9 * 192 * 4
    cpu = conv_geometry(attrs, x_shape, w_shape, np.float32)
    assert cpu.path == "im2col"
    assert cpu.tile == conv_module.COLUMN_TILE_BYTES // row  # the CPU's band, as measured
    assert conv_geometry(attrs, x_shape, w_shape, np.float32, CACHE_TILE_BYTES).tile == cpu.tile
    gpu = conv_geometry(attrs, x_shape, w_shape, np.float32, CUDA_TILE)
    assert gpu.tile == 192  # the whole image in one band
    assert _conv_scratch(attrs, [x_shape, w_shape], [np.float32], tile_bytes=CUDA_TILE)[-1][0] == (16 * 9, 192 * 192)
    assert _conv_scratch(attrs, [x_shape, w_shape], [np.float32]) == cpu.scratch

    kn = conv_geometry(attrs, (1, 32, 192, 192), (16, 32, 3, 3), np.float32)
    assert kn.path == "kn2row" and kn.tile < 192
    assert conv_geometry(attrs, (1, 32, 192, 192), (16, 32, 3, 3), np.float32, CUDA_TILE).tile == 192


def test_chunks_and_pool_tiles_follow_the_device():
    from gpuinfer.ops import elementwise, pool, pool_fold

    n = 32 * 192 * 192
    assert elementwise.chunk_elements() == elementwise._CHUNK
    assert elementwise.chunk_scratch(None)({}, [(32, 192, 192)], [np.float32]) == [((elementwise._CHUNK,), np.float32)]
    assert elementwise.chunk_scratch(None)({}, [(32, 192, 192)], [np.float32], tile_bytes=CUDA_TILE) == \
        [((n,), np.float32)]
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
    cpu = pool._pool_scratch(attrs, [(1, 32, 192, 192)], [np.float32])
    gpu = pool._pool_scratch(attrs, [(1, 32, 192, 192)], [np.float32], tile_bytes=CUDA_TILE)
    assert cpu[0][0][0] * 192 * 192 <= pool_fold.TILE_ELEMS < 32 * 192 * 192
    assert gpu[0][0] == (32, 192, 192)


def _conv_heavy_model(size: int, dtype) -> onnx.ModelProto:
    """im2col Conv, HardSwish (chunked), kn2row Conv, padded MaxPool (tiled), Elu (chunked), Conv.

    In float32 the CUDA device's own Conv and MaxPool variants (ops/gpu) take the convolutions and
    the pool; in float64 the shared, tiled kernels run them on the device too."""
    f = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    w1 = (RNG.standard_normal((32, 16, 3, 3)) * 0.1).astype(dtype)
    w2 = (RNG.standard_normal((16, 32, 3, 3)) * 0.1).astype(dtype)
    w3 = (RNG.standard_normal((8, 16, 3, 3)) * 0.1).astype(dtype)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["a"], ["b"]),
        helper.make_node("Conv", ["b", "w2"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["c"], ["d"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Elu", ["d"], ["e"]),
        helper.make_node("Conv", ["e", "w3"], ["y"], pads=[2, 2, 2, 2], strides=[2, 2], dilations=[2, 2]),
    ]
    graph = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("x", f, [1, 16, size, size])],
                              [helper.make_tensor_value_info("y", f, None)],
                              initializer=[onnx.numpy_helper.from_array(w, n) for w, n in ((w1, "w1"), (w2, "w2"),
                                                                                          (w3, "w3"))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _steady_launches(size: int, dtype) -> tuple:
    model = _conv_heavy_model(size, dtype)
    x = RNG.standard_normal((1, 16, size, size)).astype(dtype)
    sess = gpuinfer.InferenceSession(model.SerializeToString(), device="strict")
    for _ in range(2):  # the first run may re-plan from the scratch it saw
        sess.run(None, {"x": x})
    before = STRICT.counters.snapshot()
    (y,) = sess.run(None, {"x": x})
    after = STRICT.counters.snapshot()
    return after["launches"] - before["launches"], np.asarray(y), model, x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_heavy_launches_do_not_grow_with_input_size(dtype, monkeypatch):
    """CPU tiles (1-2 MiB column bands, 64K-element chunks, 256K-element pool tiles) would give the
    192x192 input several times the 96x96 one's launches; device-sized tiles give the same count.
    (The CUDA conv's own 16 MiB column budget is a deliberate memory bound: lifted here.)"""
    import gpuinfer.ops.gpu.conv as gpu_conv

    monkeypatch.setattr(gpu_conv, "COLUMN_BUDGET", 1 << 40)
    small, _, _, _ = _steady_launches(96, dtype)
    big, y_big, big_model, big_x = _steady_launches(192, dtype)
    assert big == small, f"launches per run: {small} at 96x96, {big} at 192x192"
    cpu = _run(big_model, {"x": big_x}, "cpu")[0]
    np.testing.assert_allclose(y_big, cpu, rtol=1e-4, atol=1e-5)


# --- ConvTranspose (no CUDA variant: the generic kernel runs on the device) ---------------------------

@pytest.mark.parametrize("attrs", [dict(strides=[2, 2]), dict(strides=[2, 2], pads=[1, 0, 0, 1])])
def test_conv_transpose_on_strict_matches_numpy(attrs):
    """Windows that tile the output (each tap's block written in place through strided views, bias
    on the way) and a cropped scatter-add: the same bytes on the stand-in as on numpy, no syncs."""
    x, w = RNG.standard_normal((1, 3, 4, 5)).astype(np.float32), RNG.standard_normal((3, 2, 2, 2)).astype(np.float32)
    b = RNG.standard_normal(2).astype(np.float32)
    strict, cpu, syncs = _on_both("ConvTranspose", [x, w, b], 11, constant_inputs=(1, 2), **attrs)
    np.testing.assert_array_equal(strict[0], cpu[0])
    assert syncs == 0
