"""Subgraph tensors planned from a recorded trace (plan/trace.py, RunPool.begin_nested): placements
never overlap live tensors, later runs take one block per control-flow step, and runs that take
another branch or loop another number of times stay correct."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import gpuinfer
from gpuinfer.plan.trace import MAX_TRACE_ALLOCATIONS, TRACE_ALIGNMENT, plan_trace
from gpuinfer.values import trace_block_key


def _overlap(a0, a1, b0, b1):
    return a0 < b1 and b0 < a1


def test_live_tensors_never_share_bytes_and_dead_ones_are_reused():
    events = [("a", 100), ("b", 50), ("a", None), ("c", 60), ("d", 10), ("b", None), ("e", 200)]
    plan = plan_trace(events)
    assert plan.keys == ("a", "b", "c", "d", "e")
    live = {"a": (0, 2), "b": (1, 5), "c": (3, 7), "d": (4, 7), "e": (6, 7)}  # event index spans
    for i, ki in enumerate(plan.keys):
        assert plan.offsets[i] % TRACE_ALIGNMENT == 0
        for j, kj in enumerate(plan.keys[:i]):
            if _overlap(*live[ki], *live[kj]):
                assert not _overlap(plan.offsets[i], plan.offsets[i] + plan.sizes[i],
                                    plan.offsets[j], plan.offsets[j] + plan.sizes[j]), (ki, kj)
    # c (60 B) can take a's place once a is dead; the block is far below the 420 B sum
    assert plan.block_bytes < sum(plan.sizes)
    assert plan.block_bytes >= 200 + 64 + 16  # e, c and d are alive together


def test_a_key_made_again_is_a_new_tensor():
    plan = plan_trace([("x", 32), ("x", None), ("x", 32), ("y", 32)])
    assert plan.keys == ("x", "x", "y")
    assert plan.offsets[0] == plan.offsets[1]  # the first x is dead when the second is made
    assert plan.offsets[2] != plan.offsets[1]


def test_empty_and_overlong_traces_are_not_planned():
    assert plan_trace([]) is None
    assert plan_trace([(f"k{i}", 8) for i in range(MAX_TRACE_ALLOCATIONS + 1)]) is None


def _control_flow_model():
    """y = Loop_n(If(flag, then: relu(x)*2 + x via a nested If, else: x - 1) ...)."""
    f = TensorProto.FLOAT
    x_info = helper.make_tensor_value_info("x", f, [4, 8])
    two = helper.make_tensor("two", f, [], [2.0])
    one = helper.make_tensor("one", f, [], [1.0])
    # two results of one shape: copying them out must not let one land on the other
    # (made in the other order than returned, so a freed-too-early result would be overwritten)
    inner_then = helper.make_graph([helper.make_node("Sub", ["r", "two"], ["it2"]),
                                    helper.make_node("Mul", ["r", "two"], ["it"])], "inner_then", [],
                                   [helper.make_tensor_value_info("it", f, [4, 8]),
                                    helper.make_tensor_value_info("it2", f, [4, 8])], initializer=[two])
    inner_else = helper.make_graph([helper.make_node("Abs", ["r"], ["ie2"]), helper.make_node("Neg", ["r"], ["ie"])],
                                   "inner_else", [], [helper.make_tensor_value_info("ie", f, [4, 8]),
                                                      helper.make_tensor_value_info("ie2", f, [4, 8])])
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]),
                              helper.make_node("If", ["flag"], ["m", "m2"], then_branch=inner_then,
                                               else_branch=inner_else),
                              helper.make_node("Div", ["m", "m2"], ["q"]),
                              helper.make_node("Add", ["q", "x"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", f, [4, 8])])
    other = helper.make_graph([helper.make_node("Sub", ["x", "one"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", f, [4, 8])], initializer=[one])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Tanh", ["acc"], ["t1"]),
         helper.make_node("Add", ["t1", "acc"], ["acc_out"]),
         helper.make_node("ReduceSum", ["acc_out"], ["s"], keepdims=0)],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("acc", f, [4, 8])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", f, [4, 8]),
         helper.make_tensor_value_info("s", f, [])])
    nodes = [helper.make_node("If", ["flag"], ["b"], then_branch=then, else_branch=other),
             helper.make_node("Loop", ["n", "", "b"], ["y", "sums"], body=body)]
    graph = helper.make_graph(nodes, "cf", [x_info, helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
                                            helper.make_tensor_value_info("n", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", f, [4, 8]),
                               helper.make_tensor_value_info("sums", f, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _feeds(flag: bool, n: int):
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    return {"x": x, "flag": np.array(flag), "n": np.array(n, dtype=np.int64)}


@pytest.mark.parametrize("mode", ["arena", "per_tensor", "reuse"])
def test_later_runs_take_one_block_per_step_and_stay_correct(mode):
    model = _control_flow_model()
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode)
    feeds = _feeds(True, 3)
    want = ref.run(None, feeds)
    reports = []
    for _ in range(4):
        for got, exp in zip(sess.run(None, feeds), want):
            np.testing.assert_allclose(got, exp, rtol=1e-6, atol=1e-6)
        reports.append(sess.memory_report())
    recorded, planned = reports[-3], reports[-1]  # the same top-level plan, inner path dynamic vs planned
    assert planned.allocations < recorded.allocations / 2, (recorded.allocations, planned.allocations)
    assert planned.peak_bytes <= recorded.peak_bytes + 64 * recorded.allocations


def test_arena_places_the_traced_block_in_its_one_block():
    """Once traced and replanned, a run of the control-flow model allocates nothing in arena mode:
    the bodies' tensors are views into the step's block, which lives inside the arena."""
    model = _control_flow_model()
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode="arena")
    feeds = _feeds(True, 3)
    for _ in range(3):
        sess.run(None, feeds)
    report = sess.memory_report()
    plan = next(iter(sess._plans.values()))[0]
    traced = {step: t for step, t in plan.traces.items() if t is not None}
    assert set(traced) == {0, 1}  # the If and the Loop
    assert all(trace_block_key(step) in plan.placements for step in traced)
    assert report.allocations == 0
    assert report.peak_bytes == report.planned_bytes


def test_a_step_that_strays_is_left_untraced():
    model = _control_flow_model()
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode="arena")
    for n in (3, 3, 4, 5, 3):
        sess.run(None, _feeds(True, n))
    plan = next(iter(sess._plans.values()))[0]
    assert plan.traces[1] is None and plan.traces[0] is not None  # the Loop strayed, the If did not
    assert trace_block_key(1) not in plan.placements


@pytest.mark.parametrize("sequence", [[(True, 3), (False, 3), (True, 3), (True, 3)],
                                      [(True, 3), (True, 3), (True, 5), (True, 1), (True, 5), (True, 0)],
                                      [(False, 2), (False, 2), (True, 2), (False, 4), (False, 2)]])
def test_other_branches_and_trip_counts_stray_from_the_trace_safely(sequence):
    model = _control_flow_model()
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode="arena")
    for flag, n in sequence:
        feeds = _feeds(flag, n)
        for got, exp in zip(sess.run(None, feeds), ref.run(None, feeds)):
            np.testing.assert_allclose(got, exp, rtol=1e-6, atol=1e-6, err_msg=f"flag={flag} n={n}")


def test_reduce_keeps_allocating_every_tensor():
    sess = gpuinfer.InferenceSession(_control_flow_model(), device="cpu", memory_mode="reduce")
    feeds = _feeds(True, 3)
    counts = [(sess.run(None, feeds), sess.memory_report().allocations)[1] for _ in range(3)]
    assert counts[0] == counts[-1] > 10
