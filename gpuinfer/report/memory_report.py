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
    run (None when no sampler ran; ``sampler`` says why): on CUDA NVML's peak over the baseline
    taken when the session was ready, on the CPU tracemalloc's peak over the run's start plus the
    bytes the pool held then (report/sampler.py says why).

    ``first_run_traced``: this input-shape signature's plan could not place every tensor ahead
    (data-dependent shapes such as NonZero's, or control-flow bodies), so its first run served
    those on the reduce path and the plan was finished from what it saw; ``first_run_peak_bytes``
    is that first run's counted peak (None when the plan was complete before any run).
    ``memory_ceiling`` names what the run was checked against before it started
    (``"memory_limit_bytes"``, ``"available host memory"``, ``"available device memory"``, or
    ``"none"`` when the device cannot say) and ``memory_ceiling_bytes`` its figure then.

    ``cuda_graph``: how the run ran with CUDA graphs asked for (``"replayed"``, or ``"eager: "`` and
    why: a warm-up, sizing the graph's pool, or what prevents capture); ``"off"`` when not asked
    for.  ``graph_pool_bytes``: device memory held for captured graphs (their private pools and
    input buffers), part of ``held_bytes_after_run``.
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
    first_run_traced: bool = False
    first_run_peak_bytes: Optional[int] = None
    memory_ceiling: str = "none"
    memory_ceiling_bytes: Optional[int] = None
    cuda_graph: str = "off"
    graph_pool_bytes: int = 0
    auto_choice: str = ""  # memory_mode="auto": which mode it chose and why ("" otherwise)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def top_steps(self, n: int = 10) -> list[StepRecord]:
        """The ``n`` steps with the most bytes alive, busiest first."""
        return sorted(self.timeline, key=lambda r: (-r.live_bytes, r.step))[:n]
