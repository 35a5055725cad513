"""Asking for a value a graph pass removed names the pass and how to keep the value."""
from __future__ import annotations

import ast
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import gpuinfer
from gpuinfer.graph.passes import PASSES
from tests.model_zoo import reference_outputs


def _model(extra_outputs=()) -> onnx.ModelProto:
    """x -> Identity -> i -> Conv -> c -> BatchNormalization -> b -> Relu -> y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), "scale"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "bias"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "mean"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), "var")]
    nodes = [helper.make_node("Identity", ["x"], ["i"], name="ident"),
             helper.make_node("Conv", ["i", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["b"], name="bn"),
             helper.make_node("Relu", ["b"], ["y"], name="relu")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])]
    outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 8, 8]) for n in extra_outputs]
    graph = helper.make_graph(nodes, "removed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


FEEDS = {"x": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}


@pytest.mark.parametrize("name, removed_by", [("i", "remove_identities"), ("c", "fold_batchnorm"),
                                              ("b", "fuse_activations")])
def test_keep_of_a_removed_value_names_the_pass(name, removed_by):
    with pytest.raises(gpuinfer.GpuinferError) as info:
        gpuinfer.InferenceSession(_model(), device="cpu", memory_mode="arena", keep=[name])
    text = str(info.value)
    assert f"{name!r} was removed by the graph pass {removed_by!r}" in text
    assert "optimizations=False" in text and "does not have" not in text
    suggested = ast.literal_eval(re.search(r"optimizations=(\[[^\]]*\])", text).group(1))
    assert removed_by not in suggested and set(suggested) < set(PASSES)
    # following the advice keeps the value, and it is the value onnxruntime computes
    sess = gpuinfer.InferenceSession(_model(), device="cpu", memory_mode="arena", keep=[name],
                                     optimizations=suggested)
    got = sess.run([name], FEEDS)[0]
    expected = reference_outputs(_model([name]).SerializeToString(), FEEDS)[1]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    off = gpuinfer.InferenceSession(_model(), device="cpu", memory_mode="arena", keep=[name], optimizations=False)
    np.testing.assert_allclose(off.run([name], FEEDS)[0], expected, rtol=1e-5, atol=1e-5)


def test_output_name_of_a_removed_value_names_the_pass():
    sess = gpuinfer.InferenceSession(_model(), device="cpu", memory_mode="per_tensor")
    with pytest.raises(gpuinfer.InputError, match="'c' was removed by the graph pass 'fold_batchnorm'"):
        sess.run(["c"], FEEDS)


def test_keep_of_an_unknown_name_still_says_the_model_lacks_it():
    with pytest.raises(gpuinfer.GpuinferError, match=r"does not have: \['nope'\]") as info:
        gpuinfer.InferenceSession(_model(), device="cpu", memory_mode="arena", keep=["nope", "i"])
    assert "remove_identities" in str(info.value)  # both reasons, in one message
