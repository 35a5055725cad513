"""A copy of a model without its weights' data, for ONNX's checker and shape inference.

Both serialise the whole model to hand it to C++: for light_vgg19 (548 MB of weights) that was
8.7 s of shape inference and 2.8 s of checking, 12.3 s of its 12.3 s session creation.  Neither
needs the weights' values: shape inference reads a constant's values only where they steer a
shape (Reshape's shape, Slice's starts: a few integers), and the builder reads every tensor itself
and refuses an unreadable one (``graph/build.py``).  So the copy keeps small initializers as they
are and turns each large one into a graph input of its type and shape, as onnx itself allows from
IR version 4.  (An IR-3 model's initializer that is not a graph input stays, data and all, so the
checker still says what it says of such a model.)
"""
from __future__ import annotations

import math

import onnx

# initializers with at most this many elements keep their data: shape arithmetic may read them
KEPT_ELEMENTS = 1024


def weightless_copy(model: onnx.ModelProto) -> tuple[onnx.ModelProto, set[str]]:
    """(the copy, the names it lists as graph inputs that the model does not: initializers)."""
    light = onnx.ModelProto()
    _copy_fields(model, light, skip="graph")
    graph = model.graph
    _copy_fields(graph, light.graph, skip="initializer")
    inputs = {i.name for i in graph.input}
    added: set[str] = set()
    for tensor in graph.initializer:
        listed = tensor.name in inputs
        if _is_small(tensor) or (model.ir_version < 4 and not listed):
            light.graph.initializer.add().CopyFrom(tensor)
        elif not listed:
            added.add(tensor.name)
            light.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    return light, added


def _is_small(tensor: onnx.TensorProto) -> bool:
    return tensor.data_type == onnx.TensorProto.STRING or math.prod(tensor.dims) <= KEPT_ELEMENTS


def _copy_fields(source, target, skip: str) -> None:
    """Every set field of ``source`` into ``target`` but ``skip`` (sub-messages copied, not shared)."""
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        repeated = getattr(field, "is_repeated", None)
        if repeated is None:
            repeated = field.label == field.LABEL_REPEATED
        if repeated:
            getattr(target, field.name).extend(value)
        elif field.type == field.TYPE_MESSAGE:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)
