"""ONNX attributes as the Python values kernels read (str not bytes, numpy not TensorProto)."""
from __future__ import annotations

from typing import Any, Callable

import onnx
from onnx import helper, numpy_helper


def attribute_value(attr: onnx.AttributeProto, compile_graph: Callable[[onnx.GraphProto], Any]) -> Any:
    """One attribute's value; graph attributes are compiled by ``compile_graph``."""
    if attr.type == onnx.AttributeProto.GRAPH:
        return compile_graph(attr.g)
    if attr.type == onnx.AttributeProto.GRAPHS:
        return [compile_graph(g) for g in attr.graphs]
    value = helper.get_attribute_value(attr)
    return _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, onnx.SparseTensorProto):
        return numpy_helper.to_array(value.values), numpy_helper.to_array(value.indices), list(value.dims)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def subgraph_attributes(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """Every subgraph a node carries (If branches, Loop/Scan bodies)."""
    graphs = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            graphs.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            graphs.extend(attr.graphs)
    return graphs


def outer_scope_reads(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads that it does not define: values of its enclosing scopes."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    reads: set[str] = set()
    for node in graph.node:
        defined.update(o for o in node.output if o)
    for node in graph.node:
        reads.update(i for i in node.input if i)
        for sub in subgraph_attributes(node):
            reads |= outer_scope_reads(sub)
    reads.update(o.name for o in graph.output)
    return reads - defined
