"""Turns a ``MemoryPlan`` into buffers during a run, and serves what the plan did not foresee.

Planned tensors are views into blocks (one per tensor for ``per_tensor``, one per shared buffer
for ``reuse``, one arena for ``arena``).  Anything else — ``reduce`` mode, values whose shape was
unknown ahead, graph outputs, a planned tensor whose shape turned out different — goes through
the allocator hook when produced and back when released: the reduce path.
"""
from __future__ import annotations

import itertools
import math
import weakref
from typing import Any, Optional

import numpy as np

from gpuinfer.plan.plan import MemoryPlan
from gpuinfer.plan.trace import TracePlan
from gpuinfer.runtime.allocator import CountingAllocator
from gpuinfer.runtime.nested import NestedTensors
from gpuinfer.values import TensorKey


def nbytes_of(shape: tuple, dtype: Any) -> int:
    count = 1
    for d in shape:
        count *= int(d)
    return count * np.dtype(dtype).itemsize

_BLOCK_ALLOCATIONS = itertools.count(1)


class BlockSet:
    """The raw blocks one plan's placements point into, allocated on first use and kept."""

    def __init__(self, allocator: CountingAllocator, sizes: list[int]):
        self.allocator = allocator
        self.sizes = list(sizes)
        self.raw: list[Optional[Any]] = [None] * len(sizes)
        self.views: dict[int, dict] = {}  # id(plan) -> tensor key -> view, reused every run
        self.held_bytes = 0  # bytes of the blocks allocated now (read before every run: kept, not summed)
        # runners' copies of ``views`` (runtime/bound_views.py), dropped with them
        self.binders: weakref.WeakSet = weakref.WeakSet()
        # a number no other block allocation in the process had: a captured CUDA graph is valid only
        # for the blocks it saw (a freed block's ``id`` may be reused by its replacement, its address too)
        self.generation = 0

    def block(self, index: int) -> Any:
        if self.raw[index] is None:
            self.generation = next(_BLOCK_ALLOCATIONS)
            self.raw[index] = self.allocator.alloc(self.sizes[index])
            self.held_bytes += self.sizes[index]
        return self.raw[index]

    def grow(self, sizes: list[int]) -> None:
        """Make room for a plan with these block sizes (arena: one block shared by all signatures)."""
        self.views.clear()  # views into a block about to be replaced must not survive
        self.unbind_all()
        for i, size in enumerate(sizes):
            if i >= len(self.sizes):
                self.sizes.append(size)
                self.raw.append(None)
            elif size > self.sizes[i]:
                if self.raw[i] is not None:
                    self.allocator.free(self.sizes[i])
                    self.held_bytes -= self.sizes[i]
                    self.raw[i] = None
                self.sizes[i] = size

    def views_for(self, plan: MemoryPlan) -> dict:
        return self.views.setdefault(id(plan), {})

    def forget(self, plan: MemoryPlan) -> None:
        """Drop the cached views of a plan that left the cache."""
        self.views.pop(id(plan), None)
        self.unbind_all()

    def unbind_all(self) -> None:
        """Runners' bound copies of the views let go (their blocks may be freed next)."""
        for binder in list(self.binders):
            binder.unbind()
        self.binders.clear()

    def release_all(self) -> None:
        self.views.clear()
        self.unbind_all()
        for i, raw in enumerate(self.raw):
            if raw is not None:
                self.allocator.free(self.sizes[i])
                self.raw[i] = None
        self.held_bytes = 0


