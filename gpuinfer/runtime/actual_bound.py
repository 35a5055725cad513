"""The lower bound of a finished run, from the sizes tensors really had (dynamic ones included)."""
from __future__ import annotations

from gpuinfer.graph.ir import Graph
from gpuinfer.plan.lifetimes import Lifetime, lower_bound
from gpuinfer.plan.plan import MemoryPlan
from gpuinfer.values import VALUE, TensorKey, trace_block_key


def run_lower_bound(graph: Graph, plan: MemoryPlan, sizes: dict[TensorKey, int], inner_peaks: dict[int, int]) -> int:
    """Most bytes alive at one step, counting every top-level tensor the run made at its real size
    and, at an If/Loop/Scan step, the most bytes its subgraph runs held at once."""
    end = max(len(graph.nodes) - 1, 0)
    records = []
    for key, nbytes in sizes.items():
        life = plan.lifetimes.get(key)
        if life is not None:
            first, last = life.first, life.last
        elif key.kind == VALUE and not key.scope and key.name in graph.values:
            value = graph.values[key.name]
            first = value.producer if value.producer is not None else 0
            last = end if value.is_graph_output else (value.last_use if value.last_use is not None else first)
        elif key.kind != VALUE and not key.scope:  # a step's scratch or unused output
            first = last = key.step
        else:
            continue
        if first in inner_peaks and last > first:
            first += 1  # made from the body's results once the body is done: not beside its peak
        records.append(Lifetime(key, first, last, nbytes))
    records += [Lifetime(trace_block_key(step), step, step, nbytes) for step, nbytes in inner_peaks.items()]
    return lower_bound(records, len(graph.nodes))
