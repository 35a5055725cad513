"""Run one memory mode N times and keep what the tables need; compare modes' outputs.

Measurement order matters to the sampled peak: the feeds exist before the session (whose
tracemalloc baseline is taken when it becomes ready), outputs of a run are dropped before the
next one, and earlier sessions are collected before a new one is made.  The memory figures are
those of the last run (the steady state: kept buffers and plans already exist).
"""
from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from gpuinfer import InferenceSession, MemoryReport


@dataclass
class ModeResult:
    """One mode's measurements: its last run's report, every run's latency, its last outputs."""

    mode: str
    device: str
    report: MemoryReport
    seconds: list[float]  # wall time of each session.run call, run 1 first
    output_names: list[str]
    outputs: list[np.ndarray]

    @property
    def first_seconds(self) -> float:
        return self.seconds[0]

    @property
    def median_seconds(self) -> Optional[float]:
        """Median over runs 2..N (None with a single run: run 1 includes the first-run set-up)."""
        rest = self.seconds[1:]
        return statistics.median(rest) if rest else None

    @property
    def typical_seconds(self) -> float:
        """Median when there is one, else the first run: what speed comparisons use."""
        median = self.median_seconds
        return self.first_seconds if median is None else median


def measure(model: Path, mode: str, device: str, feeds: dict, repeat: int, sample: bool,
            on_run: Optional[Callable[[str], None]] = None, threads: Optional[int] = None,
            trace: Optional[str] = None, memory_limit: Optional[int] = None) -> ModeResult:
    """A fresh session in ``mode`` run ``repeat`` times on ``feeds`` (``threads``: BLAS threads;
    ``trace``: a Chrome trace file of every run, written once the runs are over;
    ``memory_limit``: the session's ``memory_limit_bytes``)."""
    gc.collect()  # earlier sessions must not be freed during this one's runs (sampler baseline)
    session = InferenceSession(model, device=device, memory_mode=mode, sample_memory=sample,
                               intra_op_threads=threads, trace=trace, memory_limit_bytes=memory_limit)
    names = [o.name for o in session.get_outputs()]
    seconds = []
    outputs: list = []
    for _ in range(repeat):
        outputs = []  # drop the previous run's outputs before the next run starts
        started = time.perf_counter()
        outputs = session.run(None, feeds)
        seconds.append(time.perf_counter() - started)
        if on_run is not None:
            on_run(mode)
    report = session.memory_report()
    session.end_profiling()
    result = ModeResult(mode, session.device, report, seconds, names, outputs)
    del session
    gc.collect()
    return result


def disagreements(reference: ModeResult, other: ModeResult, bitwise: bool) -> list[str]:
    """Where ``other``'s outputs differ from ``reference``'s; empty when they agree.

    ``bitwise`` (the CPU promise): same dtype, shape and bytes, NaNs included.  Otherwise (CUDA,
    where kernels may reassociate sums) ``np.allclose`` with rtol 1e-5 and atol 1e-6.
    """
    found = []
    for name, want, got in zip(reference.output_names, reference.outputs, other.outputs):
        if want.shape != got.shape or want.dtype != got.dtype:
            found.append(f"output {name!r}: {other.mode} gives {got.dtype}{list(got.shape)}, "
                         f"{reference.mode} gives {want.dtype}{list(want.shape)}")
        elif bitwise and want.tobytes() != got.tobytes():
            found.append(f"output {name!r}: {other.mode} differs from {reference.mode} "
                         f"({_diff_text(want, got)})")
        elif not bitwise and not np.allclose(want, got, rtol=1e-5, atol=1e-6, equal_nan=True):
            found.append(f"output {name!r}: {other.mode} differs from {reference.mode} beyond "
                         f"rtol 1e-5, atol 1e-6 ({_diff_text(want, got)})")
    return found


def _diff_text(want: np.ndarray, got: np.ndarray) -> str:
    unequal = int(np.count_nonzero(~((want == got) | (_isnan(want) & _isnan(got)))))
    if want.dtype.kind in "fc":
        with np.errstate(invalid="ignore"):
            largest = float(np.nanmax(np.abs(want.astype(np.float64) - got.astype(np.float64)), initial=0.0))
        return f"{unequal} of {want.size} elements differ, largest difference {largest:.3g}"
    return f"{unequal} of {want.size} elements differ"


def _isnan(a: np.ndarray) -> np.ndarray:
    return np.isnan(a) if a.dtype.kind in "fc" else np.zeros(a.shape, bool)


def recommend(results: list[ModeResult]) -> dict[str, str]:
    """The mode with the least counted peak (ties: faster) and the fastest (ties: leaner)."""
    leanest = min(results, key=lambda r: (r.report.peak_bytes, r.typical_seconds))
    fastest = min(results, key=lambda r: (r.typical_seconds, r.report.peak_bytes))
    return {"least_memory": leanest.mode, "fastest": fastest.mode}
