"""Reductions (ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare) and ArgMax/ArgMin.

``axes`` is an attribute before opset 13 (ReduceSum) or 18 (the others) and an optional input
after; ``noop_with_empty_axes`` then turns "no axes" into a reduction over nothing (the op's
elementwise part still applies, as the reference does).  Reductions over an empty set give the
identity: 0 for sums, 1 for products, -inf/+inf (or the integer limits) for max/min.
"""
from __future__ import annotations

import math

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.registry import op


def _acc_dtype(dtype) -> np.dtype:
    """Accumulation dtype: float32 for half floats, else the input's own."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype.kind == "f" and dtype.itemsize < 4 else dtype


def _reduce_axes(ctx, x, axes_input, input_since):
    """Normalized sorted axes to reduce (possibly empty for a no-op reduction)."""
    if axes_input is not None:
        axes = [int(a) for a in ctx.host(axes_input).reshape(-1)]
    elif ctx.opset < input_since:
        axes = ctx.attr("axes")
    else:
        axes = None
    if not axes:
        if ctx.opset >= input_since and ctx.attr("noop_with_empty_axes", 0):
            return ()
        return tuple(range(x.ndim))
    norm = set()
    for a in axes:
        if not -x.ndim <= a < max(x.ndim, 1):
            raise NodeExecutionError(f"{ctx.op_type}: axis {a} out of range for rank {x.ndim}")
        norm.add(a + x.ndim if a < 0 else a)
    return tuple(sorted(norm))


def _out_shape(x, axes, keepdims):
    if keepdims:
        return tuple(1 if i in axes else int(d) for i, d in enumerate(x.shape))
    return tuple(int(d) for i, d in enumerate(x.shape) if i not in axes)


def _prepare(ctx, x, axes_input, input_since):
    axes = _reduce_axes(ctx, x, axes_input, input_since)
    keepdims = bool(ctx.attr("keepdims", 1))
    out = ctx.out(0, _out_shape(x, axes, keepdims), x.dtype)
    empty = any(x.shape[a] == 0 for a in axes)
    return axes, keepdims, out, empty


def _full_scratch(attrs, shapes, dtypes):
    """One input-sized buffer in the accumulation dtype."""
    if shapes[0] is None:
        return []
    return [(tuple(int(d) for d in shapes[0]), _acc_dtype(dtypes[0]))]


def _register(name, input_since, kernel, scratch=None):
    kernel.__name__ = kernel.__qualname__ = name.lower()
    op(name, since=1, scratch=scratch)(kernel)


def _sum_like(name, input_since, pre=None, post=None, doc=""):
    """out = post(sum(pre(x))) over the axes; ``pre`` writes into an input-sized scratch."""

    def kernel(ctx, x, axes=None):
        xp = ctx.xp
        axes, keepdims, out, _ = _prepare(ctx, x, axes, input_since)
        src = x
        with np.errstate(all="ignore"):
            if pre is not None:
                src = ctx.scratch(x.shape, _acc_dtype(x.dtype))
                pre(xp, x, src)
            xp.sum(src, axis=axes, keepdims=keepdims, out=out, dtype=_acc_dtype(x.dtype))
            if post is not None:
                post(xp, out)
        return out

    kernel.__doc__ = doc
    _register(name, input_since, kernel, scratch=_full_scratch if pre is not None else None)


def _in_place(name):
    """Apply ufunc ``name`` to the output in place (through float64 for integer outputs)."""

    def post(xp, out):
        if out.dtype.kind == "f":
            getattr(xp, name)(out, out=out)
        else:
            getattr(xp, name)(out, out=out, dtype=np.float64, casting="unsafe")

    return post


_sum_like("ReduceSum", 13, doc="Sum over the axes.")
_sum_like("ReduceL1", 18, pre=lambda xp, x, t: xp.absolute(x, out=t), doc="Sum of absolute values.")
_sum_like("ReduceSumSquare", 18, pre=lambda xp, x, t: xp.multiply(x, x, out=t), doc="Sum of squares.")
_sum_like("ReduceL2", 18, pre=lambda xp, x, t: xp.multiply(x, x, out=t), post=_in_place("sqrt"),
          doc="Euclidean norm: sqrt of the sum of squares.")
_sum_like("ReduceLogSum", 18, post=_in_place("log"), doc="log of the sum.")


def reduce_mean(ctx, x, axes=None):
    """Arithmetic mean over the axes (0 over an empty set, as onnxruntime); integer means truncate."""
    xp = ctx.xp
    axes, keepdims, out, _ = _prepare(ctx, x, axes, 18)
    count = math.prod(int(x.shape[a]) for a in axes)
    with np.errstate(all="ignore"):
        xp.sum(x, axis=axes, keepdims=keepdims, out=out, dtype=_acc_dtype(x.dtype))
        if not count:
            pass  # onnxruntime returns the empty sum, 0
        elif out.dtype.kind == "f":
            xp.divide(out, count, out=out)
        else:
            xp.divide(out, count, out=out, dtype=np.float64, casting="unsafe")
    return out


_register("ReduceMean", 18, reduce_mean)


def reduce_prod(ctx, x, axes=None):
    """Product over the axes (1 over an empty set)."""
    axes, keepdims, out, _ = _prepare(ctx, x, axes, 18)
    with np.errstate(all="ignore"):
        return ctx.xp.prod(x, axis=axes, keepdims=keepdims, out=out, dtype=_acc_dtype(x.dtype))


_register("ReduceProd", 18, reduce_prod)


def _lowest(dtype, highest=False):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.inf if highest else -np.inf
    if dtype.kind == "b":
        return highest
    info = np.iinfo(dtype)
    return info.max if highest else info.min


def _extreme(name, fn, highest_identity, doc):
    def kernel(ctx, x, axes=None):
        axes, keepdims, out, empty = _prepare(ctx, x, axes, 18)
        if empty:
            out[...] = _lowest(x.dtype, highest_identity)
            return out
        return fn(ctx.xp)(x, axis=axes, keepdims=keepdims, out=out)

    kernel.__doc__ = doc
    _register(name, 18, kernel)


_extreme("ReduceMax", lambda xp: xp.max, False, "Maximum over the axes (-inf / type minimum over an empty set).")
_extreme("ReduceMin", lambda xp: xp.min, True, "Minimum over the axes (+inf / type maximum over an empty set).")


def reduce_log_sum_exp(ctx, x, axes=None):
    """log(sum(exp(x))) shifted by the per-slice max; summed pairwise inside the scratch copy."""
    xp = ctx.xp
    axes, keepdims, out, empty = _prepare(ctx, x, axes, 18)
    t = ctx.scratch(x.shape, _acc_dtype(x.dtype))
    if empty:
        out[...] = -np.inf
        return out
    kept = [i for i in range(x.ndim) if i not in axes]
    r = math.prod(int(x.shape[a]) for a in axes)
    with np.errstate(all="ignore"):
        xp.max(x, axis=axes, keepdims=keepdims, out=out)
        xp.copyto(out, 0, where=~xp.isfinite(out))  # all -inf / inf slices: shift by 0 instead
        m = out.reshape([int(x.shape[i]) for i in kept])
        # t holds x with the reduced axes first: (R, K) after flattening.
        tv = t.reshape([int(x.shape[a]) for a in axes] + [int(x.shape[i]) for i in kept])
        xp.subtract(x.transpose(list(axes) + kept), m, out=tv, casting="unsafe")
        t2 = t.reshape(r, -1)
        xp.exp(t2, out=t2)
        while r > 1:
            h = r // 2
            xp.add(t2[:h], t2[r - h:r], out=t2[:h])
            r -= h
        xp.log(t2[0], out=t2[0])
        xp.add(out, t2[0].reshape(out.shape), out=out, casting="unsafe")
    return out


_register("ReduceLogSumExp", 18, reduce_log_sum_exp, scratch=_full_scratch)


def _arg(ctx, x, fn):
    xp = ctx.xp
    axis = int(ctx.attr("axis", 0))
    if not -x.ndim <= axis < max(x.ndim, 1):
        raise NodeExecutionError(f"{ctx.op_type}: axis {axis} out of range for rank {x.ndim}")
    axis = axis % max(x.ndim, 1)
    keepdims = bool(ctx.attr("keepdims", 1))
    n = int(x.shape[axis]) if x.ndim else 1
    if n == 0:
        raise NodeExecutionError(f"{ctx.op_type}: cannot reduce an empty axis {axis}")
    out = ctx.out(0, _out_shape(x, (axis,), keepdims), np.int64)
    last = bool(ctx.attr("select_last_index", 0))
    fn(xp)(xp.flip(x, axis) if last else x, axis=axis, keepdims=keepdims, out=out)
    if last:
        xp.subtract(n - 1, out, out=out)
    return out


@op("ArgMax", since=1)
def arg_max(ctx, x):
    """Index of the largest element along ``axis`` (first, or last with select_last_index)."""
    return _arg(ctx, x, lambda xp: xp.argmax)


@op("ArgMin", since=1)
def arg_min(ctx, x):
    """Index of the smallest element along ``axis`` (first, or last with select_last_index)."""
    return _arg(ctx, x, lambda xp: xp.argmin)
