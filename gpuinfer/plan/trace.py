"""Subgraph tensors planned from what a run did: If branches, Loop and Scan bodies.

A body's tensors are not in the top-level plan (which branch runs, and how often a loop turns, is
only known while running), so the first run serves them one allocation at a time and records the
order of its allocations and frees.  That trace becomes a small arena of its own: one block for the
control-flow step, each allocation an offset where nothing alive at the same time lies.  The next
plan places that block as the step's scratch (inside the arena, in ``arena`` mode), and runs that
make the same allocations in the same order (the same branch, the same trip count, the same
shapes) use it instead of one allocation per tensor; see ``runtime/nested.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from gpuinfer.plan.arena import ORDERS, place_spans
from gpuinfer.values import TensorKey

# A trace longer than this (a loop with many turns) is not planned: the greedy placement is
# quadratic in it, and such steps are dominated by their kernels, not by allocations.
MAX_TRACE_ALLOCATIONS = 2048

# Bodies mostly make small tensors (scalars, shapes, one frame's state), where the arena's 256-byte
# alignment would add more than they hold (silero_vad: 10.3 KB of body tensors, +2 KB at 256).
# 16 bytes satisfies every element type (complex128, the widest, is 16); small tensors may share a
# cache line.
TRACE_ALIGNMENT = 16


@dataclass(frozen=True)
class TracePlan:
    """The allocations a step is expected to make, in order, and where each one goes."""

    keys: tuple[TensorKey, ...]
    sizes: tuple[int, ...]
    offsets: tuple[int, ...]
    block_bytes: int


def plan_trace(events: list[tuple[TensorKey, Optional[int]]]) -> Optional[TracePlan]:
    """A ``TracePlan`` for recorded ``events``: ``(key, nbytes)`` for an allocation, ``(key, None)``
    for the free of that key's latest allocation; allocations never freed live to the step's end.
    None when the trace is empty or too long to plan."""
    keys: list[TensorKey] = []
    sizes: list[int] = []
    first: list[int] = []
    last: list[int] = []
    latest: dict[TensorKey, int] = {}
    for t, (key, nbytes) in enumerate(events):
        if nbytes is None:
            i = latest.pop(key, None)
            if i is not None:
                last[i] = t
            continue
        latest[key] = len(keys)
        keys.append(key)
        sizes.append(nbytes)
        first.append(t)
        last.append(len(events))
    if not keys or len(keys) > MAX_TRACE_ALLOCATIONS:
        return None
    spans = [(size, f, l, i) for i, (size, f, l) in enumerate(zip(sizes, first, last))]
    best = None
    for order in ORDERS.values():
        offsets, total = place_spans(sorted(spans, key=order), TRACE_ALIGNMENT)
        if best is None or total < best[1]:
            best = (offsets, total)
    offsets, total = best
    return TracePlan(tuple(keys), tuple(sizes), tuple(offsets[i] for i in range(len(keys))), total)
