"""QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear against onnxruntime (ml_dtypes types
against numpy formulas: onnxruntime's Python API does not take them)."""
import numpy as np
import pytest
from onnx import TensorProto

import gpuinfer.ops  # noqa: F401  (registers the kernels)
from gpuinfer.errors import NodeExecutionError
from tests.node_helpers import check_against_onnxruntime, run_kernel

rng = np.random.default_rng(0)
X = (rng.standard_normal((2, 3, 4)) * 40).astype(np.float32)
ml_dtypes = pytest.importorskip("ml_dtypes")


@pytest.mark.parametrize("zp_dtype", [np.uint8, np.int8, np.uint16, np.int16])
def test_quantize_per_tensor(zp_dtype):
    scale = np.array(0.37, np.float32)
    zp = np.array(3, zp_dtype)
    check_against_onnxruntime("QuantizeLinear", [X, scale, zp], opset=21)
    if zp_dtype in (np.uint8, np.int8):
        check_against_onnxruntime("QuantizeLinear", [X, scale, zp], opset=13)


def test_quantize_defaults_to_uint8_and_rounds_half_to_even():
    x = np.array([0.5, 1.5, 2.5, -0.5, 300.0, -4.0], np.float32)
    check_against_onnxruntime("QuantizeLinear", [x, np.array(1.0, np.float32)], opset=13)
    got = run_kernel("QuantizeLinear", [x, np.array(1.0, np.float32)], opset=13)[0]
    np.testing.assert_array_equal(got, np.array([0, 2, 2, 0, 255, 0], np.uint8))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_quantize_dequantize_per_axis(axis):
    n = X.shape[axis]
    scale = (rng.random(n) + 0.1).astype(np.float32)
    zp = rng.integers(-5, 5, n).astype(np.int8)
    check_against_onnxruntime("QuantizeLinear", [X, scale, zp], axis=axis, opset=13)
    q = rng.integers(-128, 127, X.shape).astype(np.int8)
    check_against_onnxruntime("DequantizeLinear", [q, scale, zp], axis=axis, opset=13)


@pytest.mark.parametrize("block", [2, 3])
def test_blocked_quantize_and_dequantize(block):
    x = (rng.standard_normal((3, 7)) * 10).astype(np.float32)  # 7 = whole blocks + a short tail for 2 and 3
    nb = -(-7 // block)
    scale = (rng.random((3, nb)) + 0.2).astype(np.float32)
    zp = rng.integers(0, 20, (3, nb)).astype(np.uint8)
    check_against_onnxruntime("QuantizeLinear", [x, scale, zp], axis=1, block_size=block, opset=21)
    q = rng.integers(0, 255, x.shape).astype(np.uint8)
    check_against_onnxruntime("DequantizeLinear", [q, scale, zp], axis=1, block_size=block, opset=21)
    # blocking along axis 0
    scale0 = (rng.random((-(-3 // 2), 7)) + 0.2).astype(np.float32)
    check_against_onnxruntime("QuantizeLinear", [x, scale0], axis=0, block_size=2, opset=21)


def test_quantize_output_dtype_attribute():
    got = run_kernel("QuantizeLinear", [X, np.array(0.5, np.float32)], opset=21,
                     output_dtype=TensorProto.INT16)[0]
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, np.clip(np.rint(X / np.float32(0.5)), -32768, 32767).astype(np.int16))


def test_quantize_float16_input():
    x = X.astype(np.float16)
    check_against_onnxruntime("QuantizeLinear", [x, np.array(0.25, np.float16), np.array(128, np.uint8)], opset=19)


@pytest.mark.parametrize("name,lo,hi", [("int4", -8, 7), ("uint4", 0, 15), ("int2", -2, 1), ("uint2", 0, 3)])
def test_quantize_dequantize_narrow_ints(name, lo, hi):
    dtype = np.dtype(getattr(ml_dtypes, name))
    scale = np.array([0.5, 2.0, 3.0], np.float32)
    zp = np.array([1, 0, 1], dtype)
    x = (rng.standard_normal((3, 4)) * 6).astype(np.float32)
    got = run_kernel("QuantizeLinear", [x, scale, zp], axis=0, opset=21)[0]
    want = np.clip(np.rint(x / scale[:, None]) + zp.astype(np.float32)[:, None], lo, hi)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got.astype(np.float32), want)
    back = run_kernel("DequantizeLinear", [got, scale, zp], axis=0, opset=21)[0]
    np.testing.assert_allclose(back, (want - zp.astype(np.float32)[:, None]) * scale[:, None])


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2", "float4_e2m1fn"])
def test_quantize_dequantize_small_floats(name):
    dtype = np.dtype(getattr(ml_dtypes, name))
    x = np.array([0.0, 1.0, -3.3, 1e6, -1e6, 2.75], np.float32)
    got = run_kernel("QuantizeLinear", [x, np.array(2.0, np.float32), np.zeros(1, dtype)], opset=21)[0]
    finite = float(ml_dtypes.finfo(dtype).max)
    want = np.clip(x / 2, -finite, finite).astype(dtype)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))
    with np.errstate(over="ignore"):  # e5m2 holds 5e5, which doubles past float16's range
        back = run_kernel("DequantizeLinear", [got, np.array(2.0, np.float16)], opset=21)[0]
        assert back.dtype == np.float16
        np.testing.assert_array_equal(back, (want.astype(np.float32) * 2).astype(np.float16))


def test_quantize_float8_without_saturation_overflows():
    got = run_kernel("QuantizeLinear", [np.array([1e6], np.float32), np.array(1.0, np.float32),
                                        np.zeros(1, ml_dtypes.float8_e5m2)], opset=21, saturate=0)[0]
    assert np.isinf(got.astype(np.float32)[0])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int32])
