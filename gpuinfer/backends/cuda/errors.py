"""CUDA failures as ``GpuinferError`` subclasses: what the user can act on, not CuPy's types.

- CuPy's pool ``OutOfMemoryError`` and a raw ``cudaMalloc``'s ``cudaErrorMemoryAllocation``
  become ``DeviceMemoryError`` with the bytes asked for, the bytes this run held, and the mode;
- any other CUDA runtime error becomes ``DeviceError`` with CUDA's own message.
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator, Optional

from gpuinfer.errors import DeviceError, DeviceMemoryError, NodeExecutionError

CUDA_ERROR_MEMORY_ALLOCATION = 2


def _requested(exc: BaseException) -> Optional[int]:
    size = getattr(exc, "size", None)
    if isinstance(size, int):
        return size
    match = re.search(r"(\d[\d,]*) bytes", str(exc))
    return int(match.group(1).replace(",", "")) if match else None


def device_failure(cupy: Any, exc: BaseException, in_use: int, mode: str) -> Optional[Exception]:
    """The ``GpuinferError`` that ``exc`` (or the exception it wraps) stands for, or None."""
    seen = exc
    while seen is not None:
        if isinstance(seen, cupy.cuda.memory.OutOfMemoryError) or (
                isinstance(seen, cupy.cuda.runtime.CUDARuntimeError)
                and getattr(seen, "status", None) == CUDA_ERROR_MEMORY_ALLOCATION):
            asked = _requested(seen)
            return DeviceMemoryError(
                f"the GPU ran out of memory asking for {asked if asked is not None else 'an unknown number of'} "
                f"bytes in memory_mode={mode!r} ({in_use} bytes in use by this run); memory_mode='arena' "
                f"needs least (its plan is no larger than the lower bound plus alignment)", requested=asked)
        if isinstance(seen, cupy.cuda.runtime.CUDARuntimeError):
            return DeviceError(f"CUDA error: {seen}")
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def translated(cupy: Any, hook: Any, mode: str) -> Iterator[None]:
    """Re-raise device failures of the block (raw, or wrapped by the run loop) as ours."""
    try:
        yield
    except Exception as exc:
        mapped = device_failure(cupy, exc, hook.in_use, mode)
        if mapped is None:
            raise
        if isinstance(exc, NodeExecutionError):  # say where: the run loop named the node
            mapped.args = (f"{mapped.args[0]} [at {str(exc).split(' failed on')[0]}]",)
        raise mapped from exc
