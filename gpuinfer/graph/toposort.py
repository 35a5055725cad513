"""Order nodes so every input is produced before it is read; never trust the stored order.

Ties are broken by the stored position, which keeps the exporter's (usually memory-friendly)
order wherever it is valid.
"""
from __future__ import annotations

import heapq
from typing import Sequence

from gpuinfer.errors import InvalidModelError


def topological_order(node_inputs: Sequence[Sequence[str]], node_outputs: Sequence[Sequence[str]],
                      available: set[str], node_names: Sequence[str]) -> list[int]:
    """Indices of nodes in a valid run order.

    ``available`` holds names that exist before any node runs (inputs, initializers, outer scope).
    Raises ``InvalidModelError`` naming the node for a dangling input, a value produced twice, or
    a cycle.
    """
    producer: dict[str, int] = {}
    for i, outs in enumerate(node_outputs):
        for name in outs:
            if not name:
                continue
            if name in producer or name in available:
                raise InvalidModelError(f"value {name!r} is produced twice (by node {node_names[i]!r})")
            producer[name] = i
    waiting = [0] * len(node_inputs)
    readers: dict[int, list[int]] = {}
    for i, ins in enumerate(node_inputs):
        for name in set(ins):
            if not name or name in available:
                continue
            if name not in producer:
                raise InvalidModelError(
                    f"node {node_names[i]!r} reads {name!r}, which no node, graph input or initializer produces")
            waiting[i] += 1
            readers.setdefault(producer[name], []).append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in readers.get(i, ()):
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(node_inputs):
        stuck = [node_names[i] or f"#{i}" for i, w in enumerate(waiting) if w > 0]
        raise InvalidModelError(f"the graph has a cycle through {len(stuck)} node(s): "
                                + ", ".join(repr(n) for n in stuck[:8]))
    return order
