"""Sequence and optional values: construct, index, insert, erase, split, concat, map; Optional*.

A sequence is a ``TensorSequence`` (a list of arrays) and an optional an ``OptionalValue``.  Both
live outside the memory pool, so every tensor put into one is a copy the container owns; tensors
taken out of one are copied into this node's output buffer.  Kernels return such values wrapped in
a one-element tuple (a bare ``TensorSequence`` is a list and would read as several outputs).
"""
from __future__ import annotations

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.values import OptionalValue, TensorSequence
from gpuinfer.ops.registry import op


def _owned(xp, t):
    """A copy of ``t`` for a container to keep (the pool may reuse ``t``'s buffer)."""
    return xp.array(t, copy=True)


def _emit(ctx, i, t):
    """Copy tensor ``t`` into output buffer ``i``."""
    buf = ctx.out(i, tuple(int(d) for d in t.shape), t.dtype)
    ctx.xp.copyto(buf, t)
    return buf


def _seq(value, op_name):
    if not isinstance(value, list):
        raise NodeExecutionError(f"{op_name}: expected a sequence input, got {type(value).__name__}")
    return value


def _position(ctx, position, length, op_name, allow_end):
    """A (host-read) position in [-length, length) (or up to length when inserting), made non-negative."""
    p = int(ctx.host(position).reshape(-1)[0])
    hi = length if allow_end else length - 1
    if not -length <= p <= hi:
        raise NodeExecutionError(f"{op_name}: position {p} out of range for a sequence of length {length}")
    return p + length if p < 0 else p


@op("SequenceEmpty", since=11)
def sequence_empty(ctx):
    """A sequence holding no tensors."""
    return (TensorSequence(),)


@op("SequenceConstruct", since=11)
def sequence_construct(ctx, *tensors):
    """A sequence of (copies of) the inputs, in order."""
    return (TensorSequence(_owned(ctx.xp, t) for t in tensors),)


@op("SequenceAt", since=11)
def sequence_at(ctx, seq, position):
    """The tensor at ``position`` (negative counts from the back)."""
    seq = _seq(seq, "SequenceAt")
    return _emit(ctx, 0, seq[_position(ctx, position, len(seq), "SequenceAt", False)])


@op("SequenceInsert", since=11)
def sequence_insert(ctx, seq, tensor, position=None):
    """A new sequence with ``tensor`` inserted at ``position`` (appended when omitted)."""
    seq = _seq(seq, "SequenceInsert")
    where = len(seq) if position is None else _position(ctx, position, len(seq), "SequenceInsert", True)
    result = TensorSequence(seq)
    result.insert(where, _owned(ctx.xp, tensor))
    return (result,)


@op("SequenceErase", since=11)
def sequence_erase(ctx, seq, position=None):
    """A new sequence without the tensor at ``position`` (the last when omitted)."""
    seq = _seq(seq, "SequenceErase")
    if not seq:
        raise NodeExecutionError("SequenceErase: cannot erase from an empty sequence")
    where = len(seq) - 1 if position is None else _position(ctx, position, len(seq), "SequenceErase", False)
    return (TensorSequence(t for i, t in enumerate(seq) if i != where),)


@op("SequenceLength", since=11)
def sequence_length(ctx, seq):
    """The number of tensors, as an int64 scalar."""
    out = ctx.out(0, (), np.int64)
    out[...] = len(_seq(seq, "SequenceLength"))
    return out


