"""The installed CuPy, imported for its API alone (no device needed): the strict stand-in checks
every call it emulates against it.  Part of the cuda package, the only place that imports cupy."""
from __future__ import annotations

from typing import Any, Optional


def installed_cupy() -> Optional[Any]:
    """``cupy`` if it imports (it does without a GPU or driver), else None."""
    try:
        import cupy
    except Exception:
        return None
    return cupy


_NO_DRIVER = ("insufficient driver", "no cuda-capable device", "cudaErrorNoDevice", "cudaErrorInsufficientDriver",
              "libcuda", "CUDA driver")


def unavailable_reason() -> Optional[str]:
    """None when CuPy and a CUDA GPU are usable, else why not, in words a user can act on."""
    cupy = installed_cupy()
    if cupy is None:
        return "cupy is not installed; pip install -e '.[cuda12]' or '.[cuda13]'"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA GPU is visible"
    except Exception as exc:
        text = str(exc)
        if any(marker.lower() in text.lower() for marker in _NO_DRIVER):
            return ("no NVIDIA GPU driver was found on this machine (CUDA reported: "
                    f"{text.strip()}); gpuinfer runs on the CPU with device='cpu'")
        return f"CUDA is not usable: {text}"
    return None
