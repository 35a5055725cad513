"""A Conv whose constant weights repeat filters computes each distinct filter once, then copies.

Conv(x, W, B) with output channels i and j holding the same filter (same weights, same bias)
becomes Conv(x, W_distinct, B_distinct) followed by a Gather along the channel axis.  Besides
the arithmetic and the smaller intermediate, it makes equal filters give *equal* outputs: a BLAS
GEMM rounds its output rows differently depending on where they fall in its register tiles
(OpenBLAS's Haswell kernel alternates every six rows), so equal filters otherwise differ by an
ulp or two, which a later Softmax over huge logits turns into a different answer.  Models built
with repeated filters (constant-initialised test networks, pruned or tied channels) are where
this shows.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from onnx import helper

from gpuinfer.graph.ir import Graph, Node
from gpuinfer.graph.passes.relink import fresh_name
from gpuinfer.graph.kernels import kernels


def share_duplicate_filters(graph: Graph) -> int:
    nodes: list[Node] = []
    changed = 0
    for node in graph.nodes:
        found = _distinct_filters(graph, node)
        if found is None:
            nodes.append(node)
            continue
        nodes.extend(_split(graph, node, *found))
        changed += 1
    graph.nodes = nodes
    return changed


def _distinct_filters(graph: Graph, node: Node) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(first channel of each distinct filter, channel -> distinct index) when filters repeat."""
    if node.op_type != "Conv" or node.domain or node.attrs.get("group", 1) != 1:
        return None
    w = graph.constants.get(node.inputs[1]) if len(node.inputs) > 1 else None
    bias_name = node.inputs[2] if len(node.inputs) > 2 else ""
    if w is None or w.ndim < 3 or (bias_name and bias_name not in graph.constants):
        return None
    rows = w.reshape(w.shape[0], -1)
    if bias_name:
        rows = np.concatenate([rows, graph.constants[bias_name].reshape(-1, 1).astype(rows.dtype)], axis=1)
    if np.unique(rows[:, 0]).size == rows.shape[0]:  # cheap proof that no two filters are equal
        return None
    _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    if first.size == rows.shape[0]:
        return None
    order = np.argsort(first)  # keep the distinct filters in their original order
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return first[order], rank[inverse.reshape(-1)].astype(np.int64)


def _split(graph: Graph, node: Node, keep: np.ndarray, channel_of: np.ndarray) -> list[Node]:
    w_name = fresh_name(graph, f"{node.name}/distinct_W")
    graph.constants[w_name] = graph.constants[node.inputs[1]][keep]
    inputs = [node.inputs[0], w_name, *node.inputs[2:]]
    if len(node.inputs) > 2 and node.inputs[2]:
        b_name = fresh_name(graph, f"{node.name}/distinct_B")
        graph.constants[b_name] = graph.constants[node.inputs[2]][keep]
        inputs[2] = b_name
    index_name = fresh_name(graph, f"{node.name}/channel_of")
    graph.constants[index_name] = channel_of
    small = fresh_name(graph, f"{node.outputs[0]}/distinct")
    out = node.outputs[0]

    conv_proto = type(node.proto)()
    conv_proto.CopyFrom(node.proto)
    del conv_proto.input[:]
    conv_proto.input.extend(inputs)
    del conv_proto.output[:]
    conv_proto.output.append(small)
    conv = Node(node.step, node.name, node.op_type, node.domain, node.opset, inputs, [small],
                node.attrs, node.spec, conv_proto)

    opset = graph.opsets.get("", node.opset)
    gather_proto = helper.make_node("Gather", [small, index_name], [out], name=f"{node.name}/copy_channels", axis=1)
    gather = Node(node.step, gather_proto.name, "Gather", "", opset, [small, index_name], [out], {"axis": 1},
                  kernels().lookup("Gather", opset), gather_proto)
    return [conv, gather]
