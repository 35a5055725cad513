"""``per_tensor`` (ailia's default): every tensor its own buffer, kept across runs. Fast, largest.
Op scratch, which lives within its step, shares one block (``shared_scratch.py``).
"""
from __future__ import annotations

from gpuinfer.plan.lifetimes import Lifetime
from gpuinfer.plan.modes import MemoryMode, register_mode
from gpuinfer.plan.plan import Placement
from gpuinfer.plan.shared_scratch import place_shared_scratch
from gpuinfer.plan.sharing import Sharing


def plan_per_tensor(lifetimes: list[Lifetime], sharing: Sharing):
    blocks, placements = [], {}
    in_shared = place_shared_scratch(lifetimes, blocks, placements)
    for life in lifetimes:
        if life.key not in in_shared:
            placements[life.key] = Placement(len(blocks), 0)
            blocks.append(life.nbytes)
    return blocks, placements, {}, {}


# Fastest to try first for ``memory_mode="auto"``: no placement search, no sharing, buffers written
# where they stay (CUDA graphs capture it), and every intermediate readable after the run.
PER_TENSOR = register_mode(MemoryMode("per_tensor", plan_per_tensor, speed_rank=0, hands_out_intermediates=True,
                                         fixed_addresses=True, shares_scratch=True))
