"""Shape and layout kernels against onnxruntime, across the opsets where attributes became inputs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.node_helpers import check_against_onnxruntime, run_kernel
from tests.ops.test_elementwise import run_checked

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, 4, 6)).astype(np.float32)


def I(*v):
    return np.array(v, np.int64)


@pytest.mark.parametrize("shape", [(0, -1, 6), (6, 0, 0, 2), (-1,), (2, 3, 24), (144, 1, 1), (0, 0, 0, 0)])
def test_reshape(shape):
    check_against_onnxruntime("Reshape", [X, I(*shape)], constant_inputs=[1], opset=13)


def test_reshape_allowzero_and_empty():
    e = np.zeros((0, 3), np.float32)
    check_against_onnxruntime("Reshape", [e, I(0, 3)], constant_inputs=[1], opset=14, allowzero=1)
    check_against_onnxruntime("Reshape", [e, I(3, 0)], constant_inputs=[1], opset=14, allowzero=1)
    check_against_onnxruntime("Reshape", [e, I(-1, 3)], constant_inputs=[1], opset=14)
    with pytest.raises(Exception, match="Reshape"):  # -1 beside a 0 product is ambiguous
        run_kernel("Reshape", [e, I(0, -1)], opset=14)


def test_reshape_opset1_attribute_and_errors():
    got = run_kernel("Reshape", [X], opset=1, shape=[6, -1])[0]
    np.testing.assert_array_equal(got, X.reshape(6, -1))
    for bad in ((-1, -1), (5, -1), (7, 7)):
        with pytest.raises(Exception, match="Reshape"):
            run_kernel("Reshape", [X, I(*bad)], opset=13)


@pytest.mark.parametrize("axis", [0, 1, 2, 4, -1, -4])
def test_flatten(axis):
    check_against_onnxruntime("Flatten", [X], opset=13, axis=axis)


def test_flatten_default_and_ints():
    check_against_onnxruntime("Flatten", [X.astype(np.int64)], opset=13)


def test_squeeze_unsqueeze_opsets():
    y = X[:1, :, :1]
    check_against_onnxruntime("Squeeze", [y, I(0, -2)], constant_inputs=[1], opset=13)
    check_against_onnxruntime("Squeeze", [y], opset=13)
    check_against_onnxruntime("Squeeze", [y], opset=11, axes=[-2])
    check_against_onnxruntime("Squeeze", [y], opset=1, axes=[0])
    check_against_onnxruntime("Unsqueeze", [X, I(0, -1)], constant_inputs=[1], opset=13)
    check_against_onnxruntime("Unsqueeze", [X, I(5, 1)], constant_inputs=[1], opset=13)
    check_against_onnxruntime("Unsqueeze", [X], opset=11, axes=[1, -1])
    check_against_onnxruntime("Unsqueeze", [np.array(3.0, np.float32), I(0)], constant_inputs=[1], opset=13)
    with pytest.raises(Exception, match="Squeeze"):
        run_kernel("Squeeze", [X, I(1)], opset=13)


@pytest.mark.parametrize("perm", [None, [0, 2, 3, 1], [3, 1, 0, 2]])
def test_transpose(perm):
    attrs = {} if perm is None else {"perm": perm}
    check_against_onnxruntime("Transpose", [X], opset=13, **attrs)
    check_against_onnxruntime("Transpose", [X > 0], opset=13, **attrs)


@pytest.mark.parametrize("axis", [0, 1, -1, 3])
def test_concat(axis):
    parts = [X, X[(slice(None),) * (axis % 4) + (slice(0, 1),)], X[(slice(None),) * (axis % 4) + (slice(0, 0),)]]
    check_against_onnxruntime("Concat", parts, opset=13, axis=axis)


def test_concat_ints_single_and_opset4():
    check_against_onnxruntime("Concat", [I(1, 2), I(3)], opset=13, axis=0)
    check_against_onnxruntime("Concat", [X], opset=13, axis=1)
    check_against_onnxruntime("Concat", [X, X], opset=4, axis=2)


def test_split_opsets():
    check_against_onnxruntime("Split", [X], n_outputs=2, axis=1, opset=11, split=[1, 2])
    check_against_onnxruntime("Split", [X], n_outputs=3, axis=1, opset=11)
    check_against_onnxruntime("Split", [X, I(2, 4)], n_outputs=2, axis=-1, constant_inputs=[1], opset=13)
    check_against_onnxruntime("Split", [X, I(0, 6)], n_outputs=2, axis=-1, constant_inputs=[1], opset=13)
    check_against_onnxruntime("Split", [X], n_outputs=2, opset=13)
    check_against_onnxruntime("Split", [X], n_outputs=4, axis=3, opset=18, num_outputs=4)
    check_against_onnxruntime("Split", [np.arange(7, dtype=np.int64)], n_outputs=3, opset=18, num_outputs=3)
    with pytest.raises(Exception, match="Split"):
        run_kernel("Split", [X], n_outputs=4, axis=1, opset=13)


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ((0, 1), (2, -1), (0, -1), (1, 2)),
    ((-1, 100), (-100, 0), (3, 1), (-1, -2)),
    ((5, -7), (-9223372036854775807, 9223372036854775807), (2, 3), (-1, 3)),
    ((1,), (1000,), None, None),
    ((0, 0, 0, 0), (-1, -1, -1, -1), (0, 1, 2, 3), (1, 1, 1, 1)),
    ((3,), (3,), (2,), (1,)),
    ((10,), (-10,), (3,), (-1,)),
])
def test_slice(starts, ends, axes, steps):
    inputs = [X, I(*starts), I(*ends)] + ([] if axes is None else [I(*axes)]) + ([] if steps is None else [I(*steps)])
    check_against_onnxruntime("Slice", inputs, constant_inputs=list(range(1, len(inputs))), opset=13)


def test_slice_opset1_and_int32_inputs():
    check_against_onnxruntime("Slice", [X], opset=9, starts=[1], ends=[1000], axes=[2])
    check_against_onnxruntime("Slice", [X], opset=9, starts=[0, -2], ends=[1, 10])
    ints = [np.array(v, np.int32) for v in ([1], [-1], [1], [1])]
    check_against_onnxruntime("Slice", [X] + ints, constant_inputs=[1, 2, 3, 4], opset=13)


@pytest.mark.parametrize("shape", [(3, 1, 1, 1, 1), (1,), (2, 1, 1, 1), (1, 1, 4, 1)])
def test_expand(shape):
    check_against_onnxruntime("Expand", [X[:, :1], I(*shape)], constant_inputs=[1], opset=13)


@pytest.mark.parametrize("reps", [(1, 2, 1, 3), (2, 1, 0, 1), (1, 1, 1, 1)])
def test_tile(reps):
    check_against_onnxruntime("Tile", [X, I(*reps)], constant_inputs=[1], opset=13)
    check_against_onnxruntime("Tile", [X > 0, I(*reps)], constant_inputs=[1], opset=13)


def test_tile_opset1():
    got = run_kernel("Tile", [X, np.array(3), np.array(-1)], opset=1)[0]
    np.testing.assert_array_equal(got, np.tile(X, (1, 1, 1, 3)))


@pytest.mark.parametrize("start,end", [(None, None), (1, -1), (-10, None), (2, 2), (0, 100), (-1, None)])
def test_shape(start, end):
    attrs = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    check_against_onnxruntime("Shape", [X], opset=15, **attrs)


def test_shape_size_scalar_and_empty():
    for x in (np.array(1.0, np.float32), np.zeros((0, 4), np.int32)):
        check_against_onnxruntime("Shape", [x], opset=13)
        check_against_onnxruntime("Size", [x], opset=13)
    check_against_onnxruntime("Size", [X], opset=13)


@pytest.mark.parametrize("value", [None, np.array([7], np.int32), np.array([2.5], np.float64), np.array([True])])
def test_constant_of_shape(value):
    attrs = {} if value is None else {"value": numpy_helper.from_array(value)}
    check_against_onnxruntime("ConstantOfShape", [I(2, 3)], constant_inputs=[0], opset=20, **attrs)
    check_against_onnxruntime("ConstantOfShape", [I(0)], constant_inputs=[0], opset=20, **attrs)


@pytest.mark.parametrize("attrs", [
    {"value": numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3))},
    {"value_float": 1.5}, {"value_floats": [1.0, 2.0]}, {"value_int": 3}, {"value_ints": [1, -2, 3]},
])
def test_constant(attrs):
    check_against_onnxruntime("Constant", [], opset=13, **attrs)


def test_constant_strings():
    assert run_kernel("Constant", [], opset=13, value_strings=["a", "bc"])[0].tolist() == ["a", "bc"]
    assert run_kernel("Constant", [], opset=13, value_string="x")[0].tolist() == "x"


@pytest.mark.parametrize("start,limit,delta,dtype", [
    (0, 10, 3, np.int32), (10, 0, -3, np.int64), (0.5, 3.2, 0.3, np.float32), (1, 1, 1, np.int64),
    (-1., 5., 0.1, np.float64), (5, 1, 2, np.int16), (1., 1000., 0.37, np.float32),
])
def test_range(start, limit, delta, dtype):
    check_against_onnxruntime("Range", [np.array(start, dtype), np.array(limit, dtype), np.array(delta, dtype)],
                              opset=11)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space(mode):
    y = RNG.standard_normal((2, 18, 3, 4)).astype(np.float32)
    check_against_onnxruntime("DepthToSpace", [y], opset=13, blocksize=3, mode=mode)
    check_against_onnxruntime("DepthToSpace", [y[:, :8]], opset=13, blocksize=2, mode=mode)


def test_space_to_depth():
    check_against_onnxruntime("SpaceToDepth", [X], opset=13, blocksize=2)
    check_against_onnxruntime("SpaceToDepth", [X[:, :, :3, :6]], opset=13, blocksize=3)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_space_to_depth_mode_inverts_depth_to_space(mode):
    check_against_onnxruntime("SpaceToDepth", [X], opset=28, blocksize=2, mode=mode)
    y = run_kernel("SpaceToDepth", [X], opset=28, blocksize=2, mode=mode)[0]
    np.testing.assert_array_equal(run_kernel("DepthToSpace", [y], opset=13, blocksize=2, mode=mode)[0], X)


@pytest.mark.parametrize("k", [-5, -1, 0, 2, 6, 10])
def test_eye_like(k):
    m = RNG.standard_normal((4, 6)).astype(np.float32)
    check_against_onnxruntime("EyeLike", [m], opset=9, k=k)
    check_against_onnxruntime("EyeLike", [m.T.copy()], opset=9, k=k, dtype=onnx.TensorProto.INT32)
    check_against_onnxruntime("EyeLike", [m[:3, :3].astype(np.int64)], opset=9, k=k)


@pytest.mark.parametrize("k", [-7, -1, 0, 2, 8, None])
@pytest.mark.parametrize("upper", [0, 1])
def test_trilu(k, upper):
    inputs = [X] if k is None else [X, np.array(k, np.int64)]
    check_against_onnxruntime("Trilu", inputs, constant_inputs=[1], opset=14, upper=upper)
    if k is not None:
        check_against_onnxruntime("Trilu", [X[0, 0].astype(np.int64), np.array(k, np.int64)], constant_inputs=[1],
                                  opset=14, upper=upper)


def test_inplace_copy_ops_tolerate_aliasing():
    for op_type, extra, attrs in [("Reshape", [I(6, -1)], {}), ("Flatten", [], {}), ("Squeeze", [], {}),
                                  ("Unsqueeze", [I(0)], {}), ("Trilu", [], {})]:
        buf = X.copy() if op_type != "Squeeze" else X[:1].copy()
        want = run_checked(op_type, [buf.copy()] + extra, opset=14, **attrs)[0]
        got = run_checked(op_type, [buf] + extra, opset=14, alias=buf, **attrs)[0]
        np.testing.assert_array_equal(got, want)
