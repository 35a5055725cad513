"""What the graph layer needs of the op registry, without importing ``gpuinfer.ops``.

Loading binds each node to its registered op, folds constants by running kernels, and graph
passes turn chains of nodes into fused steps.  The kernels for all of that live in ``gpuinfer/ops``;
the graph reaches them through the ``KernelSource`` that package installs here when it is imported
(``gpuinfer/ops/__init__.py``), so the dependency runs one way: ops may know the graph, the graph
never imports ops.
"""
from __future__ import annotations

from typing import Any, Optional, Protocol, Sequence

from gpuinfer.errors import GpuinferError


class KernelSource(Protocol):
    """The op registry as the graph layer sees it (``gpuinfer/ops/graph_kernels.py``)."""

    def lookup(self, op_type: str, opset: int, domain: str = "") -> Any:
        """The op's spec (kernel, scratch, in-place promise) for ``opset``, or None if unknown."""

    def evaluate(self, node: Any, args: Sequence[Any], max_bytes: Optional[int]) -> Any:
        """Run ``node``'s kernel now on host arrays (constant folding), no buffer over ``max_bytes``."""

    def fused_activation(self, first: Any, act: Any) -> Any:
        """The spec of one step running ``first`` (Conv, Gemm, ...) then ``act`` in place."""

    def fused_residual(self, first: Any, add: Any) -> Any:
        """The spec of one step running ``first`` then the residual Add into its output."""

    def fused_hard_swish(self, op_type: str, dtype: Any) -> Any:
        """The spec of ``x * Clip(x + 3, 0, 6) / 6`` as one step, in ``dtype``'s arithmetic."""

    def fused_silu(self, op_type: str) -> Any:
        """The spec of ``x * Sigmoid(x)`` as one step, in the two nodes' arithmetic."""


_installed: Optional[KernelSource] = None


def install(source: KernelSource) -> None:
    """Called once by ``gpuinfer.ops`` as it loads."""
    global _installed
    _installed = source


def kernels() -> KernelSource:
    if _installed is None:
        raise GpuinferError("no op registry is loaded: import gpuinfer (or gpuinfer.ops) before loading a graph")
    return _installed
