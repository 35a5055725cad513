"""Where a step's results go: into ``env``, in the buffers the pool handed the kernel.

A kernel either writes into the buffer ``ctx.out`` gave it (the result *is* that buffer, stored as
it is) or returns an array of its own, which is copied into a planned buffer here, so every value
the run keeps lives where the plan put it and is counted.  Shared by the general loop
(``runtime/executor.py``) and the straight-line runners (``runtime/runner.py``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from gpuinfer.backends.base import Backend
from gpuinfer.errors import NodeExecutionError
from gpuinfer.graph.ir import Node
from gpuinfer.runtime.context import RunContext
from gpuinfer.values import OptionalValue, TensorSequence


def store_outputs(backend: Backend, ctx: RunContext, step: Any, result: Any, env: dict) -> None:
    """Put the step's outputs in ``env``; a kernel's own handed buffer goes in as it is.

    A function of the backend, not a method: runners (runtime/runner.py) call it, and a bound
    method there would tie each runner to its executor in a cycle that only the garbage collector
    undoes, keeping the session's memory after ``del session``."""
    results = result if type(result) in (tuple, list) else (result,)
    if step.keep_host:  # steering values: host arrays, outside the device pool
        for i, name in step.named:
            env[name] = results[i] if i < len(results) else None
        return
    handed = ctx.handed
    for i, name in step.named:
        value = results[i] if i < len(results) else None
        if value is None or handed.get(i) is not value:
            value = _settle(backend, ctx, step.node, i, value)
        env[name] = value


def _settle(backend: Backend, ctx: RunContext, node: Node, i: int, result: Any) -> Any:
    """The output array, in the buffer the pool placed it in (copied there if a kernel made its own)."""
    handed = ctx.handed.get(i)
    if result is handed and result is not None:
        return result
    if isinstance(result, (TensorSequence, OptionalValue)):
        return result
    if isinstance(result, np.ndarray) and not backend.can_hold(result.dtype):
        return result  # a host-only dtype (strings, bfloat16 on CUDA): it stays on the host
    if result is None:
        raise NodeExecutionError(f"{node.describe()} produced no value for output {i} "
                                 f"({node.outputs[i]!r})")
    xp = backend.xp
    if not backend.is_array(result):
        result = xp.asarray(result)
    if handed is not None and handed.shape == result.shape and handed.dtype == result.dtype:
        xp.copyto(handed, result)
        return handed
    buf = ctx.out(i, result.shape, result.dtype)
    xp.copyto(buf, result)
    return buf
