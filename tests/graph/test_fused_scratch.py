"""A fused step's activation works in its producer's spent scratch (``ops/fused.py``,
``ScratchLender``): the step costs the larger of the two halves' scratch, not their sum, every
ask matches a planned slot, and the bits are the unfused graph's."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import gpuinfer
from gpuinfer.graph.passes import PASSES
from tests.node_helpers import run_onnxruntime

UNFUSED = [p for p in PASSES if p != "fuse_activations"]


def _conv_then(act: str, channels: int = 8, size: int = 40):
    """x -> Conv 3x3 (im2col: banded column scratch) -> ``act`` (chunk scratch) -> ReduceSum."""  # noqa: D401
    rng = np.random.default_rng(9)
    inits = [numpy_helper.from_array(rng.standard_normal((channels, channels, 3, 3)).astype(np.float32), "w")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])]
    if act == "SiLU":  # two nodes, one step (passes/silu.py)
        nodes += [helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["a"])]
    else:
        nodes.append(helper.make_node(act, ["c"], ["a"]))
    nodes.append(helper.make_node("ReduceSum", ["a"], ["y"], keepdims=0))
    shape = [1, channels, size, size]
    graph = helper.make_graph(nodes, "conv_act", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    return model, {"x": rng.standard_normal(shape).astype(np.float32)}


@pytest.mark.parametrize("act", ["HardSwish", "SiLU"])
@pytest.mark.parametrize("mode", ["arena", "reduce"])
def test_activation_borrows_the_producers_scratch(act, mode):
    model, feeds = _conv_then(act)
    fused = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode)
    step = "Conv+Sigmoid+Mul" if act == "SiLU" else f"Conv+{act}"
    assert [n.op_type for n in fused.graph.nodes] == [step, "ReduceSum"]
    unfused = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode, optimizations=UNFUSED)
    got, want = fused.run(None, feeds), unfused.run(None, feeds)
    assert np.array_equal(got[0], want[0])
    np.testing.assert_allclose(got[0], run_onnxruntime(model, feeds)[0], rtol=1e-4)
    report = fused.memory_report()
    if mode == "arena":
        assert report.dynamic_bytes == 0  # every scratch ask matched its planned slot
    # the Conv's output and input, and the larger of the two halves' scratch: never more than two steps
    assert report.peak_bytes <= unfused.memory_report().peak_bytes
