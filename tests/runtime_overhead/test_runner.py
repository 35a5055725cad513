"""The straight-line runner (runtime/runner.py) against the general loop it replaces.

A profiled session runs the general loop (``Executor._run``'s own loop); an unprofiled one runs the
written-out runner.  Both must give the same bytes out and the same accounting: peak, timeline,
allocations, dynamic bytes, in every memory mode, on models with control flow and on the shared
models whose runs are mostly loop (silero-vad's If body, the PP-OCR classifier, mtcnn).
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import gpuinfer
from gpuinfer.errors import NodeExecutionError
from tests import model_zoo
from tests.runtime_overhead.test_run_loop import _if_model
from tests.test_control_flow_memory import _loop_model, _scan_model, _x

MODES = ["per_tensor", "reduce", "reuse", "arena"]


def _odd_names_chain():
    """A chain whose value names are hard to write as source: quotes, backslashes, newlines."""
    names = ["x", "a'b", 'c"d', "e\\nf", "g\nh", "#scratch0", "@1/v", "y"]
    nodes = [helper.make_node(op, [names[i]] * (2 if op == "Add" else 1), [names[i + 1]], name=f"n'{i}")
             for i, op in enumerate(["Relu", "Neg", "Add", "Abs", "Sigmoid", "Add", "Tanh"])]
    graph = helper.make_graph(nodes, "odd", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _cases():
    rng = np.random.default_rng(0)
    yield "odd_names", _odd_names_chain(), {"x": rng.standard_normal((3, 5)).astype(np.float32)}
    yield "if", _if_model(), {"x": rng.standard_normal((2, 3)).astype(np.float32)}
    yield "loop", _loop_model(with_scan_output=True), {"x": _x(), "n": np.array(5, np.int64)}
    yield "scan", _scan_model(), {"init": np.zeros(_x().shape[1:], np.float32), "xs": _x()}


CASES = {name: (model, feeds) for name, model, feeds in _cases()}
SHARED = ["silero_vad.onnx", "ch_ppocr_mobile_v2.0_cls_infer.onnx", "mtcnn_rnet.onnx"]


def _runs(source, feeds, mode, general: bool):
    """Three runs' outputs and the last run's accounting, through the general loop or the runner."""
    sess = gpuinfer.InferenceSession(source, device="cpu", memory_mode=mode, profile=general)
    outs = [sess.run(None, feeds) for _ in range(3)]
    report = sess.memory_report()
    assert bool(sess._executor._runners) != general  # the path under test is the one that ran
    accounting = (report.peak_bytes, report.allocations, report.dynamic_bytes, report.lower_bound_bytes,
                  [(s.step, s.op, s.live_bytes) for s in report.timeline], sess.held_bytes)
    return outs, accounting


def _same(source, feeds, mode):
    want, want_accounting = _runs(source, feeds, mode, general=True)
    got, accounting = _runs(source, feeds, mode, general=False)
    for run_got, run_want in zip(got, want):
        for a, b in zip(run_got, run_want):
            np.testing.assert_array_equal(a, b)  # bit for bit: the very same kernels, in the same order
    assert accounting == want_accounting


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_runner_matches_the_general_loop(case, mode):
    model, feeds = CASES[case]
    _same(model, feeds, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", SHARED)
def test_runner_matches_the_general_loop_on_shared_models(name, mode):
    source, feeds = model_zoo.model_case(f"shared/{name}")
    _same(source, feeds, mode)


def test_held_intermediates_get_a_runner_of_their_own():
    """Values read past their last use (output_names in per_tensor) are not freed by that runner."""
    model, feeds = CASES["odd_names"]
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode="per_tensor")
    y, mid = sess.run(["y", "e\\nf"], feeds)
    x = feeds["x"]
    a = np.maximum(x, 0)
    want_mid = -a + -a
    np.testing.assert_array_equal(mid, want_mid)
    np.testing.assert_array_equal(sess.run(None, feeds)[0], y)
    assert len(sess._executor._runners) == 2


def _failing_model(in_body: bool):
    """Reshape to a shape read from the feed: 7 elements cannot become 2x4, at run time only."""
    shape_in = helper.make_tensor_value_info("shape", TensorProto.INT64, [2])
    reshape = helper.make_node("Reshape", ["t", "shape"], ["r"], name="bad reshape")
    first = helper.make_node("Relu", ["x"], ["t"], name="relu")
    if in_body:
        body = helper.make_graph([first, reshape], "then", [],
                                 [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)])
        other = helper.make_graph([helper.make_node("Identity", ["x"], ["o"])], "else", [],
                                  [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)])
        nodes = [helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=other, name="branch")]
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [7]), shape_in,
                  helper.make_tensor_value_info("c", TensorProto.BOOL, [])]
    else:
        nodes = [first, reshape, helper.make_node("Neg", ["r"], ["y"], name="neg")]
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [7]), shape_in]
    graph = helper.make_graph(nodes, "fails", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("in_body", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_a_failing_node_is_named_through_the_runner(mode, in_body):
    sess = gpuinfer.InferenceSession(_failing_model(in_body), device="cpu", memory_mode=mode)
    feeds = {"x": np.arange(7, dtype=np.float32), "shape": np.array([7, 1], np.int64)}
    if in_body:
        feeds["c"] = np.array(True)
    sess.run(None, feeds)  # a shape that fits: runs, and writes the runner
    feeds["shape"] = np.array([2, 4], np.int64)
    with pytest.raises(NodeExecutionError, match="bad reshape") as err:
        sess.run(None, feeds)
    assert "Reshape" in str(err.value)
    assert sess._executor._runners
    held = sess.held_bytes
    feeds["shape"] = np.array([1, 7], np.int64)  # the session is still good after the failure
    sign = 1 if in_body else -1  # the body ends at Reshape; the top level negates after it
    np.testing.assert_array_equal(sess.run(None, feeds)[0].reshape(-1), np.arange(7, dtype=np.float32) * sign)
    assert sess.held_bytes >= held


def test_a_kernel_exception_names_the_node_and_its_inputs():
    """Any exception out of a kernel becomes NodeExecutionError naming the node, its op and the
    shapes and dtypes it was given (the input omitted shows as such), with the cause chained."""
    model = _failing_model(in_body=False)
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode="arena")
    step = next(s for s in sess._executor.steps_of(sess.graph, ()) if s.node.name == "neg")

    def broken(ctx, x):
        raise ZeroDivisionError("broken on purpose")

    step.kernel = broken  # before the first run: the runner is written with this kernel
    feeds = {"x": np.arange(7, dtype=np.float32), "shape": np.array([7, 1], np.int64)}
    with pytest.raises(NodeExecutionError, match="broken on purpose") as err:
        sess.run(None, feeds)
    message = str(err.value)
    assert "'neg'" in message and "Neg" in message and "(7, 1) float32" in message
    assert isinstance(err.value.__cause__, ZeroDivisionError)
    assert sess._executor._runners
