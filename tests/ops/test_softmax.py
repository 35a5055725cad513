"""Softmax, LogSoftmax and Hardmax against onnxruntime, across the opset-13 axis change."""
import numpy as np
import pytest

import gpuinfer.ops  # noqa: F401  (registers the kernels)
from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.context import StandaloneContext
from gpuinfer.ops.registry import lookup
from tests.node_helpers import check_against_onnxruntime, run_kernel, requested_scratch

rng = np.random.default_rng(0)
X = (rng.standard_normal((2, 3, 4, 5)) * 5).astype(np.float32)


# negative axes arrived in opset 11
AXES = [(opset, axis) for opset in (1, 11, 13) for axis in (None, 0, 1, 2, -1, -2)
        if not (opset == 1 and axis is not None and axis < 0)]


@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("opset,axis", AXES)
def test_softmax_family(op_type, opset, axis):
    attrs = {} if axis is None else {"axis": axis}
    check_against_onnxruntime(op_type, [X], opset=opset, rtol=1e-5, atol=1e-6, **attrs)


@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax"])
def test_softmax_float64_and_2d(op_type):
    check_against_onnxruntime(op_type, [rng.standard_normal((3, 4))], opset=13)
    check_against_onnxruntime(op_type, [rng.standard_normal((3, 4)).astype(np.float32)], opset=13, rtol=1e-6)


def test_log_softmax_large_values_stay_finite():
    x = np.array([[1000.0, 0.0, -1000.0]], np.float32)
    check_against_onnxruntime("LogSoftmax", [x], opset=13)


def test_hardmax_ties_take_first():
    x = np.array([[1, 3, 3, 2], [0, 0, 0, 0]], np.float32)
    check_against_onnxruntime("Hardmax", [x], opset=13)
    check_against_onnxruntime("Hardmax", [x], opset=11)


def test_softmax_bad_axis():
    with pytest.raises(NodeExecutionError, match="axis"):
        run_kernel("Softmax", [X], opset=13, axis=4)


def test_log_softmax_scratch_is_predicted():
    predicted, requested = requested_scratch("LogSoftmax", [X], 13)
    assert predicted == requested


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [None, 2])
def test_softmax_cross_entropy_loss(reduction, weighted, ignore_index):
    scores = rng.standard_normal((3, 5, 2, 4)).astype(np.float32)
    labels = rng.integers(0, 5, (3, 2, 4)).astype(np.int64)
    labels[0, 0, 0] = 2
    inputs = [scores, labels] + ([rng.random(5).astype(np.float32)] if weighted else [])
    attrs = {"reduction": reduction}
    if ignore_index is not None:
        attrs["ignore_index"] = ignore_index
    check_against_onnxruntime("SoftmaxCrossEntropyLoss", inputs, n_outputs=2, opset=13, rtol=1e-5, atol=1e-6,
                              **attrs)


def test_softmax_cross_entropy_loss_2d_single_output():
    scores = rng.standard_normal((4, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 2], np.int64)
    check_against_onnxruntime("SoftmaxCrossEntropyLoss", [scores, labels], opset=12, rtol=1e-5)
