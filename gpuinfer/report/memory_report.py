"""The memory report of one run: counted, planned, sampled and lower-bound peaks side by side."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class StepRecord:
    """Bytes the pool held at the busiest moment of one step (for timelines and plots)."""

    step: int
    op: str
    node: str
    live_bytes: int


@dataclass
class MemoryReport:
    """What one ``run`` cost in memory.  All sizes in bytes, times in seconds.

    ``peak_bytes`` is the pool's exact count (intermediates, scratch, outputs, plus buffers kept
    from earlier runs); ``sampled_peak_bytes`` is the independent sampler's figure for the same
    run over the session's ready baseline (None when no sampler ran; ``sampler`` says why).
    """

    mode: str
    device: str
    peak_bytes: int
    lower_bound_bytes: int
    planned_bytes: int
    sampled_peak_bytes: Optional[int]
    sampler: str
    allocations: int
    alloc_seconds: float
    dynamic_bytes: int  # served on the reduce path because no plan covered them
    held_bytes_after_run: int  # what the pool keeps for the next run
    run_seconds: float
    inplace_count: int = 0
    timeline: list[StepRecord] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def top_steps(self, n: int = 10) -> list[StepRecord]:
        """The ``n`` steps with the most bytes alive, busiest first."""
        return sorted(self.timeline, key=lambda r: (-r.live_bytes, r.step))[:n]
