"""Plain-text tables for people: sizes in MiB (exact bytes beside them where a check needs them).

Written without rich so the output is the same whether or not the optional extra is installed,
and stable enough for tests and scripts to read.
"""
from __future__ import annotations

from typing import Optional, Sequence

from gpuinfer.cli.measure import ModeResult

MIB = 1024 * 1024


def mib(nbytes: Optional[int]) -> str:
    """``5453036`` -> ``"5.20 MiB"``; None -> ``"-"``."""
    return "-" if nbytes is None else f"{nbytes / MIB:.2f} MiB"


def ms(seconds: Optional[float], digits: int = 1) -> str:
    """Seconds as milliseconds, e.g. ``"52.8 ms"``; None -> ``"-"``."""
    return "-" if seconds is None else f"{seconds * 1e3:.{digits}f} ms"


def ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    """value / base, or None when either is missing or base is zero."""
    if value is None or not base:
        return None
    return value / base


def times(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}x"


def later_runs(repeat: int) -> str:
    """The runs a median is taken over: ``"run 2"`` or ``"runs 2-5"``."""
    return "run 2" if repeat == 2 else f"runs 2-{repeat}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "",
                 align: Optional[str] = None) -> str:
    """Columns padded to their widest cell; ``align`` has an ``l`` or ``r`` per column
    (default: the first left, the rest right)."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]
    align = align or "l" + "r" * (len(widths) - 1)

    def line(cells: Sequence[str]) -> str:
        parts = [str(c).ljust(w) if a == "l" else str(c).rjust(w) for c, w, a in zip(cells, widths, align)]
        return (indent + "  ".join(parts)).rstrip()

    rule = indent + "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule] + [line(r) for r in rows])


def memory_report_text(result: ModeResult, top: int = 10) -> str:
    """The ``--memory-report`` block of one mode: peaks, bound, plan, allocator, latency, busiest steps."""
    r = result.report
    runs = len(result.seconds)
    sampled_note = (f"{r.sampled_peak_bytes:,} bytes, {r.sampler}" if r.sampled_peak_bytes is not None
                    else f"not sampled: {r.sampler}")
    median_note = f"median of {later_runs(runs)}" if runs > 1 else "needs --repeat 2 or more"
    rows = [
        ("peak, counted", mib(r.peak_bytes), f"{r.peak_bytes:,} bytes"),
        ("peak, sampled", mib(r.sampled_peak_bytes), sampled_note),
        ("lower bound", mib(r.lower_bound_bytes), f"{r.lower_bound_bytes:,} bytes"),
        ("planned", mib(r.planned_bytes), f"{r.planned_bytes:,} bytes"),
        ("dynamic (unplanned)", mib(r.dynamic_bytes), f"{r.dynamic_bytes:,} bytes"),
        ("held after run", mib(r.held_bytes_after_run), f"{r.held_bytes_after_run:,} bytes"),
        ("allocations", str(r.allocations), f"{ms(r.alloc_seconds, 3)} in the allocator"),
        ("in-place ops", str(r.inplace_count), ""),
        ("latency, first run", ms(result.first_seconds), "run 1"),
        ("latency, median", ms(result.median_seconds), median_note),
    ]
    if r.graph_pool_bytes:  # CUDA graphs: their private pools and input buffers, held between runs
        rows.insert(6, ("graph pool", mib(r.graph_pool_bytes), f"{r.graph_pool_bytes:,} bytes; {r.cuda_graph}"))
    if r.first_run_traced:  # data-dependent shapes: the plan was finished by tracing run 1
        rows.insert(1, ("peak, first run", mib(r.first_run_peak_bytes),
                        f"{r.first_run_peak_bytes:,} bytes; run 1 traced sizes the plan could not know"))
    head = f"memory report: mode {r.mode} on {r.device} (figures from the last of {runs} run(s))"
    body = format_table(("", "", ""), rows, indent="  ", align="lrl").splitlines()[2:]  # no header row
    steps = [(str(i), str(s.step), s.op, s.node, mib(s.live_bytes), f"{s.live_bytes:,}")
             for i, s in enumerate(r.top_steps(top), start=1)]
    busiest = format_table(("#", "step", "op", "node", "live", "live bytes"), steps, indent="  ",
                           align="rrllrr")
    return "\n".join([head, *body, "", f"  the {len(steps)} steps with the most bytes alive:", busiest])


def compare_table(results: list[ModeResult]) -> str:
    """One row per mode: peaks, ratios to per_tensor and to the lower bound, latencies."""
    base = next((r for r in results if r.mode == "per_tensor"), None)
    rows = []
    for res in results:
        rep = res.report
        rows.append((
            res.mode, mib(rep.peak_bytes), mib(rep.sampled_peak_bytes),
            times(ratio(rep.peak_bytes, base.report.peak_bytes if base else None)),
            times(ratio(rep.peak_bytes, rep.lower_bound_bytes)),
            ms(res.first_seconds), ms(res.median_seconds),
            times(ratio(res.typical_seconds, base.typical_seconds if base else None)),
        ))
    headers = ("mode", "peak counted", "peak sampled", "vs per_tensor", "vs lower bound",
               "first run", "median", "latency vs per_tensor")
    return format_table(headers, rows)


def recommendation_text(results: list[ModeResult], picks: dict[str, str]) -> str:
    by_mode = {r.mode: r for r in results}
    lean, fast = by_mode[picks["least_memory"]], by_mode[picks["fastest"]]
    speed = "median" if fast.median_seconds is not None else "first run"
    return "\n".join([
        f"least memory: {lean.mode} ({mib(lean.report.peak_bytes)} counted peak)",
        f"fastest:      {fast.mode} ({ms(fast.typical_seconds)} {speed})",
    ])
