"""Planned views bound into the runner's steps (runtime/bound_views.py).

Steady-state runs must hand out planned outputs and scratch without asking the pool, with the
same bytes and the same accounting as the general loop (which always asks the pool); a plan whose
blocks are replaced (the arena grown by a bigger signature, a plan dropped) must be bound again,
and released blocks must not stay referenced by a runner.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import gpuinfer
from gpuinfer.runtime.pool import RunPool

PLANNED = ["per_tensor", "reuse", "arena"]


def _model(batch="N"):
    """A chain with a dynamic first dimension, scratch-taking ops (HardSwish, LeakyRelu) and a
    two-output split, so outputs and scratch of several kinds get bound."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("HardSwish", ["a"], ["b"], name="hswish"),
             helper.make_node("Split", ["b"], ["s0", "s1"], axis=1, num_outputs=2, name="split"),
             helper.make_node("Add", ["s0", "s1"], ["c"], name="add"),
             helper.make_node("LeakyRelu", ["c"], ["d"], alpha=0.1, name="leaky"),
             helper.make_node("Neg", ["d"], ["y"], name="neg")]
    graph = helper.make_graph(nodes, "bound", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 32])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


def _feeds(rows: int) -> dict:
    return {"x": np.random.default_rng(rows).standard_normal((rows, 64)).astype(np.float32)}


def _binding(sess):
    """The view binding of the session's one top-level runner (its generated code's ``BINDING``)."""
    (run,) = sess._executor._runners.values()
    return run.__globals__["BINDING"]


def _accounting(sess) -> tuple:
    report = sess.memory_report()
    return (report.peak_bytes, report.allocations, report.dynamic_bytes, report.lower_bound_bytes,
            [(s.step, s.op, s.live_bytes) for s in report.timeline], sess.held_bytes)


@pytest.mark.parametrize("mode", PLANNED)
def test_steady_state_asks_the_pool_for_nothing_planned(mode, monkeypatch):
    sess = gpuinfer.InferenceSession(_model(), device="cpu", memory_mode=mode)
    feeds = _feeds(8)
    for _ in range(2):
        sess.run(None, feeds)
    asked = []
    buffer = RunPool.buffer

    def counting(pool, key, shape, dtype):
        asked.append((key, key in pool.views))
        return buffer(pool, key, shape, dtype)

    monkeypatch.setattr(RunPool, "buffer", counting)
    got = sess.run(None, feeds)[0]
    planned = [key for key, in_views in asked if in_views]
    assert not planned, f"{mode}: planned buffers looked up in the pool: {planned}"
    want = ort.InferenceSession(_model().SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    bound = [b for ctx in _binding(sess).contexts for b in (*ctx.bound, *ctx.bound_scratch) if b is not None]
    assert any(b[3].kind == "scratch" for b in bound), "no scratch was bound"


@pytest.mark.parametrize("mode", PLANNED)
def test_signatures_in_turn_match_the_general_loop(mode):
    """Alternating batch sizes (the arena grows, per_tensor keeps one plan each): every run's
    outputs and accounting are the general loop's."""
    runner = gpuinfer.InferenceSession(_model(), device="cpu", memory_mode=mode)
    general = gpuinfer.InferenceSession(_model(), device="cpu", memory_mode=mode, profile=True)
    for rows in [2, 2, 16, 16, 2, 64, 2, 16]:
        feeds = _feeds(rows)
        got, want = runner.run(None, feeds), general.run(None, feeds)
        np.testing.assert_array_equal(got[0], want[0])
        assert _accounting(runner) == _accounting(general), f"{mode}, {rows} rows"
        # what the run recorded of every buffer handed out (the lower bound and replans read it)
        assert runner._last_run[2] == general._last_run[2], f"{mode}, {rows} rows"
    assert runner._executor._runners and not general._executor._runners


def test_released_blocks_are_not_held_by_the_runner():
    """A plan leaving the cache releases its blocks; the runner's bound views go with them."""
    sess = gpuinfer.InferenceSession(_model(), device="cpu", memory_mode="per_tensor")
    sess.run(None, _feeds(4))
    sess.run(None, _feeds(4))
    binding = _binding(sess)
    assert any(b is not None for ctx in binding.contexts for b in ctx.bound)
    cache = sess._plans
    for plan, blocks in list(cache.entries.values()):
        cache._drop(plan, blocks)
    assert binding.views is None
    assert all(b is None for ctx in binding.contexts for b in (*ctx.bound, *ctx.bound_scratch))


def test_a_step_put_in_place_gets_its_input_object():
    """Arena: a step planned in place of its input is handed that input's very array (numpy's
    overlap analysis for two objects over the same bytes costs a tiny kernel its own time again),
    and the bytes are still onnxruntime's."""
    sess = gpuinfer.InferenceSession(_model(), device="cpu", memory_mode="arena")
    feeds = _feeds(8)
    sess.run(None, feeds)
    got = sess.run(None, feeds)[0]
    contexts = _binding(sess).contexts
    by_op = {ctx.op_type: ctx.bound[0] for ctx in contexts if ctx.n_outputs == 1}
    shared = [op for op, b in by_op.items() if b is not None and b[0] is not b[5]]
    assert shared, "no step got another key's array for the same bytes"
    for ctx in contexts:
        for b in ctx.bound:
            if b is not None:
                assert b[0].__array_interface__ == b[5].__array_interface__  # same bytes, same layout
    want = ort.InferenceSession(_model().SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
