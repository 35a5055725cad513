"""Device memory of the strict stand-in: CuPy's allocator API over numpy byte buffers.

Pointers are integers in a private address space, so the CUDA device's own code (raw blocks,
``memptr=base + offset`` views, a ``PythonFunctionAllocator`` hook, ``using_allocator``) runs
unchanged.  A simulated device capacity (``SPACE.capacity``) makes the pool raise
``OutOfMemoryError`` and a raw ``Memory`` raise ``CUDARuntimeError``, as CuPy does, so OOM
translation is tested through the real code path.
"""
from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Optional

import numpy as np

from gpuinfer.backends.strict.counters import CaptureState, StrictCounters

ALIGN = 512  # CuPy's pool rounds requests up to 512 bytes
DEFAULT_CAPACITY = 80 << 30


class CUDARuntimeError(RuntimeError):
    """Shaped like ``cupy_backends.cuda.api.runtime.CUDARuntimeError``."""

    def __init__(self, status: int, message: str = "") -> None:
        self.status = status
        names = {2: "cudaErrorMemoryAllocation", 35: "cudaErrorInsufficientDriver",
                 100: "cudaErrorNoDevice", 900: "cudaErrorStreamCaptureUnsupported"}
        super().__init__(f"{names.get(status, 'cudaError')}: {message or names.get(status, '')}")


class OutOfMemoryError(MemoryError):
    """Shaped like ``cupy.cuda.memory.OutOfMemoryError(size, total, limit)``."""

    def __init__(self, size: int, total: int, limit: int = 0) -> None:
        self.size, self.total, self.limit = size, total, limit
        super().__init__(f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes).")


class AddressSpace:
    """Hands out unique fake device addresses and tracks bytes held against the capacity."""

    def __init__(self) -> None:
        self.next_base = 0x7F00_0000_0000
        # weak: a block is freed when its last user lets go (as ``cudaFree`` in ``cupy.cuda.Memory``),
        # which also gives its bytes back to ``used``; held strongly here, nothing ever was freed
        self.blocks: "weakref.WeakValueDictionary[int, Memory]" = weakref.WeakValueDictionary()
        self.capacity = DEFAULT_CAPACITY
        self.used = 0
        self.counters = StrictCounters()
        self.capture = CaptureState()
        self.lock = threading.Lock()

    def reserve(self, size: int) -> int:
        self.capture.forbid(f"cudaMalloc of {size} bytes")
        with self.lock:
            if self.used + size > self.capacity:
                raise CUDARuntimeError(2, f"out of memory asking for {size} bytes "
                                          f"({self.used} of {self.capacity} in use)")
            self.used += size
            base = self.next_base
            self.next_base += (size + ALIGN - 1) // ALIGN * ALIGN + ALIGN
            return base

    def release(self, base: int, size: int) -> None:
        with self.lock:
            self.used -= size
            self.blocks.pop(base, None)

    def resolve(self, ptr: int) -> tuple["Memory", int]:
        """The block holding device address ``ptr`` and the offset into it."""
        mem = self.blocks.get(ptr)
        if mem is not None:
            return mem, 0
        for base, mem in self.blocks.items():
            if base <= ptr < base + max(mem.size, 1):
                return mem, ptr - base
        raise CUDARuntimeError(1, f"invalid device pointer {ptr:#x}")


SPACE = AddressSpace()


class Memory:
    """One ``cudaMalloc``: freed when the last reference goes (like ``cupy.cuda.Memory``)."""

    def __init__(self, size: int) -> None:
        size = int(size)
        self.size = size
        self.ptr = SPACE.reserve(size)
        self.buffer = np.empty(max(size, 1), dtype=np.uint8)
        self.device_id = 0
        SPACE.blocks[self.ptr] = self
        weakref.finalize(self, SPACE.release, self.ptr, size)


class UnownedMemory:
    """Memory owned elsewhere, addressed by pointer (``cupy.cuda.UnownedMemory``)."""

    def __init__(self, ptr: int, size: int, owner: Any, device_id: int = 0) -> None:
        self.ptr, self.size, self.owner, self.device_id = int(ptr), int(size), owner, device_id
        mem, offset = SPACE.resolve(self.ptr)
        self.buffer = mem.buffer[offset:offset + max(size, 1)]
        self._base = mem  # keeps the block alive


class MemoryPointer:
    """A device address inside a memory object; ``ptr + n`` keeps the owner alive."""

    __slots__ = ("mem", "offset", "ptr", "device_id")

    def __init__(self, mem: Any, offset: int) -> None:
        self.mem = mem
        self.offset = int(offset)
        self.ptr = mem.ptr + self.offset
        self.device_id = 0

    def __add__(self, n: int) -> "MemoryPointer":
        return MemoryPointer(self.mem, self.offset + int(n))

    def __int__(self) -> int:
        return self.ptr

    def bytes_view(self, nbytes: int) -> np.ndarray:
        """The host bytes backing ``nbytes`` from this address (the stand-in's device memory)."""
        if self.offset + nbytes > max(self.mem.size, 1) and nbytes > 0:
            raise CUDARuntimeError(1, f"view of {nbytes} bytes at offset {self.offset} overruns a "
                                      f"{self.mem.size}-byte allocation")
        return self.mem.buffer[self.offset:self.offset + max(nbytes, 0)]


