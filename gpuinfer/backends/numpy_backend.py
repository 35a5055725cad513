"""The CPU device: numpy arrays, buffers from ``np.empty`` (which ``tracemalloc`` sees)."""
from __future__ import annotations

import contextlib
import ctypes
import os
from typing import Any, Optional

import numpy as np

from gpuinfer.backends.base import Capabilities
from gpuinfer.report.sampler import TracemallocSampler

BASE_ALIGNMENT = 64  # cache line; numpy's own allocations only promise 16
# Blocks smaller than this keep numpy's 16-byte alignment: the 64 bytes that aligning costs are
# not counted by the allocator (it counts what was asked for), a few percent of a small model's
# dynamic buffers (silero ``reduce``: 5 alive at its peak, 320 B of a 10 KB run); above it they are
# under 0.1% of the block.
ALIGN_MIN_BYTES = 1 << 16
CACHE_TILE_BYTES = 1 << 20  # what a tiled CPU kernel aims to keep in cache


def _address(block: np.ndarray) -> int:
    """Address of a fresh array's first byte (a third of the cost of ``block.ctypes.data``)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(block))


def _meminfo_available() -> Optional[int]:
    """MemAvailable from /proc/meminfo (Linux), in bytes."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class NumpyBackend:
    name = "cpu"
    kind = "cpu"
    xp = np
    caps = Capabilities(host_arrays=True, ufunc_where=True,
                        scatter_ufuncs=frozenset(n for n in dir(np) if isinstance(getattr(np, n), np.ufunc)),
                        einsum_out=True, tile_bytes=CACHE_TILE_BYTES, fused_kernels=False)

    def raw(self, nbytes: int) -> np.ndarray:
        if nbytes < ALIGN_MIN_BYTES:
            return np.empty(nbytes, dtype=np.uint8)
        block = np.empty(nbytes + BASE_ALIGNMENT, dtype=np.uint8)
        start = (-_address(block)) % BASE_ALIGNMENT
        return block[start:start + nbytes]

    def view(self, raw: np.ndarray, offset: int, shape: tuple, dtype: Any) -> np.ndarray:
        return np.ndarray(shape, dtype=dtype, buffer=raw, offset=offset)

    def can_hold(self, dtype: Any) -> bool:
        return True

    def to_device(self, array: np.ndarray) -> np.ndarray:
        return array

    def upload_constants(self, values: dict) -> dict:
        return dict(values)  # the host's arrays are the device's

    def to_host(self, array: Any) -> np.ndarray:
        return np.asarray(array)

    def is_array(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)

    def synchronize(self) -> None:
        pass

    def total_memory(self) -> Optional[int]:
        """Physical memory of the machine."""
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None

    def available_memory(self) -> Optional[int]:
        """Host memory the kernel could give now (MemAvailable), else the physical total."""
        available = _meminfo_available()
        return available if available is not None else self.total_memory()

    def allocation_scope(self):
        return contextlib.nullcontext()

    def make_sampler(self) -> TracemallocSampler:
        return TracemallocSampler()


NumpyDevice = NumpyBackend
