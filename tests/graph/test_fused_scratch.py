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
    return _summed_model(nodes, inits, [1, channels, size, size], rng)


def _summed_model(nodes, inits, shape, rng):
    """The model of ``nodes`` from float input ``x`` of ``shape`` to a scalar ``y``, and a feed."""
    graph = helper.make_graph(nodes, "fused_scratch", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
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


def _count_passes(monkeypatch):
    """Wrap ``chunked`` (as the fused chains and the activations call it) so each chunk's body
    call is counted: one Python pass of the activation's ufuncs per chunk."""
    import gpuinfer.ops.elementwise as elementwise
    import gpuinfer.ops.fused as fused

    real, calls = elementwise.chunked, []

    def counting(ctx, x, kinds, body):
        calls.append([int(x.size), 0])

        def counted(*args):
            calls[-1][1] += 1
            return body(*args)

        return real(ctx, x, kinds, counted)

    for module in (fused, elementwise):
        monkeypatch.setattr(module, "chunked", counting)
    return calls


@pytest.mark.parametrize("act", ["HardSwish", "SiLU"])
def test_activation_chunks_fill_the_producers_spent_scratch(act, monkeypatch):
    """The im2col columns the Conv has finished with hold more than the activation's own chunk
    (a sixteenth of the tensor, 4,096 elements at least): its chunks grow to fill them, fewer
    Python passes for the same elementwise bits, and no byte is asked for beyond the plan."""
    from gpuinfer.ops.elementwise import chunk_for

    model, feeds = _conv_then(act, channels=16, size=40)
    unfused = gpuinfer.InferenceSession(model, device="cpu", memory_mode="arena", optimizations=UNFUSED)
    want = unfused.run(None, feeds)[0]
    calls = _count_passes(monkeypatch)
    fused = gpuinfer.InferenceSession(model, device="cpu", memory_mode="arena")
    got = fused.run(None, feeds)[0]
    n = 16 * 40 * 40
    assert calls and all(size == n for size, _ in calls)
    declared_passes = -(-n // chunk_for(n))  # 7: what the activation's own chunk takes
    assert all(passes < declared_passes for _, passes in calls), calls
    assert np.array_equal(got, want)
    assert fused.memory_report().dynamic_bytes == 0  # the wider chunks are lent, not asked for
    assert fused.memory_report().peak_bytes <= unfused.memory_report().peak_bytes


def _pointwise_then_silu_then_bigger(channels: int = 16, size: int = 40):
    """x -> 1x1 Conv (no scratch) -> SiLU -> a Concat four times its size -> ReduceSum: the Concat's
    step is the plan's busiest, so the SiLU's step has spare bytes (plan/slack.py)."""
    rng = np.random.default_rng(11)
    inits = [numpy_helper.from_array(rng.standard_normal((channels, channels, 1, 1)).astype(np.float32), "w")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["a"]),
             helper.make_node("Concat", ["a", "a", "a", "a"], ["big"], axis=1),
             helper.make_node("ReduceSum", ["big"], ["y"], keepdims=0)]
    return _summed_model(nodes, inits, [1, channels, size, size], rng)


@pytest.mark.parametrize("mode", ["arena", "reduce"])
def test_activation_after_a_scratchless_producer_takes_the_steps_slack(mode, monkeypatch):
    """A 1x1 Conv asks for no scratch, so the step's spare bytes go to the SiLU after it: wider
    chunks, declared to the plan as they are asked for (no byte outside the plan in ``arena``),
    and the same bits and peak as the unfused graph."""
    from gpuinfer.ops.elementwise import chunk_for

    model, feeds = _pointwise_then_silu_then_bigger()
    unfused = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode, optimizations=False)
    want = unfused.run(None, feeds)[0]
    calls = _count_passes(monkeypatch)
    fused = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode)
    assert [n.op_type for n in fused.graph.nodes][0] == "Conv+Sigmoid+Mul"
    got = fused.run(None, feeds)[0]
    n = 16 * 40 * 40
    assert calls and all(passes < -(-n // chunk_for(n)) for _, passes in calls), calls
    assert np.array_equal(got, want)
    np.testing.assert_allclose(got, run_onnxruntime(model, feeds)[0], rtol=1e-4)
    report = fused.memory_report()
    if mode == "arena":
        assert report.dynamic_bytes == 0
    assert report.peak_bytes <= unfused.memory_report().peak_bytes
