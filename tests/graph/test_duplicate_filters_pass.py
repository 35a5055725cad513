"""The duplicate-filter pass: a Conv with repeated filters computes each once and copies channels;
outputs match onnxruntime and equal filters give bitwise equal channels."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import gpuinfer

C_IN, C_OUT = 5, 20


def _weights(repeat=True, bias_differs=False, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((C_OUT, C_IN, 3, 3)).astype(np.float32)
    b = rng.standard_normal(C_OUT).astype(np.float32)
    if repeat:  # channels 7..19 repeat filters 0, 3 and 5 in turn
        for i in range(7, C_OUT):
            src = (0, 3, 5)[i % 3]
            w[i], b[i] = w[src], b[src]
        if bias_differs:
            b[7] += 1.0
    return w, b


def _model(w, b, group=1, act="Relu"):
    c_in = w.shape[1] * group
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], group=group, name="conv"),
             helper.make_node(act, ["c"], ["y"], name="act")]
    graph = helper.make_graph(nodes, "dup", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, c_in, 9, 11])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, w.shape[0], 9, 11])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    feeds = {"x": np.random.default_rng(1).standard_normal((2, c_in, 9, 11)).astype(np.float32)}
    return model, feeds


def _types(sess):
    return [n.op_type for n in sess.graph.nodes]


def _onnxruntime(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.mark.parametrize("mode", ["per_tensor", "reduce", "reuse", "arena"])
def test_repeated_filters_computed_once(mode):
    w, b = _weights()
    model, feeds = _model(w, b)
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode)
    assert _types(sess) == ["Conv", "Gather", "Relu"]  # runs before activation fusion
    conv = sess.graph.nodes[0]
    assert sess.graph.constants[conv.inputs[1]].shape[0] == 7  # filters 0..6 are the distinct ones
    y = sess.run(None, feeds)[0]
    np.testing.assert_allclose(y, _onnxruntime(model, feeds), rtol=1e-5, atol=1e-5)
    for i in range(7, C_OUT):
        np.testing.assert_array_equal(y[:, i], y[:, (0, 3, 5)[i % 3]])


def test_alone_and_with_an_unfused_activation():
    w, b = _weights()
    model, feeds = _model(w, b, act="Sigmoid")
    sess = gpuinfer.InferenceSession(model, device="cpu", optimizations=["share_duplicate_filters"])
    assert _types(sess) == ["Conv", "Gather", "Sigmoid"]
    np.testing.assert_allclose(sess.run(None, feeds)[0], _onnxruntime(model, feeds), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["distinct", "bias_differs", "grouped"])
def test_left_alone(case):
    if case == "grouped":
        w, b = _weights()
        model, feeds = _model(w, b, group=2)  # 2 groups of 10 filters over 5 channels each
    else:
        model, feeds = _model(*_weights(repeat=case != "distinct", bias_differs=True))
    sess = gpuinfer.InferenceSession(model, device="cpu")
    if case == "bias_differs":  # filter 7 now differs from 1 through its bias; 8.. still repeat
        assert _types(sess) == ["Conv", "Gather", "Relu"]
        assert sess.graph.constants[sess.graph.nodes[0].inputs[1]].shape[0] == 8
    else:
        assert _types(sess) == ["Conv+Relu"]
    np.testing.assert_allclose(sess.run(None, feeds)[0], _onnxruntime(model, feeds), rtol=1e-5, atol=1e-5)
