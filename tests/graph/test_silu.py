"""fuse_silu: ``x * Sigmoid(x)`` becomes one step (then the Conv's epilogue), with the two nodes'
bits, onnxruntime's results, and one tensor fewer alive at the peak."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import gpuinfer
from gpuinfer.graph.passes import PASSES
from tests.model_zoo import model_case, reference_outputs
from tests.node_helpers import run_onnxruntime

WITHOUT_SILU = [p for p in PASSES if p != "fuse_silu"]


def _silu_net(mul_order=("c", "s"), dtype=TensorProto.FLOAT, sigmoid_read_twice=False, sigmoid_is_output=False,
              other_factor=False):
    """Conv -> Sigmoid -> Mul (a SiLU) -> Conv, then a SiLU of the second Conv's output the other way round."""
    rng = np.random.default_rng(5)
    np_type = np.float32 if dtype == TensorProto.FLOAT else np.float16
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np_type), "w1"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np_type), "b1"),
             numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype(np_type), "w2")]
    first = ["c", "s"] if not other_factor else ["x2", "s"]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"]),
             helper.make_node("Mul", list(mul_order) if not other_factor else first, ["m"]),
             helper.make_node("Conv", ["m", "w2"], ["d"]),
             helper.make_node("Sigmoid", ["d"], ["t"]),
             helper.make_node("Mul", ["t", "d"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", dtype, [1, 8, 16, 16])]
    inputs = [helper.make_tensor_value_info("x", dtype, [1, 3, 16, 16])]
    if other_factor:
        inputs.append(helper.make_tensor_value_info("x2", dtype, [1, 8, 16, 16]))
    if sigmoid_read_twice:
        nodes.append(helper.make_node("Relu", ["s"], ["r"]))
        outputs.append(helper.make_tensor_value_info("r", dtype, [1, 8, 16, 16]))
    if sigmoid_is_output:
        outputs.append(helper.make_tensor_value_info("s", dtype, [1, 8, 16, 16]))
    model = helper.make_model(helper.make_graph(nodes, "silu", inputs, outputs, initializer=inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    feeds = {"x": (rng.standard_normal((1, 3, 16, 16)) * 3).astype(np_type)}
    if other_factor:
        feeds["x2"] = rng.standard_normal((1, 8, 16, 16)).astype(np_type)
    return model, feeds


def _ops(sess):
    return [n.op_type for n in sess.graph.nodes]


@pytest.mark.parametrize("mul_order", [("c", "s"), ("s", "c")])
def test_silu_becomes_one_step_with_the_nodes_bits(mul_order):
    model, feeds = _silu_net(mul_order)
    alone = gpuinfer.InferenceSession(model, device="cpu", optimizations=["fuse_silu"])
    assert _ops(alone) == ["Conv", "Sigmoid+Mul", "Conv", "Sigmoid+Mul"]
    every = gpuinfer.InferenceSession(model, device="cpu")
    assert _ops(every) == ["Conv+Sigmoid+Mul", "Conv+Sigmoid+Mul"]
    plain = gpuinfer.InferenceSession(model, device="cpu", optimizations=False).run(None, feeds)[0]
    unfused = gpuinfer.InferenceSession(model, device="cpu", optimizations=WITHOUT_SILU).run(None, feeds)[0]
    for sess in (alone, every):
        got = sess.run(None, feeds)[0]
        assert np.array_equal(got, plain)  # the same passes in the same order, chunk by chunk
    assert np.array_equal(every.run(None, feeds)[0], unfused)
    np.testing.assert_allclose(plain, run_onnxruntime(model, feeds)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["sigmoid_read_twice", "sigmoid_is_output", "other_factor", "float16"])
def test_silu_left_alone_where_it_is_not_one(case):
    kwargs = {"dtype": TensorProto.FLOAT16} if case == "float16" else {case: True}
    model, feeds = _silu_net(**kwargs)
    sess = gpuinfer.InferenceSession(model, device="cpu", optimizations=["fuse_silu"])
    fused = _ops(sess).count("Sigmoid+Mul")
    assert fused == (0 if case == "float16" else 1)  # the second SiLU (d * Sigmoid(d)) still is one
    plain = gpuinfer.InferenceSession(model, device="cpu", optimizations=False).run(None, feeds)
    for got, want in zip(sess.run(None, feeds), plain):
        assert np.array_equal(got, want)


def test_silu_in_place_on_a_dying_input_in_arena():
    """Relu, a chain of SiLUs, a sum: each SiLU step rewrites its input, so the arena holds one
    tensor where the two nodes hold two (the input and its sigmoid)."""
    n = 1 << 16
    nodes, name = [helper.make_node("Relu", ["x"], ["r"])], "r"
    for i in range(4):
        nodes += [helper.make_node("Sigmoid", [name], [f"s{i}"]), helper.make_node("Mul", [name, f"s{i}"], [f"m{i}"])]
        name = f"m{i}"
    nodes.append(helper.make_node("ReduceSum", [name], ["y"], keepdims=1))
    model = helper.make_model(helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", 1, [n])],
                                                [helper.make_tensor_value_info("y", 1, [1])]),
                              opset_imports=[helper.make_opsetid("", 13)])
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    peaks = {}
    for label, opts in (("fused", True), ("unfused", WITHOUT_SILU)):
        sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode="arena", optimizations=opts)
        got = sess.run(None, {"x": x})[0]
        peaks[label] = sess.memory_report().peak_bytes
        np.testing.assert_allclose(got, run_onnxruntime(model, {"x": x})[0], rtol=1e-5)
    assert peaks["unfused"] >= 2 * n * 4 > peaks["fused"] >= n * 4


def test_nudenet_silus_fuse_and_match_onnxruntime():
    source, feeds = model_case("shared/nudenet_320n.onnx")
    sess = gpuinfer.InferenceSession(source, device="cpu", memory_mode="arena")
    assert sum("Sigmoid+Mul" in op for op in _ops(sess)) >= 50
    got = sess.run(None, feeds)
    for g, want in zip(got, reference_outputs(source, feeds)):
        np.testing.assert_allclose(g, want, rtol=1e-3, atol=1e-3)
    unfused = gpuinfer.InferenceSession(source, device="cpu", memory_mode="arena", optimizations=WITHOUT_SILU)
    assert all(np.array_equal(a, b) for a, b in zip(got, unfused.run(None, feeds)))
    assert sess.memory_report().peak_bytes < unfused.memory_report().peak_bytes
