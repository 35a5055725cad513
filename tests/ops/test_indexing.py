"""Gather/Scatter families, NonZero, TopK, OneHot, Compress, Unique and CumSum against onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest

from tests.node_helpers import check_against_onnxruntime, run_kernel
from tests.ops.test_elementwise import run_checked

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4, 5)).astype(np.float32)


def I(*v):
    return np.array(v, np.int64)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("idx_dtype", [np.int32, np.int64])
def test_gather(axis, idx_dtype):
    dim = X.shape[axis]
    idx = RNG.integers(-dim, dim, (2, 3)).astype(idx_dtype)
    check_against_onnxruntime("Gather", [X, idx], opset=13, axis=axis)
    check_against_onnxruntime("Gather", [X, np.array(dim - 1, idx_dtype)], opset=13, axis=axis)
    check_against_onnxruntime("Gather", [X, np.zeros((0,), idx_dtype)], opset=13, axis=axis)


def test_gather_ints_strings_and_errors():
    check_against_onnxruntime("Gather", [I(5, 6, 7), I(-1, 0, 0)], opset=13)
    check_against_onnxruntime("Gather", [np.array(["a", "b"], dtype=object), I(1, 1, 0)], opset=13)
    with pytest.raises(Exception, match="Gather"):
        run_kernel("Gather", [X, I(3)], opset=13)
    with pytest.raises(Exception, match="Gather"):
        run_kernel("Gather", [X, I(-4)], opset=13)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_gather_elements(axis):
    dim = X.shape[axis]
    shape = list(X.shape)
    shape[axis] = 2
    idx = RNG.integers(-dim, dim, shape)
    check_against_onnxruntime("GatherElements", [X, idx], opset=13, axis=axis)
    check_against_onnxruntime("GatherElements", [X.astype(np.int32), idx.astype(np.int32)], opset=13, axis=axis)
    run_checked("GatherElements", [X, idx], opset=13, axis=axis)


def test_gather_elements_smaller_index_shape_and_empty():
    idx = RNG.integers(0, 3, (2, 2, 3))
    check_against_onnxruntime("GatherElements", [X, idx], opset=13, axis=0)
    check_against_onnxruntime("GatherElements", [X, np.zeros((0, 4, 5), np.int64)], opset=13, axis=0)


@pytest.mark.parametrize("indices,batch_dims", [
    ([[0, 1], [2, -1]], 0), ([[1], [0]], 0), ([[0, 1, 2]], 0),
    ([[[1], [0]], [[2], [3]], [[0], [0]]], 1), ([[1, 2], [0, 4], [3, 3]], 1), ([[[1, 1]], [[0, 3]], [[2, 2]]], 1),
])
def test_gather_nd(indices, batch_dims):
    idx = np.array(indices, np.int64)
    check_against_onnxruntime("GatherND", [X, idx], opset=13, batch_dims=batch_dims)
    run_checked("GatherND", [X, idx], opset=13, batch_dims=batch_dims)


def test_gather_nd_batch_dims_2():
    idx = RNG.integers(0, 5, (3, 4, 2, 1))
    check_against_onnxruntime("GatherND", [X, idx], opset=13, batch_dims=2)


def scatter_indices(axis_len=4):
    return np.stack([RNG.permutation(axis_len)[:2] for _ in range(15)]).reshape(3, 5, 2).transpose(0, 2, 1).copy()


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_elements(reduction):
    upd = RNG.standard_normal((3, 2, 5)).astype(np.float32)
    idx = scatter_indices()
    check_against_onnxruntime("ScatterElements", [X, idx, upd], opset=18, axis=1, reduction=reduction)
    check_against_onnxruntime("ScatterElements", [X, idx - 4, upd], opset=18, axis=-2, reduction=reduction)
    run_checked("ScatterElements", [X, idx, upd], opset=18, axis=1, reduction=reduction)


def test_scatter_elements_duplicates_accumulate():
    x = np.zeros((2, 3), np.float32)
    idx = np.array([[0, 0, 2, 2]], np.int64)
    upd = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    got = check_against_onnxruntime("ScatterElements", [x, idx, upd], opset=18, axis=1, reduction="add")[0]
    np.testing.assert_array_equal(got, [[3, 0, 7], [0, 0, 0]])


def test_scatter_deprecated_and_int_data():
    idx = scatter_indices()
    upd = RNG.integers(0, 9, (3, 2, 5)).astype(np.int64)
    check_against_onnxruntime("Scatter", [X.astype(np.int64), idx, upd], opset=10, axis=1)
    check_against_onnxruntime("ScatterElements", [X.astype(np.int32), idx.astype(np.int32), upd.astype(np.int32)],
                              opset=13, axis=1)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd(reduction):
    upd = RNG.standard_normal((2, 5)).astype(np.float32)
    check_against_onnxruntime("ScatterND", [X, I(0, 1, 2, 3).reshape(2, 2), upd], opset=18, reduction=reduction)
    upd2 = RNG.standard_normal((2, 4, 5)).astype(np.float32)
    check_against_onnxruntime("ScatterND", [X, I(0, -1).reshape(2, 1), upd2], opset=18, reduction=reduction)
    upd3 = RNG.standard_normal((2,)).astype(np.float32)
    check_against_onnxruntime("ScatterND", [X, I(0, 1, 2, 2, 3, 4).reshape(2, 3), upd3], opset=18,
                              reduction=reduction)
    run_checked("ScatterND", [X, I(0, 1, 2, 3).reshape(2, 2), upd], opset=18, reduction=reduction)


def test_nonzero():
    check_against_onnxruntime("NonZero", [X > 0.5], opset=13)
    check_against_onnxruntime("NonZero", [np.array([0, 3, 0, 1], np.int32)], opset=13)
    check_against_onnxruntime("NonZero", [np.zeros((2, 0), np.float32)], opset=13)
    check_against_onnxruntime("NonZero", [np.zeros((2, 3), np.int64)], opset=13)
    got = run_kernel("NonZero", [np.array(3.0, np.float32)], opset=13)[0]
    np.testing.assert_array_equal(got, [[0]])  # a scalar acts as a 1-element vector, as in onnxruntime


@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_topk_ties_in_index_order(largest, axis):
    t = RNG.integers(0, 4, (3, 8)).astype(np.float32)
    k = min(3, t.shape[axis])
    check_against_onnxruntime("TopK", [t, I(k)], n_outputs=2, opset=11, axis=axis, largest=largest)
    check_against_onnxruntime("TopK", [t.astype(np.int64), I(k)], n_outputs=2, opset=11, axis=axis, largest=largest)


def test_topk_opsets_and_edges():
    t = RNG.standard_normal((4, 6)).astype(np.float32)
    check_against_onnxruntime("TopK", [t], n_outputs=2, opset=9, k=2)
    check_against_onnxruntime("TopK", [t, I(6)], n_outputs=2, opset=10)
    check_against_onnxruntime("TopK", [t, I(0)], n_outputs=2, opset=11)
    check_against_onnxruntime("TopK", [t, I(2)], n_outputs=2, opset=11, sorted=1)
    with pytest.raises(Exception, match="TopK"):
        run_kernel("TopK", [t, I(7)], n_outputs=2, opset=11)


@pytest.mark.parametrize("axis", [-1, 0, 1, 2])
def test_one_hot(axis):
    idx = np.array([[1, -1], [5, 0]], np.int64)
    check_against_onnxruntime("OneHot", [idx, np.array(4, np.int64), np.array([0, 1], np.float32)], opset=11,
                              axis=axis)
    check_against_onnxruntime("OneHot", [idx.astype(np.int32), np.array(4.0, np.float32),
                                         np.array([2, 7], np.float32)], opset=11, axis=axis)


def test_one_hot_float_indices_and_int_values():
    check_against_onnxruntime("OneHot", [np.array([1.0, 2.0, 0.0], np.float32), np.array(3, np.int64),
                                         np.array([0, 5], np.int64)], opset=11)


@pytest.mark.parametrize("axis,cond", [(0, [True, False, True]), (-1, [False, True]), (None, [1, 0, 1, 1, 0, 0, 1]),
                                       (1, [False, False, False, False]), (2, [True] * 5)])
def test_compress(axis, cond):
    attrs = {} if axis is None else {"axis": axis}
    check_against_onnxruntime("Compress", [X, np.array(cond, bool)], opset=11, **attrs)


@pytest.mark.parametrize("sorted_", [0, 1])
def test_unique_flat(sorted_):
    u = np.array([2, 1, 1, 3, 4, 3, 2], np.int64)
    check_against_onnxruntime("Unique", [u], n_outputs=4, opset=11, sorted=sorted_)
    check_against_onnxruntime("Unique", [np.array([[2.5, 1.0], [1.0, -3.0]], np.float32)], n_outputs=4, opset=11,
                              sorted=sorted_)
    check_against_onnxruntime("Unique", [u], n_outputs=1, opset=11, sorted=sorted_)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("sorted_", [0, 1])
def test_unique_axis(axis, sorted_):
    m = np.array([[1, 0, 0], [1, 0, 0], [2, 3, 4], [1, 0, 0]], np.float32)
    check_against_onnxruntime("Unique", [m], n_outputs=4, opset=11, axis=axis, sorted=sorted_)


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
def test_cumsum(exclusive, reverse):
    for axis in (np.array(1, np.int32), np.array(-1, np.int64), np.array(0, np.int64)):
        check_against_onnxruntime("CumSum", [X, axis], opset=14, exclusive=exclusive, reverse=reverse)
    check_against_onnxruntime("CumSum", [X.astype(np.int64), np.array(2, np.int64)], opset=14,
                              exclusive=exclusive, reverse=reverse)
    check_against_onnxruntime("CumSum", [np.zeros((0, 3), np.float32), np.array(0, np.int64)], opset=14,
                              exclusive=exclusive, reverse=reverse)


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
def test_cumprod(exclusive, reverse):
    x = (RNG.random((3, 4, 5)) + 0.5).astype(np.float32)
    for axis in (np.array(1, np.int32), np.array(-1, np.int64)):
        check_against_onnxruntime("CumProd", [x, axis], opset=26, exclusive=exclusive, reverse=reverse)
    check_against_onnxruntime("CumProd", [RNG.integers(-3, 4, (4, 5)).astype(np.int64), np.array(0, np.int64)],
                              opset=26, exclusive=exclusive, reverse=reverse)


@pytest.mark.parametrize("batch_axis,time_axis", [(1, 0), (0, 1)])
def test_reverse_sequence(batch_axis, time_axis):
    x = RNG.standard_normal((4, 4, 5)).astype(np.float32)
    lens = RNG.integers(0, x.shape[time_axis] + 1, x.shape[batch_axis])
    check_against_onnxruntime("ReverseSequence", [x, lens], opset=10, batch_axis=batch_axis, time_axis=time_axis)
    full = np.full(x.shape[batch_axis], x.shape[time_axis], np.int64)
    check_against_onnxruntime("ReverseSequence", [x, full], opset=10, batch_axis=batch_axis, time_axis=time_axis)
    with pytest.raises(Exception, match="ReverseSequence"):  # the spec allows only axes 0 and 1
        run_kernel("ReverseSequence", [x, lens], opset=10, batch_axis=0, time_axis=2)


@pytest.mark.parametrize("mode", ["linear", "circular"])
@pytest.mark.parametrize("axis", [-2, 1, 3])
def test_tensor_scatter(mode, axis):
    cache = RNG.standard_normal((3, 6, 4, 5)).astype(np.float32)
    ushape = list(cache.shape)
    ushape[axis] = 2
    update = RNG.standard_normal(ushape).astype(np.float32)
    cap = cache.shape[axis]
    starts = np.array([0, cap - 2, 1] if mode == "linear" else [cap - 1, 0, cap + 3], np.int64)
    check_against_onnxruntime("TensorScatter", [cache, update, starts], opset=24, axis=axis, mode=mode)
    check_against_onnxruntime("TensorScatter", [cache, update], opset=24, axis=axis, mode=mode)
