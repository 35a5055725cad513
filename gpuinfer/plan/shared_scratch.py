"""One block for every step's op scratch, for the modes that keep their tensors' buffers
(``per_tensor``, ``reuse``: ``MemoryMode.shares_scratch``).

Op scratch lives within its step, so every step's scratch can share one block, as big as the most
any step asks, a step's buffers side by side at aligned offsets; unless a block each holds less (a
few tiny buffers, whose aligned offsets would take more).  A block per scratch buffer held every
im2col band and padded copy of the graph at once: nudenet's ``per_tensor`` peak was 48.9 MiB with
them, 30.6 with the shared block (bench/memory_modes.py).  The room the other steps leave in the
block is theirs to widen into (``plan/slack.py: scratch_room``).
"""
from __future__ import annotations

from gpuinfer.plan.lifetimes import Lifetime
from gpuinfer.plan.plan import Placement, align


def step_scratch(lifetimes: list[Lifetime]) -> dict[int, list[Lifetime]]:
    """step -> the scratch lifetimes that live within it, in the order given."""
    steps: dict[int, list[Lifetime]] = {}
    for life in lifetimes:
        if life.kind == "scratch" and life.first == life.last:
            steps.setdefault(life.first, []).append(life)
    return steps


def _side_by_side(lives: list[Lifetime]) -> tuple[list[int], int]:
    """(offset of each buffer, bytes to the last one's end) with one step's buffers laid side by
    side at aligned offsets."""
    offsets, end = [], 0
    for life in lives:
        offsets.append(align(end))
        end = offsets[-1] + life.nbytes
    return offsets, end


def scratch_span(lives: list[Lifetime]) -> int:
    """Bytes one step's scratch takes laid side by side in the shared block."""
    return _side_by_side(lives)[1]


def shared_scratch(lifetimes: list[Lifetime]) -> dict[int, list[Lifetime]]:
    """step -> its scratch, where one shared block holds less than a block per scratch buffer;
    else {}."""
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
    block, most = len(blocks), 0
    for lives in shared.values():
        offsets, end = _side_by_side(lives)
        placements.update((life.key, Placement(block, offset)) for life, offset in zip(lives, offsets))
        most = max(most, end)
    blocks.append(most)
    return {life.key for lives in shared.values() for life in lives}
