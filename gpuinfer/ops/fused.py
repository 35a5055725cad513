"""Kernels of the fused steps graph passes make (``gpuinfer/graph/passes``): the passes decide
which nodes become one step, this module says how that step runs.

* a Conv/ConvTranspose/Gemm/MatMul and the activation after it (``fusion.py``): the producer
  writes its output, the activation rewrites that buffer where it lies (working in the producer's
  spent scratch where it fits: ``ScratchLender``);
* a producer and the residual Add after it (``residual.py``): the sum lands in the producer's output;
* the hard-swish chain ``x * Clip(x + 3, 0, 6) / 6`` (``hardswish.py``), chunk by chunk;
* SiLU, ``x * Sigmoid(x)`` (``silu.py``), chunk by chunk.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpuinfer.backends import tile_bytes_for
from gpuinfer.ops.context import OpContext
from gpuinfer.ops.elementwise import chunk_scratch, chunked, clamp
from gpuinfer.ops.prelu_bands import band_shape, prelu_in_bands
from gpuinfer.ops.registry import OpSpec
from gpuinfer.plan.lifetimes import scratch_keywords


def activation_spec(first: Any, act: Any) -> OpSpec:
    """``first``'s kernel, then ``act``'s in place on its output, as one op: itself in place on
    its input where both halves are (a BatchNormalization then Relu rewrites its input's buffer,
    as the two nodes did)."""
    inplace = bool(first.spec.inplace and act.spec.inplace)
    return OpSpec("", f"{first.op_type}+{act.op_type}", 1, _chain(first, act), inplace, _chain_scratch(first, act))


def residual_spec(first: Any, add: Any) -> OpSpec:
    """``first``'s kernel into the step's output, then the residual added there."""
    n_first = len(first.inputs)

    def kernel(ctx: OpContext, *args: Any):
        y = first.spec.kernel(PartContext(ctx, first), *args[:n_first])
        r = args[n_first]
        if tuple(r.shape) != tuple(y.shape):
            raise ValueError(f"residual Add: {tuple(r.shape)} does not match {first.op_type} output {tuple(y.shape)}")
        return ctx.xp.add(y, r, out=y)

    kernel.__doc__ = f"{first.op_type} then the residual Add in place on its output"
    return OpSpec("", f"{first.op_type}+Add", 1, kernel, False, first.spec.scratch)


def hard_swish_spec(op_type: str, dtype: Any) -> OpSpec:
    """The hard-swish chain in ``dtype`` (its constants' type), in the four nodes' order of operations."""
    dtype = np.dtype(dtype)
    three, six = dtype.type(3), dtype.type(6)

    def kernel(ctx, x):
        """x * clip(x + 3, 0, 6) / 6, chunk by chunk, in the four nodes' order of operations."""
        xp = ctx.xp
        if x.dtype != dtype:
            raise TypeError(f"{op_type}: x is {x.dtype}, the chain's constants are {dtype}")

        def body(xc, oc, t):
            xp.add(xc, three, out=t)
            clamp(xp, t, 0, 6, t)
            xp.multiply(xc, t, out=oc)
            xp.divide(oc, six, out=oc)

        return chunked(ctx, x, [None], body)

    return OpSpec("", op_type, 1, kernel, True, chunk_scratch(None))


def silu_spec(op_type: str) -> OpSpec:
    """``x * Sigmoid(x)`` as one step; on CUDA one launch (``ops/gpu/activation.py``)."""

    def kernel(ctx, x):
        """x * (1 / (1 + e^-x)), chunk by chunk, in the Sigmoid and Mul kernels' order of operations."""
        xp = ctx.xp

        def body(xc, oc, t):
            xp.negative(xc, out=t)
            xp.exp(t, out=t)
            xp.add(t, 1, out=t)
            xp.divide(1, t, out=t)
            xp.multiply(xc, t, out=oc)

        return chunked(ctx, x, [None], body)

    return OpSpec("", op_type, 1, kernel, True, chunk_scratch(None))


def _chain_scratch(first: Any, act: Any):
    """The fused step's scratch: the producer's buffers, then the activation's (PRelu wants one),
    in the order the two halves ask for them; the activation's input is the producer's output.
    ``device_kind`` picks each half's scratch function as ``OpSpec.scratch_for`` does; the step's
    ``scratch_slack`` goes to the producer, or on the CPU to the activation where the producer
    asks for no scratch at all (a 1x1 Conv), as ``PartContext.scratch_slack`` gives it at run time."""
    n_first = len(first.inputs)

    def scratch(attrs, shapes, dtypes, output_shapes=None, device_kind="cpu", scratch_slack=0):
        head, tail = first.spec.scratch_for(device_kind), act.spec.scratch_for(device_kind)
        wanted = list(_call_scratch(head, first.attrs, shapes[:n_first], dtypes[:n_first], device_kind,
                                    scratch_slack)) if head is not None else []
        made = output_shapes[0] if output_shapes else None
        if tail is None or made is None:
            return wanted  # (no shape: the activation's buffer is served, and learnt, at the first run)
        band = _prelu_band(act, made, shapes[n_first:], dtypes[0], device_kind)
        if band is not None:
            return wanted + [(band, np.dtype(dtypes[0]))]
        spare = scratch_slack if device_kind == "cpu" and not wanted else 0
        after = list(_call_scratch(tail, act.attrs, [made, *shapes[n_first:]], [dtypes[0], *dtypes[n_first:]],
                                   device_kind, spare))
        if device_kind == "cpu" and _fits_in(after, wanted):
            return wanted  # the activation works in the producer's spent scratch (ScratchLender)
        return wanted + after

    return scratch


_LEND_ALIGN = 64  # bytes: each lent buffer starts on a cache line


def _lent_bytes(shape: Any, dtype: Any) -> int:
    return -(-math.prod(shape) * np.dtype(dtype).itemsize // _LEND_ALIGN) * _LEND_ALIGN


def _fits_in(after: list, before: list) -> bool:
    """Whether the activation's scratch (``after``, (shape, dtype) pairs) fits end to end in the
    producer's largest scratch buffer (``before``), which is spent by the time the activation runs."""
    if not after or not before:
        return False
    return sum(_lent_bytes(shape, dtype) for shape, dtype in after) <= max(
        math.prod(shape) * np.dtype(dtype).itemsize for shape, dtype in before)


class ScratchLender:
    """Hands the activation half of a fused step views into the producer half's largest scratch
    buffer, which the producer no longer needs: a step's scratch is then the larger of the two
    halves', not their sum (a chunked activation after a banded Conv, e.g. PP-OCR cls's
    hard-swish: arena 372 -> 356 KB).  ``_chain_scratch`` declares the same choice to the plan
    (``_fits_in``); what does not fit goes to the step's own scratch, as declared.

    What the spent buffer holds beyond the activation's declared chunk is ``room`` for wider
    chunks (``elementwise.chunked``): the im2col columns are several times the chunk, and each
    chunk is a Python pass of four to five ufuncs.  Chunk width changes no bit."""

    def __init__(self):
        self.largest = None
        self.used = 0

    def keep(self, buf: Any) -> Any:
        if self.largest is None or buf.nbytes > self.largest.nbytes:
            self.largest = buf
        return buf

    def room(self, per_element: int, buffers: int) -> int:
        """Elements each of ``buffers`` buffers of ``per_element`` bytes an element (summed over
        them) can still be lent: what is left of the spent buffer, less each one's alignment."""
        if self.largest is None or not self.largest.flags.c_contiguous or per_element <= 0:
            return 0
        return max(0, self.largest.nbytes - self.used - buffers * _LEND_ALIGN) // per_element

    def lend(self, shape: Any, dtype: Any) -> Any:
        need = _lent_bytes(shape, dtype)
        if self.largest is None or self.used + need > self.largest.nbytes or not self.largest.flags.c_contiguous:
            return None
        raw = self.largest.reshape(-1).view(np.uint8)[self.used:self.used + math.prod(shape) * np.dtype(dtype).itemsize]
        self.used += need
        return raw.view(dtype).reshape(shape)


def _prelu_band(act: Any, made: Any, rest: list, dtype: Any, device_kind: str):
    """The band PRelu after a producer runs in on the CPU (ops/prelu_bands.py), or None."""
    if act.op_type != "PRelu" or act.domain or device_kind != "cpu" or not rest or rest[0] is None:
        return None
    return band_shape(tuple(made), tuple(rest[0]), dtype, act.opset)


def _call_scratch(fn, attrs, shapes, dtypes, device_kind, scratch_slack=0):
    """A half's scratch, with the device's tile size and the step's spare bytes where its
    function takes them."""
    keywords = scratch_keywords(fn)
    extra = {"tile_bytes": tile_bytes_for(device_kind)} if "tile_bytes" in keywords else {}
    if scratch_slack and "scratch_slack" in keywords:
        extra["scratch_slack"] = scratch_slack
    return fn(attrs, shapes, dtypes, **extra) or ()


def _chain(first: Any, act: Any):
    n_first = len(first.inputs)

    def kernel(ctx: OpContext, *args: Any):
        kind = ctx.device.kind
        lender = ScratchLender() if kind == "cpu" else None
        head = PartContext(ctx, first, lender=lender)
        head.then = act  # a device kernel may apply the activation itself (ops/gpu/conv.py)
        head.then_inputs = args[n_first:]  # ... with its other inputs (PRelu's slope)
        y = first.spec.kernel_for(kind)(head, *args[:n_first])
        if head.absorbed:
            return y
        band = _prelu_band(act, tuple(y.shape), [tuple(a.shape) for a in args[n_first:]], y.dtype, kind)
        if band is not None:
            return prelu_in_bands(PartContext(ctx, act, y), y, args[n_first], band)
        return act.spec.kernel_for(kind)(PartContext(ctx, act, y, lender=lender), y, *args[n_first:])

    kernel.__doc__ = f"{first.op_type} then {act.op_type} in place on its output"
    return kernel


class PartContext(OpContext):
    """The context one half of a fused node sees: its own attributes, the node's buffers."""

    def __init__(self, ctx: OpContext, node: Any, out0: Any = None, lender: Any = None):
        self._ctx = ctx
        self._out0 = out0
        self._lender = lender  # the step's ScratchLender: the producer fills it, the activation borrows
        self.then = None  # the node whose work follows in this fused step (set for the first half)
        self.then_inputs = ()  # ``then``'s inputs after the first (set with it)
        self.absorbed = False  # set by a kernel that did ``then``'s work too
        self.device = ctx.device  # the halves ask the same device's capabilities
        self.xp = ctx.xp
        self.attrs = node.attrs
        self.opset = node.opset
        self.op_type = node.op_type
        self.node_name = node.name
        self.n_outputs = 1
        whole = getattr(ctx, "_memo", None)  # each half its own memo, inside the fused step's
        self._memo = None if whole is None else whole.setdefault(("part", node.name), {})

    def wants(self, i: int) -> bool:
        return i == 0

    def out(self, i, shape, dtype):
        o = self._out0
        if o is not None and i == 0 and tuple(o.shape) == tuple(shape) and o.dtype == dtype:
            return o
        return self._ctx.out(i, shape, dtype)

    @property
    def scratch_slack(self) -> int:
        """The step's spare scratch bytes go to its first half (the producer, made without an
        output buffer handed in; the activation after it rewrites that buffer), or on the CPU to
        the activation where the producer took no scratch (``_chain_scratch`` declares the same)."""
        if self._out0 is None:
            return self._ctx.scratch_slack
        lender = self._lender
        return self._ctx.scratch_slack if lender is not None and lender.largest is None else 0

    def lent_room(self, per_element: int, buffers: int) -> int:
        """The activation half's room in the producer's spent scratch (``ScratchLender.room``)."""
        lender = self._lender
        return 0 if lender is None or self._out0 is None else lender.room(per_element, buffers)

    def scratch(self, shape, dtype):
        lender = self._lender
        if lender is None:
            return self._ctx.scratch(shape, dtype)
        if self._out0 is None:  # the producer: its buffers, kept for the activation to borrow
            return lender.keep(self._ctx.scratch(shape, dtype))
        lent = lender.lend(shape, dtype)
        return lent if lent is not None else self._ctx.scratch(shape, dtype)

    def host(self, x):
        return self._ctx.host(x)
