"""The CUDA backend: CuPy arrays; typed views into raw device blocks with ``memptr=base + offset``.

Imported only when ``device="cuda"`` is chosen, so ``import gpuinfer`` never needs CuPy.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np


class CupyBackend:
    name = "cuda"

    def __init__(self) -> None:
        import cupy

        self.xp = cupy
        self._cupy = cupy

    def raw(self, nbytes: int) -> Any:
        # CuPy's allocations are 256-byte aligned; ask for at least one byte so a pointer exists.
        return self._cupy.empty((max(int(nbytes), 1),), dtype=self._cupy.uint8)

    def view(self, raw: Any, offset: int, shape: tuple, dtype: Any) -> Any:
        return self._cupy.ndarray(shape, dtype=dtype, memptr=raw.data + int(offset))

    def to_device(self, array: np.ndarray) -> Any:
        return self._cupy.asarray(array)

    def to_host(self, array: Any) -> np.ndarray:
        if isinstance(array, np.ndarray):
            return array
        return self._cupy.asnumpy(array)

    def is_array(self, x: Any) -> bool:
        return isinstance(x, self._cupy.ndarray)

    def synchronize(self) -> None:
        self._cupy.cuda.get_current_stream().synchronize()

    def total_memory(self) -> Optional[int]:
        free, total = self._cupy.cuda.runtime.memGetInfo()
        return int(total)
