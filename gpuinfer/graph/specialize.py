"""Shapes of every value for one input-shape signature, before anything runs.

The folded graph is written back out as a small ONNX graph with the inputs fixed to the
signature's shapes (large constants become typed inputs so no weight bytes are copied) and
ONNX shape inference, with shape-data propagation, fills in the rest.  Values it cannot pin
down are left out: the pools serve them on the dynamic (reduce) path at run time.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from gpuinfer.graph.ir import Graph
from gpuinfer.graph.types import collect_value_types, is_static
from gpuinfer.ops.context import OptionalValue, TensorSequence

SMALL_CONSTANT_BYTES = 4096  # constants this small stay as data so shape arithmetic can use them


def static_value_types(graph: Graph, input_shapes: dict[str, tuple],
                       input_dtypes: dict[str, np.dtype]) -> dict[str, tuple[tuple, np.dtype]]:
    """name -> (static shape, dtype) for the inputs and every node output shape inference can fix.

    Graphs fed sequences or optionals are not inferred ahead: their tensors take the dynamic path
    on the first run and are planned from what it saw.
    """
    if any(n not in input_shapes for n in graph.inputs):
        return {}
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(input_dtypes[name])),
                                            list(input_shapes[name]))
              for name in graph.inputs]
    initializers = []
    for name, value in graph.constants.items():
        if value.dtype.kind in "OUS":
            continue
        if value.nbytes <= SMALL_CONSTANT_BYTES:
            initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        else:
            inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype),
                                                        list(value.shape)))
    outputs = [onnx.ValueInfoProto(name=name) for name in graph.outputs]
    proto = helper.make_graph([n.proto for n in graph.nodes], graph.name or "g", inputs, outputs,
                              initializer=initializers)
    opsets = [helper.make_opsetid(d, v) for d, v in graph.opsets.items()]
    model = helper.make_model(proto, opset_imports=opsets)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        return {}
    types = collect_value_types(inferred.graph)
    known = {name: (tuple(input_shapes[name]), np.dtype(input_dtypes[name])) for name in graph.inputs}
    for node in graph.nodes:
        for name in node.outputs:
            shape, dtype = types.get(name, (None, None))
            if name and is_static(shape) and dtype is not None:
                known[name] = (tuple(shape), dtype)
    return known


def signature_of(feeds: dict, graph: Graph) -> tuple:
    """The hashable input-shape signature plans are cached under (sequences by their elements' shapes)."""
    return tuple((name, _feed_signature(feeds[name])) for name in graph.inputs)


def _feed_signature(value) -> tuple:
    if isinstance(value, OptionalValue):
        return ("optional", _feed_signature(value.value) if value.value is not None else None)
    if isinstance(value, TensorSequence):
        return ("sequence",) + tuple(_feed_signature(v) for v in value)
    return (tuple(value.shape), str(value.dtype))
