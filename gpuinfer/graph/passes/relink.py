"""After a pass edits the node list: renumber steps and re-derive producers and consumers."""
from __future__ import annotations

from gpuinfer.graph.ir import Graph, Value


def relink(graph: Graph) -> None:
    """Make ``graph.values`` and node steps agree with ``graph.nodes`` again (shapes kept)."""
    old = graph.values
    graph.values = {}
    for name in graph.inputs:
        v = old[name]
        graph.values[name] = Value(name, v.shape, v.dtype)
    for step, node in enumerate(graph.nodes):
        node.step = step
        for name in node.outputs:
            if name:
                v = old.get(name)
                graph.values[name] = Value(name, v.shape if v else None, v.dtype if v else None, producer=step)
    for node in graph.nodes:
        for name in set(node.inputs) | set(node.outer_reads):
            if name in graph.values:
                graph.values[name].consumers.append(node.step)
    for name in graph.outputs:
        if name in graph.values:
            graph.values[name].is_graph_output = True
    used = set(graph.outputs)
    for node in graph.nodes:
        used.update(node.inputs)
        used.update(node.outer_reads)
    graph.constants = {k: v for k, v in graph.constants.items() if k in used}


def consumers_of(graph: Graph) -> dict[str, list]:
    """value name -> nodes reading it (subgraph reads included)."""
    readers: dict[str, list] = {}
    for node in graph.nodes:
        for name in set(node.inputs) | set(node.outer_reads):
            readers.setdefault(name, []).append(node)
    return readers


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
