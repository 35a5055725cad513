"""``per_tensor`` (ailia's default): every tensor its own buffer, kept across runs. Fast, largest."""
from __future__ import annotations

from gpuinfer.plan.lifetimes import Lifetime
from gpuinfer.plan.sharing import Sharing
from gpuinfer.plan.plan import Placement


def plan_per_tensor(lifetimes: list[Lifetime], sharing: Sharing):
    blocks, placements = [], {}
    for life in lifetimes:
        placements[life.key] = Placement(len(blocks), 0)
        blocks.append(life.nbytes)
    return blocks, placements, {}, {}
