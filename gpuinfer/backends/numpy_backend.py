"""The CPU backend: numpy arrays, buffers from ``np.empty`` (which ``tracemalloc`` sees)."""
from __future__ import annotations

import ctypes
import os
from typing import Any, Optional

import numpy as np

BASE_ALIGNMENT = 64  # cache line; numpy's own allocations only promise 16


def _address(block: np.ndarray) -> int:
    """Address of a fresh array's first byte (a third of the cost of ``block.ctypes.data``)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(block))


class NumpyBackend:
    name = "cpu"
    xp = np

    def raw(self, nbytes: int) -> np.ndarray:
        block = np.empty(nbytes + BASE_ALIGNMENT, dtype=np.uint8)
        start = (-_address(block)) % BASE_ALIGNMENT
        return block[start:start + nbytes]

    def view(self, raw: np.ndarray, offset: int, shape: tuple, dtype: Any) -> np.ndarray:
        return np.ndarray(shape, dtype=dtype, buffer=raw, offset=offset)

    def to_device(self, array: np.ndarray) -> np.ndarray:
        return array

    def to_host(self, array: Any) -> np.ndarray:
        return np.asarray(array)

    def is_array(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)

    def synchronize(self) -> None:
        pass

    def total_memory(self) -> Optional[int]:
        """Physical memory of the machine, the ceiling no plan may exceed."""
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
