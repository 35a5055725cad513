"""A session's plans, one per input-shape signature, with the blocks each plan's tensors live in;
and the replanning that finishes a plan from what its first run saw.

Shape inference cannot see through every data-dependent shape computation, nor into control-flow
bodies; a first run can.  Such a run serves the unforeseen tensors on the reduce path, then the
plan is made again with the shapes it saw and the traced bodies' blocks (runtime/nested.py) placed
as their steps' scratch, so later runs place them.  Tensors whose size still changes from run to
run keep taking the reduce path.  Modes that plan nothing ahead (``reduce``) are never replanned.

A mode that ``shares_blocks`` (``arena``) gets one ``BlockSet`` for every signature (and every
session of a ``Workspace``), grown to the largest plan; other modes get blocks per plan, released
when the plan leaves the cache (least recently used beyond ``size`` signatures).
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from types import SimpleNamespace
from typing import Any, Callable, Optional

import numpy as np

from gpuinfer.errors import InputError

from gpuinfer.graph.ir import Graph
from gpuinfer.graph.specialize import signature_of, static_value_types
from gpuinfer.plan import MemoryMode, MemoryPlan, make_plan
from gpuinfer.runtime.pool import BlockSet, RunPool
from gpuinfer.values import SCRATCH, VALUE


class PlanCache:
    """signature -> (plan, blocks), least recently used first."""

    def __init__(self, graph: Graph, mode: MemoryMode, keep: frozenset, allocator: Any, device_kind: str,
                 size: int, shared: Optional[BlockSet] = None) -> None:
        self.graph, self.mode, self.keep, self.allocator = graph, mode, keep, allocator
        self.device_kind, self.size = device_kind, size
        self.entries: OrderedDict[tuple, tuple[MemoryPlan, BlockSet]] = OrderedDict()
        self.shared = (shared if shared is not None else BlockSet(allocator, [])) if mode.shares_blocks else None
        self.on_drop: list[Callable[[MemoryPlan], None]] = []  # e.g. CUDA graphs leaving with their plan

    def __len__(self) -> int:
        return len(self.entries)

    def values(self):
        return self.entries.values()

    def plan(self, types: dict) -> MemoryPlan:
        """A fresh plan for ``types`` (value -> (shape, dtype)); nothing cached or allocated."""
        return make_plan(self.graph, types, self.mode, self.keep, device_kind=self.device_kind)

    def for_feeds(self, feeds: dict) -> tuple[MemoryPlan, BlockSet]:
        """The cached plan of the feeds' signature, planned now if new.  Feeds need only ``shape``
        and ``dtype`` (``plan_memory`` passes stand-ins)."""
        signature = signature_of(feeds, self.graph)
        if signature in self.entries:
            self.entries.move_to_end(signature)
            return self.entries[signature]
        self.entries[signature] = self._blocks_for(self.plan(feed_types(self.graph, feeds)))
        while len(self.entries) > self.size:
            _, (old_plan, old_blocks) = self.entries.popitem(last=False)
            self._drop(old_plan, old_blocks)
        return self.entries[signature]

    def replan_from_run(self, feeds: dict, plan: MemoryPlan, pool: RunPool, peak: int,
                        fits: Callable[[MemoryPlan, BlockSet], bool]) -> int:
        """Plan again with the shapes this run revealed; returns the first run's counted peak.
        ``fits(new plan, blocks it replaces)``: whether the finished plan fits the ceiling."""
        types = dict(plan.value_types)
        scratch: dict[int, list] = {}
        for key, (shape, dtype) in pool.seen.items():
            if key.kind == VALUE and key.name in self.graph.values:
                types[key.name] = (shape, dtype)
            elif key.kind == SCRATCH:
                scratch.setdefault(key.step, []).append((key.index, shape, dtype))
        seen_scratch = {step: [(s, d) for _, s, d in sorted(items, key=lambda t: t[0])]
                        for step, items in scratch.items()}
        new = make_plan(self.graph, types, self.mode, self.keep, seen_scratch, plan.traces,
                        device_kind=self.device_kind, scratch_slack=plan.scratch_slack)
        first = plan.first_run_peak_bytes if plan.first_run_peak_bytes is not None else peak
        new.first_run_peak_bytes = first
        signature = signature_of(feeds, self.graph)
        old_plan, old_blocks = self.entries.pop(signature)
        if not fits(new, old_blocks):
            # The finished plan would not fit the limit this run kept to: later runs repeat this
            # one instead (the same tensors on the dynamic path, bodies untraced), so an identical
            # run under the same limit gets the same answer.
            old_blocks.forget(old_plan)
            self.entries[signature] = (dataclasses.replace(old_plan, from_run=True, traces=dict.fromkeys(plan.traces),
                                                           first_run_peak_bytes=first), old_blocks)
            return first
        self._drop(old_plan, old_blocks)
        self.entries[signature] = self._blocks_for(new)
        return first

    def _drop(self, plan: MemoryPlan, blocks: BlockSet) -> None:
        """A plan leaves the cache: its own blocks go back; shared blocks stay."""
        blocks.forget(plan)
        for hook in self.on_drop:
            hook(plan)
        if blocks is not self.shared:
            blocks.release_all()

    def _blocks_for(self, plan: MemoryPlan) -> tuple[MemoryPlan, BlockSet]:
        if self.shared is not None:
            self.shared.grow(plan.blocks)
            return plan, self.shared
        return plan, BlockSet(self.allocator, plan.blocks)


def feed_types(graph: Graph, feeds: dict) -> dict:
    """value -> (shape, dtype) known ahead of a run with these feeds."""
    tensors = [n for n in graph.inputs if hasattr(feeds[n], "shape")]
    return static_value_types(graph, {n: tuple(feeds[n].shape) for n in tensors},
                              {n: feeds[n].dtype for n in tensors})


def shape_feeds(graph: Graph, input_shapes: dict, input_dtypes: Optional[dict] = None) -> dict:
    """Stand-ins for feeds that have only a shape and a dtype (``plan_memory`` plans from them);
    a dtype not given is the one the model declares (float32 where it declares none)."""
    dtypes = dict(input_dtypes or {})
    unknown = [n for n in list(input_shapes) + list(dtypes) if n not in graph.input_dims]
    missing = [n for n in graph.inputs if n not in input_shapes]
    if unknown or missing:
        raise InputError(f"the model's inputs are {list(graph.inputs)}; shapes name unknown {unknown}, "
                         f"miss {missing}")
    return {n: SimpleNamespace(shape=tuple(int(d) for d in input_shapes[n]),
                               dtype=np.dtype(dtypes.get(n) or graph.input_dtypes.get(n) or np.float32))
            for n in graph.inputs}
