"""Array backends: numpy (always) and cupy (when installed with a CUDA GPU)."""
from __future__ import annotations

import logging
from typing import Optional, Sequence

from gpuinfer.backends.base import Backend
from gpuinfer.backends.numpy_backend import NumpyBackend
from gpuinfer.errors import DeviceUnavailableError, GpuinferError

log = logging.getLogger("gpuinfer")

PROVIDER_DEVICES = {"CUDAExecutionProvider": "cuda", "CPUExecutionProvider": "cpu"}


def cuda_unavailable_reason() -> Optional[str]:
    """None when CuPy and a CUDA GPU are usable, else why not."""
    try:
        import cupy  # noqa: F401
    except Exception as exc:
        return f"cupy is not installed ({type(exc).__name__}); pip install -e '.[cuda12]' or '.[cuda13]'"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA GPU is visible"
    except Exception as exc:
        return f"CUDA is not usable: {exc}"
    return None


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
    if device not in ("auto", "cpu", "cuda"):
        raise GpuinferError(f"unknown device {device!r}; choose 'auto', 'cpu' or 'cuda'")
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


def make_backend(device: str) -> Backend:
    if device == "cuda":
        from gpuinfer.backends.cupy_backend import CupyBackend

        return CupyBackend()
    return NumpyBackend()
