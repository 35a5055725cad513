"""The private memory of a CUDA graph: one reserved block, handed out first-fit during capture.

A captured graph replays its launches with the pointers they had at capture, so whatever CuPy
allocates inside the captured run (temporaries of functions without ``out=``, outputs the plan
leaves unplaced) must stay reserved for the graph, and capture may not call ``cudaMalloc``.
PyTorch keeps a private pool per graph for the same reason.  Here the pool's size is measured
first: an eager run of the same signature goes through ``SizingAllocator``, which forwards every
request to the allocator in place (the counting hook) and replays it on a virtual ``FirstFit``;
the capture then serves the same sequence from a block of that high-water size with the same
``FirstFit``, so it fits exactly.  A capture that asks for more raises ``GraphPoolExhausted``.
"""
from __future__ import annotations

import bisect
from typing import Any, Callable, Optional

from gpuinfer.backends.cuda.allocator_hook import installable_malloc
from gpuinfer.errors import GpuinferError

ALIGN = 512  # as CuPy's pool: kernels may assume 256-byte aligned buffers


class GraphPoolExhausted(GpuinferError):
    """The captured run asked for more memory than the sizing run did."""


def _aligned(nbytes: int) -> int:
    return max((int(nbytes) + ALIGN - 1) // ALIGN * ALIGN, ALIGN)


class FirstFit:
    """Offsets in a block: lowest free address that fits; ``high_water`` is the most ever used.

    ``capacity`` None: unbounded (sizing)."""

    def __init__(self, capacity: Optional[int] = None) -> None:
        self.capacity = capacity
        self._holes: list[tuple[int, int]] = []  # (start, size), sorted, merged; below ``_top``
        self._top = 0  # everything at or above is free
        self._sizes: dict[int, int] = {}  # offset -> size of live allocations
        self.high_water = 0

    def alloc(self, nbytes: int) -> int:
        size = _aligned(nbytes)
        for i, (start, hole) in enumerate(self._holes):
            if hole >= size:
                if hole == size:
                    del self._holes[i]
                else:
                    self._holes[i] = (start + size, hole - size)
                self._sizes[start] = size
                return start
        start = self._top
        if self.capacity is not None and start + size > self.capacity:
            raise GraphPoolExhausted(f"the graph's private pool ({self.capacity} bytes) cannot serve "
                                     f"{nbytes} more bytes: the captured run allocated more than its sizing run")
        self._top = start + size
        self.high_water = max(self.high_water, self._top)
        self._sizes[start] = size
        return start

    def free(self, offset: int) -> None:
        size = self._sizes.pop(offset)
        i = bisect.bisect(self._holes, (offset, size))
        self._holes.insert(i, (offset, size))
        merged: list[tuple[int, int]] = []
        for start, hole in self._holes:  # a few hundred holes at most: merge in one pass
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + hole)
            else:
                merged.append((start, hole))
        if merged and merged[-1][0] + merged[-1][1] == self._top:
            self._top = merged.pop()[0]
        self._holes = merged


class SizingAllocator:
    """Forwards to ``forward`` (the allocator in place) while replaying requests on a virtual
    ``FirstFit``: its ``high_water`` is the private pool a capture of the same run needs."""

    def __init__(self, cupy: Any, forward: Callable[[int], Any]) -> None:
        self._forward = forward
        self.fit = FirstFit()
        self._held: dict[int, tuple[Any, int]] = {}  # pointer -> (memory, virtual offset)
        self._cupy = cupy

    @property
    def malloc(self) -> Callable[[int], Any]:
        """The allocator to install (``allocator_hook.installable_malloc``)."""
        return installable_malloc(self._cupy, self)

    def _malloc(self, size: int, device_id: int) -> int:
        memory = self._forward(size)
        self._held[memory.ptr] = (memory, self.fit.alloc(size))
        return memory.ptr

    def _free(self, ptr: int, device_id: int) -> None:
        memory, offset = self._held.pop(ptr)
        self.fit.free(offset)
        del memory  # back to the forwarded allocator


class GraphPool:
    """One block reserved through ``reserve(nbytes) -> raw`` (counted by the caller), served
    first-fit to the allocations made while a graph is captured; kept as long as the graph."""

    def __init__(self, cupy: Any, raw: Any, nbytes: int) -> None:
        self.raw = raw  # keeps the block alive while the graph lives
        self.nbytes = int(nbytes)
        self._base = int(raw.data.ptr)
        self.fit = FirstFit(self.nbytes)
        self._cupy = cupy

    @property
    def malloc(self) -> Callable[[int], Any]:
        """The allocator to install while capturing (``allocator_hook.installable_malloc``)."""
        return installable_malloc(self._cupy, self)

    def _malloc(self, size: int, device_id: int) -> int:
        return self._base + self.fit.alloc(size)

    def _free(self, ptr: int, device_id: int) -> None:
        self.fit.free(ptr - self._base)
