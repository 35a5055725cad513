"""Devices: numpy (always), CUDA through CuPy (when installed with a GPU), and ``strict``, the
CUDA device's own code on the strict CuPy stand-in (a test device: no GPU needed)."""
from __future__ import annotations

import logging
from typing import Optional, Sequence

from gpuinfer.backends.base import Backend
from gpuinfer.backends.numpy_backend import NumpyBackend
from gpuinfer.errors import DeviceUnavailableError, GpuinferError

log = logging.getLogger("gpuinfer")

PROVIDER_DEVICES = {"CUDAExecutionProvider": "cuda", "CPUExecutionProvider": "cpu"}


DEVICES = ("auto", "cpu", "cuda", "strict")


def cuda_unavailable_reason() -> Optional[str]:
    """None when CuPy and a CUDA GPU are usable, else why not, in words a user can act on."""
    from gpuinfer.backends.cuda.installed import unavailable_reason

    return unavailable_reason()


def resolve_device(device: str = "auto", providers: Optional[Sequence] = None) -> str:
    """Map ``device`` / onnxruntime ``providers`` to "cpu" or "cuda", saying why on "auto"."""
    if providers:
        names = [p[0] if isinstance(p, (tuple, list)) else p for p in providers]
        unknown = [n for n in names if n not in PROVIDER_DEVICES]
        if unknown:
            raise GpuinferError(f"unknown execution provider(s) {unknown}; gpuinfer understands "
                                f"{sorted(PROVIDER_DEVICES)}")
        if device == "auto":
            for name in names:
                if PROVIDER_DEVICES[name] == "cpu" or cuda_unavailable_reason() is None:
                    device = PROVIDER_DEVICES[name]
                    break
            else:
                raise DeviceUnavailableError(f"CUDAExecutionProvider asked for but {cuda_unavailable_reason()}")
            if device == "cpu" and "CUDAExecutionProvider" in names:
                log.warning("gpuinfer: CUDAExecutionProvider was asked for but %s; running on the CPU",
                            cuda_unavailable_reason())
    if device not in DEVICES:
        raise GpuinferError(f"unknown device {device!r}; choose one of {DEVICES}")
    if device == "auto":
        reason = cuda_unavailable_reason()
        if reason is None:
            log.info("gpuinfer: device='auto' chose cuda")
            return "cuda"
        log.info("gpuinfer: device='auto' chose cpu (%s)", reason)
        return "cpu"
    if device == "cuda":
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise DeviceUnavailableError(f"device='cuda' asked for but {reason}")
    return device


def make_backend(device: str, allocator: str = "pool") -> Backend:
    """The device object for a resolved device name; ``allocator`` is the CUDA hook's backing
    store (``"pool"``, ``"async"`` or ``"cuda_malloc"``)."""
    if device in ("cuda", "strict"):
        from gpuinfer.backends.cuda import CudaDevice

        if device == "strict":
            from gpuinfer.backends.strict import STRICT

            return CudaDevice(STRICT, allocator, name="strict")
        return CudaDevice(None, allocator)
    if allocator != "pool":
        raise GpuinferError(f"device_allocator={allocator!r} is for CUDA; the CPU device has no "
                            f"allocator choice (leave it out)")
    return NumpyBackend()


def tile_bytes_for(kind: str) -> int:
    """The ``caps.tile_bytes`` of a device kind, for planning without a device object at hand."""
    if kind == "cuda":
        from gpuinfer.backends.cuda.device import CudaDevice

        return CudaDevice.caps.tile_bytes
    return NumpyBackend.caps.tile_bytes
