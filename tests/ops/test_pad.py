"""Pad against onnxruntime: every mode, negative pads, axes, constant values, old attribute form."""
import numpy as np
import pytest

import gpuinfer.ops  # noqa: F401  (registers the kernels)
from gpuinfer.errors import NodeExecutionError
from tests.node_helpers import check_against_onnxruntime, run_kernel

rng = np.random.default_rng(0)
X = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)


def P(*v):
    return np.array(v, np.int64)


MODES = ["constant", "reflect", "edge", "wrap"]
PADS = [P(0, 0, 1, 2, 0, 0, 2, 1), P(0, 1, 1, 0, 1, 0, 0, 3), P(0, 0, -1, 2, 0, 0, 1, -2), P(0, 0, 0, 0, 0, 0, 0, 0)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pads", PADS)
@pytest.mark.parametrize("constant", [True, False])
def test_pad_modes(mode, pads, constant):
    opset = 19 if mode == "wrap" else 13
    check_against_onnxruntime("Pad", [X, pads], mode=mode, opset=opset, constant_inputs=[1] if constant else [])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("axes", [P(1, 3), P(-3, -1), P(3)])
def test_pad_axes(mode, axes):
    pads = P(1, 2, 2, 1) if len(axes) == 2 else P(2, 3)
    check_against_onnxruntime("Pad", [X, pads, None, axes], mode=mode, opset=19, constant_inputs=[1, 3])


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_opset2_attributes(mode):
    check_against_onnxruntime("Pad", [X], mode=mode, pads=[0, 0, 1, 2, 0, 0, 2, 1], opset=2)


def test_pad_constant_values_and_dtypes():
    check_against_onnxruntime("Pad", [X, P(0, 0, 1, 2, 0, 0, 2, 1), np.array(1.5, np.float32)], opset=13)
    check_against_onnxruntime("Pad", [X], pads=[0, 0, 1, 2, 0, 0, 2, 1], value=2.5, opset=2)
    ints = rng.integers(0, 9, (3, 4))
    check_against_onnxruntime("Pad", [ints.astype(np.int32), P(1, 1, 2, 2), np.array(7, np.int32)], opset=13)
    check_against_onnxruntime("Pad", [ints.astype(np.int64), P(1, 1, 2, 2)], mode="reflect", opset=13)
    check_against_onnxruntime("Pad", [ints.astype(np.int64), P(3, 0, 3, 4)], mode="wrap", opset=19)
    check_against_onnxruntime("Pad", [ints.astype(bool), P(1, 1, 2, 2)], opset=13)


def test_pad_larger_than_input_wraps_and_reflects_repeatedly():
    x = np.arange(3, dtype=np.float32)
    check_against_onnxruntime("Pad", [x, P(7, 5)], mode="wrap", opset=19)
    check_against_onnxruntime("Pad", [x, P(2, 2)], mode="edge", opset=13)


def test_pad_errors():
    with pytest.raises(NodeExecutionError, match="Pad"):
        run_kernel("Pad", [X, P(1, 1)], opset=13)
    with pytest.raises(NodeExecutionError, match="Pad"):
        run_kernel("Pad", [X, P(0, 0, -3, 0, 0, 0, -3, 0)], opset=13)


@pytest.mark.parametrize("shape,axes", [(P(2, 3, 3, 3), None), (P(2, 3, 6, 8), None), (P(2, 3, 2, 7), None),
                                        (P(3, 7), [2, 3]), (P(6, 2), [-2, -1]), (P(5,), [1])])
def test_center_crop_pad(shape, axes):
    attrs = {} if axes is None else {"axes": axes}
    check_against_onnxruntime("CenterCropPad", [X, shape], opset=18, constant_inputs=[1], **attrs)
