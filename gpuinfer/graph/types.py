"""ONNX type and shape records turned into (shape tuple, numpy dtype) pairs."""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
from onnx import helper


def np_dtype(elem_type: int) -> Optional[np.dtype]:
    """The numpy dtype of an ONNX element type, or None where numpy has none (bfloat16, float8)."""
    if elem_type == onnx.TensorProto.UNDEFINED:
        return None
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        return None
    return dtype if dtype.kind in "biufcUSO" and dtype.names is None else None


def type_shape(type_proto: onnx.TypeProto) -> tuple[Optional[tuple], Optional[np.dtype]]:
    """(shape, dtype) of a tensor type; dims are ints, symbolic names (str) or None."""
    if not type_proto.HasField("tensor_type"):
        return None, None
    tensor = type_proto.tensor_type
    dtype = np_dtype(tensor.elem_type)
    if not tensor.HasField("shape"):
        return None, dtype
    dims = []
    for d in tensor.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tuple(dims), dtype


def is_static(shape: Optional[tuple]) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)


def collect_value_types(graph: onnx.GraphProto, into: Optional[dict] = None) -> dict:
    """name -> (shape, dtype) for every typed value in a graph and its subgraphs."""
    from gpuinfer.graph.attributes import subgraph_attributes

    into = {} if into is None else into
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        shape, dtype = type_shape(info.type)
        if shape is not None or dtype is not None:
            into[info.name] = (shape, dtype)
    for node in graph.node:
        for sub in subgraph_attributes(node):
            collect_value_types(sub, into)
    return into


def host_only_values(graph: onnx.GraphProto, into: Optional[set] = None) -> set:
    """Names of tensors (in ``graph`` and its subgraphs) whose element type numpy has no native
    dtype for (bfloat16, float8, 4- and 2-bit ints, float4), and strings: a GPU device has no
    arrays of these, so the ops that touch them run on the host (``runtime/host_steps.py``)."""
    from gpuinfer.graph.attributes import subgraph_attributes

    into = set() if into is None else into
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        if info.type.HasField("tensor_type"):
            elem = info.type.tensor_type.elem_type
            if elem != onnx.TensorProto.UNDEFINED and (np_dtype(elem) is None or elem == onnx.TensorProto.STRING):
                into.add(info.name)
    for node in graph.node:
        for sub in subgraph_attributes(node):
            host_only_values(sub, into)
    return into


def value_kind(type_proto: onnx.TypeProto) -> str:
    """"tensor", "sequence", "optional" or "other" (maps, sparse tensors, untyped)."""
    which = type_proto.WhichOneof("value")
    return {"tensor_type": "tensor", "sequence_type": "sequence", "optional_type": "optional"}.get(which, "other")
