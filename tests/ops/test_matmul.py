"""MatMul, Gemm, MatMulInteger and Einsum against onnxruntime."""
import numpy as np
import pytest

import gpuinfer.ops  # noqa: F401  (registers the kernels)
from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.context import StandaloneContext
from gpuinfer.ops.registry import lookup
from tests.node_helpers import check_against_onnxruntime, run_kernel, requested_scratch

rng = np.random.default_rng(0)
TOL = dict(rtol=1e-5, atol=1e-5)


def r(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("a,b", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)),
                                 ((4,), (4,)), ((2, 1, 3, 4), (5, 4, 2)), ((1, 3, 4), (2, 4, 6)),
                                 ((3, 0), (0, 2)), ((0, 3), (3, 2))])
def test_matmul(a, b):
    check_against_onnxruntime("MatMul", [r(*a), r(*b)], **TOL)


def test_matmul_dtypes():
    ints = [rng.integers(-5, 5, (3, 4)).astype(np.int32), rng.integers(-5, 5, (4, 2)).astype(np.int32)]
    check_against_onnxruntime("MatMul", ints, opset=13)
    check_against_onnxruntime("MatMul", [r(3, 4, dtype=np.float64), r(4, 2, dtype=np.float64)])
    check_against_onnxruntime("MatMul", [r(2, 3, 4), r(4, 2)], opset=1, **TOL)


def test_matmul_bad_shapes():
    with pytest.raises(NodeExecutionError, match="MatMul"):
        run_kernel("MatMul", [r(3, 4), r(5, 2)])


@pytest.mark.parametrize("attrs", [{}, dict(transA=1), dict(transB=1), dict(alpha=0.5, beta=2.0, transA=1, transB=1)])
@pytest.mark.parametrize("c_shape", [None, (5,), (1, 5), (3, 1), (3, 5), ()])
def test_gemm(attrs, c_shape):
    a = r(4, 3) if attrs.get("transA") else r(3, 4)
    b = r(5, 4) if attrs.get("transB") else r(4, 5)
    c = None if c_shape is None else np.asarray(rng.standard_normal(c_shape), dtype=np.float32)
    check_against_onnxruntime("Gemm", [a, b, c], opset=13, **TOL, **attrs)


def test_gemm_beta_zero_and_old_opset():
    check_against_onnxruntime("Gemm", [r(3, 4), r(4, 5), r(5)], opset=11, beta=0.0)
    check_against_onnxruntime("Gemm", [r(3, 4), r(4, 5), r(3, 5)], opset=7, alpha=2.0, **TOL)


def test_matmul_integer():
    # 7-bit signed weights: onnxruntime's u8 x s8 CPU kernel saturates int16 pair sums beyond that
    a = rng.integers(0, 255, (3, 4)).astype(np.uint8)
    b = rng.integers(-64, 64, (4, 5)).astype(np.int8)
    check_against_onnxruntime("MatMulInteger", [a, b], opset=10)
    check_against_onnxruntime("MatMulInteger", [a, b, np.array(12, np.uint8), np.array(-3, np.int8)], opset=10)
    bu = rng.integers(0, 255, (4, 5)).astype(np.uint8)
    check_against_onnxruntime("MatMulInteger", [a, bu, np.array([7], np.uint8),
                                                rng.integers(0, 255, 5).astype(np.uint8)], opset=10)
    a3 = rng.integers(0, 255, (2, 3, 4)).astype(np.uint8)
    b2 = rng.integers(0, 255, (4, 5)).astype(np.uint8)
    check_against_onnxruntime("MatMulInteger", [a3, b2, np.array(12, np.uint8)], opset=10)


def test_matmul_integer_per_row_and_signed_per_column_zero_points():
    # onnxruntime refuses a per-row A zero point, and its u8 x s8 kernel saturates with per-column
    # B zero points; the spec allows both: check against exact integer maths
    a = rng.integers(0, 255, (3, 4)).astype(np.uint8)
    b = rng.integers(-128, 127, (4, 5)).astype(np.int8)
    az = np.array([1, 2, 3], np.uint8)
    bz = rng.integers(-128, 127, 5).astype(np.int8)
    (got,) = run_kernel("MatMulInteger", [a, b, az, bz], opset=10)
    expected = (a.astype(np.int32) - az.astype(np.int32)[:, None]) @ (b.astype(np.int32) - bz.astype(np.int32))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)


EINSUM = [("ij,jk->ik", [(3, 4), (4, 5)]), ("ij,jk", [(3, 4), (4, 5)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
          ("ii->i", [(3, 3)]), ("ij->ji", [(3, 4)]), ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
          ("...ij,jk->...ik", [(2, 3, 4), (4, 5)]), ("i,i", [(3,), (3,)]), ("ij,ij->", [(3, 4), (3, 4)]),
          ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]), ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
          ("...ii->...i", [(2, 3, 3)]), ("ba", [(3, 4)]), ("i j , j k -> i k", [(3, 4), (4, 5)]),
          ("i,j->ij", [(3,), (4,)]), ("ij->", [(3, 4)])]


@pytest.mark.parametrize("equation,shapes", EINSUM)
def test_einsum(equation, shapes):
    check_against_onnxruntime("Einsum", [r(*s) for s in shapes], equation=equation, opset=12, **TOL)


def test_einsum_int():
    xs = [rng.integers(-3, 3, (3, 4)).astype(np.int64), rng.integers(-3, 3, (4, 2)).astype(np.int64)]
    check_against_onnxruntime("Einsum", xs, equation="ij,jk->ik", opset=12)


def test_integer_matmul_scratch_is_predicted():
    a = rng.integers(0, 255, (2, 3, 4)).astype(np.uint8)
    b = rng.integers(0, 255, (4, 5)).astype(np.uint8)
    predicted, requested = requested_scratch("MatMulInteger", [a, b, np.array(3, np.uint8), None], 10)
    assert predicted == requested
    args = [a, np.array(0.1, np.float32), np.array(3, np.uint8), b, np.array(0.2, np.float32),
            np.array(4, np.uint8), np.array(0.5, np.float32), np.array(9, np.uint8)]
    predicted, requested = requested_scratch("QLinearMatMul", args, 10)
    assert predicted == requested


def test_qlinear_matmul():
    a = rng.integers(0, 255, (2, 3, 4)).astype(np.uint8)
    b = rng.integers(0, 255, (4, 5)).astype(np.uint8)
    args = [a, np.array(0.1, np.float32), np.array(3, np.uint8), b, np.array(0.2, np.float32),
            np.array(4, np.uint8), np.array(0.5, np.float32), np.array(9, np.uint8)]
    check_against_onnxruntime("QLinearMatMul", args, opset=10)
    a8 = rng.integers(-64, 64, (3, 4)).astype(np.int8)
    b8 = rng.integers(-64, 64, (4, 5)).astype(np.int8)
    args = [a8, np.array(0.1, np.float32), np.array(1, np.int8), b8, np.array(0.2, np.float32),
            np.array(-2, np.int8), np.array(0.3, np.float32), np.array(-5, np.int8)]
    check_against_onnxruntime("QLinearMatMul", args, opset=21)
