"""``reduce`` (ailia's "reduce interstage"): nothing planned; allocate when produced, free after last use.

Every tensor takes the pool's dynamic path, so memory tracks what is alive step by step, at the
price of one allocator call per tensor per run.
"""
from __future__ import annotations

from gpuinfer.plan.lifetimes import Lifetime
from gpuinfer.plan.modes import MemoryMode, register_mode
from gpuinfer.plan.sharing import Sharing


def plan_reduce(lifetimes: list[Lifetime], sharing: Sharing):
    return [], {}, {}, {}


# Slowest (one allocator call per tensor per run): ``auto``'s last resort.  Nothing is placed, so
# subgraph traces and shapes seen in a run would not be used: no traces, no replanning.
# Its peak is the busiest step's bytes: scratch widened below that (plan/slack.py) costs it nothing.
REDUCE = register_mode(MemoryMode("reduce", plan_reduce, speed_rank=3, plans_ahead=False, spends_slack=True))
