"""Broadcasting binary / variadic kernels against onnxruntime, plus legacy (opset < 7) broadcast
attributes, integer semantics (C division, Mod signs) and the in-place promise."""
from __future__ import annotations

import numpy as np
import pytest

from gpuinfer.ops.registry import lookup
from tests.node_helpers import check_against_onnxruntime, run_kernel
from tests.ops.test_elementwise import ort_or_numpy, run_checked

RNG = np.random.default_rng(0)
A = RNG.standard_normal((3, 4, 5)).astype(np.float32)
SHAPES = [((3, 4, 5), (3, 4, 5)), ((3, 4, 5), (5,)), ((3, 1, 5), (4, 1)), ((3, 4, 5), ()), ((), (2, 3)),
          ((0, 3), (1, 3)), ((2, 1, 1), (1, 3, 1))]


def rand(shape, dtype=np.float32, lo=-50, hi=50):
    if np.dtype(dtype).kind == "f":
        return RNG.standard_normal(shape).astype(dtype)
    if np.dtype(dtype).kind == "u":
        lo = max(lo, 0)
    return RNG.integers(lo, hi, shape).astype(dtype)


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean"])
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_float_arithmetic_broadcasting(op_type, shapes):
    a, b = rand(shapes[0]), rand(shapes[1])
    check_against_onnxruntime(op_type, [a, b], opset=14)


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Max", "Min"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.float64])
def test_other_dtypes(op_type, dtype):
    ort_or_numpy(op_type, [rand((4, 5), dtype), rand((5,), dtype)],
                 {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Max": np.maximum,
                  "Min": np.minimum}[op_type], opset=14)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64])
def test_integer_div_truncates_toward_zero(dtype):
    a = np.array([7, -7, 7, -7, 0, 9, -9, 100, -1], dtype)
    b = np.array([2, 2, -2, -2, 3, 3, -3, 7, 5], dtype)
    got = ort_or_numpy("Div", [a, b], lambda a, b: (np.trunc(a / b)).astype(dtype), opset=14)[0]
    np.testing.assert_array_equal(got, [3, -3, -3, 3, 0, 3, 3, 14, 0])
    a, b = rand((6, 7), dtype, -100, 100), rand((7,), dtype, 1, 9) * np.where(np.arange(7) % 2, 1, -1).astype(dtype)
    ort_or_numpy("Div", [a, b], lambda a, b: (np.trunc(a / b)).astype(dtype), opset=14)


def test_unsigned_div():
    check_against_onnxruntime("Div", [rand((5, 6), np.uint32, 0, 100), rand((6,), np.uint32, 1, 9)], opset=14)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.int8])
@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_integer_signs(dtype, fmod):
    a = rand((4, 6), dtype, -30, 30)
    b = (rand((6,), dtype, 1, 7) * np.array([1, -1, 1, -1, 1, -1])).astype(dtype)
    check_against_onnxruntime("Mod", [a, b], opset=13, fmod=fmod)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mod_float_fmod(dtype):
    a, b = rand((4, 6), dtype) * 10, rand((6,), dtype) * 3
    check_against_onnxruntime("Mod", [a, b], opset=13, fmod=1)


@pytest.mark.parametrize("base,exp", [
    (np.float32, np.float32), (np.float32, np.int64), (np.float32, np.int32), (np.float64, np.float32),
    (np.int64, np.int64), (np.int32, np.float32), (np.int32, np.int32),
])
def test_pow_keeps_base_dtype(base, exp):
    a = np.abs(rand((3, 4), base, 0, 6)) + (0.5 if np.dtype(base).kind == "f" else 0)
    b = rand((4,), exp, 0, 4) if np.dtype(exp).kind != "f" else np.array([0.5, 2.0, 1.5, 3.0], exp)
    got = check_against_onnxruntime("Pow", [a, b], opset=15, rtol=1e-5)[0]
    assert got.dtype == base