@op("SplitToSequence", since=11)
def split_to_sequence(ctx, x, split=None):
    """Split along ``axis`` into pieces of the given lengths (a scalar: equal chunks; none: size 1)."""
    axis = int(ctx.attr("axis", 0))
    if not -x.ndim <= axis < max(x.ndim, 1):
        raise NodeExecutionError(f"SplitToSequence: axis {axis} out of range for rank {x.ndim}")
    axis %= x.ndim
    dim = x.shape[axis]
    squeeze = False
    if split is None:
        sizes = [1] * dim
        squeeze = not int(ctx.attr("keepdims", 1))
    else:
        s = ctx.host(split)
        if s.ndim == 0:
            step = int(s)
            if step <= 0:
                raise NodeExecutionError(f"SplitToSequence: split must be positive, got {step}")
            sizes = [step] * (dim // step) + ([dim % step] if dim % step else [])
        else:
            sizes = [int(v) for v in s.reshape(-1)]
            if sum(sizes) != dim or any(v < 0 for v in sizes):
                raise NodeExecutionError(f"SplitToSequence: split {sizes} does not add up to dimension {dim}")
    result = TensorSequence()
    start = 0
    head = (slice(None),) * axis
    for size in sizes:
        piece = x[head + ((start if squeeze else slice(start, start + size)),)]
        result.append(_owned(ctx.xp, piece))
        start += size
    return (result,)


@op("ConcatFromSequence", since=11)
def concat_from_sequence(ctx, seq):
    """Concatenate the tensors along ``axis`` (stack them along a new axis when new_axis=1)."""
    xp = ctx.xp
    seq = _seq(seq, "ConcatFromSequence")
    if not seq:
        raise NodeExecutionError("ConcatFromSequence: the sequence is empty")
    new_axis = int(ctx.attr("new_axis", 0))
    rank = seq[0].ndim + new_axis
    axis = int(ctx.attr("axis"))
    if not -rank <= axis < rank:
        raise NodeExecutionError(f"ConcatFromSequence: axis {axis} out of range for rank {rank}")
    axis %= rank
    parts = [xp.expand_dims(t, axis) for t in seq] if new_axis else list(seq)
    shape = list(parts[0].shape)
    shape[axis] = sum(int(p.shape[axis]) for p in parts)
    out = ctx.out(0, shape, parts[0].dtype)
    xp.concatenate(parts, axis=axis, out=out)
    return out


@op("SequenceMap", since=17)
def sequence_map(ctx, seq, *extra):
    """Run ``body`` once per element (sequence inputs indexed, tensors passed whole); collect each output."""
    xp = ctx.xp
    body = ctx.attr("body")
    seq = _seq(seq, "SequenceMap")
    for e in extra:
        if isinstance(e, list) and len(e) != len(seq):
            raise NodeExecutionError(f"SequenceMap: sequence inputs differ in length ({len(seq)} vs {len(e)})")
    outputs = [TensorSequence() for _ in range(ctx.n_outputs)]
    for i in range(len(seq)):
        args = [seq[i]] + [e[i] if isinstance(e, list) else e for e in extra]
        results = ctx.run_graph(body, args)
        for store, value in zip(outputs, results):
            store.append(_owned(xp, value))
    return tuple(outputs)


@op("Optional", since=15)
def optional(ctx, value=None):
    """Wrap a tensor or sequence (or nothing, typed by the ``type`` attribute) as an optional."""
    if value is None:
        return (OptionalValue(None),)
    if isinstance(value, OptionalValue):
        return (value,)
    if isinstance(value, list):
        return (OptionalValue(TensorSequence(value)),)
    return (OptionalValue(_owned(ctx.xp, value)),)


@op("OptionalHasElement", since=15)
def optional_has_element(ctx, value=None):
    """True when the optional (or plain tensor/sequence) input holds a value."""
    out = ctx.out(0, (), np.bool_)
    if isinstance(value, OptionalValue):
        out[...] = value.value is not None
    else:
        out[...] = value is not None
    return out


@op("OptionalGetElement", since=15)
def optional_get_element(ctx, value):
    """The value inside an optional (a plain tensor or sequence passes through, from opset 18)."""
    if isinstance(value, OptionalValue):
        if value.value is None:
            raise NodeExecutionError("OptionalGetElement: the optional input is empty")
        value = value.value
    if isinstance(value, list):
        return (TensorSequence(value),)
    return _emit(ctx, 0, value)
