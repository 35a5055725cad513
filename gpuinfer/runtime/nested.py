"""Where a control-flow step's subgraph tensors live: in the step's traced block, or one by one.

The first run of an If/Loop/Scan step records the order of its bodies' allocations and frees;
``plan/trace.py`` turns that into offsets in one block, which the session's next plan places in
the arena (or gives its own buffer, per mode) like any other scratch of that step.  Runs that make
the same allocations in the same order then get views into that block (cached, as planned
top-level tensors are); a run that strays finishes the step one allocation at a time, and the step
is left untraced from then on (its bodies' allocations change from run to run).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from gpuinfer.plan.trace import TracePlan, plan_trace
from gpuinfer.values import TensorKey, trace_block_key


class NestedTensors:
    """The trace state of one run's control-flow steps, for the pool that owns it."""

    def __init__(self, pool: Any, traces: dict[int, Optional[TracePlan]]):
        # what it needs of the pool, not the pool itself: no cycle keeping a run's views alive
        self.allocator, self.backend, self.plan, self.blocks, self.views = (
            pool.allocator, pool.backend, pool.plan, pool.blocks, pool.views)
        self.traces = traces  # step -> its TracePlan, or None: not traced
        self.changed = False  # a trace was made or dropped: the next plan should place its block
        self._step = -1
        self._recording: Optional[list] = None  # allocation events of a step with no trace yet
        self._following: Optional[TracePlan] = None  # the trace this run keeps to
        self._next = 0  # index of the allocation the trace expects next
        self._block: Any = None  # the block of the current step, once asked for
        self._block_dynamic = 0  # its bytes, when the plan did not place it (freed at the end)
        self.in_block: dict[TensorKey, int] = {}  # key -> bytes of the live tensors in the block
        self.handed: list[TensorKey] = []  # body results handed over during the step (recording)
        self.handing = False

    def begin(self, step: int) -> None:
        self._step = step
        self._next = 0
        if step in self.traces:
            self._following, self._recording = self.traces[step], None
        else:
            self._following, self._recording = None, []

    def end(self) -> int:
        """Close the step; returns the bytes of its tensors still counted as alive in the block."""
        if self._recording is not None:
            plan = plan_trace(self._recording)  # None: nothing or too much to plan
            self.traces[self._step] = plan
            self.changed |= plan is not None
        if self._block_dynamic:
            self.allocator.free(self._block_dynamic)
            self._block_dynamic = 0
        alive = sum(self.in_block.values())
        self.in_block.clear()
        self.handed.clear()
        self._block = self._following = self._recording = None
        return alive

    def take(self, key: TensorKey, shape: tuple, dtype: np.dtype, nbytes: int) -> Any:
        """The tensor's view in the block if the run keeps to the trace, else None (the caller
        serves it dynamically; while recording, the allocation is noted)."""
        plan = self._following
        if plan is not None:
            i = self._next
            if i < len(plan.keys) and plan.keys[i] == key and plan.sizes[i] == nbytes and dtype.kind not in "OUS":
                self._next = i + 1
                self.in_block[key] = nbytes
                return self._view(plan, i, shape, dtype)
            # Strayed: the rest of the step is served one by one (the block's tensors no longer
            # die as the trace said), and this step's allocations vary: stop tracing it.
            self.traces[self._step] = None
            self.changed = True
            self._next = len(plan.keys)
        elif self._recording is not None and dtype.kind not in "OUS":
            self._recording.append((key, nbytes))
        return None

    def freed(self, key: TensorKey) -> None:
        """A dynamic subgraph tensor went back (handed-over results are freed at the step's end)."""
        if self._recording is not None and not self.handing:
            self._recording.append((key, None))

    def handed_over(self, key: TensorKey) -> None:
        if self._recording is not None:
            self.handed.append(key)

    def settle_handed(self) -> None:
        """The node that read the handed-over body results is done: they are dead from here."""
        if self._recording is not None:
            self._recording.extend((key, None) for key in self.handed)
        self.handed.clear()

    def _view(self, plan: TracePlan, i: int, shape: tuple, dtype: np.dtype) -> Any:
        cache_key = (self._step, i)  # views into a planned block stay valid while its plan does
        view = self.views.get(cache_key)
        if view is not None and view.shape == shape and view.dtype == dtype:
            return view
        if self._block is None:
            self._block = self._block_for(plan.block_bytes)
        view = self.backend.view(self._block, plan.offsets[i], shape, dtype)
        if not self._block_dynamic:
            self.views[cache_key] = view
        return view

    def _block_for(self, nbytes: int) -> Any:
        """The step's block: its place in the plan, or (the plan predates the trace) an allocation."""
        key = trace_block_key(self._step)
        place = self.plan.placements.get(key)
        if place is not None and self.plan.lifetimes[key].nbytes == nbytes:
            return self.blocks.block(place.block)[place.offset:place.offset + nbytes]
        block = self.allocator.alloc(nbytes)  # first: a refused allocation (memory limit) holds nothing
        self._block_dynamic = nbytes
        self.changed = True
        return block

    def abandon(self) -> None:
        """The run failed inside a step: give back the step's block if this run allocated it."""
        if self._block_dynamic:
            self.allocator.free(self._block_dynamic)
            self._block_dynamic = 0
