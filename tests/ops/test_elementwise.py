"""Unary elementwise kernels against onnxruntime: values, dtypes, attributes, opsets, edge cases,
plus the in-place and scratch promises the planner relies on."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest

from gpuinfer.ops import elementwise
from gpuinfer.ops.context import StandaloneContext
from gpuinfer.ops.registry import lookup
from tests.node_helpers import check_against_onnxruntime, run_kernel

RNG = np.random.default_rng(0)
X = (RNG.standard_normal((3, 4, 5)) * 3).astype(np.float32)
X_UNIT = RNG.uniform(-0.99, 0.99, (3, 4, 5)).astype(np.float32)
X_POS = RNG.uniform(0.01, 10, (3, 4, 5)).astype(np.float32)
X_GE1 = RNG.uniform(1.0, 10, (3, 4, 5)).astype(np.float32)


class RecordingContext(StandaloneContext):
    """Records scratch requests; output 0 may be forced onto a given (input) buffer."""

    def __init__(self, alias=None, **kw):
        super().__init__(**kw)
        self.alias = alias
        self.requests = []

    def out(self, i, shape, dtype):
        a = self.alias
        if i == 0 and a is not None and tuple(shape) == a.shape and np.dtype(dtype) == a.dtype:
            return a
        return super().out(i, shape, dtype)

    def scratch(self, shape, dtype):
        self.requests.append((tuple(int(d) for d in shape), np.dtype(dtype)))
        return super().scratch(shape, dtype)


def run_checked(op_type, inputs, opset=21, alias=None, n_outputs=1, **attrs):
    """Run the kernel; assert its scratch requests equal what its scratch function declares."""
    spec = lookup(op_type, opset)
    ctx = RecordingContext(alias=alias, attrs=attrs, opset=opset, n_outputs=n_outputs, op_type=op_type)
    with np.errstate(all="ignore"):  # as the executor runs kernels
        result = spec.kernel(ctx, *inputs)
    declared = [] if spec.scratch is None else spec.scratch(
        attrs, [None if x is None else tuple(x.shape) for x in inputs],
        [None if x is None else x.dtype for x in inputs])
    assert [(tuple(s), np.dtype(d)) for s, d in declared] == ctx.requests
    return list(result) if isinstance(result, tuple) else [result]


FLOAT_OPS = [
    ("Relu", X), ("Sigmoid", X), ("Tanh", X), ("Exp", X), ("Log", X_POS), ("Sqrt", X_POS),
    ("Abs", X), ("Neg", X), ("Reciprocal", X_POS), ("Floor", X), ("Ceil", X), ("Sign", X),
    ("Erf", X), ("HardSigmoid", X), ("HardSwish", X), ("LeakyRelu", X), ("Elu", X), ("Selu", X),
    ("Celu", X), ("Softplus", X), ("Softsign", X), ("Mish", X), ("ThresholdedRelu", X),
    ("Sin", X), ("Cos", X), ("Tan", X_UNIT), ("Asin", X_UNIT), ("Acos", X_UNIT), ("Atan", X),
    ("Sinh", X), ("Cosh", X), ("Asinh", X), ("Acosh", X_GE1), ("Atanh", X_UNIT), ("Identity", X),
    ("Shrink", X), ("Round", X),
]


@pytest.mark.parametrize("op_type,x", FLOAT_OPS, ids=[o for o, _ in FLOAT_OPS])
def test_float_ops_match_onnxruntime(op_type, x):
    check_against_onnxruntime(op_type, [x], opset=18, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("op_type", ["Relu", "Sigmoid", "Exp", "Abs", "Neg", "Sqrt", "Floor", "Erf",
                                     "LeakyRelu", "Elu", "Softplus", "HardSwish"])
@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_other_float_dtypes(op_type, dtype):
    x = np.abs(X) if op_type == "Sqrt" else X
    tol = 2e-3 if dtype == np.float16 else 1e-7
    try:
        check_against_onnxruntime(op_type, [x.astype(dtype)], opset=18, rtol=tol, atol=tol)
    except Exception as e:  # onnxruntime lacks some kernels for some dtypes
        if "NOT_IMPLEMENTED" in str(e) or "Could not find an implementation" in str(e):
            got = run_kernel(op_type, [x.astype(dtype)], opset=18)[0]
            ref = run_kernel(op_type, [x], opset=18)[0]
            assert got.dtype == dtype
            np.testing.assert_allclose(got.astype(np.float32), ref, rtol=tol * 10, atol=tol * 10)
        else:
            raise


def ort_or_numpy(op_type, inputs, numpy_ref, opset, **attrs):
    """Compare with onnxruntime, or with ``numpy_ref`` where onnxruntime has no such kernel."""
    try:
        return check_against_onnxruntime(op_type, inputs, opset=opset, **attrs)
    except Exception as e:
        if "NOT_IMPLEMENTED" not in str(e) and "Could not find an implementation" not in str(e):
            raise
    got = run_checked(op_type, inputs, opset=opset, **attrs)[0]
    want = numpy_ref(*inputs)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    return [got]


SIGNED_REF = {"Abs": np.abs, "Neg": np.negative, "Sign": np.sign, "Relu": lambda x: np.maximum(x, 0).astype(x.dtype)}


@pytest.mark.parametrize("op_type", sorted(SIGNED_REF))
@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64])
def test_signed_integer_ops(op_type, dtype):
    x = RNG.integers(-100, 100, (4, 7)).astype(dtype)
    ort_or_numpy(op_type, [x], SIGNED_REF[op_type], opset=14)


def test_abs_sign_unsigned():
    x = RNG.integers(0, 255, (5, 6)).astype(np.uint8)
    check_against_onnxruntime("Abs", [x], opset=13)
    check_against_onnxruntime("Sign", [x], opset=13)


def test_round_half_to_even():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 2.4, 2.6, -0.0], np.float32)
    got = check_against_onnxruntime("Round", [x], opset=11)[0]
    np.testing.assert_array_equal(got, [-2, -2, -0, 0, 2, 2, 2, 3, 0])


@pytest.mark.parametrize("op_type,attrs", [
    ("LeakyRelu", {"alpha": 0.2}), ("LeakyRelu", {"alpha": -1.5}), ("LeakyRelu", {"alpha": 3.0}),
    ("Elu", {"alpha": 0.3}), ("Selu", {"alpha": 2.0, "gamma": 0.5}), ("Celu", {"alpha": 2.5}),
    ("HardSigmoid", {"alpha": 0.5, "beta": 0.1}), ("ThresholdedRelu", {"alpha": 0.7}),
    ("Shrink", {"lambd": 1.5, "bias": 0.3}), ("Shrink", {"lambd": 0.0, "bias": 2.0}),
])
def test_activation_attributes(op_type, attrs):
    check_against_onnxruntime(op_type, [X], opset=18, **attrs)


def test_shrink_integer():
    x = RNG.integers(-10, 10, (20,)).astype(np.int32)
    check_against_onnxruntime("Shrink", [x], opset=9, lambd=2.0, bias=1.0)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate):
    check_against_onnxruntime("Gelu", [X], opset=20, approximate=approximate)


def test_erf_accuracy_and_range():
    x = np.concatenate([np.linspace(-6, 6, 200001), [0.0, 1e-30, -1e-8, 1e-4, np.inf, -np.inf]]).astype(np.float32)
    got = run_checked("Erf", [x], opset=13)[0]
    want = np.array([math.erf(v) for v in x.astype(np.float64)])
    assert np.max(np.abs(got - want)) < 2e-7  # tanh(x * P(x^2)): 1.7e-7 measured
    assert np.all(np.abs(got) <= 1)
    small = np.abs(want) > 0
    assert np.max(np.abs(got[small] - want[small]) / np.abs(want[small])) < 3e-7  # 2.6e-7 measured
    assert np.signbit(run_kernel("Erf", [np.array([-0.0], np.float32)], opset=13)[0][0])
    assert np.isnan(run_kernel("Erf", [np.array([np.nan], np.float32)], opset=13)[0][0])
    check_against_onnxruntime("Erf", [x[::97].copy()], opset=13, rtol=1e-6, atol=5e-7)


def test_sigmoid_is_stable_at_extremes():
    x = np.array([-200, -100, -20, -5, 0, 5, 20, 100, 200], np.float32)
    got = run_kernel("Sigmoid", [x], opset=13)[0]
    assert got.dtype == np.float32 and np.all(np.isfinite(got))
    want = 1 / (1 + np.exp(-x.astype(np.float64)))
    mask = want > 1e-30
    np.testing.assert_allclose(got[mask], want[mask], rtol=1e-6)
    check_against_onnxruntime("Sigmoid", [x], opset=13)


def test_softplus_large_inputs_do_not_overflow():
    x = np.array([-1000, -50, 0, 50, 1000], np.float32)
    check_against_onnxruntime("Softplus", [x], opset=18)


@pytest.mark.parametrize("opset", [6, 11, 12, 13])
def test_clip_opsets(opset):
    if opset < 11:
        check_against_onnxruntime("Clip", [X], opset=opset, min=-1.0, max=2.0)
        check_against_onnxruntime("Clip", [X], opset=opset, min=0.5)
        check_against_onnxruntime("Clip", [X], opset=opset)
        return
    lo, hi = np.array(-1.5, np.float32), np.array(0.25, np.float32)
    check_against_onnxruntime("Clip", [X, lo, hi], opset=opset)
    check_against_onnxruntime("Clip", [X, None, hi], opset=opset)
    check_against_onnxruntime("Clip", [X, lo], opset=opset)
    check_against_onnxruntime("Clip", [X], opset=opset)
    check_against_onnxruntime("Clip", [X, hi, lo], opset=opset)  # min > max -> max everywhere


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8])
def test_clip_integers(dtype):
    x = RNG.integers(0 if dtype == np.uint8 else -50, 50, (6, 5)).astype(dtype)
    check_against_onnxruntime("Clip", [x, np.array(3, dtype), np.array(20, dtype)], opset=13)


def test_isnan_isinf():
    x = np.array([1.0, np.nan, np.inf, -np.inf, 0.0, -3.0], np.float32)
    check_against_onnxruntime("IsNaN", [x], opset=13)
    for pos in (0, 1):
        for neg in (0, 1):
            check_against_onnxruntime("IsInf", [x], opset=10, detect_positive=pos, detect_negative=neg)
    check_against_onnxruntime("IsInf", [x.astype(np.float64)], opset=20)


def test_not():
    check_against_onnxruntime("Not", [X > 0], opset=1)


@pytest.mark.parametrize("opset", [7, 10, 13])
def test_dropout_inference(opset):
    check_against_onnxruntime("Dropout", [X], opset=opset)
    y, mask = run_kernel("Dropout", [X], n_outputs=2, opset=opset)
    np.testing.assert_array_equal(y, X)
    # Mask all true as the reference and opset-12 spec say (onnxruntime gives zeros before 12).
    assert mask.dtype == (np.bool_ if opset >= 10 else X.dtype) and np.all(mask == 1)
    if opset >= 12:
        check_against_onnxruntime("Dropout", [X], n_outputs=2, opset=opset)


def test_dropout_training_mode_false_and_ratio_zero():
    check_against_onnxruntime("Dropout", [X, np.array(0.3, np.float32), np.array(False)], n_outputs=2,
                              opset=13, constant_inputs=[1, 2])
    check_against_onnxruntime("Dropout", [X, np.array(0.0, np.float32), np.array(True)], n_outputs=2,
                              opset=13, constant_inputs=[1, 2])


def test_dropout_training_mode_drops_and_rescales():
    x = np.ones((200, 50), np.float32)
    y, mask = run_kernel("Dropout", [x, np.array(0.5, np.float32), np.array(True)], n_outputs=2, opset=13, seed=3)
    assert mask.dtype == np.bool_ and 0.4 < mask.mean() < 0.6
    np.testing.assert_array_equal(y, np.where(mask, 2.0, 0.0))
    # The seeded draw is the ONNX reference's (legacy RandomState uniform), so seeded runs agree with it.
    np.testing.assert_array_equal(mask, np.random.RandomState(3).uniform(0, 1, x.shape) >= 0.5)


def test_identity_of_sequence_and_optional_pass_through():
    from gpuinfer.values import OptionalValue, TensorSequence

    seq = TensorSequence([X, X[0]])
    (got,) = run_kernel("Identity", [seq], opset=16)
    assert isinstance(got, TensorSequence) and got is not seq and got[0] is X
    opt = OptionalValue(None)
    (got,) = run_kernel("Identity", [opt], opset=16)
    assert got is opt


@pytest.mark.parametrize("op_type", ["Relu", "Sigmoid", "Erf", "Gelu", "HardSwish", "Abs", "Clip", "Mish",
                                     "IsNaN", "Shrink", "Identity", "Dropout"])
def test_empty_and_scalar_tensors(op_type):
    for x in (np.zeros((0, 3), np.float32), np.array(0.7, np.float32)):
        check_against_onnxruntime(op_type, [x], opset=20)


INPLACE = [o for o in sorted({o for o, _ in FLOAT_OPS} | {"Gelu", "Swish", "Clip", "Dropout", "Not"})
           if lookup(o, 24).inplace]


@pytest.mark.parametrize("op_type", INPLACE)
def test_inplace_output_on_input_buffer(op_type):
    """inplace=True promise: writing over the input gives the same result (across many chunks)."""
    x = (RNG.standard_normal(3 * elementwise._CHUNK + 11) * 3).astype(np.float32)
    if op_type in ("Log", "Sqrt", "Reciprocal", "Acosh"):
        x = np.abs(x) + 1
    if op_type in ("Asin", "Acos", "Atanh", "Tan"):
        x = np.tanh(x)
    if op_type == "Not":
        x = x > 0
    want = run_checked(op_type, [x], opset=24)[0]
    buf = x.copy()
    got = run_checked(op_type, [buf], opset=24, alias=buf)[0]
    assert got is buf
    np.testing.assert_array_equal(got, want)


def test_gelu_tanh_scratch_declaration_and_chunks():
    x = RNG.standard_normal(2 * elementwise._CHUNK + 5).astype(np.float32)
    got = run_checked("Gelu", [x], opset=20, approximate="tanh")[0]
    want = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", [1.0, 0.75])
def test_swish(alpha):
    check_against_onnxruntime("Swish", [X], opset=24, alpha=alpha)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_swiglu(alpha):
    a = (RNG.standard_normal(2 * elementwise._CHUNK + 9) * 3).astype(np.float32)
    b = RNG.standard_normal(a.shape).astype(np.float32)
    ref = lambda a, b: (a / (1 + np.exp(-alpha * a.astype(np.float64))) * b).astype(np.float32)  # noqa: E731
    got = run_checked("SwiGLU", [a, b], opset=28, alpha=alpha)[0]
    np.testing.assert_allclose(got, ref(a, b), rtol=1e-5, atol=1e-6)
    for which in (0, 1):
        bufs = [a.copy(), b.copy()]
        assert run_checked("SwiGLU", bufs, opset=28, alias=bufs[which], alpha=alpha)[0] is bufs[which]
        np.testing.assert_array_equal(bufs[which], got)
    with pytest.raises(Exception, match="SwiGLU"):
        run_kernel("SwiGLU", [a, b[:5]], opset=28)


def test_gelu_rejects_bad_mode():
    with pytest.raises(Exception, match="approximate"):
        run_kernel("Gelu", [X], opset=20, approximate="fast")


def test_dtype_float_attr_does_not_promote():
    got = run_kernel("LeakyRelu", [X], opset=16, alpha=np.float64(0.1))[0]
    assert got.dtype == np.float32
    assert onnx.defs.has("LeakyRelu")
