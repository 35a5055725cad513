"""Reductions and ArgMax/ArgMin against onnxruntime: axes as attribute and as input, keepdims,
noop_with_empty_axes, negative axes, integer inputs, empty sets, and large-magnitude LogSumExp."""
from __future__ import annotations

import numpy as np
import pytest

from tests.node_helpers import check_against_onnxruntime
from tests.ops.test_elementwise import run_checked

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4, 5)).astype(np.float32)
XI = RNG.integers(-5, 6, (3, 4, 5)).astype(np.int32)
OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
       "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]
INPUT_SINCE = {o: (13 if o == "ReduceSum" else 18) for o in OPS}


def data(op_type):
    return np.abs(X) + 0.1 if op_type == "ReduceLogSum" else X


def I(*v):
    return np.array(v, np.int64)


@pytest.mark.parametrize("op_type", OPS)
@pytest.mark.parametrize("axes,keepdims", [([0, -1], 1), ([1], 0), (None, 1), (None, 0), ([-3, 1, 2], 0)])
def test_axes_attribute_opsets(op_type, axes, keepdims):
    attrs = {"keepdims": keepdims} if axes is None else {"axes": axes, "keepdims": keepdims}
    check_against_onnxruntime(op_type, [data(op_type)], opset=INPUT_SINCE[op_type] - 1, rtol=1e-5, **attrs)


@pytest.mark.parametrize("op_type", OPS)
@pytest.mark.parametrize("axes,keepdims", [((0, -1), 1), ((1,), 0), (None, 1), ((2,), 1)])
def test_axes_input_opsets(op_type, axes, keepdims):
    inputs = [data(op_type)] + ([] if axes is None else [I(*axes)])
    check_against_onnxruntime(op_type, inputs, opset=18, constant_inputs=[1], keepdims=keepdims, rtol=1e-5)


@pytest.mark.parametrize("op_type", OPS)
def test_noop_with_empty_axes(op_type):
    check_against_onnxruntime(op_type, [data(op_type), I()], opset=18, constant_inputs=[1], noop_with_empty_axes=1)
    check_against_onnxruntime(op_type, [data(op_type)], opset=18, noop_with_empty_axes=1)
    check_against_onnxruntime(op_type, [data(op_type), I()], opset=18, constant_inputs=[1], keepdims=0)


@pytest.mark.parametrize("op_type", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                                     "ReduceSumSquare", "ReduceL2"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_inputs(op_type, dtype):
    x = XI.astype(dtype) if op_type != "ReduceProd" else np.clip(XI, -2, 2).astype(dtype)
    check_against_onnxruntime(op_type, [x, I(1)], opset=18, constant_inputs=[1], keepdims=0)


@pytest.mark.parametrize("op_type", OPS)
def test_empty_set_gives_identity(op_type):
    e = np.zeros((3, 0, 2), np.float32)
    check_against_onnxruntime(op_type, [e, I(1)], opset=18, constant_inputs=[1])
    check_against_onnxruntime(op_type, [e, I(0)], opset=18, constant_inputs=[1], keepdims=0)


def test_log_sum_exp_large_and_infinite_values():
    x = np.array([[1000., -1000, 0], [-np.inf, -np.inf, -np.inf], [88., 89., 90.], [np.inf, 1., 2.]], np.float32)
    got = check_against_onnxruntime("ReduceLogSumExp", [x], opset=13, axes=[1])[0]
    assert got[0, 0] == pytest.approx(1000.0) and got[1, 0] == -np.inf and got[3, 0] == np.inf
    y = (RNG.standard_normal((5, 7, 3, 2)) * 300).astype(np.float32)
    for axes in ([0], [1, 3], [0, 2], [0, 1, 2, 3], [3]):
        check_against_onnxruntime("ReduceLogSumExp", [y], opset=13, axes=axes, rtol=1e-5)


def test_float16_accumulates_in_float32():
    x = (np.ones((4, 3000)) * 0.1).astype(np.float16)
    got = run_checked("ReduceSum", [x, I(1)], opset=13, keepdims=0)[0]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), x.astype(np.float32).sum(1), rtol=2e-3)


@pytest.mark.parametrize("op_type", ["ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"])
def test_scratch_declared(op_type):
    run_checked(op_type, [X, I(1)], opset=18)


def test_bad_axis_raises():
    with pytest.raises(Exception, match="axis"):
        run_checked("ReduceSum", [X, I(3)], opset=13)


@pytest.mark.parametrize("op_type", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_arg_reductions(op_type, axis, keepdims):
    check_against_onnxruntime(op_type, [X], opset=11, axis=axis, keepdims=keepdims)


@pytest.mark.parametrize("op_type", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("last", [0, 1])
def test_arg_select_last_index_ties(op_type, last):
    x = RNG.integers(0, 3, (4, 6)).astype(np.float32)
    for axis in (0, 1):
        check_against_onnxruntime(op_type, [x], opset=13, axis=axis, select_last_index=last)
    check_against_onnxruntime(op_type, [x.astype(np.int32)], opset=13, axis=1, select_last_index=last, keepdims=0)


def test_arg_default_axis_and_default_keepdims():
    check_against_onnxruntime("ArgMax", [X], opset=1)
    check_against_onnxruntime("ArgMin", [XI.astype(np.int64)], opset=13)
