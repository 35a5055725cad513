"""Memory planning: lifetimes in, a ``MemoryPlan`` out.

Each memory mode is one ``MemoryMode`` object in one file (``per_tensor.py``, ``reduce.py``,
``reuse.py``, ``arena.py``): its planner (a pure function
``plan(lifetimes, sharing) -> (block sizes, placements, in-place map, concat map)``) and the facts
the planner and the session ask of it (``modes.py``).  ``MODES`` is the registry
(``gpuinfer.MEMORY_MODES`` is read from it); a new mode is a new file that calls
``register_mode``.  ``make_plan`` below asks the mode, never its name, whether outputs are placed
and whether in-place and Concat sharing are offered.

``verify_plan`` (``verify.py``) checks a plan independently of the planners; the tests run it on
every plan they make, sessions do not run it.
"""
from __future__ import annotations

from typing import Optional, Union

from gpuinfer.graph.ir import Graph
from gpuinfer.plan import per_tensor, reduce, reuse, arena  # noqa: F401  (register the modes, in this order)
from gpuinfer.plan.concat import concat_aliases
from gpuinfer.plan.lifetimes import Lifetime, graph_lifetimes, lower_bound
from gpuinfer.plan.modes import MODES, MemoryMode, by_speed, get_mode, register_mode, unregister_mode
from gpuinfer.plan.plan import ALIGNMENT, MemoryPlan, Placement
from gpuinfer.plan.sharing import Sharing
from gpuinfer.plan.slack import scratch_room, step_slack
from gpuinfer.plan.verify import PlanVerificationError, verify_plan
from gpuinfer.values import TensorKey, value_key

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


def make_plan(graph: Graph, types: dict, mode: Union[str, MemoryMode], keep: frozenset = frozenset(),
              seen_scratch: Optional[dict] = None, traces: Optional[dict] = None,
              device_kind: str = "cpu", scratch_slack: Optional[dict] = None) -> MemoryPlan:
    """Plan ``graph`` for one signature under ``mode``.

    ``types``: value -> (static shape, dtype) known ahead (or seen in a run); ``seen_scratch``:
    step -> scratch a run really asked for (see ``graph_lifetimes``); ``traces``: step -> the
    ``TracePlan`` of its subgraph tensors (or None: not traced), whose blocks the plan places.
    ``device_kind``: whose kernels run ("cpu" or "cuda"): their scratch differs.
    ``scratch_slack``: the spare scratch bytes per step the kernels were given (a plan remade from
    a run keeps its predecessor's, which the run's kernels asked with); None lets a mode that
    ``spends_slack`` find them (plan/slack.py) when the plan is complete ahead of any run.
    """
    mode = get_mode(mode) if isinstance(mode, str) else mode
    blocks_of = {step: t.block_bytes for step, t in (traces or {}).items() if t is not None}
    slack = dict(scratch_slack or {})
    records, dynamic = graph_lifetimes(graph, types, keep, seen_scratch, blocks_of, device_kind, slack)
    placed = _place(graph, mode, records)
    if scratch_slack is None and seen_scratch is None and not dynamic and not blocks_of \
            and (mode.spends_slack or mode.shares_scratch):
        wider_slack = (step_slack if mode.spends_slack else scratch_room)(graph, records, device_kind)
        if wider_slack:
            wider = graph_lifetimes(graph, types, keep, None, blocks_of, device_kind, wider_slack)[0]
            wider_placed = _place(graph, mode, wider)
            if sum(wider_placed[1]) <= sum(placed[1]):  # no bigger: keep the faster plan
                records, placed, slack = wider, wider_placed, wider_slack
    lifetimes, (blocks, placements, inplace, concat) = placed[0], placed[1:]
    return MemoryPlan(mode.name, len(graph.nodes), lifetimes, placements, blocks, inplace, dynamic,
                      lower_bound(records, len(graph.nodes)), dict(types), seen_scratch is not None, concat,
                      dict(traces or {}), scratch_slack=slack)


def _place(graph: Graph, mode: MemoryMode, records: list) -> tuple:
    """(lifetimes by key, blocks, placements, in-place map, concat map) of ``records`` under ``mode``."""
    lifetimes = {l.key: l for l in records}
    # A mode that places outputs holds them in its blocks (copied out once the run is over), so a
    # run never needs the blocks plus the outputs beside them; the others give outputs their own buffers.
    placeable = records if mode.places_outputs else [l for l in records if l.kind != "output"]
    sharing = Sharing(inplace_pairs(graph, lifetimes), concat_aliases(graph, lifetimes)) if mode.shares_bytes else Sharing()
    return (lifetimes, *mode.place(placeable, sharing))


__all__ = ["ALIGNMENT", "Lifetime", "MODES", "MemoryMode", "MemoryPlan", "Placement", "PlanVerificationError",
           "Sharing", "by_speed", "concat_aliases", "get_mode", "inplace_pairs", "lower_bound", "make_plan",
           "register_mode", "unregister_mode", "verify_plan"]
