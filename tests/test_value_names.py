"""A model's own value names may hold any character: exporters write ``/``, ``:``, ``@`` and ``#``.

Tensor keys used to be strings with meaning inside them (``@`` for a subgraph's tensors,
``<step>#scratch<i>`` for scratch): a top-level value named ``mid@1`` was then taken for a
subgraph tensor, and ``1#scratch0`` for step 1's scratch.  Keys are ``TensorKey``s now; this
test names every value of a model (top level, If branches, Loop body, a value of data-dependent
shape the plan cannot place) in the old encodings and checks, in every memory mode on both
devices, that the outputs match onnxruntime and every memory figure equals the plainly named
model's.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import gpuinfer
from gpuinfer.plan import MODES

SHAPE = [4, 8, 16]  # 2 KiB of float32

# plain name -> a name in the encodings keys used to have
TRICKY = {
    "x": "input/x:0", "a": "a@1", "b": "1#scratch0", "mid": "mid@1", "midf": "0#unused0",
    "cnt": "nz@count", "sum": "2#trace", "c": "cond:0#inner", "y": "y/out:0",
    "t": "then/t@0", "then_out": "3#scratch1", "e": "else#e", "else_out": "@else/",
    "n": "trips:0", "i": "iter@0", "cin": "cond#in", "v": "v:0/@", "s": "body/s@2",
    "vout": "v#out@1", "cout": "cond@out", "z": "loop#out/0", "w": "4#scratch0@",
}


def _model(name):
    """Relu, Mul, a NonZero (data-dependent shape), an If with two branches and a Loop."""
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    vi = helper.make_tensor_value_info
    then_branch = helper.make_graph(
        [helper.make_node("Sin", [name("b")], [name("t")]),
         helper.make_node("Add", [name("t"), name("a")], [name("then_out")])],
        "then", [], [vi(name("then_out"), f, SHAPE)])
    else_branch = helper.make_graph(
        [helper.make_node("Cos", [name("b")], [name("e")]),
         helper.make_node("Sub", [name("e"), name("a")], [name("else_out")])],
        "else", [], [vi(name("else_out"), f, SHAPE)])
    body = helper.make_graph(
        [helper.make_node("Identity", [name("cin")], [name("cout")]),
         helper.make_node("Tanh", [name("v")], [name("s")]),
         helper.make_node("Add", [name("s"), name("b")], [name("vout")])],
        "body", [vi(name("i"), i64, []), vi(name("cin"), TensorProto.BOOL, []), vi(name("v"), f, SHAPE)],
        [vi(name("cout"), TensorProto.BOOL, []), vi(name("vout"), f, SHAPE)])
    nodes = [
        helper.make_node("Relu", [name("x")], [name("a")]),
        helper.make_node("Mul", [name("a"), name("x")], [name("b")]),
        helper.make_node("NonZero", [name("b")], [name("mid")]),
        helper.make_node("Cast", [name("mid")], [name("midf")], to=f),
        helper.make_node("ReduceSum", [name("midf")], [name("cnt")], keepdims=0),
        helper.make_node("ReduceSum", [name("b")], [name("sum")], keepdims=0),
        helper.make_node("Greater", [name("sum"), name("cnt")], [name("c")]),
        helper.make_node("If", [name("c")], [name("y")], then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Loop", [name("n"), "", name("y")], [name("z")], body=body),
        helper.make_node("Mul", [name("z"), name("y")], [name("w")]),
    ]
    graph = helper.make_graph(nodes, "names", [vi(name("x"), f, SHAPE), vi(name("n"), i64, [])],
                              [vi(name("w"), f, SHAPE), vi(name("cnt"), f, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _feeds(name, seed: int) -> dict:
    x = np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)
    return {name("x"): x, name("n"): np.array(2 + seed, dtype=np.int64)}


FIGURES = ("peak_bytes", "planned_bytes", "lower_bound_bytes", "dynamic_bytes", "allocations",
           "held_bytes_after_run", "first_run_peak_bytes", "inplace_count")


def _runs(name, mode: str, device: str) -> list:
    """Each run's memory figures, after checking its outputs against onnxruntime's."""
    model = _model(name)
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    sess = gpuinfer.InferenceSession(model, device=device, memory_mode=mode)
    figures = []
    for seed in (0, 0, 1, 1, 0):  # the first run traces the bodies; later ones follow the trace
        feeds = _feeds(name, seed)
        for got, want in zip(sess.run(None, feeds), reference.run(None, feeds)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        report = sess.memory_report()
        figures.append({field: getattr(report, field) for field in FIGURES})
    return figures


def test_the_tricky_names_are_distinct_and_tricky():
    assert len(set(TRICKY.values())) == len(TRICKY)
    assert all(any(c in n for c in "@#/:") for n in TRICKY.values())


@pytest.mark.parametrize("device", ["cpu", "strict"])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_names_with_key_characters_behave_like_plain_names(mode, device):
    plain = _runs(lambda n: n, mode, device)
    tricky = _runs(TRICKY.__getitem__, mode, device)
    assert tricky == plain
    assert plain[-1]["peak_bytes"] > 0


@pytest.mark.parametrize("mode", ["reuse", "arena"])
def test_the_unplaced_value_is_served_at_top_level(mode):
    """``mid@1`` (NonZero's output, shape unknown before the first run) takes the top-level
    dynamic path on the first run, and the plan made from that run places it: it is not taken
    for a subgraph tensor (which a plan never places)."""
    sess = gpuinfer.InferenceSession(_model(TRICKY.__getitem__), device="cpu", memory_mode=mode)
    feeds = _feeds(TRICKY.__getitem__, 0)
    assert "mid@1" in sess.plan_for(feeds).dynamic
    sess.run(None, feeds)
    plan = sess.plan_for(feeds)
    assert plan.from_run and not plan.dynamic
    assert any(key.name == "mid@1" and not key.scope for key in plan.placements)