@pytest.mark.parametrize("op_type", ["Max", "Min", "Sum", "Mean"])
def test_variadic_counts(op_type):
    a, b, c = rand((3, 1, 5)), rand((4, 1)), rand((5,))
    check_against_onnxruntime(op_type, [a], opset=13)
    check_against_onnxruntime(op_type, [a, b, c], opset=13)
    check_against_onnxruntime(op_type, [a, b, c, a], opset=13)


@pytest.mark.parametrize("op_type", ["And", "Or", "Xor"])
def test_logic(op_type):
    check_against_onnxruntime(op_type, [A > 0, A[0] > 0.5], opset=7)
    check_against_onnxruntime(op_type, [A > 0, np.array(True)], opset=7)


@pytest.mark.parametrize("op_type", ["Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"])
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64])
def test_comparisons(op_type, dtype):
    a, b = rand((4, 5), dtype, -3, 3), rand((5,), dtype, -3, 3)
    check_against_onnxruntime(op_type, [a, b], opset=16)
    check_against_onnxruntime(op_type, [a, a], opset=16)


def test_equal_bool_and_string():
    check_against_onnxruntime("Equal", [A > 0, A[0] > 0], opset=13)
    s1 = np.array(["a", "bc", "", "d"], dtype=object)
    s2 = np.array(["a", "b", "", "e"], dtype=object)
    check_against_onnxruntime("Equal", [s1, s2], opset=19)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64])
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bit_shift(dtype, direction):
    bits = np.dtype(dtype).itemsize * 8
    x = rand((4, 6), dtype, 0, 200)
    s = rand((6,), dtype, 0, bits)
    ort_or_numpy("BitShift", [x, s], np.left_shift if direction == "LEFT" else np.right_shift, opset=11,
                 direction=direction)


@pytest.mark.parametrize("op_type", ["BitwiseAnd", "BitwiseOr", "BitwiseXor"])
@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.int64])
def test_bitwise(op_type, dtype):
    check_against_onnxruntime(op_type, [rand((4, 5), dtype, -100, 100), rand((5,), dtype, -100, 100)], opset=18)


@pytest.mark.parametrize("dtype", [np.int32, np.uint8])
def test_bitwise_not(dtype):
    check_against_onnxruntime("BitwiseNot", [rand((4, 5), dtype, -100, 100)], opset=18)


@pytest.mark.parametrize("slope_shape", [(1,), (4, 1, 1), (6,), (3, 4, 5, 6)[1:], ()])
def test_prelu_unidirectional(slope_shape):
    x = rand((2, 4, 5, 6))
    check_against_onnxruntime("PRelu", [x, rand(slope_shape)], opset=16)


@pytest.mark.parametrize("slope_shape", [(4, 1, 1), (1,), (6,)])
@pytest.mark.parametrize("odd_one", [1e-3, -0.7, 0.0, 1.3])
def test_prelu_slopes_at_most_one(slope_shape, odd_one):
    """Finite non-zero slopes up to 1 (negative ones too) take the two-pass max(x, slope*x) path;
    zero or larger slopes the general one (0 * inf is NaN): both bitwise what the
    definition gives, infinities and NaN included, and onnxruntime agrees."""
    slope = RNG.uniform(-1, 1, slope_shape).astype(np.float32)
    slope.reshape(-1)[0] = odd_one
    slope.reshape(-1)[-1] = 1.0
    x = rand((2, 4, 5, 6))
    x[0, 0, 0, :4] = [np.inf, -np.inf, np.nan, -0.0]
    check_against_onnxruntime("PRelu", [x, slope], opset=16)
    got = run_checked("PRelu", [x, slope], opset=16)[0]
    with np.errstate(invalid="ignore"):  # 0 * -inf is NaN, as the definition says
        want = np.where(x < 0, x * slope, x)
    np.testing.assert_array_equal(got, want)


def test_prelu_integer():
    check_against_onnxruntime("PRelu", [rand((3, 4), np.int32), rand((4,), np.int32, -3, 3)], opset=16)


