"""gpuinfer: an ONNX inference runtime that plans where every intermediate tensor lives.

CuPy on CUDA GPUs, numpy on the CPU; four memory modes (``per_tensor``, ``reduce``, ``reuse``,
``arena``, or ``auto``) switchable per session, with measured peaks; a ``Workspace`` shares one
arena block among sessions that run in turn.
"""
from gpuinfer.errors import (
    DataRemovedError,
    DeviceMemoryError,
    DeviceUnavailableError,
    GpuinferError,
    InputError,
    InvalidModelError,
    MemoryLimitError,
    ModelCheckWarning,
    ModelLoadError,
    NodeExecutionError,
    UnsupportedOpError,
)
from gpuinfer import ops as _ops  # noqa: F401  (registers every kernel)
from gpuinfer.plan import MODES as _MODES
from gpuinfer.report.memory_report import MemoryReport
from gpuinfer.runtime.session import InferenceSession
from gpuinfer.runtime.workspace import Workspace, WorkspaceReport

__version__ = "0.1.0"
MEMORY_MODES = tuple(_MODES)

__all__ = [
    "DataRemovedError", "DeviceMemoryError", "DeviceUnavailableError", "GpuinferError", "InferenceSession",
    "InputError", "InvalidModelError", "MEMORY_MODES", "MemoryLimitError", "MemoryReport", "ModelCheckWarning",
    "ModelLoadError", "NodeExecutionError", "UnsupportedOpError", "Workspace", "WorkspaceReport", "__version__",
]
