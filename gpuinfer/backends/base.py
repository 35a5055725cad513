"""What the runtime needs from a device: raw byte blocks, typed views, counted transfers, the
allocator hook's scope, error translation, a memory sampler, and declared capabilities.

Ops never ask which array library they run on (numpy or not); they ask the device's
``caps``.  Everything that differs between numpy and CUDA lives behind this protocol, in one
package per device (``numpy_backend``, ``cuda/``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ContextManager, Optional, Protocol

import numpy as np


@dataclass(frozen=True)
class Capabilities:
    """What a kernel may count on from the device it runs on.

    ``host_arrays``: arrays are host numpy arrays, so host-only numpy paths (``mode=`` on
    ``take``, ``where=`` on ufuncs, reading values to choose a path) cost nothing.
    ``ufunc_where``: ufuncs take ``where=`` (CuPy's do not).
    ``scatter_ufuncs``: ufuncs whose ``.at`` works (CuPy: add, subtract, maximum, minimum, bitwise).
    ``einsum_out``: ``einsum`` writes into ``out=`` (CuPy's allocates its result).
    ``tile_bytes``: the working set a tiled kernel should aim for (a cache on the CPU; on a GPU
    whole tensors, so tiling never multiplies launches).
    ``fused_kernels``: compiled kernels from ``kernels/`` can be launched.
    """

    host_arrays: bool
    ufunc_where: bool
    scatter_ufuncs: frozenset
    einsum_out: bool
    tile_bytes: int
    fused_kernels: bool


class Backend(Protocol):
    """A device the executor can run ops on and the pools can allocate from."""

    name: str  # "cpu", "cuda" or "strict" (the CUDA device's code on the strict stand-in)
    kind: str  # "cpu" or "cuda": what the device stands for
    xp: Any  # the array module: numpy, cupy, or the strict stand-in
    caps: Capabilities

    def raw(self, nbytes: int) -> Any:
        """A fresh 1-D uint8 buffer of ``nbytes`` (aligned to at least 64 bytes)."""

    def view(self, raw: Any, offset: int, shape: tuple, dtype: np.dtype) -> Any:
        """A typed array over ``raw[offset:]``: no allocation, no copy."""

    def to_device(self, array: np.ndarray) -> Any:
        """A device copy of a host array (the array itself on the CPU); one counted upload."""

    def upload_constants(self, values: dict) -> dict:
        """The model's weights on the device, uploaded once at session creation (the arrays
        themselves on the CPU); host-only values come back as they are."""

    def to_host(self, array: Any) -> np.ndarray:
        """A host numpy array (the array itself on the CPU); one counted download."""

    def is_array(self, x: Any) -> bool:
        """Whether ``x`` is an array of this device."""

    def can_hold(self, dtype: np.dtype) -> bool:
        """Whether arrays of ``dtype`` can live on this device (strings and objects cannot on CUDA)."""

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU)."""

    def total_memory(self) -> Optional[int]:
        """Bytes of memory this device has (None if unknown)."""

    def available_memory(self) -> Optional[int]:
        """Bytes the device can give now: the ceiling no plan may exceed (None if unknown)."""

    def allocation_scope(self) -> ContextManager:
        """Context manager around a run: device allocations go through the counting hook, and
        device errors (out of memory, CUDA errors) come out as ``GpuinferError`` subclasses."""

    def make_sampler(self) -> Any:
        """The independent memory sampler of this device (tracemalloc, NVML, the stand-in's space)."""
