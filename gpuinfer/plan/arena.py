"""``arena`` (ours): one block; each tensor an offset so that tensors alive together never overlap.

Greedy by size, as TFLite's arena planner does: the largest tensor is placed first, each at the
lowest aligned offset that overlaps no already-placed tensor alive at the same time.  Before
placing, in-place chains (an elementwise op writing over an input that dies at that step) are
merged into one tensor whose lifetime is the union of theirs.
"""
from __future__ import annotations

from gpuinfer.plan.lifetimes import Lifetime
from gpuinfer.plan.plan import Placement, align


def plan_arena(lifetimes: list[Lifetime], inplace_pairs: list[tuple[str, str]]):
    by_key = {l.key: l for l in lifetimes}
    root: dict[str, str] = {}
    inplace: dict[str, str] = {}
    for out, inp in inplace_pairs:
        if out in by_key and inp in by_key and out not in root:
            root[out] = root.get(inp, inp)
            inplace[out] = inp
    groups: dict[str, list[Lifetime]] = {}
    for life in lifetimes:
        groups.setdefault(root.get(life.key, life.key), []).append(life)

    spans = []  # (size, first, last, group root)
    for key, members in groups.items():
        spans.append((max(m.nbytes for m in members), min(m.first for m in members),
                      max(m.last for m in members), key))
    spans.sort(key=lambda s: (-s[0], s[1], s[3]))

    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first, last)
    offsets: dict[str, int] = {}
    for size, first, last, key in spans:
        offset = _lowest_free_offset(placed, size, first, last)
        offsets[key] = offset
        placed.append((offset, size, first, last))
    total = max((align(o + s) for o, s, _, _ in placed), default=0)
    placements = {l.key: Placement(0, offsets[root.get(l.key, l.key)]) for l in lifetimes}
    return ([total] if placements else []), placements, inplace


def _lowest_free_offset(placed, size: int, first: int, last: int) -> int:
    """Lowest aligned offset where ``size`` bytes fit between tensors alive during [first, last]."""
    neighbours = sorted((o, s) for o, s, f, l in placed if f <= last and first <= l)
    offset = 0
    for o, s in neighbours:
        if offset + size <= o:
            break
        offset = max(offset, align(o + s))
    return offset
