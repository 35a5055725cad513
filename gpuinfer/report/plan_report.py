"""The memory report of a plan, before anything runs: what ``InferenceSession.plan_memory`` and
``gpuinfer run --plan-only`` give for one input-shape signature.

Why: a caller choosing a mode, a batch size or a memory limit should not have to run a model to
learn what it will take.  The figures are the plan's own (the same ``planned_bytes`` a run of that
signature reports); the tensors listed are those alive at the plan's busiest step (the step that
sets the lower bound), each with the node that produces it and the node that reads it last, so
the reader sees which layers make the peak.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class TensorAtPeak:
    """One tensor alive at the peak step: its key's text, bytes, shape, dtype and the nodes that
    produce it (``produced_by``) and read it last (``last_read_by``)."""

    tensor: str
    kind: str  # "value" | "scratch" | "output"
    nbytes: int
    shape: tuple
    dtype: Optional[str]
    produced_by: str
    last_read_by: str


@dataclass
class PlanReport:
    """One signature's plan in one mode.  Sizes in bytes.

    ``need_bytes``: what a run needs (the plan's blocks plus the busiest step of what it leaves
    unplaced: outputs outside the blocks, data-dependent tensors it cannot see);
    ``lower_bound_bytes``: the most bytes alive at one step (``peak_step``); ``partial``: the plan
    could not see every tensor (data-dependent shapes, control-flow bodies), so the figures are
    lower bounds; ``auto_choice``: with ``memory_mode="auto"``, which mode was picked and why.
    """

    mode: str
    input_shapes: dict
    planned_bytes: int
    need_bytes: int
    lower_bound_bytes: int
    peak_step: int
    peak_node: str
    partial: bool
    at_peak: list[TensorAtPeak] = field(default_factory=list)
    auto_choice: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def text(self, top: int = 10) -> str:
        mib = 1024 * 1024
        lines = [f"plan of memory_mode={self.mode!r} for {self.input_shapes} (nothing run)",
                 f"  planned bytes : {self.planned_bytes} ({self.planned_bytes / mib:.2f} MiB)",
                 f"  run needs     : {self.need_bytes} ({self.need_bytes / mib:.2f} MiB)"
                 + (" at least (data-dependent tensors unseen)" if self.partial else ""),
                 f"  lower bound   : {self.lower_bound_bytes} ({self.lower_bound_bytes / mib:.2f} MiB), "
                 f"at step {self.peak_step} ({self.peak_node})"]
        if self.auto_choice:
            lines.append(f"  auto          : {self.auto_choice}")
        lines.append(f"  top tensors alive at step {self.peak_step}:")
        for t in self.at_peak[:top]:
            lines.append(f"    {t.nbytes / mib:9.2f} MiB  {t.tensor} {list(t.shape)} {t.dtype or ''} ({t.kind}): "
                         f"made by {t.produced_by}, last read by {t.last_read_by}")
        return "\n".join(lines)


def plan_report(graph: Any, plan: Any, input_shapes: dict, partial: bool, auto_choice: str = "") -> PlanReport:
    """The report of ``plan`` (a ``MemoryPlan`` of ``graph``)."""
    lives = list(plan.lifetimes.values())
    alive = [0] * (plan.steps + 1)
    for life in lives:
        for step in range(life.first, min(life.last, plan.steps) + 1):
            alive[step] += life.nbytes
    peak = max(range(len(alive)), key=lambda s: (alive[s], -s)) if lives else 0
    nodes = graph.nodes

    def node_at(step: int) -> str:
        return nodes[step].describe() if 0 <= step < len(nodes) else "the caller"

    at_peak = sorted((l for l in lives if l.first <= peak <= l.last), key=lambda l: (-l.nbytes, l.first))
    return PlanReport(plan.mode, dict(input_shapes), plan.planned_bytes, plan.need_bytes, plan.lower_bound_bytes,
                      peak, node_at(peak), partial,
                      [TensorAtPeak(str(l.key), l.kind, l.nbytes, tuple(l.shape), l.dtype, node_at(l.first),
                                    node_at(l.last)) for l in at_peak], auto_choice)
