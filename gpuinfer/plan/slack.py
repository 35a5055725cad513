"""Spare scratch: bytes a step may add to its scratch without raising the plan's peak.

Some kernels trade scratch for speed: Conv builds its im2col columns a band of rows at a time and
works a depthwise conv a block of channels at a time, and every band or block is a Python pass
(nine tap copies and a product, or an einsum).  Their scratch functions ask for the least that
runs well, because at the busiest step of a plan that scratch is part of the peak.  But most steps
are not the busiest: at step ``s`` the tensors alive take ``live(s)`` bytes against the plan's
``bound`` (its busiest step, ``lower_bound``), so the step's kernel may take ``bound - live(s)``
bytes more and no step gets busier than the busiest.  A mode that ``spends_slack`` (``arena``;
``reduce``, whose peak is the busiest step itself) plans once with the least scratch, hands each such step its slack, plans again, and keeps the wider plan
only if its blocks are no bigger (the placement is a heuristic: wider scratch could in principle
land where it grows the block).

A mode that ``shares_scratch`` (``per_tensor`` and ``reuse``, which keep their tensors' buffers,
so the busiest step's room is not free) has another kind of room: every step's scratch shares one
block, as big as the most one step asks, so the others may widen theirs to that size
(``scratch_room``).

Wider scratch never changes a result bit (every mode must give the same bytes): im2col's wider
bands copy more columns at once but multiply them in the narrow bands' products, and depthwise
blocks sum their taps alike however many channels they hold (ops/conv.py, ops/conv_depthwise.py).

Measured on the 2-core machine (arena, median of 9 runs, best of 3 processes each, against the
tree before): PP-OCR cls 9.0 -> 5.1 ms, light/shufflenet 17.9 -> 9.7, PP-OCRv4 rec 37.3 -> 31.2;
every shared model's peak the same to the byte.
"""
from __future__ import annotations

from gpuinfer.graph.ir import Graph
from gpuinfer.plan.lifetimes import Lifetime, live_bytes, takes_slack
from gpuinfer.plan.shared_scratch import scratch_span, shared_scratch
from gpuinfer.plan.plan import ALIGNMENT

# Slack under this is not worth a different geometry (a band of a few more pixels).
MIN_SLACK_BYTES = 16 << 10


def step_slack(graph: Graph, records: list[Lifetime], device_kind: str) -> dict[int, int]:
    """step -> spare bytes, for the steps whose scratch function can spend them (none on a GPU:
    its tiles are whole tensors already)."""
    if device_kind != "cpu" or not records:
        return {}
    live = live_bytes(records, len(graph.nodes))
    bound = max(live)  # lower_bound's figure
    slack = {}
    for node in graph.nodes:
        spare = bound - live[node.step]
        if spare >= MIN_SLACK_BYTES and takes_slack(node, device_kind):
            slack[node.step] = spare
    return slack


def scratch_room(graph: Graph, records: list[Lifetime], device_kind: str) -> dict[int, int]:
    """step -> bytes its scratch may grow by and still fit the shared scratch block (as big as the
    most one step's scratch takes), for the steps whose scratch function can spend them; an
    alignment's worth a buffer is held back, so widened buffers laid side by side still fit."""
    if device_kind != "cpu" or not records:
        return {}
    scratch = shared_scratch(records)
    if not scratch:  # a block per buffer: no room
        return {}
    most = max(scratch_span(lives) for lives in scratch.values())
    room = {}
    for node in graph.nodes:
        lives = scratch.get(node.step, [])
        spare = most - scratch_span(lives) - ALIGNMENT * (len(lives) + 1)
        if spare >= MIN_SLACK_BYTES and takes_slack(node, device_kind):
            room[node.step] = spare
    return room
