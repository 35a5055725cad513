"""Cast / CastLike against onnxruntime: every numeric pair, bool, strings both ways, opset 1 names."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as T

from tests.node_helpers import check_against_onnxruntime, run_kernel

RNG = np.random.default_rng(0)
NUMERIC = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
           np.uint32, np.uint64, np.bool_]
CODE = {np.float16: T.FLOAT16, np.float32: T.FLOAT, np.float64: T.DOUBLE, np.int8: T.INT8, np.int16: T.INT16,
        np.int32: T.INT32, np.int64: T.INT64, np.uint8: T.UINT8, np.uint16: T.UINT16, np.uint32: T.UINT32,
        np.uint64: T.UINT64, np.bool_: T.BOOL}


def sample(dtype):
    if dtype is np.bool_:
        return RNG.random((3, 4)) > 0.5
    if np.dtype(dtype).kind == "f":
        return (RNG.standard_normal((3, 4)) * 50).astype(dtype)
    lo = 0 if np.dtype(dtype).kind == "u" else -100
    return RNG.integers(lo, 100, (3, 4)).astype(dtype)


@pytest.mark.parametrize("src", NUMERIC, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("dst", NUMERIC, ids=lambda d: np.dtype(d).name)
def test_numeric_casts(src, dst):
    x = sample(src)
    if np.dtype(src).kind == "f" and np.dtype(dst).kind == "u":
        x = np.abs(x)  # negative float -> unsigned is undefined behaviour in C
    if np.dtype(src).kind == "f" and np.dtype(dst).itemsize == 1 and np.dtype(dst).kind != "b":
        x = np.clip(x, -100, 100)
    check_against_onnxruntime("Cast", [x], opset=19, to=CODE[dst])


def test_float_to_int_truncates_and_float_to_bool():
    x = np.array([-2.7, -0.5, 0.0, 0.5, 2.7, np.nan], np.float32)
    got = check_against_onnxruntime("Cast", [x], opset=13, to=T.BOOL)[0]
    np.testing.assert_array_equal(got, [1, 1, 0, 1, 1, 1])
    got = check_against_onnxruntime("Cast", [x[:-1]], opset=13, to=T.INT32)[0]
    np.testing.assert_array_equal(got, [-2, 0, 0, 0, 2])


@pytest.mark.parametrize("src", [np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_])
def test_number_to_string(src):
    x = sample(src)
    if np.dtype(src).kind == "f":
        x = np.concatenate([x.reshape(-1), np.array([np.inf, -np.inf, np.nan, -0.0, 1e-7, 1e20, 0.1], src)])
    check_against_onnxruntime("Cast", [x], opset=13, to=T.STRING)


@pytest.mark.parametrize("dst", [np.float32, np.float64, np.int32, np.int64, np.uint8, np.int8])
def test_string_to_number(dst):
    if np.dtype(dst).kind == "f":
        s = ["1.5", "-inf", "NaN", "INF", "  2", "1e3", "+3", "-0", "0.1"]
    else:
        s = ["1", "-7", "+3", "42", "0", "100"]
    check_against_onnxruntime("Cast", [np.array(s, dtype=object)], opset=13, to=CODE[dst])


def test_string_to_string_and_empty():
    check_against_onnxruntime("Cast", [np.array(["a", "b"], dtype=object)], opset=13, to=T.STRING)
    check_against_onnxruntime("Cast", [np.zeros((0, 2), np.float32)], opset=13, to=T.INT64)
    check_against_onnxruntime("Cast", [np.array(3.5, np.float32)], opset=13, to=T.INT64)


def test_cast_opset1_string_type_name():
    x = sample(np.float32)
    got = run_kernel("Cast", [x], opset=1, to="INT32")[0]
    np.testing.assert_array_equal(got, x.astype(np.int32))
    assert got.dtype == np.int32


def test_cast_like():
    x = sample(np.float32)
    for target in (np.zeros(1, np.int64), np.zeros((), np.float16), np.zeros(2, np.bool_)):
        check_against_onnxruntime("CastLike", [x, target], opset=15)


def reference_cast(x, **attrs):
    """The ONNX reference evaluator's Cast, for types onnxruntime's Python API cannot return."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    node = helper.make_node("Cast", ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", CODE.get(x.dtype.type, T.FLOAT), None)],
                              [helper.make_tensor_value_info("y", attrs["to"], None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


LOW = [T.BFLOAT16, T.FLOAT8E4M3FN, T.FLOAT8E4M3FNUZ, T.FLOAT8E5M2, T.FLOAT8E5M2FNUZ, T.INT4, T.UINT4]


@pytest.mark.parametrize("to", LOW)
@pytest.mark.parametrize("saturate", [0, 1])
def test_low_precision_casts_match_reference(to, saturate):
    x = np.array([0.0, -0.0, 0.3, -1.7, 3.5, 100.0, 1e6, -1e6, np.inf, -np.inf, np.nan, 7.0, -8.0], np.float32)
    if to in (T.INT4, T.UINT4, T.BFLOAT16):
        x = x[[0, 2, 3, 4, 11, 12]] if to != T.UINT4 else np.array([0.0, 1.0, 3.0, 15.0], np.float32)
    attrs = {"to": to} if to in (T.INT4, T.UINT4, T.BFLOAT16) else {"to": to, "saturate": saturate}
    got = run_kernel("Cast", [x], opset=21, **attrs)[0]
    want = reference_cast(x, **attrs)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))
    back = run_kernel("Cast", [got], opset=21, to=T.FLOAT)[0]
    np.testing.assert_array_equal(back, want.astype(np.float32))


@pytest.mark.parametrize("round_mode,expected", [
    ("up", [1.0, 4.0, 4.0, 0.5, 2.0 ** -3, 2.0 ** 127]),
    ("down", [1.0, 2.0, 2.0, 0.25, 2.0 ** -4, 2.0 ** 127]),
    ("nearest", [1.0, 4.0, 2.0, 0.25, 2.0 ** -3, 2.0 ** 127]),
])
def test_float8e8m0_rounds_to_powers_of_two(round_mode, expected):
    """E8M0 holds only 2^e: 3 lies between 2 and 4, 2.9 nearer 2, 0.3 between 1/4 and 1/2, 0.1 between
    1/16 and 1/8; 3e38 is above the largest power, 2^127 (1.7e38), and saturates to it."""
    x = np.array([1.0, 3.0, 2.9, 0.3, 0.1, 3e38], dtype=np.float32)
    got = run_kernel("Cast", [x], opset=24, to=T.FLOAT8E8M0, round_mode=round_mode)[0]
    assert got.dtype.name.startswith("float8_e8m0")
    np.testing.assert_array_equal(got.astype(np.float32), np.array(expected, np.float32))


def test_float8e8m0_bad_round_mode_named():
    with pytest.raises(Exception, match="round_mode"):
        run_kernel("Cast", [sample(np.float32)], opset=24, to=T.FLOAT8E8M0, round_mode="sideways")


@pytest.mark.parametrize("src,to", [(np.float32, T.INT32), (np.int32, T.FLOAT), (np.float64, T.INT64),
                                    (np.int64, T.UINT64), (np.float16, T.INT16), (np.uint8, T.INT8),
                                    (np.int16, T.FLOAT16)])
def test_bit_cast(src, to):
    check_against_onnxruntime("BitCast", [sample(src)], opset=26, to=to)


def test_bit_cast_width_mismatch():
    with pytest.raises(Exception, match="BitCast"):
        run_kernel("BitCast", [sample(np.float32)], opset=26, to=T.INT64)
