"""The allocator hook every pool allocation goes through: counts bytes, calls and time.

Exact by construction: a byte is in use from the call that handed it out until the matching
``free``.  Costs two ``perf_counter`` calls per allocation, nothing per op.
"""
from __future__ import annotations

import time
from typing import Any, Optional

from gpuinfer.backends.base import Backend
from gpuinfer.errors import MemoryLimitError


class CountingAllocator:
    """``alloc(nbytes) -> raw buffer`` plus ``free(nbytes)``, with in-use and peak bytes."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.in_use = 0
        self.peak = 0
        self.step_peak = 0
        self.allocations = 0
        self.alloc_seconds = 0.0
        self.limit: Optional[int] = None  # memory_limit_bytes: no allocation may take in_use past it

    def alloc(self, nbytes: int) -> Any:
        if self.limit is not None and self.in_use + nbytes > self.limit:
            raise MemoryLimitError(f"an allocation of {nbytes} bytes with {self.in_use} in use would pass "
                                   f"memory_limit_bytes ({self.limit} bytes)")
        start = time.perf_counter()
        raw = self.backend.raw(nbytes)
        self.alloc_seconds += time.perf_counter() - start
        self.allocations += 1
        self.in_use += nbytes  # track(), inlined: this is on every dynamic allocation
        if self.in_use > self.peak:
            self.peak = self.in_use
        if self.in_use > self.step_peak:
            self.step_peak = self.in_use
        return raw

    def track(self, nbytes: int) -> None:
        """Count ``nbytes`` as in use (for memory made outside ``alloc``, e.g. object arrays)."""
        self.in_use += nbytes
        if self.in_use > self.peak:
            self.peak = self.in_use
        if self.in_use > self.step_peak:
            self.step_peak = self.in_use

    def free(self, nbytes: int) -> None:
        self.in_use -= nbytes

    def start_run(self) -> None:
        """Reset per-run counters; bytes still held (kept buffers) count from the start."""
        self.peak = self.in_use
        self.step_peak = self.in_use
        self.allocations = 0
        self.alloc_seconds = 0.0