class _PooledMemory:
    """A pool block lent out; back to its pool when the last pointer to it goes."""

    def __init__(self, pool: "MemoryPool", block: Memory, size: int) -> None:
        self.ptr, self.size, self.buffer, self.device_id = block.ptr, size, block.buffer, 0
        self._block = block
        weakref.finalize(self, pool._give_back, block, size)


class MemoryPool:
    """CuPy's caching pool: freed blocks are kept for reuse until ``free_all_blocks``."""

    def __init__(self, allocator: Any = None) -> None:
        self._free: dict[int, list[Memory]] = {}
        self._used = 0
        self._total = 0
        self._limit = 0

    def malloc(self, size: int) -> MemoryPointer:
        size = int(size)
        rounded = max((size + ALIGN - 1) // ALIGN * ALIGN, ALIGN)
        cached = self._free.get(rounded)
        if cached:
            block = cached.pop()
        else:
            if self._limit and self._total + rounded > self._limit:
                raise OutOfMemoryError(size, self._total, self._limit)
            try:
                block = Memory(rounded)
            except CUDARuntimeError:
                self.free_all_blocks()
                try:
                    block = Memory(rounded)
                except CUDARuntimeError:
                    raise OutOfMemoryError(size, self._total, self._limit) from None
            self._total += rounded
        self._used += rounded
        return MemoryPointer(_PooledMemory(self, block, rounded), 0)

    def _give_back(self, block: Memory, size: int) -> None:
        self._used -= size
        self._free.setdefault(size, []).append(block)

    def used_bytes(self) -> int:
        return self._used

    def total_bytes(self) -> int:
        return self._total

    def free_bytes(self) -> int:
        return self._total - self._used

    def free_all_blocks(self, stream: Any = None) -> None:
        for size, blocks in self._free.items():
            self._total -= size * len(blocks)
        self._free.clear()

    def set_limit(self, size: Optional[int] = None, fraction: Optional[float] = None) -> None:
        self._limit = int(size or 0)

    def get_limit(self) -> int:
        return self._limit


class MemoryAsyncPool(MemoryPool):
    """Stream-ordered pool: memory goes back at once (release threshold 0 unless raised)."""

    def _give_back(self, block: Memory, size: int) -> None:
        self._used -= size
        self._total -= size


class _HookedMemory:
    """Memory a ``PythonFunctionAllocator`` handed out; its free callback runs on release."""

    def __init__(self, ptr: int, size: int, free: Callable[[int, int], None]) -> None:
        self.ptr, self.size, self.device_id = ptr, size, 0
        mem, offset = SPACE.resolve(ptr)
        self.buffer = mem.buffer[offset:offset + max(size, 1)]
        weakref.finalize(self, free, ptr, 0)


class PythonFunctionAllocator:
    """``PythonFunctionAllocator(malloc(size, device_id) -> ptr, free(ptr, device_id))``."""

    def __init__(self, malloc_func: Callable[[int, int], int], free_func: Callable[[int, int], None]):
        self._malloc, self._free_func = malloc_func, free_func

    def malloc(self, size: int) -> MemoryPointer:
        ptr = self._malloc(int(size), 0)
        return MemoryPointer(_HookedMemory(ptr, int(size), self._free_func), 0)


_DEFAULT_POOL = MemoryPool()
_GLOBAL_ALLOCATOR: list = [_DEFAULT_POOL.malloc]
_THREAD = threading.local()


def get_default_memory_pool() -> MemoryPool:
    return _DEFAULT_POOL


def set_allocator(allocator: Optional[Callable[[int], MemoryPointer]] = None) -> None:
    _GLOBAL_ALLOCATOR[0] = allocator if allocator is not None else _raw_malloc


def get_allocator() -> Callable[[int], MemoryPointer]:
    current = getattr(_THREAD, "allocator", None)
    return current if current is not None else _GLOBAL_ALLOCATOR[0]


class using_allocator:  # noqa: N801 (CuPy's name)
    """Thread-local allocator for the ``with`` block (``cupy.cuda.using_allocator``)."""

    def __init__(self, allocator: Optional[Callable[[int], MemoryPointer]] = None) -> None:
        self._allocator = allocator if allocator is not None else _raw_malloc

    def __enter__(self) -> None:
        self._saved = getattr(_THREAD, "allocator", None)
        _THREAD.allocator = self._allocator

    def __exit__(self, *exc: Any) -> None:
        _THREAD.allocator = self._saved


def _raw_malloc(size: int) -> MemoryPointer:
    return MemoryPointer(Memory(size), 0)


def allocate(nbytes: int) -> MemoryPointer:
    """Where every stand-in array's memory comes from: the current allocator, counted.

    Allocations with CuPy's default pool (no hook installed) are counted as outside the hook.  During
    a capture only memory that needs no ``cudaMalloc`` may be handed out (``AddressSpace.reserve``)."""
    counters = SPACE.counters
    allocator = get_allocator()
    SPACE.capture.check_allocation(allocator, nbytes)
    hooked = allocator != _DEFAULT_POOL.malloc
    if hooked:
        counters.hook_allocations += 1
        counters.hook_bytes += nbytes
    else:
        counters.outside_allocations += 1
        counters.outside_bytes += nbytes
    return allocator(nbytes)


def mem_get_info() -> tuple[int, int]:
    """(free, total) bytes of the simulated device."""
    return SPACE.capacity - SPACE.used, SPACE.capacity
