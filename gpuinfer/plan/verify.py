"""An independent check of any plan: no two tensors alive at the same step share a byte.

Written apart from the planners on purpose; every plan the tests make goes through it.
"""
from __future__ import annotations

from gpuinfer.errors import GpuinferError
from gpuinfer.plan.plan import ALIGNMENT, MemoryPlan


class PlanVerificationError(GpuinferError, AssertionError):
    """A plan breaks an invariant; the message names the two tensors involved."""


def verify_plan(plan: MemoryPlan, check_alignment: bool = True) -> None:
    """Raise ``PlanVerificationError`` on the first overlap, misfit or misalignment found."""
    lives = plan.lifetimes
    for key, place in plan.placements.items():
        if key not in lives:
            raise PlanVerificationError(f"{key!r} is placed but has no lifetime")
        if lives[key].kind == "output":
            raise PlanVerificationError(f"graph output {key!r} must not be placed in a shared block")
        if not 0 <= place.block < len(plan.blocks):
            raise PlanVerificationError(f"{key!r} is in block {place.block}, which does not exist")
        if place.offset < 0 or place.offset + lives[key].nbytes > plan.blocks[place.block]:
            raise PlanVerificationError(f"{key!r} [{place.offset}, +{lives[key].nbytes}) runs past its block "
                                        f"of {plan.blocks[place.block]} bytes")
        if check_alignment and place.offset % ALIGNMENT:
            raise PlanVerificationError(f"{key!r} at offset {place.offset} is not {ALIGNMENT}-byte aligned")
    for out, inp in plan.inplace.items():
        a, b = lives.get(inp), lives.get(out)
        if a is None or b is None or a.last != b.first:
            raise PlanVerificationError(f"in-place {out!r} over {inp!r}: the input must die at the step "
                                        f"the output is made")
        if plan.placements.get(out) != plan.placements.get(inp):
            raise PlanVerificationError(f"in-place {out!r} over {inp!r} but placed apart")

    by_block: dict[int, list] = {}
    for key, place in plan.placements.items():
        life = lives[key]
        by_block.setdefault(place.block, []).append((place.offset, place.offset + life.nbytes, life))
    for items in by_block.values():
        _check_block(items, plan.inplace)


def _check_block(items, inplace: dict[str, str]) -> None:
    """Sweep by offset: any two byte-overlapping tensors must be apart in time or an in-place pair."""
    items = [it for it in items if it[1] > it[0]]
    items.sort(key=lambda it: it[0])
    active: list = []
    for start, end, life in items:
        active = [a for a in active if a[1] > start]
        for _, _, other in active:
            if life.overlaps(other) and not _inplace_pair(life.key, other.key, inplace):
                raise PlanVerificationError(
                    f"{life.key!r} (steps {life.first}-{life.last}) and {other.key!r} "
                    f"(steps {other.first}-{other.last}) are alive together and share bytes")
        active.append((start, end, life))


def _inplace_pair(a: str, b: str, inplace: dict[str, str]) -> bool:
    return inplace.get(a) == b or inplace.get(b) == a
