"""ONNX's checker and shape inference see the model without its weights' data (graph/weightless.py).

Handing them the whole model made light_vgg19's session take 12.3 s to create (0.74 s now;
onnxruntime: 8.3 s): both serialise what they are given.  What the weights' values decide is
still decided: shapes steered by small constants, an unreadable large tensor.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import gpuinfer
from gpuinfer.errors import InvalidModelError
from gpuinfer.graph.weightless import KEPT_ELEMENTS, weightless_copy

BIG = 64 * 1024  # elements: 256 KiB of float32


def _model(weight: onnx.TensorProto, ir_version: int = 8) -> onnx.ModelProto:
    """y = Reshape(x + w, shape): a big weight beside a small shape constant that steers a shape."""
    shape = numpy_helper.from_array(np.array([256, -1], np.int64), "shape")
    nodes = [helper.make_node("Add", ["x", "w"], ["s"]), helper.make_node("Reshape", ["s", "shape"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [BIG])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])],
                              initializer=[weight, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = ir_version
    return model


def _weight() -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(0).standard_normal(BIG).astype(np.float32), "w")


def test_checker_and_shape_inference_are_not_handed_the_weights(monkeypatch):
    model = _model(_weight())
    seen = []
    for module, name in [(onnx.checker, "check_model"), (onnx.shape_inference, "infer_shapes")]:
        original = getattr(module, name)

        def spy(m, *args, _original=original, _name=name, **kwargs):
            seen.append((_name, m.ByteSize()))
            return _original(m, *args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    sess = gpuinfer.InferenceSession(model.SerializeToString(), device="cpu")
    assert {name for name, _ in seen} == {"check_model", "infer_shapes"}, seen
    assert all(size < 4096 for _, size in seen), (seen, model.ByteSize())
    # the small constant kept its data: the Reshape's output shape was inferred, not left unknown
    assert sess.graph.values["y"].shape == (256, BIG // 256)


def test_the_copy_keeps_small_constants_and_lists_large_ones_as_inputs():
    model = _model(_weight())
    light, added = weightless_copy(model)
    assert added == {"w"}
    assert [t.name for t in light.graph.initializer] == ["shape"]
    assert [i.name for i in light.graph.input] == ["x", "w"]
    assert len(model.graph.initializer) == 2  # the model itself is untouched
    assert KEPT_ELEMENTS < BIG


def test_an_unreadable_large_weight_is_still_refused_by_name():
    weight = _weight()
    weight.raw_data = weight.raw_data[:100]
    with pytest.raises(InvalidModelError, match="'w'"):
        gpuinfer.InferenceSession(_model(weight).SerializeToString(), device="cpu")


def test_an_ir3_initializer_outside_the_inputs_keeps_its_data_for_the_checker():
    light, added = weightless_copy(_model(_weight(), ir_version=3))
    assert added == set()
    assert [t.name for t in light.graph.initializer] == ["w", "shape"]
