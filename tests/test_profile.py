"""profile=True: calls and seconds per op type, control flow charged for its own work only."""
from __future__ import annotations

import time

import numpy as np
import pytest
from onnx import TensorProto, helper

import gpuinfer
from gpuinfer.errors import GpuinferError

F = TensorProto.FLOAT


def _if_model():
    """y = If(c, then: Sigmoid(Relu(x)) x 3 chained, else: Neg(x)), then Tanh."""
    then_nodes, prev = [], "x"
    for i in range(3):
        then_nodes += [helper.make_node("Relu", [prev], [f"r{i}"]), helper.make_node("Sigmoid", [f"r{i}"], [f"s{i}"])]
        prev = f"s{i}"
    then_nodes.append(helper.make_node("Identity", [prev], ["t_out"]))
    then_g = helper.make_graph(then_nodes, "then", [], [helper.make_tensor_value_info("t_out", F, [256, 256])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e_out"])], "else", [],
                               [helper.make_tensor_value_info("e_out", F, [256, 256])])
    nodes = [helper.make_node("If", ["c"], ["b"], then_branch=then_g, else_branch=else_g),
             helper.make_node("Tanh", ["b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                           helper.make_tensor_value_info("x", F, [256, 256])],
                              [helper.make_tensor_value_info("y", F, [256, 256])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("mode", ["per_tensor", "arena"])
def test_profile_counts_calls_and_charges_control_flow_exclusively(mode):
    sess = gpuinfer.InferenceSession(_if_model(), device="cpu", memory_mode=mode, profile=True)
    feeds = {"c": np.array(True), "x": np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)}
    runs = 5
    started = time.perf_counter()
    for _ in range(runs):
        sess.run(None, feeds)
    wall = time.perf_counter() - started
    table = sess.profile()
    assert table["If"][0] == runs and table["Tanh"][0] == runs
    assert table["Relu"][0] == 3 * runs and table["Sigmoid"][0] == 3 * runs
    assert "Neg" not in table  # the branch not taken never ran
    total = sum(seconds for _, seconds in table.values())
    assert 0 < total <= wall  # exclusive times: nested nodes are not counted twice
    assert all(seconds >= 0 for _, seconds in table.values())
    # the If's own work (pick a branch, copy its result out) is less than its body's six ops
    assert table["If"][1] < table["Relu"][1] + table["Sigmoid"][1]


def test_profile_off_is_a_clear_error():
    sess = gpuinfer.InferenceSession(_if_model(), device="cpu")
    with pytest.raises(GpuinferError, match="profile=True"):
        sess.profile()
