"""Replace chains of nodes by one fused node each: the loop the chain-merging passes share
(``hardswish.py``, ``silu.py``), which only differ in what a chain is."""
from __future__ import annotations

from typing import Callable, Optional

from gpuinfer.graph.ir import Graph, Node
from gpuinfer.graph.passes.relink import consumers_of

# (graph, first node, readers of each value) -> (fused node, the chain's nodes after the first), or None
Match = Callable[[Graph, Node, dict], Optional[tuple[Node, list[Node]]]]


def replace_chains(graph: Graph, match: Match) -> int:
    """Each chain ``match`` finds becomes its fused node, in its first node's place; a chain that
    shares a node with one merged before is left alone.  Returns how many were merged."""
    readers = consumers_of(graph)
    fused: dict[int, Node] = {}  # id(first node) -> the fused node taking its place
    drop: set[int] = set()
    for first in graph.nodes:
        found = match(graph, first, readers)
        if found is None or any(id(n) in drop for n in found[1]):
            continue
        fused[id(first)], rest = found
        drop.update(id(n) for n in rest)
    graph.nodes = [fused.get(id(n), n) for n in graph.nodes if id(n) not in drop]
    return len(fused)
