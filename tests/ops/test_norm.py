"""Normalization kernels against onnxruntime."""
import numpy as np
import pytest

import gpuinfer.ops  # noqa: F401  (registers the kernels)
from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.context import StandaloneContext
from gpuinfer.ops.registry import lookup
from tests.node_helpers import check_against_onnxruntime, run_kernel, requested_scratch

rng = np.random.default_rng(0)
TOL = dict(rtol=1e-4, atol=1e-5)


def r(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


X = r(2, 3, 4, 5)


@pytest.mark.parametrize("opset", [7, 9, 14, 15])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 3), (2, 3, 6)])
def test_batch_norm(opset, shape):
    inputs = [r(*shape), r(3), r(3), r(3), np.abs(r(3)) + 0.1]
    check_against_onnxruntime("BatchNormalization", inputs, opset=opset, epsilon=1e-3, **TOL)


def test_batch_norm_training_mode():
    inputs = [X, r(3), r(3), r(3), np.abs(r(3))]
    check_against_onnxruntime("BatchNormalization", inputs, opset=15, training_mode=1, momentum=0.8,
                              n_outputs=3, **TOL)


def test_batch_norm_float64():
    inputs = [r(2, 3, 4, dtype=np.float64)] + [r(3, dtype=np.float64) for _ in range(3)] + [
        np.abs(r(3, dtype=np.float64))]
    check_against_onnxruntime("BatchNormalization", inputs, opset=15, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("axis", [-1, -2, 1, 0, 3])
def test_layer_norm(axis):
    sh = X.shape[axis % 4:]
    check_against_onnxruntime("LayerNormalization", [X, r(*sh), r(*sh)], opset=17, axis=axis, n_outputs=3,
                              epsilon=1e-3, **TOL)


def test_layer_norm_broadcast_scale_no_bias_and_fp16():
    check_against_onnxruntime("LayerNormalization", [X, r(5)], opset=17, **TOL)
    check_against_onnxruntime("LayerNormalization", [X, r(1, 5), r(5)], axis=-2, opset=17, **TOL)
    xh = X.astype(np.float16)
    check_against_onnxruntime("LayerNormalization", [xh, r(5, dtype=np.float16), r(5, dtype=np.float16)],
                              opset=17, rtol=1e-2, atol=1e-2)


def test_layer_norm_bad_axis():
    with pytest.raises(NodeExecutionError, match="axis"):
        run_kernel("LayerNormalization", [X, r(5)], opset=17, axis=4)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3, 7), (1, 3, 2, 3, 4)])
def test_instance_norm(shape):
    check_against_onnxruntime("InstanceNormalization", [r(*shape), r(3), r(3)], epsilon=1e-2, **TOL)


@pytest.mark.parametrize("opset,per", [(18, "group"), (21, "channel")])
def test_group_norm(opset, per):
    n = 3 if per == "group" else 6
    check_against_onnxruntime("GroupNormalization", [r(2, 6, 4, 5), r(n), r(n)], num_groups=3, opset=opset, **TOL)
    check_against_onnxruntime("GroupNormalization", [r(2, 6, 7), r(n), r(n)], num_groups=3, opset=opset,
                              epsilon=1e-2, **TOL)


def test_rms_norm():
    check_against_onnxruntime("RMSNormalization", [X, r(5)], opset=23, **TOL)
    check_against_onnxruntime("RMSNormalization", [X, r(4, 5)], axis=2, opset=23, **TOL)


@pytest.mark.parametrize("size,alpha,beta,bias", [(3, 1e-4, 0.75, 1.0), (5, 0.01, 0.5, 2.0), (1, 0.1, 0.6, 1.5),
                                                    (5, 3.0, 0.75, 0.5), (3, 2.0, 1.0, 1.0), (3, 1.5, 0.5, 0.3)])
def test_lrn(size, alpha, beta, bias):
    check_against_onnxruntime("LRN", [r(2, 6, 4, 5)], size=size, alpha=alpha, beta=beta, bias=bias, rtol=1e-5)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("axis", [-1, 1, 0])
def test_lp_normalization(p, axis):
    check_against_onnxruntime("LpNormalization", [X], p=p, axis=axis)


@pytest.mark.parametrize("axes", [None, [1, -1], [0, 1, 2, 3]])
def test_mean_variance_normalization(axes):
    attrs = {} if axes is None else {"axes": axes}
    check_against_onnxruntime("MeanVarianceNormalization", [X], **TOL, **attrs)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_norm_scratch_is_predicted(dtype):
    x = X.astype(dtype)
    cases = [("LayerNormalization", [x, r(4, 5, dtype=dtype)], 17, dict(axis=2)),
             ("InstanceNormalization", [x, r(3, dtype=dtype), r(3, dtype=dtype)], 17, {}),
             ("GroupNormalization", [r(2, 6, 4, dtype=dtype), r(6, dtype=dtype), r(6, dtype=dtype)], 21,
              dict(num_groups=3)),
             ("RMSNormalization", [x, r(5, dtype=dtype)], 23, {}),
             ("LRN", [x], 17, dict(size=3))]
    for op_type, inputs, opset, attrs in cases:
        predicted, requested = requested_scratch(op_type, inputs, opset, **attrs)
        assert predicted == requested, op_type


def test_lp_normalization_zero_slice_stays_zero():
    x = np.array([[0, 0, 0], [3, 4, 0]], np.float32)
    check_against_onnxruntime("LpNormalization", [x], axis=1, p=2)
    check_against_onnxruntime("LpNormalization", [x], axis=1, p=1)


def test_batch_norm_per_position_statistics_before_opset9():
    shape = (3, 4, 5)
    inputs = [r(2, *shape), r(*shape), r(*shape), r(*shape), np.abs(r(*shape)) + 0.1]
    check_against_onnxruntime("BatchNormalization", inputs, opset=7, spatial=0, **TOL)
