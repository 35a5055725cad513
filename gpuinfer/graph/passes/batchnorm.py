"""BatchNormalization after a Conv with constant weights is folded into that Conv's weights and bias.

y = (conv(x, W) + b - mean) * scale / sqrt(var + eps) + beta
  = conv(x, W * a) + (b - mean) * a + beta,   a = scale / sqrt(var + eps)   (per output channel)
The arithmetic is done in float64 and cast back, so results move by float rounding only.
"""
from __future__ import annotations

import numpy as np

from gpuinfer.graph.ir import Graph, Node
from gpuinfer.graph.passes.relink import consumers_of, fresh_name, producers_of


def fold_batchnorm(graph: Graph) -> int:
    readers = consumers_of(graph)
    producer = producers_of(graph)
    drop: set[int] = set()
    folded = 0
    for bn in graph.nodes:
        if bn.op_type != "BatchNormalization" or bn.domain or not plain_inference(bn, graph):
            continue
        conv = producer.get(bn.inputs[0])
        if (conv is None or conv.op_type != "Conv" or conv.domain or id(conv) in drop
                or len(readers.get(conv.outputs[0], [])) != 1 or conv.outputs[0] in graph.outputs
                or conv.inputs[1] not in graph.constants
                or (len(conv.inputs) > 2 and conv.inputs[2] and conv.inputs[2] not in graph.constants)):
            continue
        _fold(graph, conv, bn)
        drop.add(id(bn))
        folded += 1
    graph.nodes = [n for n in graph.nodes if id(n) not in drop]
    return folded


def plain_inference(bn: Node, graph: Graph) -> bool:
    """An inference BatchNormalization (no training outputs) whose four parameters are constants."""
    params_constant = all(name in graph.constants for name in bn.inputs[1:5])
    extra_outputs = any(bn.outputs[1:])
    return (len(bn.inputs) == 5 and params_constant and not extra_outputs
            and not bn.attrs.get("training_mode", 0) and bn.attrs.get("spatial", 1) == 1)


def _fold(graph: Graph, conv: Node, bn: Node) -> None:
    w = graph.constants[conv.inputs[1]]
    scale, beta, mean, var = (graph.constants[n].astype(np.float64) for n in bn.inputs[1:5])
    a = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
    bias = graph.constants[conv.inputs[2]].astype(np.float64) if len(conv.inputs) > 2 and conv.inputs[2] else 0.0
    new_w = (w.astype(np.float64) * a.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    new_b = ((bias - mean) * a + beta).astype(w.dtype)
    replace_conv_parameters(graph, conv, new_w, new_b, bn.outputs[0], "bn_folded")


def replace_conv_parameters(graph: Graph, conv: Node, w: np.ndarray, b: np.ndarray, output: str, tag: str) -> None:
    """``conv`` now multiplies by ``w``, adds ``b`` (new constants, named after it and ``tag``) and
    writes ``output``: the value of the node folded into it.  The constants it read before go
    where no other node reads them: a folded model kept both copies of every folded weight."""
    before = [name for name in conv.inputs[1:] if name]
    if w is graph.constants[conv.inputs[1]]:
        w_name = conv.inputs[1]
    else:
        w_name = fresh_name(graph, f"{conv.name}/{tag}_W")
        graph.constants[w_name] = w
    b_name = fresh_name(graph, f"{conv.name}/{tag}_B")
    graph.constants[b_name] = b
    rewire(graph, conv, [conv.inputs[0], w_name, b_name], output, before)


def rewire(graph: Graph, node: Node, inputs: list, output: str, before: list) -> None:
    """``node`` now reads ``inputs`` and writes ``output`` (its proto too); of the constants it
    read ``before``, those no node reads any more are dropped."""
    node.inputs = list(inputs)
    node.outputs = [output]
    still_read = {name for n in graph.nodes for name in (*n.inputs, *n.outer_reads)}
    for name in before:
        if name not in still_read and name not in graph.outputs and name in graph.constants:
            del graph.constants[name]
    proto = type(node.proto)()
    proto.CopyFrom(node.proto)
    del proto.input[:]
    proto.input.extend(node.inputs)
    del proto.output[:]
    proto.output.extend(node.outputs)
    node.proto = proto