def test_prelu_legacy_per_channel_slope():
    """Opset 6: a 1-D slope of length C applies along axis 1 (numpy broadcasting would not)."""
    x, slope = rand((2, 3, 4, 4)), rand((3,))
    got = run_checked("PRelu", [x, slope], opset=6)[0]
    want = np.where(x < 0, x * slope.reshape(3, 1, 1), x)
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("op_type,fn", [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply),
                                        ("Div", np.divide), ("Pow", np.power)])
def test_legacy_broadcast_axis(op_type, fn):
    a = np.abs(rand((2, 3, 4, 5))) + 0.5
    b = rand((3, 4))
    got = run_checked(op_type, [a, b], opset=6, broadcast=1, axis=1)[0]
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(got, fn(a, b.reshape(3, 4, 1)), rtol=1e-6)
    got = run_checked(op_type, [a, rand((5,))], opset=6, broadcast=1)[0]
    assert got.shape == a.shape
    b1 = rand((2,))
    got = run_checked(op_type, [a, b1], opset=1, broadcast=1, axis=0)[0]
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(got, fn(a, b1.reshape(2, 1, 1, 1)), rtol=1e-6)


def test_legacy_logic_broadcast_axis():
    a, b = A > 0, A[:, 0, 0] > 0
    got = run_checked("And", [a, b], opset=1, broadcast=1, axis=0)[0]
    np.testing.assert_array_equal(got, a & b.reshape(3, 1, 1))
    got = run_checked("Greater", [A, A[:, 0, 0]], opset=1, broadcast=1, axis=0)[0]
    np.testing.assert_array_equal(got, A > A[:, 0, 0].reshape(3, 1, 1))


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8, bool])
def test_where(dtype):
    cond = RNG.random((3, 1, 5)) > 0.5
    x, y = rand((4, 1), dtype, 0, 9), rand((3, 4, 5), dtype, 0, 9)
    if dtype is bool:
        x, y = x > 0, y > 0
    ort_or_numpy("Where", [cond, x, y], np.where, opset=16)


def test_where_strings():
    cond = np.array([True, False, True])
    check_against_onnxruntime("Where", [cond, np.array(["a", "b", "c"], dtype=object),
                                        np.array(["x"], dtype=object)], opset=16)


def test_broadcast_error_names_op():
    with pytest.raises(Exception, match="Add"):
        run_kernel("Add", [rand((3, 4)), rand((5,))], opset=14)


INPLACE = sorted(o for o in ["Add", "Sub", "Mul", "Div", "Mod", "Pow", "Max", "Min", "Sum", "Mean", "And", "Or",
                             "Xor", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitShift", "PRelu"] if lookup(o, 18).inplace)


@pytest.mark.parametrize("op_type", INPLACE)
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint8])
@pytest.mark.parametrize("which", [0, 1])
def test_inplace_output_on_either_input(op_type, dtype, which):
    kind = np.dtype(dtype).kind
    if op_type in ("And", "Or", "Xor"):
        dtype, kind = np.bool_, "b"
    if (op_type.startswith("Bit") and kind == "f") or (op_type == "BitShift" and kind != "u"):
        pytest.skip("not defined for this dtype")
    if op_type == "Mean" and kind != "f":
        pytest.skip("Mean is float-only")
    a = rand((4, 5), dtype, -20, 20) if kind != "b" else RNG.random((4, 5)) > 0.5
    b = rand((4, 5), dtype, 1, 6) if kind != "b" else RNG.random((4, 5)) > 0.5
    if op_type == "Pow" and kind == "f":
        a = np.abs(a)
    attrs = {"direction": "LEFT"} if op_type == "BitShift" else {}
    inputs = [a, b, rand((5,), dtype, 1, 3)] if op_type in ("Sum", "Max", "Min") else [a, b]
    want = run_checked(op_type, inputs, opset=18, **attrs)[0]
    bufs = [x.copy() for x in inputs]
    got = run_checked(op_type, bufs, opset=18, alias=bufs[which], **attrs)[0]
    assert got is bufs[which]
    np.testing.assert_array_equal(got, want)
