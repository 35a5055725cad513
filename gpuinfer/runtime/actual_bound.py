"""The lower bound of a finished run, from the sizes tensors really had (dynamic ones included)."""
from __future__ import annotations

from gpuinfer.graph.ir import Graph
from gpuinfer.plan.lifetimes import Lifetime, lower_bound
from gpuinfer.plan.plan import MemoryPlan


def run_lower_bound(graph: Graph, plan: MemoryPlan, sizes: dict[str, int]) -> int:
    """Most bytes alive at one step, counting every top-level tensor the run made at its real size."""
    end = max(len(graph.nodes) - 1, 0)
    records = []
    for key, nbytes in sizes.items():
        life = plan.lifetimes.get(key)
        if life is not None:
            first, last = life.first, life.last
        elif key in graph.values:
            value = graph.values[key]
            first = value.producer if value.producer is not None else 0
            last = end if value.is_graph_output else (value.last_use if value.last_use is not None else first)
        elif "#" in key and "@" not in key:
            first = last = int(key.split("#", 1)[0])
        else:
            continue
        records.append(Lifetime(key, first, last, nbytes))
    return lower_bound(records, len(graph.nodes))
