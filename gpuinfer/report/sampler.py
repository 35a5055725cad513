"""Independent samplers of a run's memory peak, to check the pool's own count.

On the CPU, ``tracemalloc`` sees every numpy data buffer (numpy reports them to it), so its peak
during a run over what was traced at the run's start, plus the bytes the pool held then, is what
the run really cost, including anything a kernel allocated behind the pool's back.

The baseline is taken per run, not once when the session became ready: between the two, memory
that is not the run's comes and goes in the same process and would be read as the run's.  Seen
on the 2-core machine (tests/test_memory_modes.py, 1-4 of 19 models a run): another session
freed after this one's baseline (its figure fell to 0), a runner's code compiled (0.7 MB for
MiniLM's 309 nodes), and the interpreter's interned-string table resizing inside that compile
(+1.9 MB), which is why the failures moved from model to model.  A last one was not the
sampler's: an intra-op worker item cancelled unstarted kept its op's arrays alive in the thread
pool's queue after the pool had released them (light/shufflenet reduce +1.2-2.6 MB at 2 threads,
now and then; fixed in backends/numpy_threads.py).  Held bytes come from the
pool's count; tests/memory_probe.py reads tracemalloc the same way, and checks them apart.
"""
from __future__ import annotations

import gc
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
        self.baseline = 0  # traced bytes that are not the run's, set at each run's start
        self._collector_was_on = False

    def begin_run(self, held_bytes: int = 0) -> None:
        """``held_bytes``: what the session's pool holds as the run starts (its kept buffers).

        Python's cyclic collector is held off until ``end_run``: collecting other objects' cycles
        in the middle of the run frees memory that was in the baseline, and the run's figure fell
        by as much (light_squeezenet reduce, in a full test run: 14% under the count).  Garbage
        freed by reference counting, as the run's own is, goes on being freed."""
        self._collector_was_on = gc.isenabled()
        gc.disable()
        self.baseline = tracemalloc.get_traced_memory()[0] - held_bytes
        tracemalloc.reset_peak()

    def end_run(self) -> Optional[int]:
        if self._collector_was_on:
            gc.enable()
            self._collector_was_on = False
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
