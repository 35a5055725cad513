"""``per_tensor`` (ailia's default): every tensor its own buffer, kept across runs. Fast, largest."""
from __future__ import annotations

from gpuinfer.plan.lifetimes import Lifetime
from gpuinfer.plan.modes import MemoryMode, register_mode
from gpuinfer.plan.sharing import Sharing
from gpuinfer.plan.plan import Placement


def plan_per_tensor(lifetimes: list[Lifetime], sharing: Sharing):
    blocks, placements = [], {}
    for life in lifetimes:
        placements[life.key] = Placement(len(blocks), 0)
        blocks.append(life.nbytes)
    return blocks, placements, {}, {}


# Fastest to try first for ``memory_mode="auto"``: no placement search, no sharing, buffers written
# where they stay (CUDA graphs capture it), and every intermediate readable after the run.
PER_TENSOR = register_mode(MemoryMode("per_tensor", plan_per_tensor, speed_rank=0, hands_out_intermediates=True,
                                         fixed_addresses=True))
