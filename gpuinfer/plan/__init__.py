"""Memory planning: lifetimes in, a ``MemoryPlan`` out.

Each mode's planner is one module exposing one pure function
``plan(lifetimes, sharing) -> (block sizes, placements, in-place map, concat map)``, listed in
``MODES`` (``gpuinfer.MEMORY_MODES`` is read from it).  A new planner is a new file and one line
there, but a new mode is more than that today: ``make_plan`` below gives only ``arena`` the
in-place and Concat sharing and a place for the outputs in its block, and the session
(``runtime/session.py``) names modes too (``arena``'s shared blocks, ``reduce`` neither replanning
from a run nor using subgraph traces, only ``per_tensor`` handing out intermediates as outputs).

``verify_plan`` (``verify.py``) checks a plan independently of the planners; the tests run it on
every plan they make, sessions do not run it.
"""
from __future__ import annotations

from typing import Callable, Optional

from gpuinfer.graph.ir import Graph
from gpuinfer.plan.arena import plan_arena
from gpuinfer.plan.concat import concat_aliases
from gpuinfer.plan.lifetimes import Lifetime, graph_lifetimes, lower_bound
from gpuinfer.plan.per_tensor import plan_per_tensor
from gpuinfer.plan.plan import ALIGNMENT, MemoryPlan, Placement
from gpuinfer.plan.reduce import plan_reduce
from gpuinfer.plan.reuse import plan_reuse
from gpuinfer.plan.sharing import Sharing
from gpuinfer.plan.verify import PlanVerificationError, verify_plan
from gpuinfer.values import TensorKey, value_key

Planner = Callable[[list, list], tuple]

MODES: dict[str, Planner] = {
    "per_tensor": plan_per_tensor,
    "reduce": plan_reduce,
    "reuse": plan_reuse,
    "arena": plan_arena,
}


def inplace_pairs(graph: Graph, lifetimes: dict[TensorKey, Lifetime]) -> list[tuple[TensorKey, TensorKey]]:
    """(output, input) pairs where an in-place-safe op may write over an input that dies there."""
    pairs = []
    taken: set[TensorKey] = set()
    for node in graph.nodes:
        if node.spec is None or not node.spec.inplace or not node.outputs or not node.outputs[0]:
            continue
        out = lifetimes.get(value_key(node.outputs[0]))
        if out is None or out.kind != "value":
            continue
        for name in node.inputs:
            inp = lifetimes.get(value_key(name)) if name else None
            if (inp is not None and inp.kind == "value" and inp.last == node.step
                    and inp.nbytes == out.nbytes and inp.key not in taken):
                pairs.append((out.key, inp.key))
                taken.add(inp.key)
                break
    return pairs


def make_plan(graph: Graph, types: dict, mode: str, keep: frozenset = frozenset(),
              seen_scratch: Optional[dict] = None, traces: Optional[dict] = None,
              device_kind: str = "cpu") -> MemoryPlan:
    """Plan ``graph`` for one signature under ``mode``.

    ``types``: value -> (static shape, dtype) known ahead (or seen in a run); ``seen_scratch``:
    step -> scratch a run really asked for (see ``graph_lifetimes``); ``traces``: step -> the
    ``TracePlan`` of its subgraph tensors (or None: not traced), whose blocks the plan places.
    ``device_kind``: whose kernels run ("cpu" or "cuda"): their scratch differs.
    """
    blocks_of = {step: t.block_bytes for step, t in (traces or {}).items() if t is not None}
    records, dynamic = graph_lifetimes(graph, types, keep, seen_scratch, blocks_of, device_kind)
    lifetimes = {l.key: l for l in records}
    # The arena holds outputs too (copied out once the run is over), so a run never needs the
    # whole block plus the outputs beside it; the other modes give outputs their own buffers.
    placeable = records if mode == "arena" else [l for l in records if l.kind != "output"]
    sharing = Sharing(inplace_pairs(graph, lifetimes), concat_aliases(graph, lifetimes)) if mode == "arena" else Sharing()
    blocks, placements, inplace, concat = MODES[mode](placeable, sharing)
    return MemoryPlan(mode, len(graph.nodes), lifetimes, placements, blocks, inplace, dynamic,
                      lower_bound(records, len(graph.nodes)), dict(types), seen_scratch is not None, concat,
                      dict(traces or {}))


__all__ = ["ALIGNMENT", "Lifetime", "MODES", "MemoryPlan", "Placement", "PlanVerificationError",
           "Sharing", "concat_aliases", "inplace_pairs", "lower_bound", "make_plan", "verify_plan"]
