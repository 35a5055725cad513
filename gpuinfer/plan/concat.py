"""Zero-copy Concat: inputs that die at a Concat are placed inside its output, where they belong.

When everything before the concat axis has extent 1 (batch 1, NCHW, axis 1 — DenseNet's and
U-Net's skip concats), each input is one contiguous slice of the output.  An input that is an
ordinary intermediate read last by the Concat can then be written straight into that slice: the
Concat finds its input already in place and copies nothing, and the two never need separate
memory.  Only the arena planner uses this; it tries plans with and without it and keeps the smaller.
"""
from __future__ import annotations

from math import prod

import numpy as np

from gpuinfer.graph.ir import Graph
from gpuinfer.plan.lifetimes import Lifetime
from gpuinfer.values import TensorKey, value_key


def concat_aliases(graph: Graph, lifetimes: dict[TensorKey, Lifetime]) -> list[tuple[TensorKey, TensorKey, int]]:
    """(input, concat output, byte offset of the input inside the output) for every alias allowed."""
    aliases = []
    taken: set[str] = set()
    for node in graph.nodes:
        if node.op_type != "Concat" or node.domain or not node.outputs or not node.outputs[0]:
            continue
        out = lifetimes.get(value_key(node.outputs[0]))
        if out is None or out.kind == "scratch" or not out.shape:
            continue
        axis = int(node.attrs.get("axis", 1)) % len(out.shape)
        if prod(out.shape[:axis]) != 1:
            continue
        itemsize = np.dtype(out.dtype).itemsize
        offset = 0
        names = [n for n in node.inputs if n]
        for name in names:
            life = lifetimes.get(value_key(name))
            size = _nbytes(graph, name, life, out, axis, itemsize)
            if size is None:
                break  # an input of unknown size: offsets after it are unknown too
            if (life is not None and life.kind == "value" and life.last == node.step and names.count(name) == 1
                    and name not in taken and life.nbytes == size):
                aliases.append((life.key, out.key, offset))
                taken.add(name)
            offset += size
    return aliases


def _nbytes(graph: Graph, name: str, life, out: Lifetime, axis: int, itemsize: int):
    if life is not None:
        return life.nbytes
    if name in graph.constants:
        return int(graph.constants[name].nbytes)
    return None
