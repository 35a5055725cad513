"""After a pass edits the node list: renumber steps and re-derive producers and consumers."""
from __future__ import annotations

from typing import Any

from gpuinfer.graph.ir import Graph, link


def relink(graph: Graph) -> None:
    """Make ``graph.values`` and node steps agree with ``graph.nodes`` again (known shapes kept)."""
    old = graph.values
    link(graph, lambda name: (old[name].shape, old[name].dtype) if name in old else (None, None))


def consumers_of(graph: Graph) -> dict[str, list]:
    """value name -> nodes reading it (subgraph reads included)."""
    readers: dict[str, list] = {}
    for node in graph.nodes:
        for name in set(node.inputs) | set(node.outer_reads):
            readers.setdefault(name, []).append(node)
    return readers


def producers_of(graph: Graph) -> dict[str, Any]:
    """value name -> the node writing it."""
    return {name: node for node in graph.nodes for name in node.outputs if name}


def rename_input(graph: Graph, old: str, new: str) -> None:
    """Every node reading ``old`` reads ``new`` instead (NodeProtos too, for shape inference)."""
    for node in graph.nodes:
        if old in node.inputs:
            node.inputs = [new if i == old else i for i in node.inputs]
            proto = type(node.proto)()
            proto.CopyFrom(node.proto)
            for i, name in enumerate(proto.input):
                if name == old:
                    proto.input[i] = new
            node.proto = proto


def fresh_name(graph: Graph, base: str) -> str:
    """``base``, or ``base_N``: a name no constant or value of ``graph`` has yet."""
    name, i = base, 0
    while name in graph.constants or name in graph.values:
        i += 1
        name = f"{base}_{i}"
    return name
