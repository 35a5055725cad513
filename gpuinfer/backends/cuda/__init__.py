"""The CUDA device package: the only place that imports ``cupy``, ``cupy_backends`` or ``pynvml``."""
from gpuinfer.backends.cuda.device import CudaDevice

__all__ = ["CudaDevice"]
