"""NegativeLogLikelihoodLoss against onnxruntime: reductions, weights, ignore_index, N-d, dtypes."""
import numpy as np
import pytest

import gpuinfer.ops  # noqa: F401  (registers the kernels)
from gpuinfer.errors import NodeExecutionError
from tests.node_helpers import check_against_onnxruntime, run_kernel

rng = np.random.default_rng(0)


def case(shape, c=5, dtype=np.float32, tdtype=np.int64):
    x = rng.standard_normal((shape[0], c, *shape[1:])).astype(dtype)
    t = rng.integers(0, c, shape).astype(tdtype)
    return x, t


@pytest.mark.parametrize("opset", [12, 13, 22])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("shape", [(4,), (3, 2), (2, 3, 2, 2)])
def test_nll_reductions_and_ranks(opset, reduction, shape):
    x, t = case(shape)
    check_against_onnxruntime("NegativeLogLikelihoodLoss", [x, t], opset=opset, rtol=1e-5, atol=1e-6,
                              reduction=reduction)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("ignore_index", [None, 1, -1])
def test_nll_weight_and_ignore_index(reduction, ignore_index):
    x, t = case((3, 4))
    if ignore_index is not None:
        t[0, :2] = ignore_index
    w = rng.random(5).astype(np.float32)
    attrs = {"reduction": reduction}
    if ignore_index is not None:
        attrs["ignore_index"] = ignore_index
    check_against_onnxruntime("NegativeLogLikelihoodLoss", [x, t, w], opset=13, rtol=1e-5, atol=1e-6, **attrs)
    check_against_onnxruntime("NegativeLogLikelihoodLoss", [x, t], opset=13, rtol=1e-5, atol=1e-6, **attrs)


def test_nll_float64_and_int32_targets():
    x, t = case((3, 2), dtype=np.float64, tdtype=np.int32)
    check_against_onnxruntime("NegativeLogLikelihoodLoss", [x, t], opset=13, reduction="mean")


def test_nll_float16():
    x, t = case((6,), dtype=np.float16)
    check_against_onnxruntime("NegativeLogLikelihoodLoss", [x, t], opset=13, rtol=1e-3, atol=1e-3,
                              reduction="sum")


def test_nll_rejects_bad_target_shape_and_range():
    x, t = case((3, 2))
    with pytest.raises(NodeExecutionError, match="target shape"):
        run_kernel("NegativeLogLikelihoodLoss", [x, t[:, :1]], opset=13)
    t[0, 0] = 9
    with pytest.raises(NodeExecutionError, match="outside"):
        run_kernel("NegativeLogLikelihoodLoss", [x, t], opset=13)
