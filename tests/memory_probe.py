"""What tracemalloc sees of a steady-state run on the numpy device, beside the pool's own count.

Shared by tests/test_memory_discipline.py and bench/memory_discipline.py.  tracemalloc starts
after a warm-up run, so it sees only what the counted run allocates; the pool's buffers held from
earlier runs (``held_bytes_after_run``) are added to that.  Outputs the session hands over as
copies (of arena views and kept buffers, made at the end of the run) are not in the pool's count:
their bytes (``copied_output_bytes``) are added to the counted side, so ``traced_ratio`` compares
like with like; outputs the run made fresh are in both.  ``bound`` is the report's lower bound
(every buffer the run made, scratch included, at its real size); ``tensor_bound`` the same without
scratch: the tensors-only bound issue 15 holds ``arena`` to.
"""
from __future__ import annotations

import gc
import tracemalloc

import gpuinfer
from gpuinfer.runtime.actual_bound import run_lower_bound
from gpuinfer.runtime.pool import nbytes_of
from gpuinfer.values import VALUE


def steady_state_memory(source, feeds: dict, mode: str) -> dict:
    """Counted peak, lower bound and tracemalloc's view of one steady-state run on the CPU."""
    sess = gpuinfer.InferenceSession(source, device="cpu", memory_mode=mode)
    sess.run(None, feeds)  # warm-up: plans, the arena, kept buffers
    held = sess.memory_report().held_bytes_after_run
    gc.collect()
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    copied = _count_copied_outputs(sess)
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        sess.run(None, feeds)
        grown = tracemalloc.get_traced_memory()[1] - before
    finally:
        if started:
            tracemalloc.stop()
    report = sess.memory_report()
    traced = held + grown
    return {"counted": report.peak_bytes, "bound": report.lower_bound_bytes, "tensor_bound": tensor_bound(sess),
            "traced": traced, "copied_output_bytes": copied[0],
            "traced_ratio": traced / max(report.peak_bytes + copied[0], 1)}


def _count_copied_outputs(sess) -> list:
    """A one-element list that gets the bytes of outputs handed over as copies in later runs."""
    copied = [0]
    handed_over = sess._output

    def counting(name, env, owned):
        value = handed_over(name, env, owned)
        if name not in env or value is not env[name]:
            copied[0] += getattr(value, "nbytes", 0)
        return value

    sess._output = counting
    return copied


def tensor_bound(sess) -> int:
    """The lower bound of the last run counting graph values only (no scratch, no trace blocks)."""
    _, plan, seen, inner_peaks, _ = sess._last_run
    sizes = {key: nbytes_of(shape, dtype) for key, (shape, dtype) in seen.items() if key.kind == VALUE}
    return run_lower_bound(sess._graph, plan, sizes, inner_peaks)
