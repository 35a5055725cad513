"""Independent samplers of a run's memory peak, to check the pool's own count.

On the CPU, ``tracemalloc`` sees every numpy data buffer (numpy reports them to it), so its peak
during a run, over the baseline taken when the session became ready, is what the run really
cost — including anything a kernel allocated behind the pool's back.
"""
from __future__ import annotations

import tracemalloc
from typing import Optional


class TracemallocSampler:
    """Starts ``tracemalloc`` (if nobody has) when the session is ready and reads peaks per run."""

    name = "tracemalloc"

    def __init__(self) -> None:
        self._started_here = False
        if not tracemalloc.is_tracing():
            tracemalloc.start()
            self._started_here = True
        self.baseline = tracemalloc.get_traced_memory()[0]

    def begin_run(self) -> None:
        tracemalloc.reset_peak()

    def end_run(self) -> Optional[int]:
        if not tracemalloc.is_tracing():
            return None
        return max(0, tracemalloc.get_traced_memory()[1] - self.baseline)

    def close(self) -> None:
        if self._started_here and tracemalloc.is_tracing():
            tracemalloc.stop()
            self._started_here = False
