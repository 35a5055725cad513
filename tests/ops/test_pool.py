"""Pooling kernels against onnxruntime: pads, strides, dilations, ceil_mode, auto_pad, Indices."""
import numpy as np
import pytest

import gpuinfer.ops  # noqa: F401  (registers the kernels)
from gpuinfer.ops import pool, pool_fold
from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.context import StandaloneContext
from gpuinfer.ops.registry import lookup
from tests.node_helpers import check_against_onnxruntime, run_kernel, requested_scratch

rng = np.random.default_rng(0)


def r(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


X = r(2, 3, 9, 10)
WINDOWS = [
    dict(kernel_shape=[3, 3]),
    dict(kernel_shape=[3, 3], strides=[2, 2]),
    dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1]),
    dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(kernel_shape=[2, 2], auto_pad="SAME_LOWER", strides=[2, 2]),
    dict(kernel_shape=[3, 3], auto_pad="VALID", strides=[2, 2]),
    dict(kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 1, 1, 1]),
]


@pytest.mark.parametrize("attrs", WINDOWS)
def test_max_pool(attrs):
    check_against_onnxruntime("MaxPool", [X], opset=12, **attrs)


@pytest.mark.parametrize("attrs", WINDOWS)
@pytest.mark.parametrize("storage_order", [0, 1])
def test_max_pool_indices(attrs, storage_order):
    check_against_onnxruntime("MaxPool", [X], n_outputs=2, opset=12, storage_order=storage_order, **attrs)


def test_max_pool_indices_ties_take_first():
    x = np.zeros((1, 1, 4, 4), np.float32)
    check_against_onnxruntime("MaxPool", [x], n_outputs=2, kernel_shape=[2, 2], strides=[1, 1], opset=12)


@pytest.mark.parametrize("attrs", WINDOWS)
@pytest.mark.parametrize("include_pad", [0, 1])
def test_average_pool(attrs, include_pad):
    check_against_onnxruntime("AveragePool", [X], opset=19, count_include_pad=include_pad, **attrs)


@pytest.mark.parametrize("attrs", WINDOWS)
@pytest.mark.parametrize("p", [1, 2, 3])
def test_lp_pool(attrs, p):
    check_against_onnxruntime("LpPool", [X], opset=18, p=p, rtol=1e-4, **attrs)


def test_pool_1d_3d_and_integers():
    check_against_onnxruntime("MaxPool", [r(2, 3, 9)], kernel_shape=[3], strides=[2], n_outputs=2)
    check_against_onnxruntime("MaxPool", [r(2, 3, 5, 6, 7)], kernel_shape=[3, 2, 2], strides=[2, 1, 2],
                              pads=[1, 0, 1, 1, 1, 0], n_outputs=2)
    check_against_onnxruntime("AveragePool", [r(2, 3, 5, 6, 7)], kernel_shape=[3, 2, 2], strides=[2, 1, 2],
                              pads=[1, 0, 1, 1, 1, 0])
    for dtype in (np.uint8, np.int8):
        x = rng.integers(-100, 100, (1, 2, 7, 7)).astype(dtype)
        check_against_onnxruntime("MaxPool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1], opset=12)


def test_pool_old_opsets():
    check_against_onnxruntime("MaxPool", [X], kernel_shape=[3, 3], strides=[2, 2], opset=7)
    check_against_onnxruntime("AveragePool", [X], kernel_shape=[3, 3], pads=[1, 1, 1, 1], opset=7)
    check_against_onnxruntime("AveragePool", [X], kernel_shape=[3, 3], ceil_mode=1, strides=[2, 2], opset=10)
    check_against_onnxruntime("LpPool", [X], kernel_shape=[3, 3], strides=[2, 2], opset=11)


@pytest.mark.parametrize("op_type", ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"])
@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (2, 3, 5), (1, 2, 3, 4, 5)])
def test_global_pools(op_type, shape):
    check_against_onnxruntime(op_type, [r(*shape)], rtol=1e-5)


def test_global_lp_pool_p():
    check_against_onnxruntime("GlobalLpPool", [r(2, 3, 5, 6)], p=3, rtol=1e-5)
    check_against_onnxruntime("GlobalLpPool", [r(2, 3, 5, 6)], p=1, rtol=1e-5)


def test_pool_errors():
    with pytest.raises(NodeExecutionError):
        run_kernel("MaxPool", [r(2, 3)], kernel_shape=[2])
    with pytest.raises(NodeExecutionError):
        run_kernel("MaxPool", [r(2, 3, 4, 4)], kernel_shape=[2])


