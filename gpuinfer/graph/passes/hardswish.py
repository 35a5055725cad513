"""Hard-swish as exporters spell it, ``x * Clip(x + 3, 0, 6) / 6`` (Add, Clip, Mul, Div), runs as one step.

PaddlePaddle's and other exporters' MobileNetV3-style models carry dozens of these chains; each one
is four steps and four full passes over a feature map, with an intermediate buffer alive between
them.  The fused step does the same arithmetic in the same order, chunk by chunk in a small scratch
buffer that stays in cache, so its outputs are bitwise those of the four nodes, and it may write
over ``x`` when ``x`` dies there.  Run before ``fuse_activations``, which then puts the step into
the Conv before it (on CUDA: the Conv's epilogue, one launch).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from onnx import helper

from gpuinfer.graph.ir import Graph, Node
from gpuinfer.graph.kernels import kernels
from gpuinfer.graph.passes.chains import replace_chains

FUSED_TYPE = "Add+Clip+Mul+Div"


def fuse_hard_swish(graph: Graph) -> int:
    return replace_chains(graph, _hard_swish)


def _hard_swish(graph: Graph, add: Node, readers: dict) -> Optional[tuple[Node, list[Node]]]:
    found = _match(graph, add, readers)
    if found is None:
        return None
    x, chain = found
    return _fused_node(graph, x, chain), chain[1:]


def _match(graph: Graph, add: Node, readers: dict) -> Optional[tuple[str, list[Node]]]:
    """(x, [Add, Clip, Mul, Div]) when ``add`` starts a hard-swish chain of ``x`` whose middle values
    nobody else reads."""
    if add.op_type != "Add" or add.domain or len(add.inputs) != 2:
        return None
    x = _other_than_constant(graph, add, 3.0)
    if x is None:
        return None
    clip = _sole_reader(graph, add, readers, "Clip")
    if clip is None or clip.inputs[0] != add.outputs[0] or _clip_bounds(graph, clip) != (0.0, 6.0):
        return None
    mul = _sole_reader(graph, clip, readers, "Mul")
    if mul is None or sorted(mul.inputs) != sorted([x, clip.outputs[0]]):
        return None
    div = _sole_reader(graph, mul, readers, "Div")
    if div is None or div.inputs[0] != mul.outputs[0] or _constant_value(graph, div.inputs[1], x) != 6.0:
        return None
    return x, [add, clip, mul, div]


def _sole_reader(graph: Graph, node: Node, readers: dict, op_type: str) -> Optional[Node]:
    out = node.outputs[0]
    users = readers.get(out, [])
    if len(users) != 1 or out in graph.outputs or users[0].op_type != op_type or users[0].domain:
        return None
    return users[0]


def _constant_value(graph: Graph, name: str, x: str) -> Optional[float]:
    """The value of a one-element float constant that broadcasting against ``x`` cannot reshape."""
    c = graph.constants.get(name)
    if c is None or c.size != 1 or c.dtype not in (np.float32, np.float64):
        return None
    x_shape = graph.values[x].shape if x in graph.values else graph.constants[x].shape
    if c.ndim and (x_shape is None or len(x_shape) < c.ndim):
        return None
    return float(c.reshape(-1)[0])


def _other_than_constant(graph: Graph, add: Node, value: float) -> Optional[str]:
    a, b = add.inputs
    for x, c in ((a, b), (b, a)):
        if x and x not in graph.constants and _constant_value(graph, c, x) == value:
            return x
    return None


def _clip_bounds(graph: Graph, clip: Node):
    if clip.opset < 11:
        return clip.attrs.get("min"), clip.attrs.get("max")
    if len(clip.inputs) != 3:
        return None
    return tuple(_constant_value(graph, name, clip.inputs[0]) for name in clip.inputs[1:])


def _fused_node(graph: Graph, x: str, chain: list[Node]) -> Node:
    add, _, _, div = chain
    dtype = graph.constants[div.inputs[1]].dtype
    spec = kernels().fused_hard_swish(FUSED_TYPE, dtype)  # its kernel: gpuinfer/ops/fused.py
    # Shape inference of specialised graphs sees an Identity: same shape and type as x.
    proto = helper.make_node("Identity", [x], div.outputs[:1], name=f"{add.name}+hardswish")
    return Node(add.step, proto.name, FUSED_TYPE, "", add.opset, [x], div.outputs[:1], {}, spec, proto)
