"""Loading runs what is runnable: the ONNX checker's complaints warn, only unrunnable models fail."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import gpuinfer

X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
FEEDS = {"x": np.array([[1, -2, 3], [-4, 5, -6]], dtype=np.float32)}


def _ir3_model(nodes, inits, opset=8) -> onnx.ModelProto:
    """An IR-3 model whose initializers are not graph inputs: the checker rejects it, onnxruntime runs it."""
    model = helper.make_model(helper.make_graph(nodes, "g", [X], [Y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 3
    return model


def _w():
    return numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")


def test_checker_rejects_but_onnxruntime_runs_so_gpuinfer_runs_with_a_warning():
    model = _ir3_model([helper.make_node("Add", ["x", "w"], ["s"]), helper.make_node("Relu", ["s"], ["y"])], [_w()])
    with pytest.raises(onnx.checker.ValidationError, match="w in initializer but not in graph input"):
        onnx.checker.check_model(model)
    ort = pytest.importorskip("onnxruntime")
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, FEEDS)
    with pytest.warns(gpuinfer.ModelCheckWarning, match="w in initializer but not in graph input") as caught:
        sess = gpuinfer.InferenceSession(model, device="cpu")
    assert caught[0].filename == __file__  # points at the caller's line, not gpuinfer's insides
    got = sess.run(None, FEEDS)
    np.testing.assert_array_equal(got[0], expected[0])


def test_valid_model_loads_without_warning():
    model = _ir3_model([helper.make_node("Add", ["x", "w"], ["y"])], [_w()])
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 3]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gpuinfer.InferenceSession(model, device="cpu")


def test_the_warning_can_be_made_an_error():
    model = _ir3_model([helper.make_node("Add", ["x", "w"], ["y"])], [_w()])
    with warnings.catch_warnings():
        warnings.simplefilter("error", gpuinfer.ModelCheckWarning)
        with pytest.raises(gpuinfer.ModelCheckWarning):
            gpuinfer.InferenceSession(model, device="cpu")


def test_checker_rejected_model_with_a_dangling_input_still_fails():
    model = _ir3_model([helper.make_node("Add", ["x", "ghost"], ["y"], name="adder")], [_w()])
    with pytest.raises(gpuinfer.InvalidModelError, match="'adder' reads 'ghost'"):
        gpuinfer.InferenceSession(model, device="cpu")


def test_checker_rejected_model_with_a_cycle_still_fails():
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="first"),
             helper.make_node("Relu", ["a"], ["b"], name="second"),
             helper.make_node("Add", ["a", "w"], ["y"], name="third")]
    with pytest.raises(gpuinfer.InvalidModelError, match="cycle.*'first'"):
        gpuinfer.InferenceSession(_ir3_model(nodes, [_w()]), device="cpu")


def test_op_onnx_does_not_define_is_an_invalid_model():
    nodes = [helper.make_node("Frobnicate", ["x"], ["y"], name="frob")]
    with pytest.raises(gpuinfer.InvalidModelError, match="Frobnicate.*'frob'.*opset 8"):
        gpuinfer.InferenceSession(_ir3_model(nodes, []), device="cpu")


def test_op_newer_than_the_model_opset_is_an_invalid_model():
    nodes = [helper.make_node("Gelu", ["x"], ["y"], name="g")]  # Gelu is opset 20
    with pytest.raises(gpuinfer.InvalidModelError, match="Gelu.*opset 8"):
        gpuinfer.InferenceSession(_ir3_model(nodes, []), device="cpu")


def test_graph_output_nobody_makes_still_fails():
    model = _ir3_model([helper.make_node("Relu", ["x"], ["r"])], [])
    with pytest.raises(gpuinfer.InvalidModelError, match="graph output 'y'"):
        gpuinfer.InferenceSession(model, device="cpu")


def test_out_of_order_nodes_are_sorted_without_a_warning():
    nodes = [helper.make_node("Relu", ["a"], ["y"], name="second"), helper.make_node("Neg", ["x"], ["a"], name="first")]
    model = helper.make_model(helper.make_graph(nodes, "g", [X], [Y]), opset_imports=[helper.make_opsetid("", 17)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = gpuinfer.InferenceSession(model, device="cpu").run(None, FEEDS)[0]
    np.testing.assert_array_equal(out, np.maximum(-FEEDS["x"], 0))