class RunPool:
    """The buffers of one run: planned views, plus the dynamic (reduce) path for the rest."""

    def __init__(self, allocator: CountingAllocator, plan: MemoryPlan, blocks: BlockSet,
                 traces: Optional[dict[int, TracePlan]] = None):
        self.allocator = allocator
        self.backend = allocator.backend
        self.plan = plan
        self.blocks = blocks
        self.views = blocks.views_for(plan)
        self.dynamic: dict[TensorKey, int] = {}  # key -> bytes, held on the reduce path right now
        self.dynamic_bytes = 0  # total served on the reduce path in this run
        self.seen: dict[TensorKey, tuple] = {}  # top-level key -> (shape, dtype) of every buffer handed out
        self.deferred: list[tuple] = []  # (device flag, message) of checks read after the run
        self.unforeseen = False  # a top-level tensor (not an output) took the reduce path
        self.inner_in_use = 0  # bytes of subgraph tensors alive now
        self.inner_peak = 0  # most of them alive at once during the current top-level step
        self.inner_peaks: dict[int, int] = {}  # top-level step -> its subgraphs' peak bytes
        # Subgraph tensors placed by an earlier run's trace (runtime/nested.py); None: never (reduce)
        self.nested = NestedTensors(self, traces) if traces is not None else None

    def buffer(self, key: TensorKey, shape: Any, dtype: Any) -> Any:
        """The buffer for tensor ``key``: its planned view when the plan foresaw this size.

        The hit path (the view this key got last run, same shape and dtype) is the common one in
        the planned modes and skips every conversion; a miss falls through to ``_place``.
        """
        cached = self.views.get(key)
        if cached is not None:
            if type(shape) is not tuple:
                shape = tuple(shape)
            if cached.shape == shape and cached.dtype == dtype:
                self.seen[key] = (cached.shape, cached.dtype)
                return cached
        return self._place(key, tuple(map(int, shape)), np.dtype(dtype))

    def _place(self, key: TensorKey, shape: tuple, dtype: np.dtype) -> Any:
        """A planned view made now (and cached), or a buffer from the dynamic path."""
        nbytes = math.prod(shape) * dtype.itemsize
        place = self.plan.placements.get(key)
        if place is not None and dtype.kind not in "OUS":
            if self.plan.lifetimes[key].nbytes == nbytes:
                self.seen[key] = (shape, dtype)
                view = self.backend.view(self.blocks.block(place.block), place.offset, shape, dtype)
                self.views[key] = view
                return view
        if not key.scope:
            self.seen[key] = (shape, dtype)
            life = self.plan.lifetimes.get(key)
            self.unforeseen |= life is None or life.kind != "output"
            return self._dynamic(key, shape, dtype, nbytes)
        return self._inner(key, shape, dtype, nbytes)

    def begin_nested(self, step: int) -> None:
        """A top-level step with subgraphs starts (see ``NestedTensors``)."""
        if self.nested is not None:
            self.nested.begin(step)

    def end_nested(self) -> None:
        if self.nested is not None:
            self.inner_in_use -= self.nested.end()

    def _inner(self, key: TensorKey, shape: tuple, dtype: np.dtype, nbytes: int) -> Any:
        """A subgraph's own tensor (If/Loop/Scan body): in its step's traced block when the run
        keeps to the trace, else dynamic; counted in the inner peak either way."""
        nested = self.nested
        if key in self.dynamic or (nested is not None and key in nested.in_block):
            self.release(key)  # a previous loop turn made it: gone now
        self.inner_in_use += nbytes
        if self.inner_in_use > self.inner_peak:
            self.inner_peak = self.inner_in_use
        if nested is not None:
            view = nested.take(key, shape, dtype, nbytes)
            if view is not None:
                return view
        return self._dynamic(key, shape, dtype, nbytes)

    def _dynamic(self, key: TensorKey, shape: tuple, dtype: np.dtype, nbytes: int) -> Any:
        if key in self.dynamic:  # a Loop body making the same value again: the old one is gone
            self.release(key)
        if dtype.kind in "OUS":  # no typed view of raw bytes exists for these
            self.allocator.track(nbytes)
            buffer = np.empty(shape, dtype=dtype)
        else:  # allocated before it is recorded: an allocation refused (memory_limit_bytes) holds nothing
            buffer = self.backend.view(self.allocator.alloc(nbytes), 0, shape, dtype)
        self.dynamic_bytes += nbytes
        self.dynamic[key] = nbytes
        return buffer

    def release(self, key: TensorKey) -> None:
        """The tensor is dead: a dynamic buffer goes back now; a planned view just stops being used."""
        nbytes = self.dynamic.pop(key, None)
        if nbytes is not None:
            self.allocator.free(nbytes)
            if key.scope:
                self.inner_in_use -= nbytes
                if self.nested is not None:
                    self.nested.freed(key)
        elif self.nested is not None and key in self.nested.in_block:
            self.inner_in_use -= self.nested.in_block.pop(key)

    def hand_over(self, key: TensorKey) -> None:
        """Ownership of an output passes to the caller: it no longer counts as the pool's.  A body's
        result handed to its If/Loop/Scan is still read there, until that node's step is over."""
        nested = self.nested
        if nested is None or not key.scope:
            self.release(key)
            return
        nested.handing = True
        self.release(key)
        nested.handing = False
        nested.handed_over(key)
