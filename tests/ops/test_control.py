"""Scan at opset 8 (batch axis first, optional sequence_lens, per-input directions) against onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import gpuinfer
from tests.node_helpers import run_onnxruntime

F = TensorProto.FLOAT


def _scan8_model(with_lens: bool):
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "a"], ["s_out"]), helper.make_node("Mul", ["s_out", "b"], ["y"])],
        "body",
        [helper.make_tensor_value_info(n, F, [2]) for n in ("s_in", "a", "b")],
        [helper.make_tensor_value_info(n, F, [2]) for n in ("s_out", "y")])
    node = helper.make_node("Scan", ["lens" if with_lens else "", "init", "A", "B"], ["final", "ys"],
                            num_scan_inputs=2, directions=[0, 1], body=body)
    inputs = [helper.make_tensor_value_info("init", F, [3, 2]), helper.make_tensor_value_info("A", F, [3, 4, 2]),
              helper.make_tensor_value_info("B", F, [3, 4, 2])]
    if with_lens:
        inputs.insert(0, helper.make_tensor_value_info("lens", TensorProto.INT64, [3]))
    outputs = [helper.make_tensor_value_info("final", F, [3, 2]), helper.make_tensor_value_info("ys", F, [3, 4, 2])]
    model = helper.make_model(helper.make_graph([node], "scan8", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 8)])
    model.ir_version = 8
    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal(shape).astype(np.float32)
             for name, shape in (("init", (3, 2)), ("A", (3, 4, 2)), ("B", (3, 4, 2)))}
    if with_lens:
        feeds["lens"] = np.array([4, 1, 2], np.int64)  # batch rows stop after 4, 1 and 2 steps
    return model, feeds


@pytest.mark.parametrize("with_lens", [True, False])
@pytest.mark.parametrize("mode", ["per_tensor", "arena"])
def test_scan8_matches_onnxruntime(with_lens, mode):
    model, feeds = _scan8_model(with_lens)
    want = run_onnxruntime(model, feeds)
    got = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode).run(None, feeds)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