@pytest.mark.parametrize("op_type,attrs", [("MaxPool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
                                           ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2])),
                                           ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
                                           ("AveragePool", dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER")),
                                           ("LpPool", dict(kernel_shape=[2, 2])),
                                           ("GlobalLpPool", {})])
def test_pool_scratch_is_predicted(op_type, attrs):
    predicted, requested = requested_scratch(op_type, [X], 18, **attrs)
    assert predicted == requested


@pytest.mark.parametrize("shape,attrs", [((1, 2, 6, 6), dict(kernel_shape=[2, 2], strides=[2, 2])),
                                         ((1, 2, 7, 5), dict(kernel_shape=[3, 2], strides=[2, 1],
                                                             pads=[1, 0, 1, 0]))])
def test_max_unpool_roundtrip(shape, attrs):
    x = r(*shape)
    y, idx = run_kernel("MaxPool", [x], n_outputs=2, opset=12, **attrs)
    check_against_onnxruntime("MaxUnpool", [y, idx], opset=11, **attrs)
    # with the original shape given, indices address that shape (as onnxruntime and PyTorch read them)
    check_against_onnxruntime("MaxUnpool", [y, idx, np.array(shape, np.int64)], opset=11, constant_inputs=[2],
                              **attrs)


def kind(shape, **attrs):
    """The fold path and scratch the pools plan for ``shape``."""
    _, _, k, scratch = pool._plan(pool._key(attrs), shape)
    return k, scratch


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of a few channels, so that small tests run several tiles and the tap-by-tap tail."""
    monkeypatch.setattr(pool_fold, "TILE_ELEMS", 8)
    monkeypatch.setattr(pool_fold, "MIN_TILE", 1)
    pool._plan.cache_clear()
    yield
    pool._plan.cache_clear()


# few outputs, many taps: one reduction per window (with padding, ceil overhang, dilation)
FEW = [((2, 5, 7, 7), dict(kernel_shape=[7, 7])),
       ((2, 5, 6, 6), dict(kernel_shape=[7, 7], pads=[0, 0, 1, 1])),
       ((1, 4, 8, 7), dict(kernel_shape=[7, 7])),
       ((1, 3, 9, 9), dict(kernel_shape=[7, 7], strides=[4, 4], ceil_mode=1, pads=[1, 1, 0, 0])),
       ((1, 3, 9, 9), dict(kernel_shape=[4, 4], dilations=[3, 3], pads=[1, 1, 0, 0]))]


@pytest.mark.parametrize("shape,attrs", FEW)
def test_few_outputs_path(shape, attrs):
    assert kind(shape, **attrs) == ("windows", [])
    x = r(*shape)
    check_against_onnxruntime("MaxPool", [x], n_outputs=2, opset=12, **attrs)
    for include_pad in (0, 1):
        check_against_onnxruntime("AveragePool", [x], opset=19, count_include_pad=include_pad, **attrs)
    check_against_onnxruntime("LpPool", [x], opset=18, p=2, rtol=1e-4, **attrs)
    xi = rng.integers(-128, 127, shape).astype(np.int8)
    check_against_onnxruntime("MaxPool", [xi], opset=12, **attrs)


# 2-D windows into padding: separable with a scratch tile; stride 1 with equal sizes takes the
# shifted flat passes (edges folded again), the others strided taps
PADDED = [((1, 6, 11, 12), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
          ((2, 3, 10, 10), dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2])),
          ((1, 3, 6, 5), dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2])),
          ((1, 4, 3, 4), dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2])),
          ((1, 4, 12, 12), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
          ((1, 4, 11, 9), dict(kernel_shape=[3, 3], pads=[0, 0, 1, 1])),
          ((1, 4, 10, 10), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
          ((1, 4, 9, 10), dict(kernel_shape=[2, 3], strides=[1, 2], auto_pad="SAME_LOWER")),
          ((1, 4, 9, 10), dict(kernel_shape=[3, 2], dilations=[2, 3], pads=[2, 1, 1, 1])),
          ((1, 4, 9, 10), dict(kernel_shape=[4, 4], strides=[3, 3], pads=[1, 2, 2, 1], ceil_mode=1))]


@pytest.mark.parametrize("tiles", ["default", "small"])
@pytest.mark.parametrize("shape,attrs", PADDED)
def test_separable_padded(shape, attrs, tiles, request):
    if tiles == "small":
        request.getfixturevalue("small_tiles")
    k, scratch = kind(shape, **attrs)
    assert k == "separable" and len(scratch) == 1
    assert scratch[0][0] <= shape[0] * shape[1] and (tiles == "default" or scratch[0][0] == 1)
    x = r(*shape)
    check_against_onnxruntime("MaxPool", [x], n_outputs=2, opset=12, **attrs)
    for include_pad in (0, 1):
        check_against_onnxruntime("AveragePool", [x], opset=19, count_include_pad=include_pad, **attrs)
    check_against_onnxruntime("LpPool", [x], opset=18, p=3, rtol=1e-4, **attrs)
    for dtype in (np.int8, np.uint8):
        check_against_onnxruntime("MaxPool", [rng.integers(0, 120, shape).astype(dtype)], opset=12, **attrs)


# 2-D windows inside x: separable without scratch, its tiles carved from the unwritten output
INSIDE = [((2, 8, 12, 12), dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
          ((1, 9, 11, 11), dict(kernel_shape=[3, 3], strides=[2, 2])),
          ((1, 9, 11, 13), dict(kernel_shape=[3, 3], auto_pad="VALID")),
          ((3, 5, 10, 14), dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER"))]


@pytest.mark.parametrize("tiles", ["default", "small"])
@pytest.mark.parametrize("shape,attrs", INSIDE)
def test_separable_inside(shape, attrs, tiles, request):
    if tiles == "small":
        request.getfixturevalue("small_tiles")
    assert kind(shape, **attrs) == ("separable", [])
    x = r(*shape)
    check_against_onnxruntime("MaxPool", [x], n_outputs=2, opset=12, **attrs)
    check_against_onnxruntime("AveragePool", [x], opset=19, **attrs)
    check_against_onnxruntime("LpPool", [x], opset=18, p=2, rtol=1e-4, **attrs)
    check_against_onnxruntime("MaxPool", [rng.integers(-128, 127, shape).astype(np.int8)], opset=12, **attrs)


@pytest.mark.parametrize("attrs", [dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                                   dict(kernel_shape=[3, 3], strides=[2, 2])])
def test_separable_non_contiguous_input(attrs, small_tiles):
    x = np.swapaxes(r(6, 2, 9, 10), 0, 1)  # (2, 6, 9, 10), images not contiguous
    assert not x.flags.c_contiguous
    check_against_onnxruntime("MaxPool", [x], opset=12, **attrs)
    check_against_onnxruntime("AveragePool", [x], opset=19, count_include_pad=1, **attrs)


def test_shifted_edges_take_no_neighbour_values():
    """Channels and rows whose neighbours hold far larger values: an edge output that read across
    the boundary would pick them up."""
    x = np.zeros((1, 4, 6, 7), np.float32)
    x[:, 1::2] = 1e6
    x[:, :, :, ::2] += 1e3
    x[:, :, ::2] -= 5e5
    for attrs in (dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), dict(kernel_shape=[5, 3], pads=[2, 1, 2, 1])):
        check_against_onnxruntime("MaxPool", [x], opset=12, **attrs)
        check_against_onnxruntime("MaxPool", [-x], opset=12, **attrs)
        check_against_onnxruntime("AveragePool", [x], opset=19, **attrs)


@pytest.mark.parametrize("shape,attrs", [((2, 3, 11), dict(kernel_shape=[3], pads=[1, 1])),
                                         ((2, 3, 11), dict(kernel_shape=[4], strides=[3], ceil_mode=1)),
                                         ((1, 2, 5, 6, 7), dict(kernel_shape=[3, 3, 3], pads=[1, 1, 1, 1, 1, 1])),
                                         ((1, 2, 6, 5, 4), dict(kernel_shape=[1, 3, 1], strides=[2, 1, 1])),
                                         ((1, 2, 7, 5), dict(kernel_shape=[3, 1], pads=[1, 0, 1, 0]))])
def test_tap_path_1d_3d(shape, attrs):
    assert kind(shape, **attrs) == ("taps", [])
    x = r(*shape)
    check_against_onnxruntime("MaxPool", [x], n_outputs=2, opset=12, **attrs)
    check_against_onnxruntime("AveragePool", [x], opset=19, count_include_pad=1, **attrs)
    check_against_onnxruntime("LpPool", [x], opset=18, p=2, rtol=1e-4, **attrs)
    check_against_onnxruntime("MaxPool", [rng.integers(0, 255, shape).astype(np.uint8)], opset=12, **attrs)


@pytest.mark.parametrize("shape,attrs", PADDED[:4] + INSIDE[:2] + FEW[:2])
def test_new_paths_scratch_is_predicted(shape, attrs):
    for op_type in ("MaxPool", "AveragePool", "LpPool"):
        predicted, requested = requested_scratch(op_type, [r(*shape)], 18, **attrs)
        assert predicted == requested
