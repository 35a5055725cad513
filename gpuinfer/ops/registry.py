"""The op table: (domain, op type, since-version) -> kernel, filled by explicit ``@op`` decorators.

A kernel is a plain function ``kernel(ctx, *inputs) -> array | tuple[array, ...]`` written once
against ``ctx.xp`` (numpy or cupy).  Missing optional inputs arrive as ``None``.  The highest
since-version not above the model's opset for that domain wins, as in the ONNX spec.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Optional

Kernel = Callable[..., Any]
# scratch(attrs, input_shapes, input_dtypes) -> [(shape, dtype), ...]: the op's one-step buffers.
# One that also takes an ``output_shapes`` keyword is given the output shapes the plan knows.
ScratchFn = Callable[[dict, list, list], list]


@dataclass(frozen=True)
class OpSpec:
    """One registered implementation of an op, valid from ``since`` up to the next registration."""

    domain: str
    op_type: str
    since: int
    kernel: Kernel
    inplace: bool = False  # output 0 may share the buffer of an input of the same size
    scratch: Optional[ScratchFn] = None
    shape_only: bool = False  # reads only shapes of its inputs (Shape, Size): inputs need no data

    def scratch_for(self, device_kind: str) -> Optional[ScratchFn]:
        """The scratch function matching ``kernel_for(device_kind)``: a variant's own (handed this
        spec's shared one, for the cases it leaves to the shared kernel), else the shared one."""
        own = _VARIANT_SCRATCH.get((self.domain, self.op_type, device_kind))
        if own is None:
            return self.scratch
        return _bound_scratch(own, self.scratch)

    def kernel_for(self, device_kind: str) -> Kernel:
        """The kernel to run on a device of ``device_kind``: its registered variant (which gets this
        spec's shared kernel first, to fall back on for cases it does not cover), else the shared one."""
        variant = _VARIANTS.get((self.domain, self.op_type, device_kind))
        if variant is None:
            return self.kernel
        return functools.partial(variant, self.kernel)


@functools.lru_cache(maxsize=None)
def _bound_scratch(own: Callable, shared: Optional[Callable]) -> Callable:
    """One partial per (variant scratch, shared scratch): planners cache by function identity."""
    return functools.partial(own, shared)


_TABLE: dict[tuple[str, str], list[OpSpec]] = {}
_VARIANTS: dict[tuple[str, str, str], Kernel] = {}
_VARIANT_SCRATCH: dict[tuple[str, str, str], Callable[..., list]] = {}


def variant(op_type: str, device_kind: str, domain: str = "",
            scratch: Optional[Callable[..., list]] = None) -> Callable[[Kernel], Kernel]:
    """Register a device's own kernel for ``op_type`` (every opset): ``kernel(shared, ctx, *inputs)``,
    where ``shared`` is the op's kernel for the node's opset, called for what the variant does not
    handle.  E.g. a CUDA Conv that launches fused kernels from ``backends/cuda/kernels``.
    ``scratch(shared_scratch, attrs, shapes, dtypes)`` predicts the variant's scratch for the plan."""
    def register(kernel: Kernel) -> Kernel:
        key = ("" if domain == "ai.onnx" else domain, op_type, device_kind)
        if key in _VARIANTS:
            raise RuntimeError(f"{op_type} variant for {device_kind} registered twice")
        _VARIANTS[key] = kernel
        if scratch is not None:
            variant_scratch(op_type, device_kind, domain)(scratch)
        return kernel

    return register


def variant_scratch(op_type: str, device_kind: str, domain: str = "") -> Callable[[Callable], Callable]:
    """Register only the scratch a device's path of ``op_type`` needs (when the op's shared kernel
    takes the device path itself, as Resize does): ``fn(shared_scratch, attrs, shapes, dtypes, ...)``."""
    def register(fn: Callable) -> Callable:
        _VARIANT_SCRATCH[("" if domain == "ai.onnx" else domain, op_type, device_kind)] = fn
        return fn

    return register


def op(op_type: str, since: int = 1, domain: str = "", *, inplace: bool = False,
       scratch: Optional[ScratchFn] = None, shape_only: bool = False) -> Callable[[Kernel], Kernel]:
    """Register ``kernel`` for ``op_type`` from opset ``since`` on.

    ``inplace=True`` promises the kernel stays correct when its output buffer *is* one of its
    inputs' buffers (same shape and dtype): the arena planner then may place them together.
    """
    if domain == "ai.onnx":
        domain = ""

    def register(kernel: Kernel) -> Kernel:
        specs = _TABLE.setdefault((domain, op_type), [])
        if any(s.since == since for s in specs):
            raise RuntimeError(f"{op_type} since {since} registered twice")
        specs.append(OpSpec(domain, op_type, since, kernel, inplace, scratch, shape_only))
        specs.sort(key=lambda s: s.since)
        return kernel

    return register


def lookup(op_type: str, opset: int, domain: str = "") -> Optional[OpSpec]:
    """The spec in force for ``op_type`` at ``opset``, or None if gpuinfer lacks it."""
    if domain == "ai.onnx":
        domain = ""
    best = None
    for spec in _TABLE.get((domain, op_type), ()):
        if spec.since <= opset:
            best = spec
    return best


def registered_ops() -> list[tuple[str, str, int]]:
    """Every (domain, op type, since) registered, for docs and coverage reports."""
    return sorted((s.domain, s.op_type, s.since) for specs in _TABLE.values() for s in specs)
