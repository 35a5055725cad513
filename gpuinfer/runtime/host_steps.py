"""Steps a device cannot run: ops on values whose dtype has no device arrays (strings, objects,
bfloat16, float8, 4-bit types on CUDA) run on the host, explicitly.

Their device inputs come down through the device's transfer API (a counted read each), the
kernel runs on numpy, and each output the device can hold goes straight back up into the
buffer the plan gave it (``ndarray.set``: one counted upload); outputs it cannot hold stay on
the host.  On the CPU no step is ever a host step, so this costs the numpy device nothing.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from gpuinfer.backends.numpy_backend import NumpyBackend
from gpuinfer.graph.ir import Graph, Node
from gpuinfer.ops.context import OptionalValue, StandaloneContext, TensorSequence

HOST = NumpyBackend()


def needs_host(node: Node, graph: Graph, device: Any, host_only: frozenset = frozenset()) -> bool:
    """Whether ``node`` touches a value (input or output) of a dtype ``device`` cannot hold;
    ``host_only`` names values typed so by the model (bfloat16 and kin have no numpy dtype here)."""
    if device.kind == "cpu":
        return False
    for name in (*node.inputs, *node.outputs):
        if name in host_only:
            return True
        value = graph.values.get(name) if name else None
        dtype = value.dtype if value is not None else None
        if dtype is None and name in graph.constants:
            dtype = getattr(graph.constants[name], "dtype", None)
        if dtype is not None and not device.can_hold(dtype):
            return True
    return False


def to_host(value: Any, device: Any) -> Any:
    """A step's input as numpy sees it (sequences and optionals element by element)."""
    if isinstance(value, TensorSequence):
        return TensorSequence(to_host(v, device) for v in value)
    if isinstance(value, OptionalValue):
        return OptionalValue(to_host(value.value, device))
    if value is None or isinstance(value, np.ndarray):
        return value
    return device.to_host(value)


def run_on_host(step: Any, args: list, ctx: Any, device: Any) -> Any:
    """Run ``step``'s kernel on numpy; outputs the device holds go up into their planned buffers."""
    node = step.node
    host_ctx = StandaloneContext(attrs=node.attrs, opset=node.opset, n_outputs=len(node.outputs),
                                 op_type=node.op_type, node_name=node.name, device=HOST)
    result = step.kernel(host_ctx, *[to_host(a, device) for a in args])
    results = list(result) if type(result) in (tuple, list) else [result]
    for i, value in enumerate(results):
        results[i] = _settle_up(ctx, i, value, device)
    return tuple(results) if len(results) > 1 or type(result) in (tuple, list) else results[0]


def _settle_up(ctx: Any, i: int, value: Any, device: Any) -> Optional[Any]:
    if not isinstance(value, np.ndarray) or not device.can_hold(value.dtype) or not ctx.wants(i):
        return value
    buf = ctx.out(i, value.shape, value.dtype)
    buf.set(value if value.flags.c_contiguous else value.copy())  # ascontiguousarray would make 0-d 1-d
    return buf
