"""A per-channel Mul or Add of constants after a Conv is folded into that Conv's weights and bias.

Exporters write a BatchNormalization's scale and shift as separate nodes (Inception-v2's
``Conv -> BatchNormalization -> Mul -> Add -> Relu``); each is a full pass over the conv's output,
and they keep the Relu from running in place on it.  With ``a`` and ``c`` constant over all but the
channel axis:

    conv(x, W) + b) * a  =  conv(x, W * a) + b * a        (Mul)
    conv(x, W) + b) + c  =  conv(x, W) + (b + c)          (Add)
    conv(x, W) + b) - c  =  conv(x, W) + (b - c)          (Sub, the Conv first)

Only vectors of one value per channel fold, as a BatchNormalization's do; a scalar does not: the
reparameterisable blocks of PP-OCRv4 rec (MobileOne: each branch's conv scaled by a scalar, the
branches summed) planned 10% over their lower bound with theirs folded, 2.12 -> 2.33 MB.

The arithmetic is done in float64 and cast back, as ``fold_batchnorm`` does, so results move by
float rounding only.  Runs after ``fold_batchnorm``, so a Conv that has just taken a
BatchNormalization takes the Mul and Add after it too.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from gpuinfer.graph.ir import Graph, Node
from gpuinfer.graph.passes.batchnorm import plain_inference, replace_conv_parameters, rewire
from gpuinfer.graph.passes.relink import consumers_of, fresh_name, producers_of


def fold_channel_affine(graph: Graph) -> int:
    folded = 0
    readers = consumers_of(graph)
    producer = producers_of(graph)
    drop: set[int] = set()
    for node in graph.nodes:
        if node.op_type not in ("Mul", "Add", "Sub") or node.domain or len(node.inputs) != 2:
            continue
        for side in ((0, 1) if node.op_type != "Sub" else (0,)):
            conv = producer.get(node.inputs[side])
            const = node.inputs[1 - side]
            if const not in graph.constants:
                continue
            if conv is not None and conv.op_type == "BatchNormalization":
                per_channel = _batchnorm_channels(graph, conv, graph.constants[const], readers)
                if per_channel is None:
                    continue
                _fold_into_batchnorm(graph, conv, node, per_channel)
            else:
                if not _foldable(graph, conv, readers):
                    continue
                per_channel = _per_channel(graph.constants[const], graph.constants[conv.inputs[1]])
                if per_channel is None:
                    continue
                _fold(graph, conv, node, per_channel)
            drop.add(id(node))
            producer[node.outputs[0]] = conv  # readers of that value are already in ``readers``
            folded += 1
            break
    graph.nodes = [n for n in graph.nodes if id(n) not in drop]
    return folded


def _foldable(graph: Graph, conv: Optional[Node], readers: dict) -> bool:
    """A plain Conv with constant weights (and bias) whose output only this node reads."""
    return (conv is not None and conv.op_type == "Conv" and not conv.domain
            and len(readers.get(conv.outputs[0], [])) == 1 and conv.outputs[0] not in graph.outputs
            and conv.inputs[1] in graph.constants and graph.constants[conv.inputs[1]].dtype.kind == "f"
            and (len(conv.inputs) < 3 or not conv.inputs[2] or conv.inputs[2] in graph.constants))


def _per_channel(value: np.ndarray, w: np.ndarray) -> Optional[np.ndarray]:
    """``value`` as one float64 number per output channel of a conv with weights ``w``, or None
    where it varies along another axis, would broadcast the output to another shape, or is not a
    float of the weights' type."""
    m, rank = w.shape[0], w.ndim  # the conv's output is (N, M, *spatial): as many axes as W
    if value.dtype != w.dtype or value.ndim > rank:
        return None
    shape = (1,) * (rank - value.ndim) + tuple(value.shape)
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] != m or m == 1:
        return None
    return value.reshape(-1).astype(np.float64)


def _fold(graph: Graph, conv: Node, node: Node, a: np.ndarray) -> None:
    w = graph.constants[conv.inputs[1]]
    b = graph.constants[conv.inputs[2]].astype(np.float64) if len(conv.inputs) > 2 and conv.inputs[2] \
        else np.zeros(w.shape[0])
    new_w = w
    if node.op_type == "Mul":
        new_w = (w.astype(np.float64) * a.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
        b = b * a
    else:
        b = b + a if node.op_type == "Add" else b - a
    replace_conv_parameters(graph, conv, new_w, b.astype(w.dtype), node.outputs[0], "affine_folded")


def _batchnorm_channels(graph: Graph, bn: Node, value: np.ndarray, readers: dict) -> Optional[np.ndarray]:
    """``value`` as one float64 number per channel of an inference BatchNormalization with
    constant parameters whose output only this node reads, or None (see ``_per_channel``; the
    rank is the BatchNormalization's input's, so it must be known)."""
    x = graph.values.get(bn.inputs[0])
    if (bn.domain or not plain_inference(bn, graph) or len(readers.get(bn.outputs[0], [])) != 1
            or bn.outputs[0] in graph.outputs or x is None or x.shape is None or len(x.shape) < 2):
        return None
    scale = graph.constants[bn.inputs[1]]
    if scale.dtype.kind != "f" or scale.ndim != 1:
        return None
    return _per_channel(value, np.empty((scale.shape[0],) + (1,) * (len(x.shape) - 1), scale.dtype))


def _fold_into_batchnorm(graph: Graph, bn: Node, node: Node, a: np.ndarray) -> None:
    """A per-channel Mul, Add or Sub after a BatchNormalization taken into its scale and shift
    (DenseNet-121's pre-activation ``BatchNormalization -> Mul -> Add -> Relu``, Caffe's Scale):
    ``(x * s + t) * a = x * (s * a) + t * a``, and ``+ c`` adds to the shift."""
    scale = graph.constants[bn.inputs[1]]
    s, t = scale.astype(np.float64), graph.constants[bn.inputs[2]].astype(np.float64)
    if node.op_type == "Mul":
        s, t = s * a, t * a
    else:
        t = t + a if node.op_type == "Add" else t - a
    names = []
    for tag, value in (("scale", s), ("shift", t)):
        name = fresh_name(graph, f"{bn.name}/affine_folded_{tag}")
        graph.constants[name] = value.astype(scale.dtype)
        names.append(name)
    rewire(graph, bn, [bn.inputs[0], *names, *bn.inputs[3:]], node.outputs[0], bn.inputs[1:3])
