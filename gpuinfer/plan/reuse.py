"""``reuse`` (ailia's "reuse interstage"): tensors of one shape and dtype share buffers when their
lifetimes do not overlap.  Op scratch, which lives within its step, shares one block instead
(``shared_scratch.py``), and steps widen into the room it leaves them.

Within each (shape, dtype) class, taking tensors in order of first step and giving each the
buffer that became free (any will do) uses as few buffers as the class's most-overlapping step
needs: interval-graph colouring, optimal for this rule.
"""
from __future__ import annotations

import heapq

from gpuinfer.plan.lifetimes import Lifetime
from gpuinfer.plan.modes import MemoryMode, register_mode
from gpuinfer.plan.shared_scratch import place_shared_scratch
from gpuinfer.plan.sharing import Sharing
from gpuinfer.plan.plan import Placement


def plan_reuse(lifetimes: list[Lifetime], sharing: Sharing):
    blocks: list[int] = []
    placements: dict = {}
    in_shared = place_shared_scratch(lifetimes, blocks, placements)  # op scratch: one block, as per_tensor
    classes: dict[tuple, list[Lifetime]] = {}
    for life in lifetimes:
        if life.key not in in_shared:
            classes.setdefault((life.shape, life.dtype), []).append(life)
    for members in classes.values():
        busy: list[tuple[int, int]] = []  # (last step, block) of buffers in use, soonest free first
        free: list[int] = []
        for life in sorted(members, key=lambda l: l.first):  # stable: run order, never names
            while busy and busy[0][0] < life.first:
                free.append(heapq.heappop(busy)[1])
            if free:
                block = free.pop()
            else:
                block = len(blocks)
                blocks.append(life.nbytes)
            placements[life.key] = Placement(block, 0)
            heapq.heappush(busy, (life.last, block))
    return blocks, placements, {}, {}


# Kept buffers per (shape, dtype) class: outputs still allocated per run, so after arena for ``auto``.
REUSE = register_mode(MemoryMode("reuse", plan_reuse, speed_rank=2, shares_scratch=True))
