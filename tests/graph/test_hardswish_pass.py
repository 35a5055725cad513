"""The hard-swish pass: which Add/Clip/Mul/Div chains it merges, and that the merged step is
bitwise the four nodes (and matches onnxruntime) in every memory mode."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import gpuinfer
from gpuinfer.graph.passes.hardswish import FUSED_TYPE

SHAPE = [2, 3, 40, 70]  # 16,800 elements: one chunk


def _model(opset=13, three=3.0, high=6.0, six=6.0, swap_mul=False, dtype=np.float32, extra_reader=False,
           shape=SHAPE):
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    inits = [numpy_helper.from_array(np.array([three], dtype), "three"),
             numpy_helper.from_array(np.array(six, dtype), "six")]
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"], name="pre"),
             helper.make_node("Mul", ["s", "x"], ["h"], name="pre2"),
             helper.make_node("Add", ["h", "three"], ["a"], name="add")]
    if opset < 11:
        nodes.append(helper.make_node("Clip", ["a"], ["c"], name="clip", min=0.0, max=high))
    else:
        inits += [numpy_helper.from_array(np.array(0, dtype), "lo"), numpy_helper.from_array(np.array(high, dtype), "hi")]
        nodes.append(helper.make_node("Clip", ["a", "lo", "hi"], ["c"], name="clip"))
    nodes.append(helper.make_node("Mul", ["c", "h"] if swap_mul else ["h", "c"], ["m"], name="mul"))
    nodes.append(helper.make_node("Div", ["m", "six"], ["y"], name="div"))
    outputs = [helper.make_tensor_value_info("y", elem, shape)]
    if extra_reader:
        nodes.append(helper.make_node("Neg", ["c"], ["z"], name="extra"))
        outputs.append(helper.make_tensor_value_info("z", elem, shape))
    graph = helper.make_graph(nodes, "hs", [helper.make_tensor_value_info("x", elem, shape)], outputs,
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _feeds(dtype=np.float32, shape=SHAPE):
    return {"x": (np.random.default_rng(0).standard_normal(shape) * 5).astype(dtype)}


def _types(sess):
    return [n.op_type for n in sess.graph.nodes]


@pytest.mark.parametrize("opset,swap_mul,dtype", [(13, False, np.float32), (13, True, np.float32),
                                                  (10, False, np.float32), (13, False, np.float64)])
def test_chain_merged_bitwise_equal(opset, swap_mul, dtype):
    model, feeds = _model(opset=opset, swap_mul=swap_mul, dtype=dtype), _feeds(dtype)
    plain = gpuinfer.InferenceSession(model, device="cpu", optimizations=False)
    expected = plain.run(None, feeds)[0]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(expected, want, rtol=1e-6, atol=1e-6)
    for mode in gpuinfer.MEMORY_MODES:
        sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode, optimizations=["fuse_hard_swish"])
        assert FUSED_TYPE in _types(sess) and "Clip" not in _types(sess), mode
        np.testing.assert_array_equal(sess.run(None, feeds)[0], expected, err_msg=mode)


def test_several_chunks_bitwise_equal():
    shape = [1, 8, 100, 100]  # 80,000 elements: more than one 65,536-element chunk
    model, feeds = _model(shape=shape), _feeds(shape=shape)
    expected = gpuinfer.InferenceSession(model, device="cpu", optimizations=False).run(None, feeds)[0]
    got = gpuinfer.InferenceSession(model, device="cpu", memory_mode="arena").run(None, feeds)[0]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("change", [dict(three=2.0), dict(high=5.0), dict(six=3.0), dict(extra_reader=True)])
def test_other_chains_left_alone(change):
    model, feeds = _model(**change), _feeds()
    sess = gpuinfer.InferenceSession(model, device="cpu", optimizations=["fuse_hard_swish"])
    assert FUSED_TYPE not in _types(sess)
    assert _types(sess).count("Clip") == 1
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for got, ref in zip(sess.run(None, feeds), want):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_merged_step_writes_over_its_dying_input_in_arena():
    """h's last reader is the merged step, so the arena puts the result on h: one map and a
    65,536-element chunk where the four nodes need two maps (h and the Add's result)."""
    shape = [1, 8, 100, 100]
    model = _model(shape=shape)
    model.graph.node.append(helper.make_node("ReduceSum", ["y"], ["out"], name="tail"))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, 1, 1]))
    feeds = _feeds(shape=shape)
    fused = gpuinfer.InferenceSession(model, device="cpu", memory_mode="arena")
    plain = gpuinfer.InferenceSession(model, device="cpu", memory_mode="arena", optimizations=False)
    np.testing.assert_array_equal(fused.run(None, feeds)[0], plain.run(None, feeds)[0])
    one_map, chunk = int(np.prod(shape)) * 4, 65536 * 4
    assert plain.memory_report().peak_bytes >= 2 * one_map
    assert fused.memory_report().peak_bytes <= one_map + chunk + 4096


def _conv_hard_swish_model():
    """Conv -> x * Clip(x + 3, 0, 6) / 6 -> Conv, as PaddlePaddle's MobileNetV3-style models write it."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array(3.0, np.float32), "three"),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "three"], ["a"]),
             helper.make_node("Clip", ["a", "lo", "hi"], ["k"]),
             helper.make_node("Mul", ["c", "k"], ["m"]),
             helper.make_node("Div", ["m", "hi"], ["h"]),
             helper.make_node("Conv", ["h", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "conv_hs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 20, 30])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 20, 30])],
                              initializer=inits)
    feeds = {"x": (rng.standard_normal((1, 3, 20, 30)) * 2).astype(np.float32)}
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), feeds


def test_chain_after_a_conv_runs_in_its_step():
    """fuse_hard_swish runs before fuse_activations, so the merged chain joins the Conv's step and
    rewrites its output in place (on CUDA: the Conv's epilogue), with the four nodes' bits."""
    model, feeds = _conv_hard_swish_model()
    plain = gpuinfer.InferenceSession(model, device="cpu", optimizations=False).run(None, feeds)[0]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(plain, want, rtol=1e-5, atol=1e-5)
    for mode in gpuinfer.MEMORY_MODES:
        sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode)
        assert _types(sess) == [f"Conv+{FUSED_TYPE}", "Conv"], mode
        np.testing.assert_array_equal(sess.run(None, feeds)[0], plain, err_msg=mode)
