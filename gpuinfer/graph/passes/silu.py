"""SiLU as exporters spell it, ``x * Sigmoid(x)`` (Sigmoid, Mul), runs as one step.

YOLO-style detectors (nudenet's 57 of them) and EfficientNets carry one after most convolutions.
As two nodes it is five passes over the feature map and a second tensor (the sigmoid) alive
beside ``x`` until the Mul; as one step it goes chunk by chunk through a small scratch buffer that
stays in cache, with the two nodes' arithmetic in their order (outputs bitwise theirs), and may
write over ``x`` when ``x`` dies there.  Run after it, ``fuse_activations`` puts the step into
the Conv before it, where the Conv's output then takes the SiLU in place (one CUDA epilogue).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from onnx import helper

from gpuinfer.graph.ir import Graph, Node
from gpuinfer.graph.kernels import kernels
from gpuinfer.graph.passes.chains import replace_chains

FUSED_TYPE = "Sigmoid+Mul"
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # half floats' Sigmoid rounds between the nodes


def fuse_silu(graph: Graph) -> int:
    return replace_chains(graph, _silu)


def _silu(graph: Graph, sigmoid: Node, readers: dict) -> Optional[tuple[Node, list[Node]]]:
    mul = _match(graph, sigmoid, readers)
    return None if mul is None else (_fused_node(sigmoid, mul), [mul])


def _match(graph: Graph, sigmoid: Node, readers: dict) -> Optional[Node]:
    """The Mul reading ``x`` and ``Sigmoid(x)`` when ``sigmoid`` starts a SiLU of a float32/64
    ``x`` whose sigmoid nobody else reads; else None."""
    if sigmoid.op_type != "Sigmoid" or sigmoid.domain or len(sigmoid.inputs) != 1:
        return None
    x, s = sigmoid.inputs[0], sigmoid.outputs[0]
    value = graph.values.get(x)
    if not x or value is None or value.dtype is None or np.dtype(value.dtype) not in DTYPES:
        return None
    users = readers.get(s, [])
    if len(users) != 1 or s in graph.outputs:
        return None
    mul = users[0]
    if mul.op_type != "Mul" or mul.domain or sorted(mul.inputs) != sorted([x, s]):
        return None
    return mul


def _fused_node(sigmoid: Node, mul: Node) -> Node:
    spec = kernels().fused_silu(FUSED_TYPE)  # its kernel: gpuinfer/ops/fused.py
    # Shape inference of specialised graphs sees an Identity: same shape and type as x.
    proto = helper.make_node("Identity", sigmoid.inputs[:1], mul.outputs[:1], name=f"{sigmoid.name}+silu")
    return Node(sigmoid.step, proto.name, FUSED_TYPE, "", sigmoid.opset, sigmoid.inputs[:1], mul.outputs[:1], {},
                spec, proto)
