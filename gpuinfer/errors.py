"""One exception hierarchy for everything gpuinfer raises on purpose.

Catching ``GpuinferError`` is enough to handle every failure that is the model's or the
caller's fault; anything else escaping is a bug in gpuinfer.
"""
from __future__ import annotations


class GpuinferError(Exception):
    """Base class of every error gpuinfer raises on purpose."""


class ModelLoadError(GpuinferError):
    """The model could not be read: not a file, not ONNX, truncated, missing external data."""


class InvalidModelError(ModelLoadError):
    """The model was read but is not valid: checker failure, cycle, dangling input, bad shapes."""


class UnsupportedOpError(GpuinferError):
    """The model uses op types (or opsets) gpuinfer does not implement; lists all of them at once."""

    def __init__(self, missing: list[tuple[str, str, str, int]]):
        self.missing = missing  # (domain, op_type, node_name, opset)
        by_op: dict[tuple[str, str, int], list[str]] = {}
        for domain, op_type, node, opset in missing:
            by_op.setdefault((domain, op_type, opset), []).append(node)
        lines = []
        for (domain, op_type, opset), nodes in sorted(by_op.items()):
            shown = ", ".join(repr(n) for n in nodes[:5]) + (" …" if len(nodes) > 5 else "")
            qual = f"{domain}::{op_type}" if domain else op_type
            lines.append(f"  {qual} (opset {opset}) used by {len(nodes)} node(s): {shown}")
        super().__init__("unsupported op types in this model:\n" + "\n".join(lines))


class InputError(GpuinferError, ValueError):
    """A feed given to ``run`` is missing, unknown, or of the wrong shape or dtype."""


class NodeExecutionError(GpuinferError):
    """An op failed while running; names the node, its op and its input shapes."""


class DataRemovedError(GpuinferError, KeyError):
    """An intermediate value was asked for after the memory mode freed it."""

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0]) if self.args else ""


class MemoryLimitError(GpuinferError, MemoryError):
    """A run would need more memory than the session's ``memory_limit_bytes``."""


class DeviceMemoryError(GpuinferError, MemoryError):
    """The device ran out of memory; names bytes asked for, the mode, and the leanest mode."""

    def __init__(self, message: str, requested: "int | None" = None) -> None:
        super().__init__(message)
        self.requested = requested  # bytes the failed allocation asked for (None if unknown)


class DeviceError(GpuinferError):
    """The device failed (a CUDA error other than out-of-memory); carries CUDA's message."""


class DeviceUnavailableError(GpuinferError):
    """``device='cuda'`` was asked for but CuPy or a CUDA GPU is not present."""


class ModelCheckWarning(UserWarning):
    """The ONNX checker rejects the model, but nothing in it stops execution, so it is run anyway.

    A warning, not an error: onnxruntime runs such models too (an IR-3 model whose initializers
    are not graph inputs is the common case).  Turn it into an error with
    ``warnings.simplefilter("error", gpuinfer.ModelCheckWarning)``.
    """
