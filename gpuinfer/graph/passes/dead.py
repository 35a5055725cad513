"""Nodes none of whose outputs anyone reads (and that are not graph outputs) are dropped."""
from __future__ import annotations

from gpuinfer.graph.ir import Graph
from gpuinfer.graph.passes.relink import consumers_of


def remove_dead_nodes(graph: Graph) -> int:
    removed = 0
    while True:
        readers = consumers_of(graph)
        alive = [n for n in graph.nodes
                 if any(o and (readers.get(o) or o in graph.outputs) for o in n.outputs)]
        if len(alive) == len(graph.nodes):
            return removed
        removed += len(graph.nodes) - len(alive)
        graph.nodes = alive
