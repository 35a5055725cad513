"""The plan is complete before the first run wherever shapes follow from the input signature.

Shape arithmetic (Shape -> Gather -> Div -> Concat feeding a Resize, ...) is folded per signature
at plan time, and ops' scratch that follows from their output shape (Resize) or from a fused
activation (Conv+PRelu) is predicted, so the first run of a static-shape model peaks where later
runs do.  Where sizes depend on data (NonZero), the report says the first run traced and gives
both figures.
"""
from __future__ import annotations

import numpy as np
import pytest

import gpuinfer
from gpuinfer.graph.specialize import specialize
from gpuinfer.plan import MODES
from gpuinfer.values import value_key
from tests.model_zoo import reference_outputs, shared_available, shared_feeds, shared_model_path
from tests.shape_chain_models import CHAINS, nonzero_feeds, nonzero_model, resize_chain, resize_chain_feeds

PLANNED_MODES = [m for m in MODES if m != "reduce"]


def _two_runs(model, feeds: dict, mode: str):
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode)
    plan = sess.plan_for(feeds)
    outs, reports = [], []
    for _ in range(2):
        outs.append(sess.run(None, feeds))
        reports.append(sess.memory_report())
    return sess, plan, outs, reports


def _assert_complete_plan(sess, plan, mode: str) -> None:
    """Every node output has a size in the plan; in the planned modes every non-output has a place."""
    assert plan.dynamic == [], f"{mode}: left to the first run: {plan.dynamic}"
    for node in sess.graph.nodes:
        for name in node.outputs:
            if name:
                assert value_key(name) in plan.lifetimes, f"{mode}: {name!r} ({node.op_type}) has no lifetime"
    if mode in PLANNED_MODES:
        unplaced = [k for k, life in plan.lifetimes.items()
                    if k not in plan.placements and (life.kind != "output" or mode == "arena")]
        assert not unplaced, f"{mode}: not placed before the first run: {unplaced}"


@pytest.mark.parametrize("dynamic", [False, True], ids=["static_dims", "symbolic_dims"])
@pytest.mark.parametrize("chain", CHAINS)
@pytest.mark.parametrize("mode", MODES)
def test_shape_chain_resize_first_run_peaks_as_later_runs(mode, chain, dynamic):
    model, feeds = resize_chain(chain, dynamic), resize_chain_feeds()
    sess, plan, outs, reports = _two_runs(model, feeds, mode)
    _assert_complete_plan(sess, plan, mode)
    first, second = reports[0].peak_bytes, reports[1].peak_bytes
    assert abs(first - second) <= 0.05 * second, f"{mode}: first run {first} B, second {second} B"
    assert not reports[0].first_run_traced and reports[0].first_run_peak_bytes is None
    assert reports[0].dynamic_bytes <= reports[1].dynamic_bytes  # nothing extra served on the first run
    expected = reference_outputs(model.SerializeToString(), feeds)
    for got in outs:
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chain", ["div", "float"])
def test_signature_folding_finds_what_shape_inference_leaves(chain):
    """ONNX shape inference alone leaves the Resize output unknown for these chains; the per-signature
    host folding computes the sizes (checked against the run) and with them every shape."""
    sess = gpuinfer.InferenceSession(resize_chain(chain, dynamic=True), device="cpu")
    for h, w in [(16, 16), (12, 20)]:
        feeds = resize_chain_feeds(h, w)
        types, folded = specialize(sess.graph, {"x": feeds["x"].shape}, {"x": feeds["x"].dtype})
        out = sess.run(None, feeds)[0]
        assert types["up"][0][2:] == out.shape[2:] and types["y"][0] == out.shape
        assert tuple(folded["sizes"]) == (1, 8) + out.shape[2:]


def test_data_dependent_shapes_say_the_first_run_traced():
    model, feeds = nonzero_model(), nonzero_feeds()
    for mode in PLANNED_MODES:
        sess, plan, outs, reports = _two_runs(model, feeds, mode)
        assert plan.dynamic, "NonZero's output cannot be known ahead"
        first, second = reports
        assert first.first_run_traced and second.first_run_traced, mode
        assert first.first_run_peak_bytes == first.peak_bytes == second.first_run_peak_bytes
        assert second.dynamic_bytes < first.dynamic_bytes  # the traced sizes are planned from run 2
        np.testing.assert_array_equal(outs[0][0], outs[1][0])
        expected = reference_outputs(model.SerializeToString(), feeds)[0]
        np.testing.assert_allclose(outs[1][0], expected, rtol=1e-6)


@pytest.mark.skipif(not shared_available() or not shared_model_path("u2netp.onnx").exists(),
                    reason="u2netp.onnx is not in ../shared/models on this machine")
@pytest.mark.parametrize("mode", MODES)
def test_u2netp_first_run_peaks_as_later_runs(mode):
    feeds = shared_feeds("u2netp.onnx")
    sess, plan, _, reports = _two_runs(shared_model_path("u2netp.onnx"), feeds, mode)
    _assert_complete_plan(sess, plan, mode)
    first, second = reports[0].peak_bytes, reports[1].peak_bytes
    assert abs(first - second) <= 0.05 * second, f"{mode}: first run {first} B, second {second} B"
    assert not reports[1].first_run_traced


def _conv_prelu():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
             numpy_helper.from_array(rng.uniform(0.1, 0.5, (6, 1, 1)).astype(np.float32), "slope")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("PRelu", ["c", "slope"], ["p"], name="prelu"),
             helper.make_node("MaxPool", ["p"], ["y"], kernel_shape=[2, 2], strides=[2, 2], name="pool")]
    graph = helper.make_graph(nodes, "conv_prelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 18, 18])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6, 8, 8])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("mode", PLANNED_MODES)
def test_fused_conv_prelu_scratch_is_planned(mode):
    """Conv+PRelu (fused at load, as in the MTCNN models) asks for PRelu's scratch too: planned ahead."""
    model = _conv_prelu()
    feeds = {"x": np.random.default_rng(2).standard_normal((2, 3, 18, 18)).astype(np.float32)}
    sess, plan, outs, reports = _two_runs(model, feeds, mode)
    assert [n.op_type for n in sess.graph.nodes][0] == "Conv+PRelu"
    assert reports[0].peak_bytes == reports[1].peak_bytes == plan.need_bytes
    assert reports[0].dynamic_bytes == reports[1].dynamic_bytes  # outputs only, on both runs
    np.testing.assert_allclose(outs[0][0], reference_outputs(model.SerializeToString(), feeds)[0], rtol=1e-4, atol=1e-5)
