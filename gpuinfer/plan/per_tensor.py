"""``per_tensor`` (ailia's default): every tensor its own buffer, kept across runs. Fast, largest.

Op scratch is not a tensor: it lives within its step, so every step's scratch shares one block,
as big as the most any step asks (a step's buffers side by side in it), unless a block each
holds less (a few tiny buffers, whose aligned offsets would take more).  A block per scratch
buffer held every im2col band and padded copy of the graph at once: nudenet's `per_tensor` peak
was 48.9 MiB with them, 30.6 with the shared block.
The room the other steps leave in that block is theirs to widen into (``shares_scratch``,
``plan/slack.py``): longer bands and bigger blocks, at no byte of memory.
"""
from __future__ import annotations

from gpuinfer.plan.lifetimes import Lifetime
from gpuinfer.plan.modes import MemoryMode, register_mode
from gpuinfer.plan.plan import Placement, align
from gpuinfer.plan.sharing import Sharing


def step_scratch(lifetimes: list[Lifetime]) -> dict[int, list[Lifetime]]:
    """step -> the scratch lifetimes that live within it, in the order given."""
    steps: dict[int, list[Lifetime]] = {}
    for life in lifetimes:
        if life.kind == "scratch" and life.first == life.last:
            steps.setdefault(life.first, []).append(life)
    return steps


def scratch_span(lives: list[Lifetime]) -> int:
    """Bytes one step's scratch takes laid side by side in the shared block (aligned offsets)."""
    end = 0
    for life in lives:
        end = align(end) + life.nbytes
    return end


def shared_scratch(lifetimes: list[Lifetime]) -> dict[int, list[Lifetime]]:
    """step -> its scratch, where one shared block holds less than a block per scratch buffer did
    (tiny buffers side by side at aligned offsets can take more); else {}."""
    steps = step_scratch(lifetimes)
    if not steps:
        return {}
    most = max(scratch_span(lives) for lives in steps.values())
    return steps if most < sum(life.nbytes for lives in steps.values() for life in lives) else {}


def place_shared_scratch(lifetimes: list[Lifetime], blocks: list[int], placements: dict) -> set:
    """Put every step's scratch into one new block of ``blocks`` (``shared_scratch``), recording
    the placements; returns the keys placed (none where a block each is less)."""
    shared = shared_scratch(lifetimes)
    if not shared:
        return set()
    block = len(blocks)
    for lives in shared.values():
        end = 0
        for life in lives:
            placements[life.key] = Placement(block, align(end))
            end = align(end) + life.nbytes
    blocks.append(max(scratch_span(lives) for lives in shared.values()))
    return {life.key for lives in shared.values() for life in lives}


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
