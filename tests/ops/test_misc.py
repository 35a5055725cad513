"""Det against onnxruntime; the ai.onnx.ml LabelEncoder, Binarizer and ArrayFeatureExtractor against
onnxruntime's ml operators."""
import numpy as np
import pytest
from onnx import helper, numpy_helper

import gpuinfer.ops  # noqa: F401  (registers the kernels)
from gpuinfer.errors import NodeExecutionError
from tests.node_helpers import check_against_onnxruntime, run_kernel, run_onnxruntime, single_node_model

rng = np.random.default_rng(0)


@pytest.mark.parametrize("shape", [(2, 2), (3, 3), (4, 3, 3), (2, 2, 5, 5), (0, 2, 2)])
def test_det(shape):
    check_against_onnxruntime("Det", [rng.standard_normal(shape).astype(np.float32)], opset=11, rtol=1e-4,
                              atol=1e-5)


def test_det_float64_and_float16():  # onnxruntime's Det is float32 only
    x = rng.standard_normal((3, 4, 4))
    got = run_kernel("Det", [x], opset=22)[0]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, np.linalg.det(x), rtol=1e-12)
    got = run_kernel("Det", [x.astype(np.float16)], opset=22)[0]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got, np.linalg.det(x.astype(np.float16).astype(np.float32)), rtol=2e-3, atol=2e-3)


def test_det_rejects_non_square():
    with pytest.raises(NodeExecutionError, match="Det"):
        run_kernel("Det", [np.zeros((2, 3), np.float32)], opset=11)


def _ml(op_type, inputs, opset, **attrs):
    """Run an ai.onnx.ml node through onnxruntime and gpuinfer; assert they agree exactly."""
    model = single_node_model(op_type, inputs, 1, opset, domain="ai.onnx.ml", **attrs)
    model.opset_import.append(helper.make_opsetid("", 17))
    want = run_onnxruntime(model, {f"in{i}": x for i, x in enumerate(inputs)})[0]
    attrs = {k: numpy_helper.to_array(v) if hasattr(v, "data_type") else v for k, v in attrs.items()}
    got = run_kernel(op_type, inputs, 1, opset, domain="ai.onnx.ml", **attrs)[0]
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype == object:
        assert got.tolist() == want.tolist()
    else:
        np.testing.assert_allclose(got, want)


WORDS = np.array([["a", "b"], ["zz", "c"]], dtype=object)


def test_label_encoder_lists():
    _ml("LabelEncoder", [WORDS], 2, keys_strings=["a", "b", "c"], values_int64s=[0, 1, 2], default_int64=42)
    _ml("LabelEncoder", [WORDS], 2, keys_strings=["a", "b", "c"], values_int64s=[0, 1, 2])
    _ml("LabelEncoder", [np.array([3, 1, 9], np.int64)], 2, keys_int64s=[1, 3], values_strings=["one", "three"],
        default_string="?")
    _ml("LabelEncoder", [np.array([3, 1, 9], np.int64)], 2, keys_int64s=[1, 3], values_floats=[0.5, 1.5])
    _ml("LabelEncoder", [np.array([0.5, 2.0], np.float32)], 2, keys_floats=[0.5, 1.0], values_strings=["h", "o"])


def test_label_encoder_tensors():
    keys = numpy_helper.from_array(np.array(["a", "b", "c"], dtype=object), "keys_tensor")
    values = numpy_helper.from_array(np.array([0, 1, 2], np.int16), "values_tensor")
    default = numpy_helper.from_array(np.array([42], np.int16), "default_tensor")
    _ml("LabelEncoder", [WORDS], 4, keys_tensor=keys, values_tensor=values, default_tensor=default)
    _ml("LabelEncoder", [WORDS], 4, keys_strings=["a", "b", "c"], values_tensor=values, default_tensor=default)


def test_binarizer_and_array_feature_extractor():
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    _ml("Binarizer", [x], 1, threshold=0.25)
    _ml("ArrayFeatureExtractor", [x, np.array([4, 0, 2], np.int64)], 1)
    _ml("ArrayFeatureExtractor", [x[0, 0], np.array([1], np.int64)], 1)
    with pytest.raises(NodeExecutionError, match="ArrayFeatureExtractor"):
        run_kernel("ArrayFeatureExtractor", [x, np.array([5], np.int64)], 1, 1, domain="ai.onnx.ml")
