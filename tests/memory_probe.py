"""What tracemalloc sees of a steady-state run on the numpy device, beside the pool's own count.

Shared by tests/test_memory_discipline.py and bench/memory_discipline.py.  tracemalloc starts
after a warm-up run, so it sees only what the counted run allocates; the pool's buffers held from
earlier runs (``held_bytes_after_run``) are added to that.  Outputs the session hands over as
copies (of arena views and kept buffers, made at the end of the run) are not in the pool's count:
their bytes (``copied_output_bytes``) are added to the counted side, so ``traced_ratio`` compares
like with like; outputs the run made fresh are in both.  ``bound`` is the report's lower bound
(every buffer the run made, scratch included, at its real size); ``tensor_bound`` the same without
scratch: the tensors-only bound issue 15 holds ``arena`` to.

Two views of the run.  ``traced`` is everything tracemalloc sees: numpy's data buffers and what
else the run allocates: the pool's per-run record (``seen``: ~40 bytes a tensor, the previous
run's kept for its report), the run's environment, numpy's internal caches and free lists, and
numpy's ufunc buffers, allocated and freed within one call (numpy 2 buffers every operand of a
ufunc that broadcasts or strides; a run holds them to 1024 elements, runtime/executor.py).  The
interpreter's frames are not among them (Python 3.11 keeps them on its own stack).  On models under
~5 MiB that is 12-60 KiB at the peak (silero's whole run is 12 KB of tensors), though no tensor data.  ``traced_numpy`` counts numpy's data buffers only:
numpy reports every array buffer to tracemalloc in its own domain (``NUMPY_DOMAIN``, numpy's
``NPY_TRACE_DOMAIN``), and a second steady-state run samples that domain's live bytes after every
C call and Python function return (``sys.setprofile``: a temporary a numpy call leaves alive is
seen at the next one at the latest; the profiler's own frames are Python objects, outside the
domain; a sample is skipped where tracemalloc's total, which holds numpy's bytes, has not moved or
is below the most seen).  The 2%
target is held on ``traced_numpy_ratio``: the pool must count every byte of tensor data; Python's
object overhead is reported (``python_overhead``), not hidden.  The sampled run is slow (u2netp:
~2 min), so it runs where the counted peak is at most ``SAMPLED_MAX_BYTES``; above, Python's
0.1-0.2 MB is under 0.5% and ``traced_numpy`` is the total (``python_overhead`` 0).
"""
from __future__ import annotations

import gc
import sys
import tracemalloc

import gpuinfer
from gpuinfer.runtime.actual_bound import run_lower_bound
from gpuinfer.runtime.pool import nbytes_of
from gpuinfer.values import VALUE

NUMPY_DOMAIN = 389047  # numpy's NPY_TRACE_DOMAIN: the tracemalloc domain of its data buffers
SAMPLED_MAX_BYTES = 16 << 20  # counted peaks up to this get the sampled numpy-only view


def steady_state_memory(source, feeds: dict, mode: str, numpy_peak: bool = True) -> dict:
    """Counted peak, lower bound and tracemalloc's view of one steady-state run on the CPU
    (``numpy_peak=False``: without the slow sampled run, ``traced_numpy`` is then the total)."""
    sess = gpuinfer.InferenceSession(source, device="cpu", memory_mode=mode)
    for _ in range(2):  # warm-up: plans (learnt sizes re-plan after the first run), the arena, kept buffers
        sess.run(None, feeds)
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
    copied_once = copied[0]  # one run's copies (the sampled run adds its own)
    report = sess.memory_report()
    # the sampled run costs minutes on the big models (u2netp: ~2 min), where tracemalloc's total is
    # within 0.5% of the count anyway: sampled where Python's objects can matter, else the total
    sampled = numpy_peak and report.peak_bytes <= SAMPLED_MAX_BYTES
    numpy_grown = numpy_data_peak(lambda: sess.run(None, feeds)) if sampled else grown
    report = sess.memory_report()
    traced = held + grown
    counted = report.peak_bytes + copied_once
    return {"counted": report.peak_bytes, "bound": report.lower_bound_bytes, "tensor_bound": tensor_bound(sess),
            "traced": traced, "copied_output_bytes": copied_once, "traced_ratio": traced / max(counted, 1),
            "traced_numpy": held + numpy_grown, "traced_numpy_ratio": (held + numpy_grown) / max(counted, 1),
            "python_overhead": max(0, grown - numpy_grown)}


def numpy_data_peak(run) -> int:
    """The most bytes of numpy data buffers alive at once during ``run()`` beyond those alive before
    it, sampled after every C call (see the module's docstring)."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    base = _numpy_bytes()
    most = [base]
    last = [-1]

    def sample(frame, event, arg):
        if event not in ("c_return", "c_exception", "return"):
            return
        now = tracemalloc.get_traced_memory()[0]  # numpy's bytes are part of it: when it has not
        if now != last[0] and now > most[0]:      # moved, or is below the most seen, skip the snapshot
            last[0] = now
            most[0] = max(most[0], _numpy_bytes())

    gc.collect()
    sys.setprofile(sample)
    try:
        run()
    finally:
        sys.setprofile(None)
        if started:
            tracemalloc.stop()
    return most[0] - base


def _numpy_bytes() -> int:
    domain = tracemalloc.DomainFilter(True, NUMPY_DOMAIN)
    return sum(t.size for t in tracemalloc.take_snapshot().filter_traces([domain]).traces)


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
