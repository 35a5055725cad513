"""An independent check of any plan: no two tensors alive at the same step share a byte.

Written apart from the planners on purpose; every plan the tests make goes through it.
"""
from __future__ import annotations

from gpuinfer.errors import GpuinferError
from gpuinfer.plan.plan import ALIGNMENT, MemoryPlan
from gpuinfer.values import TensorKey


class PlanVerificationError(GpuinferError, AssertionError):
    """A plan breaks an invariant; the message names the two tensors involved."""


def verify_plan(plan: MemoryPlan, check_alignment: bool = True) -> None:
    """Raise ``PlanVerificationError`` on the first overlap, misfit or misalignment found."""
    lives = plan.lifetimes
    # concat slices (and the in-place chains ending in them) sit where the output's layout puts them
    slice_offsets = {plan.placements[k].offset for k in plan.concat if k in plan.placements}
    for key, place in plan.placements.items():
        if key not in lives:
            raise PlanVerificationError(f"{str(key)!r} is placed but has no lifetime")
        if not 0 <= place.block < len(plan.blocks):
            raise PlanVerificationError(f"{str(key)!r} is in block {place.block}, which does not exist")
        if place.offset < 0 or place.offset + lives[key].nbytes > plan.blocks[place.block]:
            raise PlanVerificationError(f"{str(key)!r} [{place.offset}, +{lives[key].nbytes}) runs past its block "
                                        f"of {plan.blocks[place.block]} bytes")
        if check_alignment and place.offset % ALIGNMENT and place.offset not in slice_offsets:
            raise PlanVerificationError(f"{str(key)!r} at offset {place.offset} is not {ALIGNMENT}-byte aligned")
    for out, inp in plan.inplace.items():
        a, b = lives.get(inp), lives.get(out)
        if a is None or b is None or a.last != b.first:
            raise PlanVerificationError(f"in-place {str(out)!r} over {str(inp)!r}: the input must die at the step "
                                        f"the output is made")
        if plan.placements.get(out) != plan.placements.get(inp):
            raise PlanVerificationError(f"in-place {str(out)!r} over {str(inp)!r} but placed apart")
    for inp, (out, rel) in plan.concat.items():
        a, b = lives.get(inp), lives.get(out)
        if a is None or b is None or a.last != b.first:
            raise PlanVerificationError(f"concat input {str(inp)!r} inside {str(out)!r}: the input must die at the "
                                        f"step the output is made")
        pa, pb = plan.placements.get(inp), plan.placements.get(out)
        if pa is None or pb is None or pa.block != pb.block or pa.offset != pb.offset + rel \
                or rel < 0 or rel + a.nbytes > b.nbytes:
            raise PlanVerificationError(f"concat input {str(inp)!r} is not inside {str(out)!r} at offset {rel}")

    by_block: dict[int, list] = {}
    for key, place in plan.placements.items():
        life = lives[key]
        by_block.setdefault(place.block, []).append((place.offset, place.offset + life.nbytes, life))
    for items in by_block.values():
        _check_block(items, plan)


def _check_block(items, plan: MemoryPlan) -> None:
    """Sweep by offset: any two byte-overlapping tensors must be apart in time or an in-place pair."""
    items = [it for it in items if it[1] > it[0]]
    items.sort(key=lambda it: it[0])
    active: list = []
    for start, end, life in items:
        active = [a for a in active if a[1] > start]
        for _, _, other in active:
            if life.overlaps(other) and not _may_share(life.key, other.key, plan):
                raise PlanVerificationError(
                    f"{str(life.key)!r} (steps {life.first}-{life.last}) and {str(other.key)!r} "
                    f"(steps {other.first}-{other.last}) are alive together and share bytes")
        active.append((start, end, life))


def _may_share(a: TensorKey, b: TensorKey, plan: MemoryPlan) -> bool:
    """An in-place pair or a concat input and its output (their hand-over step was checked above)."""
    return (plan.inplace.get(a) == b or plan.inplace.get(b) == a
            or plan.concat.get(a, (None,))[0] == b or plan.concat.get(b, (None,))[0] == a)
