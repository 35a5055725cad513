"""The memory ceiling of a session's runs: refuse a run that cannot fit before it allocates, say
which modes would fit, and turn an allocation stopped at ``memory_limit_bytes`` into an error that
says where the run was.

The figure checked is the counted peak a run will reach (``run_need``: the figure ``peak_bytes``
reports once it has run).  With ``memory_limit_bytes`` that is the ceiling; without, the device's
available memory now (MemAvailable on the host, free memory on CUDA) plus what the session's pool
already holds.  Under a limit the pool also refuses any allocation past it, so tensors a plan
could not foresee cannot take a run over it, and identical runs get the same answer.
"""
from __future__ import annotations

import time
from typing import Any, Optional

from gpuinfer.errors import MemoryLimitError
from gpuinfer.graph.ir import Graph
from gpuinfer.plan import MemoryPlan, by_speed, make_plan
from gpuinfer.runtime.executor import subgraphs_of
from gpuinfer.runtime.pool import BlockSet

# Reading the device's available memory costs microseconds (/proc/meminfo: ~7 us, a tenth of a small
# model's run), so a reading is reused this long unless the run would take half of it.
AVAILABLE_MAX_AGE_S = 0.5


class MemoryCeiling:
    """One session's limit (``memory_limit_bytes`` or the device's available memory)."""

    def __init__(self, graph: Graph, backend: Any, allocator: Any, limit: Optional[int], keep: frozenset) -> None:
        self.graph, self.backend, self.allocator, self.limit, self.keep = graph, backend, allocator, limit, keep
        self.on_device = getattr(backend, "hook", None) is not None
        self.available_cache: Optional[tuple] = None  # (available bytes, when read)

    def check(self, mode: str, plan: MemoryPlan, blocks: BlockSet, shared: Optional[BlockSet]) -> tuple[str, Optional[int]]:
        """Refuse, before allocating anything, a run that cannot fit; returns (ceiling, its bytes)."""
        need = self.run_need(plan, blocks, shared)
        if self.limit is not None:
            if need > self.limit:
                raise MemoryLimitError(
                    f"a run in memory_mode={mode!r} needs {need} bytes (its counted peak; "
                    f"{plan.planned_bytes} of them planned), over memory_limit_bytes ({self.limit} bytes); "
                    f"{self.advice(mode, plan, self.limit)}")
            return "memory_limit_bytes", self.limit
        held = self.allocator.in_use
        what, ceiling, available = self.ceiling(need - held)
        if ceiling is not None and need > ceiling:
            raise MemoryLimitError(
                f"a run in memory_mode={mode!r} needs {need} bytes ({max(need - held, 0)} more "
                f"than this session holds), over the {what} ({available} bytes now); "
                f"{self.advice(mode, plan, ceiling)}")
        return what, ceiling

    def ceiling(self, adds: int = 0) -> tuple[str, Optional[int], Optional[int]]:
        """(what, ceiling bytes, available bytes): the limit, else the device's available memory.
        The CUDA device counts what its hook holds (this session's buffers) as available to it;
        the host's MemAvailable does not: what the pool holds is added back."""
        if self.limit is not None:
            return "memory_limit_bytes", self.limit, None
        available = self.available(adds)
        if available is None:
            return "none", None, None
        if self.on_device:
            return "available device memory", available, available
        return "available host memory", available + self.allocator.in_use, available

    def run_need(self, plan: MemoryPlan, blocks: Optional[BlockSet], shared: Optional[BlockSet],
                 replacing: Optional[BlockSet] = None) -> int:
        """The counted peak a run of ``plan`` reaches: what the pool keeps for other plans, ``plan``'s
        blocks at the sizes they will have (a shared block may be kept larger for another plan),
        and the busiest step of what the plan leaves unplaced.  ``blocks``: the plan's blocks (None:
        fresh ones); ``replacing``: blocks released when ``plan`` takes over."""
        others = self.allocator.in_use
        sizes: list[int] = []
        if blocks is not None:
            others -= blocks.held_bytes
            sizes = blocks.sizes
        if replacing is not None and replacing is not blocks:
            others -= replacing.held_bytes
        if blocks is not shared or blocks is None:  # the plan's own blocks, at its sizes
            return others + plan.need_bytes
        own = 0
        for i in range(max(len(sizes), len(plan.blocks))):
            mine = plan.blocks[i] if i < len(plan.blocks) else 0
            kept = sizes[i] if i < len(sizes) else 0
            if mine or blocks.raw[i] is not None:
                own += max(mine, kept)
        return others + own + plan.need_bytes - plan.planned_bytes

    def available(self, adds: int) -> Optional[int]:
        """The device's available memory, read again when older than ``AVAILABLE_MAX_AGE_S`` or
        when the run would add more than half of the last reading."""
        now = time.monotonic()
        cached = self.available_cache
        if (cached is None or now - cached[1] > AVAILABLE_MAX_AGE_S
                or (cached[0] is not None and 2 * adds > cached[0])):
            cached = self.available_cache = (self.backend.available_memory(), now)
        return cached[0]

    def needs(self, plan: MemoryPlan) -> dict[str, int]:
        """Each registered mode's planned need for ``plan``'s shapes, fastest mode first."""
        return {mode.name: (plan if mode.name == plan.mode else make_plan(
            self.graph, plan.value_types, mode, self.keep, device_kind=self.backend.kind)).need_bytes
            for mode in by_speed()}

    def partial(self, plan: MemoryPlan) -> bool:
        """Whether plans miss tensors (data-dependent shapes, control-flow bodies): needs are lower bounds."""
        return bool(plan.dynamic) or any(True for _ in subgraphs_of(self.graph))

    def advice(self, mode: str, plan: MemoryPlan, ceiling: int) -> str:
        """Which memory modes would fit under ``ceiling`` for this signature, with their planned needs."""
        needs = self.needs(plan)
        partial = self.partial(plan)
        listed = ", ".join(f"{m} {need}" for need, m in sorted((n, m) for m, n in needs.items()))
        at_least, fit = ("at least ", "may fit") if partial else ("", "would fit")
        listed = f"each mode's plan for these shapes{' (without data-dependent tensors)' if partial else ''}: {listed}"
        # arena first where it fits (as lean as any, and fast), else the leanest that fits
        fitting = sorted((m != "arena", need, m) for m, need in needs.items() if need <= ceiling and m != mode)
        if fitting:
            _, need, other = fitting[0]
            return f"memory_mode={other!r} {fit}: its plan needs {at_least}{need} bytes ({listed})"
        need, other = min((n, m) for m, n in needs.items())
        return f"no mode fits: the least any needs is {at_least}{need} bytes, memory_mode={other!r} ({listed})"

    def stopped(self, mode: str, exc: MemoryLimitError, plan: MemoryPlan, steps_done: int) -> MemoryLimitError:
        """The error for a run the allocator stopped at the limit (tensors its plan could not foresee)."""
        nodes = self.graph.nodes
        where = nodes[steps_done].describe() if steps_done < len(nodes) else "the end of the run"
        return MemoryLimitError(
            f"a run in memory_mode={mode!r} went over memory_limit_bytes ({self.limit} bytes) at {where} "
            f"({exc}): its plan ({plan.need_bytes} bytes) left {len(plan.dynamic)} value(s) of data-dependent "
            f"shape to the run; {self.advice(mode, plan, self.limit)}")