def test_dequantize_per_tensor(dtype):
    info = np.iinfo(dtype)
    q = rng.integers(max(info.min, -1000), min(info.max, 1000), (4, 5)).astype(dtype)
    zp = None if dtype == np.int32 else np.array(7, dtype)
    check_against_onnxruntime("DequantizeLinear", [q, np.array(0.02, np.float32), zp], opset=13)
    check_against_onnxruntime("DequantizeLinear", [q, np.array(0.02, np.float32), zp], opset=10)


def test_dequantize_float16_scale_and_empty_input():
    q = rng.integers(0, 255, (3, 2)).astype(np.uint8)
    check_against_onnxruntime("DequantizeLinear", [q, np.array(0.5, np.float16), np.array(2, np.uint8)], opset=19)
    got = run_kernel("DequantizeLinear", [np.zeros((0, 3), np.uint8), np.array(0.5, np.float32)], opset=13)[0]
    assert got.shape == (0, 3) and got.dtype == np.float32


@pytest.mark.parametrize("x", [
    np.array([0, 2, -3, -2.5, 1.34, 0.5], np.float32),
    np.array([-1.0, -2.1, -1.3, -2.5, -3.34, -4.0], np.float32),
    np.array([1, 2.1, 1.3, 2.5, 3.34, 4.0, 1.5, 2.6, 3.9, 4.0, 3.0, 2.345], np.float32).reshape(3, 4),
    np.zeros((2, 2), np.float32),
])
def test_dynamic_quantize(x):
    check_against_onnxruntime("DynamicQuantizeLinear", [x], n_outputs=3, opset=11)


def test_bad_scale_shapes_raise():
    with pytest.raises(NodeExecutionError, match="QuantizeLinear"):
        run_kernel("QuantizeLinear", [X, np.ones(5, np.float32)], axis=1, opset=13)
    with pytest.raises(NodeExecutionError, match="DequantizeLinear"):
        run_kernel("DequantizeLinear", [X.astype(np.uint8), np.ones((2, 3, 4), np.float32)], axis=1,
                   block_size=2, opset=21)
