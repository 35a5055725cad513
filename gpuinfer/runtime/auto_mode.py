"""``memory_mode="auto"``: the fastest registered mode whose plan fits the ceiling.

Modes are tried in their ``speed_rank`` order: ``per_tensor``, ``arena``, ``reuse``, ``reduce``.
per_tensor comes first although arena measured as fast on the CPU (README's u2netp table, within
noise): it needs no placement search, writes each tensor where it stays, and hands out every
intermediate, so with room to spare "auto" behaves as the default mode does.  arena next: as lean
as any mode (often under the tensors-only bound) and as fast.  reuse keeps fewer, larger buffers
than per_tensor but still allocates outputs per run; reduce allocates every tensor per run, the
slowest, so it is the last resort.  The choice is made once, at the first signature a session
plans (a run or ``plan_memory``), and kept: a session's mode does not change from run to run.
"""
from __future__ import annotations

import logging
from typing import Any

from gpuinfer.errors import MemoryLimitError
from gpuinfer.graph.ir import Graph
from gpuinfer.plan import MemoryMode, by_speed, make_plan
from gpuinfer.runtime.plan_cache import feed_types

log = logging.getLogger("gpuinfer")


def choose_mode(graph: Graph, feeds: dict, keep: frozenset, device_kind: str, ceiling: Any) -> tuple[MemoryMode, str]:
    """(the mode, a sentence saying why) for the signature of ``feeds`` under ``ceiling`` (a
    ``MemoryCeiling``: ``memory_limit_bytes``, else the device's available memory)."""
    types = feed_types(graph, feeds)
    what, limit, _ = ceiling.ceiling()
    needs: dict[str, int] = {}
    partial = False
    for mode in by_speed():
        plan = make_plan(graph, types, mode, keep, device_kind=device_kind)
        partial = ceiling.partial(plan)
        need = needs[mode.name] = plan.need_bytes
        if limit is None or need <= limit:
            tried = ", ".join(f"{m} {n}" for m, n in needs.items())
            why = (f"memory_mode='auto' chose {mode.name!r}: the fastest mode whose plan fits the {what}"
                   f" ({limit} bytes)" if limit is not None else
                   f"memory_mode='auto' chose {mode.name!r}: the fastest mode (no ceiling known)")
            why += f"; needs tried, fastest first: {tried}"
            log.info("gpuinfer: %s", why)
            return mode, why
    listed = ", ".join(f"{m} {n}" for m, n in needs.items())
    raise MemoryLimitError(f"memory_mode='auto': no mode's plan fits the {what} ({limit} bytes); each mode "
                           f"needs{' at least' if partial else ''}: {listed}")
