"""The residual-Add pass: Conv/Gemm/MatMul + Add (+ activation) as one step, and the Adds it must leave alone."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import gpuinfer


def _model(residual_shape=(1, 4, 6, 6), add_first=True, late_residual=False):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")]
    r_source = helper.make_node("Sigmoid", ["r_in"], ["r"], name="make_r")
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv")
    nodes = [conv, r_source] if late_residual else [r_source, conv]
    nodes += [helper.make_node("Add", ["c", "r"] if add_first else ["r", "c"], ["s"], name="add"),
              helper.make_node("Relu", ["s"], ["y"], name="relu")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6]),
              helper.make_tensor_value_info("r_in", TensorProto.FLOAT, list(residual_shape))]
    graph = helper.make_graph(nodes, "res", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    feeds = {"x": rng.standard_normal((1, 4, 6, 6)).astype(np.float32),
             "r_in": rng.standard_normal(residual_shape).astype(np.float32)}
    return model, feeds


def _check(model, feeds, expected_types, **session_args):
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    plain = gpuinfer.InferenceSession(model, device="cpu", optimizations=False).run(None, feeds)[0]
    for mode in gpuinfer.MEMORY_MODES:
        sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode, **session_args)
        assert [n.op_type for n in sess.graph.nodes] == expected_types, mode
        got = sess.run(None, feeds)[0]
        np.testing.assert_array_equal(got, plain, err_msg=mode)  # same arithmetic, same order
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=mode)


@pytest.mark.parametrize("add_first", [True, False])
def test_conv_add_relu_one_step(add_first):
    _check(*_model(add_first=add_first), ["Sigmoid", "Conv+Add+Relu"])


def test_alone():
    _check(*_model(), ["Sigmoid", "Conv+Add", "Relu"], optimizations=["fuse_residual_adds"])


@pytest.mark.parametrize("case", ["broadcast", "late_residual"])
def test_left_alone(case):
    model, feeds = _model(residual_shape=(1, 4, 1, 1)) if case == "broadcast" else _model(late_residual=True)
    expected = ["Sigmoid", "Conv", "Add", "Relu"] if case == "broadcast" else ["Conv", "Sigmoid", "Add", "Relu"]
    _check(model, feeds, expected, optimizations=["fuse_residual_adds"])


def test_matmul_residual():
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["x", "m"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 8])
    model = helper.make_model(helper.make_graph(nodes, "mm", [x], [helper.make_tensor_value_info("y", 1, [3, 8])],
                                                initializer=inits), opset_imports=[helper.make_opsetid("", 13)])
    _check(model, {"x": rng.standard_normal((3, 8)).astype(np.float32)}, ["MatMul+Add"])
