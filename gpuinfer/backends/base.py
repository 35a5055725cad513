"""What the runtime needs from an array library: raw byte blocks, typed views, host transfers."""
from __future__ import annotations

from typing import Any, Optional, Protocol

import numpy as np


class Backend(Protocol):
    """An array library the executor can run ops on and the pools can allocate from."""

    name: str  # "cpu" or "cuda"
    xp: Any  # numpy or cupy

    def raw(self, nbytes: int) -> Any:
        """A fresh 1-D uint8 buffer of ``nbytes`` (aligned to at least 64 bytes)."""

    def view(self, raw: Any, offset: int, shape: tuple, dtype: np.dtype) -> Any:
        """A typed array over ``raw[offset:]``: no allocation, no copy."""

    def to_device(self, array: np.ndarray) -> Any:
        """A device copy of a host array (the array itself on the CPU)."""

    def to_host(self, array: Any) -> np.ndarray:
        """A host numpy array (the array itself on the CPU)."""

    def is_array(self, x: Any) -> bool:
        """Whether ``x`` is an array of this backend."""

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU)."""

    def total_memory(self) -> Optional[int]:
        """Bytes of memory this device has (None if unknown): the ceiling no plan may exceed."""
