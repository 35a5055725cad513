"""Independent samplers of a run's memory peak, to check the pool's own count.

On the CPU, ``tracemalloc`` sees every numpy data buffer (numpy reports them to it), so its peak
during a run, over the baseline taken when the session became ready, is what the run really
cost — including anything a kernel allocated behind the pool's back.
"""
from __future__ import annotations

import tracemalloc
from typing import Optional


class TracemallocSampler:
    """Starts ``tracemalloc`` (if nobody has) when the session is ready and reads peaks per run.

    Samplers count their users: tracemalloc slows every Python allocation, so the one started
    here stops when the last sampling session closes (or is collected).
    """

    name = "tracemalloc"
    _users = 0
    _started_by_us = False

    def __init__(self) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start()
            TracemallocSampler._started_by_us = True
        TracemallocSampler._users += 1
        self._open = True
        self.baseline = tracemalloc.get_traced_memory()[0]

    def begin_run(self) -> None:
        tracemalloc.reset_peak()

    def end_run(self) -> Optional[int]:
        if not tracemalloc.is_tracing():
            return None
        return max(0, tracemalloc.get_traced_memory()[1] - self.baseline)

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        TracemallocSampler._users -= 1
        if TracemallocSampler._users == 0 and TracemallocSampler._started_by_us:
            TracemallocSampler._started_by_us = False
            if tracemalloc.is_tracing():
                tracemalloc.stop()
