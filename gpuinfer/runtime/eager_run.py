"""One eager run of a session: plan, check the ceiling, execute, hand outputs over, record.

Kept apart from the session so the session reads as what it composes; this is the run itself, in
order: the signature's plan (planned now if new), the ceiling check before anything is allocated,
the pool over the plan's blocks, the executor (straight-line runner or general loop), deferred
device checks, outputs handed to the caller, a plan finished from what the run saw (modes that
plan ahead), and the fields of the memory report.  CUDA graph capture (runtime/cuda_graph.py)
runs its warm-up and sizing runs through here too.
"""
from __future__ import annotations

import time
from typing import Any, Optional

from gpuinfer.errors import MemoryLimitError
from gpuinfer.graph.ir import Graph
from gpuinfer.report.memory_report import MemoryReport, StepRecord
from gpuinfer.runtime.actual_bound import run_lower_bound
from gpuinfer.runtime.deferred import verify_deferred
from gpuinfer.runtime.outputs import to_device
from gpuinfer.runtime.pool import RunPool, nbytes_of
from gpuinfer.runtime.timeline import Timeline
from gpuinfer.values import value_key


def eager_run(s: Any, feeds: dict, hold: frozenset) -> tuple[dict, set]:
    """(values by name, names of fresh arrays the caller may take as they are) of one run of session ``s``."""
    plan, blocks = s._plan_for(feeds)
    s._allocator.limit = s._memory_limit  # a workspace's sessions share the allocator
    ceiling = s._ceiling.check(s.memory_mode, plan, blocks, s._plans.shared)
    pool = RunPool(s._allocator, plan, blocks, plan.traces if s._mode.plans_ahead else None)
    steps = Timeline()  # (node, live bytes) per step; turned into the report's timeline only when asked for
    trace, sampler = s._observers.trace, s._observers.sampler
    stamps: Optional[list] = [] if trace is not None else None  # step times, when tracing
    s._allocator.start_run()
    held_before = s._allocator.in_use
    if sampler:
        sampler.begin_run(held_before)
    if s._device_hook is not None:
        s._device_hook.start_run()
    started = time.perf_counter()
    try:  # feeds go up inside the hook's scope, so the run's peak counts them
        env = _execute(s, {k: to_device(s._backend, v) for k, v in feeds.items()}, pool, hold | s._keep, steps, stamps)
        verify_deferred(pool.deferred, s._backend)  # device-side index checks: one read
        s._backend.synchronize()
    finally:
        seconds = time.perf_counter() - started
        sampled = sampler.end_run() if sampler else None  # the thread always stops
    returned = set(s._graph.outputs) | s._keep | hold
    owned = {name for name in returned if value_key(name) in pool.dynamic}  # fresh arrays, not plan views
    for name in returned:
        pool.hand_over(value_key(name))
    counter = s._device_hook or s._allocator  # on CUDA the hook sees every device allocation
    first_peak = plan.first_run_peak_bytes
    traced = pool.nested is not None and pool.nested.changed  # a body's block to place (or drop)
    if ((pool.unforeseen and not plan.from_run) or traced) and s._mode.plans_ahead:
        first_peak = s._plans.replan_from_run(feeds, plan, pool, counter.peak, lambda new, replaced: _fits(s, new, replaced))
    fields = dict(
        mode=s.memory_mode, device=s.device, peak_bytes=counter.peak, planned_bytes=plan.planned_bytes,
        sampled_peak_bytes=sampled, sampler=sampler.name if sampler else "off (sample_memory=False)",
        allocations=counter.allocations, alloc_seconds=counter.alloc_seconds, dynamic_bytes=pool.dynamic_bytes,
        held_bytes_after_run=s._allocator.in_use, run_seconds=seconds, inplace_count=len(plan.inplace),
        first_run_traced=first_peak is not None, first_run_peak_bytes=first_peak, memory_ceiling=ceiling[0],
        memory_ceiling_bytes=ceiling[1], auto_choice=s.auto_choice)
    s._last_run = (fields, plan, pool.seen, pool.inner_peaks, steps)
    if trace is not None:
        trace.add_run(started, started + seconds, steps, stamps, held_before, s._allocator.in_use,
                      {"mode": s.memory_mode, "device": s.device, "peak_bytes": counter.peak})
    if s._workspace is not None:
        s._workspace.ran(counter.peak)
    s._report = None
    return env, owned


def _fits(s: Any, new: Any, replaced: Any) -> bool:
    """Whether a plan finished from a run fits the limit the run kept to (blocks it replaces given back)."""
    shared = s._plans.shared
    return s._memory_limit is None or s._ceiling.run_need(new, shared, shared, replaced) <= s._memory_limit


def _execute(s: Any, feeds: dict, pool: RunPool, hold: frozenset, steps: Timeline, stamps: Optional[list]) -> dict:
    """The executor's run.  One that fails gives back what it held on the dynamic path (the pool's
    count stays true for the next run); one the allocator stopped at ``memory_limit_bytes``
    (tensors its plan could not foresee took it over) says where."""
    try:
        return s._executor.run(feeds, pool, hold, steps, stamps)
    except BaseException as exc:
        for key in list(pool.dynamic):
            pool.release(key)
        if pool.nested is not None:
            pool.nested.abandon()
        if not isinstance(exc, MemoryLimitError) or s._memory_limit is None:
            raise
        raise s._ceiling.stopped(s.memory_mode, exc, pool.plan, len(steps)) from None


def run_report(graph: Graph, last_run: tuple, extra: dict) -> MemoryReport:
    """The ``MemoryReport`` of a recorded run (built when asked for: the lower bound and timeline cost time)."""
    fields, plan, seen, inner_peaks, steps = last_run
    sizes = {key: nbytes_of(shape, dtype) for key, (shape, dtype) in seen.items()}
    return MemoryReport(**fields, **extra, lower_bound_bytes=run_lower_bound(graph, plan, sizes, inner_peaks),
                        timeline=[StepRecord(node.step, node.op_type, node.name, live) for node, live in steps])
