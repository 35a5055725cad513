"""The op registry as the graph layer uses it (``gpuinfer/graph/kernels.py``), installed there
when ``gpuinfer.ops`` loads: lookups, constant folding, and the specs of fused steps."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from gpuinfer.ops.context import StandaloneContext
from gpuinfer.ops.fused import activation_spec, hard_swish_spec, residual_spec, silu_spec
from gpuinfer.ops.registry import OpSpec, lookup


class RegistryKernels:
    """``KernelSource`` over the op registry (``gpuinfer/ops/registry.py``)."""

    def lookup(self, op_type: str, opset: int, domain: str = "") -> Optional[OpSpec]:
        return lookup(op_type, opset, domain)

    def evaluate(self, node: Any, args: Sequence[Any], max_bytes: Optional[int]) -> Any:
        ctx = StandaloneContext(attrs=node.attrs, opset=node.opset, n_outputs=len(node.outputs),
                                op_type=node.op_type, node_name=node.name, max_bytes=max_bytes)
        return node.spec.kernel(ctx, *args)

    def fused_activation(self, first: Any, act: Any) -> OpSpec:
        return activation_spec(first, act)

    def fused_residual(self, first: Any, add: Any) -> OpSpec:
        return residual_spec(first, add)

    def fused_hard_swish(self, op_type: str, dtype: Any) -> OpSpec:
        return hard_swish_spec(op_type, dtype)

    def fused_silu(self, op_type: str) -> OpSpec:
        return silu_spec(op_type)
