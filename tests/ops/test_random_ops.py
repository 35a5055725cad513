"""Random ops: shapes and dtypes against onnxruntime; values by seeding and by distribution checks
(no two runtimes' generators agree on values)."""
import numpy as np
import pytest
from onnx import TensorProto

import gpuinfer.ops  # noqa: F401  (registers the kernels)
from gpuinfer.errors import NodeExecutionError
from tests.node_helpers import run_kernel, run_onnxruntime, single_node_model

X = np.zeros((3, 4), np.float32)


def _same_shape_dtype_as_ort(op_type, inputs, n_outputs=1, opset=17, **attrs):
    model = single_node_model(op_type, inputs, n_outputs, opset, **attrs)
    want = run_onnxruntime(model, {f"in{i}": x for i, x in enumerate(inputs)})
    got = run_kernel(op_type, inputs, n_outputs, opset, **attrs)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
    return got


@pytest.mark.parametrize("dtype", [None, TensorProto.DOUBLE])
def test_generators_shapes_and_dtypes(dtype):
    extra = {} if dtype is None else {"dtype": dtype}
    _same_shape_dtype_as_ort("RandomUniform", [], shape=[2, 5], **extra)
    _same_shape_dtype_as_ort("RandomNormal", [], shape=[7], **extra)
    _same_shape_dtype_as_ort("RandomUniformLike", [X], **extra)
    _same_shape_dtype_as_ort("RandomNormalLike", [X.astype(np.float64)], **extra)
    _same_shape_dtype_as_ort("Bernoulli", [np.full((2, 3), 0.5, np.float32)], **extra)


def test_float16_output():  # onnxruntime's generators lack float16
    got = run_kernel("RandomUniform", [], opset=22, shape=[3, 2], dtype=TensorProto.FLOAT16)[0]
    assert got.dtype == np.float16 and got.shape == (3, 2) and ((got >= 0) & (got <= 1)).all()
    with pytest.raises(NodeExecutionError, match="RandomNormal"):
        run_kernel("RandomNormal", [], opset=22, shape=[2], dtype=TensorProto.INT32)


def test_uniform_and_normal_follow_their_parameters():
    u = run_kernel("RandomUniform", [], opset=22, shape=[20000], low=-2.0, high=3.0)[0]
    assert u.min() >= -2.0 and u.max() < 3.0 and abs(float(u.mean()) - 0.5) < 0.05
    n = run_kernel("RandomNormalLike", [np.zeros(20000, np.float64)], opset=22, mean=4.0, scale=0.5)[0]
    assert abs(float(n.mean()) - 4.0) < 0.02 and abs(float(n.std()) - 0.5) < 0.02


def test_seed_repeats_the_draw_and_no_seed_does_not():
    a = run_kernel("RandomNormal", [], opset=22, shape=[50], seed=3.0)[0]
    b = run_kernel("RandomNormal", [], opset=22, shape=[50], seed=3.0)[0]
    c = run_kernel("RandomNormal", [], opset=22, shape=[50], seed=4.0)[0]
    d = run_kernel("RandomNormal", [], opset=22, shape=[50])[0]
    e = run_kernel("RandomNormal", [], opset=22, shape=[50])[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(d, e)


def test_bernoulli_values():
    p = np.array([0.0, 1.0, 0.0, 1.0], np.float64)
    np.testing.assert_array_equal(run_kernel("Bernoulli", [p], opset=22)[0], p)
    draws = run_kernel("Bernoulli", [np.full(20000, 0.3, np.float32)], opset=22, dtype=TensorProto.INT32)[0]
    assert draws.dtype == np.int32 and set(np.unique(draws)) <= {0, 1} and abs(draws.mean() - 0.3) < 0.02


def test_multinomial():
    logits = np.log(np.array([[0.7, 0.2, 0.1], [1e-9, 1e-9, 1.0]], np.float32))
    got = _same_shape_dtype_as_ort("Multinomial", [logits], opset=7, sample_size=4000)[0]
    assert got.dtype == np.int32 and got.shape == (2, 4000)
    np.testing.assert_allclose(np.bincount(got[0], minlength=3) / 4000, [0.7, 0.2, 0.1], atol=0.03)
    assert (got[1] == 2).all()
    got = _same_shape_dtype_as_ort("Multinomial", [logits], opset=7, dtype=TensorProto.INT64)[0]
    assert got.dtype == np.int64 and got.shape == (2, 1)
    with pytest.raises(NodeExecutionError, match="Multinomial"):
        run_kernel("Multinomial", [logits[0]], opset=7)
