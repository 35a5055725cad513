"""The memory plan: where each placed tensor lives, as (block, offset) pairs over lifetimes.

A plan is data only.  Planners make it (pure functions of lifetimes), a pool turns it into
buffers.  The independent verifier (``verify.py``) checks plans in the tests, not at run time.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Optional

from gpuinfer.plan.lifetimes import Lifetime, lower_bound
from gpuinfer.values import TensorKey

ALIGNMENT = 256  # bytes; offsets in a block are multiples of this (GPU-friendly, SIMD-friendly)


def align(n: int, to: int = ALIGNMENT) -> int:
    return (n + to - 1) // to * to


@dataclass(frozen=True)
class Placement:
    block: int
    offset: int


@dataclass
class MemoryPlan:
    """Where every planned tensor of one input-shape signature lives.

    ``lifetimes`` holds every counted tensor (placed, output and scratch); ``placements`` only the
    placed ones.  ``inplace[v] = u`` records that value ``v`` takes over the buffer of ``u``, which
    dies at the step ``v`` is produced; ``concat[u] = (v, offset)`` that ``u`` is written straight
    into its slice of Concat output ``v`` and dies when ``v`` is made.  ``dynamic`` lists values whose shape was unknown ahead
    of the run; pools serve them on the reduce path.
    """

    mode: str
    steps: int
    lifetimes: dict[TensorKey, Lifetime]
    placements: dict[TensorKey, Placement] = field(default_factory=dict)
    blocks: list[int] = field(default_factory=list)
    inplace: dict[TensorKey, TensorKey] = field(default_factory=dict)
    dynamic: list[str] = field(default_factory=list)  # value names
    lower_bound_bytes: int = 0
    value_types: dict = field(default_factory=dict)  # value -> (shape, dtype) the plan was made for
    from_run: bool = False  # made from the shapes a first run observed, not from inference alone
    concat: dict = field(default_factory=dict)  # input key -> (concat output key, offset): lives inside it
    # control-flow step -> the TracePlan of its subgraph tensors, filled in by runs (plan/trace.py)
    traces: dict = field(default_factory=dict)
    # counted peak of the run whose trace finished this plan (None: complete before any run)
    first_run_peak_bytes: Optional[int] = None
    # step -> spare scratch bytes its kernel may spend (plan/slack.py; ``OpContext.scratch_slack``)
    scratch_slack: dict = field(default_factory=dict)

    @property
    def planned_bytes(self) -> int:
        return sum(self.blocks)

    @functools.cached_property
    def need_bytes(self) -> int:
        """What a run of this plan needs: its blocks plus the busiest step of what it leaves unplaced
        (outputs outside the arena, unforeseen scratch).  Computed once; checked before every run."""
        rest = [life for key, life in self.lifetimes.items() if key not in self.placements]
        return self.planned_bytes + lower_bound(rest, self.steps)
