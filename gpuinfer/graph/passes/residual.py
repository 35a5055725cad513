"""A residual Add (or two-input Sum) right after a Conv/ConvTranspose/Gemm/MatMul runs inside the producer's step.

``y = Add(conv(x), r)`` with ``r`` the same shape as the producer's output becomes one step that
writes conv(x) into y's buffer and adds ``r`` there: one step and one buffer fewer between them,
and an activation after the Add can then fuse onto the same step (``fuse_activations``).
Only fused when both shapes are known and equal (the Add must not broadcast the producer's
output) and ``r`` exists by the producer's step.
"""
from __future__ import annotations

from typing import Optional

from gpuinfer.graph.ir import Graph, Node
from gpuinfer.graph.kernels import kernels
from gpuinfer.graph.passes.fusion import PRODUCERS, fused_proto
from gpuinfer.graph.passes.relink import consumers_of, producers_of


def fuse_residual_adds(graph: Graph) -> int:
    readers = consumers_of(graph)
    producer = producers_of(graph)
    replaced: dict[int, Node] = {}
    drop: set[int] = set()
    for add in graph.nodes:
        if add.op_type not in ("Add", "Sum") or add.domain or len(add.inputs) != 2:
            continue
        for pos in (0, 1):
            first, residual = producer.get(add.inputs[pos]), add.inputs[1 - pos]
            if _fusable(graph, first, residual, readers, producer, replaced):
                replaced[id(first)] = _fused(first, add, residual)
                drop.add(id(add))
                break
    graph.nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in drop]
    return len(drop)


def _fusable(graph: Graph, first: Optional[Node], residual: str, readers: dict, producer: dict,
             replaced: dict) -> bool:
    if first is None or first.op_type not in PRODUCERS or first.domain or id(first) in replaced:
        return False
    out = first.outputs[0]
    if len(readers.get(out, [])) != 1 or out in graph.outputs or residual == out:
        return False
    made_by = producer.get(residual)
    if made_by is not None and made_by.step > first.step:
        return False  # r is not there yet when the producer runs
    shape = _static_shape(graph, out)
    return shape is not None and shape == _static_shape(graph, residual)


def _static_shape(graph: Graph, name: str) -> Optional[tuple]:
    if name in graph.constants:
        return tuple(graph.constants[name].shape)
    value = graph.values.get(name)
    if value is None or value.shape is None or not all(isinstance(d, int) for d in value.shape):
        return None
    return tuple(value.shape)


def _fused(first: Node, add: Node, residual: str) -> Node:
    spec = kernels().fused_residual(first, add)  # its kernel: gpuinfer/ops/fused.py
    return Node(first.step, f"{first.name}+{add.name}", spec.op_type, "", first.opset, first.inputs + [residual],
                add.outputs[:1], first.attrs, spec, fused_proto(first, add.outputs[0]))
