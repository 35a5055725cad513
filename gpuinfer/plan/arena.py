"""``arena`` (ours): one block; each tensor an offset so that tensors alive together never overlap.

Placement is greedy, as TFLite's arena planner does: tensors are taken in some order and each
goes to the lowest aligned offset that overlaps no already-placed tensor alive at the same time.
Tensors that may share bytes (``Sharing``: an elementwise op writing over an input that dies
at that step; a Concat input living inside the Concat's output) are first joined into groups
placed as one.  No single order is best on every graph, so a few orders are tried — largest
first (TFLite's rule), largest footprint (bytes x steps) first, earliest first — each with and
without each kind of sharing, and the smallest block wins.  Planning takes milliseconds; the
block is reused on every run.
"""
from __future__ import annotations

import random

from gpuinfer.plan.lifetimes import Lifetime
from gpuinfer.plan.modes import MemoryMode, register_mode
from gpuinfer.plan.plan import ALIGNMENT, Placement, align
from gpuinfer.plan.sharing import Groups, Sharing

# (size, first, last, rank) -> sort key
ORDERS = {
    "largest_first": lambda s: (-s[0], s[1], s[3]),
    "largest_footprint_first": lambda s: (-s[0] * (s[2] - s[1] + 1), -s[0], s[1], s[3]),
    "earliest_first": lambda s: (s[1], -s[0], s[3]),
}


def plan_arena(lifetimes: list[Lifetime], sharing: Sharing):
    """(block sizes, placements, in-place map, concat map) of the smallest arena found."""
    best = None
    for inplace in ([*sharing.inplace], []) if sharing.inplace else ([],):
        for concat in ([*sharing.concat], []) if sharing.concat else ([],):
            groups, kept_inplace, kept_concat = _group(lifetimes, inplace, concat)
            spans, rel = _group_spans(lifetimes, groups)
            for order in ORDERS.values():
                ordered = sorted(spans, key=order)
                offsets, total = place_spans(ordered)
                if best is None or total < best[0]:
                    best = (total, offsets, rel, kept_inplace, kept_concat, ordered)
    total, offsets, rel, inplace, concat, ordered = best
    total, offsets = _improve(ordered, total, offsets)
    placements = {l.key: Placement(0, offsets[rel[l.key][0]] + rel[l.key][1]) for l in lifetimes}
    return ([total] if placements else []), placements, inplace, concat


def _group(lifetimes, inplace_pairs, concat_aliases):
    """Join tensors that share bytes; returns the groups and the sharings actually used."""
    keys = {l.key for l in lifetimes}
    groups = Groups()
    inplace: dict = {}  # output key -> input key
    concat: dict = {}  # input key -> (output key, offset)
    for out, inp in inplace_pairs:
        if out in keys and inp in keys and out not in inplace and groups.join(out, inp, 0):
            inplace[out] = inp
    for inp, out, rel in concat_aliases:
        if inp in keys and out in keys and groups.join(inp, out, rel):
            concat[inp] = (out, rel)
    return groups, inplace, concat


def _group_spans(lifetimes, groups: Groups):
    """One (size, first, last, rank) span per group, and each tensor's (rank, offset in the span).

    A group's rank is where its first tensor comes in ``lifetimes`` (run order): ties between
    spans are broken by it, not by the tensors' names, so a model's plan does not depend on how
    its exporter named its values."""
    members: dict = {}
    for life in lifetimes:
        root, off = groups.find(life.key)
        members.setdefault(root, []).append((life, off))
    spans, rel = [], {}
    for rank, items in enumerate(members.values()):
        base = min(off for _, off in items)
        size = max(off - base + life.nbytes for life, off in items)
        spans.append((size, min(l.first for l, _ in items), max(l.last for l, _ in items), rank))
        for life, off in items:
            rel[life.key] = (rank, off - base)
    return spans, rel


SEARCH_SWAPS = 1000  # bounded, seeded: the same graph always gets the same plan


def _improve(ordered, total: int, offsets: dict):
    """Local search over the placement order (swap two, keep if no worse) until the arena reaches
    the busiest step's size or the swap budget runs out.  Greedy orders can leave gaps that a
    reordering closes (DenseNet-121: 8.7% over the bound before, at the bound after)."""
    target = _busiest_step(ordered)
    if total <= target or len(ordered) < 2:
        return total, offsets
    rng = random.Random(len(ordered))
    current = list(ordered)
    for _ in range(SEARCH_SWAPS):
        i, j = rng.randrange(len(current)), rng.randrange(len(current))
        current[i], current[j] = current[j], current[i]
        cand_offsets, cand_total = place_spans(current)
        if cand_total <= total:
            total, offsets = cand_total, cand_offsets
            if total <= target:
                break
        else:
            current[i], current[j] = current[j], current[i]
    return total, offsets


def _busiest_step(spans) -> int:
    """Aligned bytes alive at the busiest step: no placement of these spans can be smaller."""
    events: dict[int, int] = {}
    for size, first, last, _ in spans:
        events[first] = events.get(first, 0) + align(size)
        events[last + 1] = events.get(last + 1, 0) - align(size)
    alive = peak = 0
    for step in sorted(events):
        alive += events[step]
        peak = max(peak, alive)
    return peak


def place_spans(spans, alignment: int = ALIGNMENT):
    """Greedy placement of (size, first, last, rank) spans in the order given: (offsets by rank, block size)."""
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first, last)
    offsets: dict[int, int] = {}
    for size, first, last, rank in spans:
        offset = _lowest_free_offset(placed, size, first, last, alignment)
        offsets[rank] = offset
        placed.append((offset, size, first, last))
    return offsets, max((align(o + s, alignment) for o, s, _, _ in placed), default=0)


def _lowest_free_offset(placed, size: int, first: int, last: int, alignment: int) -> int:
    """Lowest aligned offset where ``size`` bytes fit between tensors alive during [first, last]."""
    neighbours = sorted((o, s) for o, s, f, l in placed if f <= last and first <= l)
    offset = 0
    for o, s in neighbours:
        if offset + size <= o:
            break
        offset = max(offset, align(o + s, alignment))
    return offset


# One block for every signature (and every session of a Workspace), outputs placed in it, in-place
# and Concat sharing offered.  As fast as per_tensor where measured (README's u2netp table), but
# ``auto`` tries it second: per_tensor needs no placement search and hands out intermediates.
ARENA = register_mode(MemoryMode("arena", plan_arena, speed_rank=1, places_outputs=True, shares_bytes=True,
                                 shares_blocks=True, fixed_addresses=True, spends_slack=True))
