"""Softmax, LogSoftmax and Hardmax.

Before opset 13 the input is coerced to 2-D at ``axis`` (default 1) and the op runs over the whole
second factor; from opset 13 it runs over the single ``axis`` (default -1).
"""
from __future__ import annotations

import math

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.registry import op


def _view(ctx, x, out):
    """(input view, output view, reduction axis) following the opset's axis semantics."""
    if ctx.opset >= 13:
        axis = int(ctx.attr("axis", -1))
        if not -x.ndim <= axis < max(x.ndim, 1):
            raise NodeExecutionError(f"{ctx.op_type}: axis {axis} out of range for rank {x.ndim}")
        return x, out, axis % max(x.ndim, 1)
    axis = int(ctx.attr("axis", 1))
    if not -x.ndim <= axis <= x.ndim:
        raise NodeExecutionError(f"{ctx.op_type}: axis {axis} out of range for rank {x.ndim}")
    if axis < 0:
        axis += x.ndim
    shape = (math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))
    return x.reshape(shape), out.reshape(shape), 1


def _log_softmax_scratch(attrs, shapes, dtypes):
    return [(tuple(shapes[0]), np.dtype(dtypes[0]))]


@op("Softmax", since=1, inplace=True)
def softmax(ctx, x):
    """exp(x - max) normalized to sum 1 along the axis."""
    xp = ctx.xp
    out = ctx.out(0, x.shape, x.dtype)
    if x.size == 0:
        return out
    xv, ov, axis = _view(ctx, x, out)
    m = xp.max(xv, axis=axis, keepdims=True)
    # A fully masked row (all -inf) is NaN by the spec.  executor.run already ignores floating-point
    # warnings once for the whole run, so this block only matters to callers outside a run.
    with np.errstate(invalid="ignore"):
        xp.subtract(xv, m, out=ov)
    xp.exp(ov, out=ov)
    ov /= xp.sum(ov, axis=axis, keepdims=True)
    return out


@op("LogSoftmax", since=1, inplace=True, scratch=_log_softmax_scratch)
def log_softmax(ctx, x):
    """x - max - log(sum(exp(x - max))) along the axis."""
    xp = ctx.xp
    out = ctx.out(0, x.shape, x.dtype)
    tmp = ctx.scratch(x.shape, x.dtype)
    if x.size == 0:
        return out
    xv, ov, axis = _view(ctx, x, out)
    _log_softmax_into(xp, xv, ov, tmp.reshape(ov.shape), axis)
    return out


def _log_softmax_into(xp, x, out, tmp, axis):
    """out = log_softmax(x) along ``axis``; ``tmp`` (x's shape) holds the exponentials."""
    m = xp.max(x, axis=axis, keepdims=True)
    xp.subtract(x, m, out=out)
    xp.exp(out, out=tmp)
    out -= xp.log(xp.sum(tmp, axis=axis, keepdims=True))


@op("Hardmax", since=1)
def hardmax(ctx, x):
    """1 at the first maximum along the axis, 0 elsewhere."""
    xp = ctx.xp
    out = ctx.out(0, x.shape, x.dtype)
    if x.size == 0:
        return out
    xv, ov, axis = _view(ctx, x, out)
    idx = xp.argmax(xv, axis=axis)
    idx = xp.expand_dims(idx, axis)
    shape = [1] * xv.ndim
    shape[axis] = xv.shape[axis]
    iota = xp.arange(xv.shape[axis]).reshape(shape)
    xp.equal(iota, idx, out=ov)
    return out


def _sce_scratch(attrs, shapes, dtypes):
    return [(tuple(shapes[0]), np.dtype(dtypes[0]))] * 2


@op("SoftmaxCrossEntropyLoss", since=12, scratch=_sce_scratch)
def softmax_cross_entropy_loss(ctx, scores, labels, weights=None):
    """Cross entropy of softmax(scores) over axis 1 against integer labels; optional log-probabilities."""
    xp = ctx.xp
    if scores.ndim < 2 or labels.shape != scores.shape[:1] + scores.shape[2:]:
        raise NodeExecutionError(f"SoftmaxCrossEntropyLoss: labels {labels.shape} do not fit scores {scores.shape}")
    reduction = ctx.attr("reduction", "mean")
    reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
    ignore = ctx.attr("ignore_index")
    log_p = ctx.scratch(scores.shape, scores.dtype)
    tmp = ctx.scratch(scores.shape, scores.dtype)
    if scores.size:
        _log_softmax_into(xp, scores, log_p, tmp, 1)
    keep = xp.ones(labels.shape, dtype=bool) if ignore is None else labels != ignore
    lab = xp.where(keep, labels, 0).astype(np.int64)
    loss = -xp.take_along_axis(log_p, lab[:, None], axis=1)[:, 0]
    w = (weights[lab] if weights is not None else xp.ones(labels.shape, scores.dtype)) * keep
    loss = loss * w.astype(scores.dtype)
    if reduction == "none":
        result = loss
    elif reduction == "sum":
        result = loss.sum()
    elif reduction == "mean":
        result = loss.sum() / w.sum().astype(scores.dtype)
    else:
        raise NodeExecutionError(f"SoftmaxCrossEntropyLoss: unknown reduction {reduction!r}")
    out = ctx.out(0, result.shape, scores.dtype)
    xp.copyto(out, result)
    if ctx.wants(1):
        lp = ctx.out(1, scores.shape, scores.dtype)
        xp.copyto(lp, log_p)
        return out, lp
    return out
