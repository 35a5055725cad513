"""Pooling kernels against onnxruntime: pads, strides, dilations, ceil_mode, auto_pad, Indices."""
import numpy as np
import pytest

import gpuinfer.ops  # noqa: F401  (registers the kernels)
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
