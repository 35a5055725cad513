"""The CuPy allocator hook installed for the duration of a CUDA run.

Every device allocation of the run — pool buffers and CuPy's own temporaries inside kernels —
goes through ``DeviceAllocatorHook``: it counts bytes in use, the peak and the calls, and hands
each request to a backing store:

- ``"cuda_malloc"``: plain ``cudaMalloc``/``cudaFree`` per tensor (ailia's behaviour; slow),
- ``"pool"``: CuPy's ``MemoryPool`` (fast; freed blocks stay cached in the pool),
- ``"async"``: the stream-ordered ``MemoryAsyncPool`` (fast, and returns memory).

Freed bytes are uncounted the moment CuPy releases the pointer (``PythonFunctionAllocator``'s
free callback), so a ``reduce`` run's count falls right after each last use.
"""
from __future__ import annotations

import time
from typing import Any

from gpuinfer.errors import GpuinferError

BACKING_STORES = ("cuda_malloc", "pool", "async")


class DeviceAllocatorHook:
    """Counting allocator for CuPy; use ``with hook.installed(): ...`` around a run."""

    def __init__(self, cupy: Any, backing: str = "pool"):
        if backing not in BACKING_STORES:
            raise GpuinferError(f"unknown device allocator {backing!r}; choose one of {BACKING_STORES}")
        self._cupy = cupy
        self.backing = backing
        self._store = {"pool": cupy.cuda.MemoryPool, "async": cupy.cuda.MemoryAsyncPool}.get(backing, lambda: None)()
        if backing == "async":
            keep_async_memory(cupy)
        self._live: dict[int, tuple[Any, int]] = {}  # pointer -> (owner, bytes)
        self.in_use = 0
        self.peak = 0
        self.allocations = 0
        self.alloc_seconds = 0.0

    def _malloc(self, size: int, device_id: int) -> int:
        start = time.perf_counter()
        if self._store is None:
            owner = self._cupy.cuda.Memory(size)
            ptr = owner.ptr
        else:
            owner = self._store.malloc(size)
            ptr = owner.ptr
        self.alloc_seconds += time.perf_counter() - start
        self._live[ptr] = (owner, size)
        self.allocations += 1
        self.in_use += size
        self.peak = max(self.peak, self.in_use)
        return ptr

    def _free(self, ptr: int, device_id: int) -> None:
        owner, size = self._live.pop(ptr, (None, 0))
        self.in_use -= size
        del owner  # the last reference: cudaFree, or back to the pool

    def start_run(self) -> None:
        self.peak = self.in_use
        self.allocations = 0
        self.alloc_seconds = 0.0

    def installed(self):
        """Context manager routing this thread's CuPy allocations through the hook."""
        return self._cupy.cuda.using_allocator(installable_malloc(self._cupy, self))


def installable_malloc(cupy: Any, owner: Any) -> Any:
    """``owner._malloc`` / ``owner._free`` as a CuPy allocator to install, made on each use.

    Not kept on ``owner`` (the hook, a graph's private pool, the sizing allocator): kept, the
    ``PythonFunctionAllocator`` would hold the owner's bound methods and so the owner itself, a
    cycle that keeps the owner's device memory after the session is gone, until the garbage
    collector runs.  Memory handed out holds the owner through its free callback."""
    return cupy.cuda.PythonFunctionAllocator(owner._malloc, owner._free).malloc


def keep_async_memory(cupy: Any) -> None:
    """Raise the device mempool's release threshold: left at 0, ``MemoryAsyncPool`` hands its
    memory back to the driver at every synchronisation and each run pays for fresh allocations."""
    rt = cupy.cuda.runtime
    pool = rt.deviceGetMemPool(cupy.cuda.Device().id)
    rt.memPoolSetAttribute(pool, rt.cudaMemPoolAttrReleaseThreshold, 2**63 - 1)
