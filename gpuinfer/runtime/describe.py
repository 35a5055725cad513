"""onnxruntime-shaped descriptions of a graph's inputs and outputs (``get_inputs``/``get_outputs``)."""
from __future__ import annotations

from typing import Optional

from gpuinfer.graph.ir import Graph
from gpuinfer.runtime.feeds import NodeArg, type_string


def input_args(graph: Graph) -> list[NodeArg]:
    return [NodeArg(n, _shape_list(graph.input_dims.get(n)), type_string(graph.input_dtypes.get(n)))
            for n in graph.inputs]


def output_args(graph: Graph) -> list[NodeArg]:
    args = []
    for name in graph.outputs:
        value = graph.values.get(name)
        dtype = value.dtype if value else graph.constants[name].dtype
        args.append(NodeArg(name, _shape_list(value.shape if value else None), type_string(dtype)))
    return args


def _shape_list(shape: Optional[tuple]) -> list:
    return [] if shape is None else list(shape)
