"""Pooling: Max/Average/Lp pools over sliding windows, and their global forms.

A window reduction is a loop over kernel offsets; each offset is a strided view of the (padded)
input with the output's shape, folded into the output buffer with one vectorised ufunc call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.conv import kernel_offsets, window_pads, window_slices
from gpuinfer.ops.registry import op


@dataclass
class PoolGeometry:
    """Pads, output shape and the padded-input scratch of one pooling call."""

    kernel: list
    strides: list
    dilations: list
    begin: list
    end: list
    out_shape: tuple
    padded_shape: tuple = None
    scratch: list = field(default_factory=list)


def pool_geometry(attrs, x_shape, dtype, always_copy=False) -> PoolGeometry:
    if len(x_shape) < 3:
        raise NodeExecutionError(f"pooling needs an input of rank >= 3, got shape {x_shape}")
    n_sp = len(x_shape) - 2
    kernel = list(attrs.get("kernel_shape") or [])
    if len(kernel) != n_sp:
        raise NodeExecutionError(f"pooling: kernel_shape {kernel} does not match input shape {x_shape}")
    strides = list(attrs.get("strides") or [1] * n_sp)
    dil = list(attrs.get("dilations") or [1] * n_sp)
    begin, end, out_sp = window_pads(attrs.get("auto_pad"), attrs.get("pads"), x_shape[2:], kernel, strides, dil,
                                     int(attrs.get("ceil_mode", 0)))
    g = PoolGeometry(kernel, strides, dil, begin, end, tuple(x_shape[:2]) + tuple(out_sp))
    # the padded extent must also hold windows that ceil_mode lets run past the end padding
    need = [max(i + b + e, (o - 1) * s + (k - 1) * d + 1 if o > 0 else 0)
            for i, b, e, o, s, k, d in zip(x_shape[2:], begin, end, out_sp, strides, kernel, dil)]
    if always_copy or any(begin) or need != list(x_shape[2:]):
        g.padded_shape = tuple(x_shape[:2]) + tuple(need)
        g.scratch.append((g.padded_shape, np.dtype(dtype)))
    return g


def _pool_scratch(attrs, shapes, dtypes):
    return pool_geometry(attrs, shapes[0], dtypes[0]).scratch


def _lp_scratch(attrs, shapes, dtypes):
    return pool_geometry(attrs, shapes[0], dtypes[0], always_copy=True).scratch


def _lowest(dtype):
    dtype = np.dtype(dtype)
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _padded(ctx, g, x, fill):
    """``x`` itself, or a scratch copy surrounded by ``fill`` when the windows reach outside it."""
    if g.padded_shape is None:
        return x
    buf = ctx.scratch(g.padded_shape, x.dtype)
    buf.fill(fill)
    buf[(slice(None),) * 2 + tuple(slice(b, b + s) for b, s in zip(g.begin, x.shape[2:]))] = x
    return buf


def _fold(xp, ufunc, src, g, out):
    """out = ufunc-reduction over every kernel offset of the windows of ``src``."""
    for ki, off in enumerate(kernel_offsets(g.kernel)):
        view = src[window_slices(off, g.dilations, g.strides, g.out_shape[2:])]
        if ki == 0:
            xp.copyto(out, view)
        else:
            ufunc(out, view, out=out)


def _tap_counts(g, in_sp, include_pad):
    """Per spatial axis, how many taps of each output window count toward the average."""
    counts = []
    for i, b, e, o, s, k, d in zip(in_sp, g.begin, g.end, g.out_shape[2:], g.strides, g.kernel, g.dilations):
        pos = np.arange(o)[:, None] * s - b + np.arange(k)[None, :] * d
        hi = i + e if include_pad else i
        lo = -b if include_pad else 0
        counts.append(((pos >= lo) & (pos < hi)).sum(axis=1))
    return counts


def _max_indices(ctx, x, src, g, out):
    """Flat argmax index (first maximum wins) of every max-pool window; storage_order 1 is column-major."""
    xp = ctx.xp
    ind = ctx.out(1, g.out_shape, np.int64)
    n, c = x.shape[:2]
    in_sp = x.shape[2:]
    col_major = int(ctx.attr("storage_order", 0)) == 1
    nsp = len(in_sp)
    strides_flat = [0] * nsp
    acc = 1
    order = range(nsp) if col_major else reversed(range(nsp))
    for a in order:
        strides_flat[a] = acc
        acc *= in_sp[a]
    base = xp.asarray((np.arange(n * c, dtype=np.int64) * math.prod(in_sp)).reshape((n, c) + (1,) * nsp))
    # walk the offsets backwards so that the first offset holding the maximum writes last
    for ki, off in reversed(list(enumerate(kernel_offsets(g.kernel)))):
        view = src[window_slices(off, g.dilations, g.strides, g.out_shape[2:])]
        flat = base
        for a in range(nsp):
            pos = np.arange(g.out_shape[2 + a]) * g.strides[a] - g.begin[a] + off[a] * g.dilations[a]
            shape = [1] * (nsp + 2)
            shape[2 + a] = -1
            flat = flat + xp.asarray((np.clip(pos, 0, in_sp[a] - 1) * strides_flat[a]).reshape(shape))
        if ki == len(kernel_offsets(g.kernel)) - 1:
            xp.copyto(ind, xp.broadcast_to(flat, ind.shape))
        else:
            xp.copyto(ind, xp.broadcast_to(flat, ind.shape), where=(view == out))
    return ind


@op("MaxPool", since=1, scratch=_pool_scratch)
def max_pool(ctx, x):
    """Window maximum (padding never wins), with optional flat argmax Indices."""
    xp = ctx.xp
    g = pool_geometry(ctx.attrs, x.shape, x.dtype)
    out = ctx.out(0, g.out_shape, x.dtype)
    src = _padded(ctx, g, x, _lowest(x.dtype))
    if out.size:
        _fold(xp, xp.maximum, src, g, out)
    if ctx.wants(1):
        return out, _max_indices(ctx, x, src, g, out)
    return out


@op("AveragePool", since=1, scratch=_pool_scratch)
def average_pool(ctx, x):
    """Window mean; the divisor counts padding only with count_include_pad=1 (never ceil-mode overhang)."""
    xp = ctx.xp
    g = pool_geometry(ctx.attrs, x.shape, x.dtype)
    out = ctx.out(0, g.out_shape, x.dtype)
    src = _padded(ctx, g, x, 0)
    if out.size == 0:
        return out
    _fold(xp, xp.add, src, g, out)
    for a, cnt in enumerate(_tap_counts(g, x.shape[2:], int(ctx.attr("count_include_pad", 0)))):
        shape = [1] * x.ndim
        shape[2 + a] = -1
        out /= xp.asarray(cnt.astype(x.dtype).reshape(shape))
    return out


def _lp_pow(xp, src, p):
    """|src|**p in place."""
    xp.abs(src, out=src)
    if p == 2:
        xp.multiply(src, src, out=src)
    elif p != 1:
        xp.power(src, src.dtype.type(p), out=src)


def _lp_root(xp, out, p):
    if p == 2:
        xp.sqrt(out, out=out)
    elif p != 1:
        xp.power(out, out.dtype.type(1.0 / p), out=out)


@op("LpPool", since=1, scratch=_lp_scratch)
def lp_pool(ctx, x):
    """Window p-norm: (sum |x|^p)^(1/p); padding contributes zero."""
    xp = ctx.xp
    p = ctx.attr("p", 2)
    p = float(p) if ctx.opset < 2 else int(p)
    g = pool_geometry(ctx.attrs, x.shape, x.dtype, always_copy=True)
    out = ctx.out(0, g.out_shape, x.dtype)
    src = _padded(ctx, g, x, 0)
    if out.size == 0:
        return out
    _lp_pow(xp, src, p)
    _fold(xp, xp.add, src, g, out)
    _lp_root(xp, out, p)
    return out


def _global_shape(x, name):
    if x.ndim < 3:
        raise NodeExecutionError(f"{name} needs an input of rank >= 3, got shape {x.shape}")
    return tuple(x.shape[:2]) + (1,) * (x.ndim - 2)


@op("GlobalAveragePool", since=1)
def global_average_pool(ctx, x):
    """Mean over all spatial axes, kept as size-1 axes."""
    out = ctx.out(0, _global_shape(x, "GlobalAveragePool"), x.dtype)
    return ctx.xp.mean(x, axis=tuple(range(2, x.ndim)), keepdims=True, out=out)


@op("GlobalMaxPool", since=1)
def global_max_pool(ctx, x):
    """Maximum over all spatial axes, kept as size-1 axes."""
    out = ctx.out(0, _global_shape(x, "GlobalMaxPool"), x.dtype)
    return ctx.xp.max(x, axis=tuple(range(2, x.ndim)), keepdims=True, out=out)


def _global_lp_scratch(attrs, shapes, dtypes):
    return [(tuple(shapes[0]), np.dtype(dtypes[0]))]


@op("GlobalLpPool", since=1, scratch=_global_lp_scratch)
def global_lp_pool(ctx, x):
    """p-norm over all spatial axes, kept as size-1 axes."""
    xp = ctx.xp
    p = ctx.attr("p", 2)
    p = float(p) if ctx.opset < 2 else int(p)
    out = ctx.out(0, _global_shape(x, "GlobalLpPool"), x.dtype)
    tmp = ctx.scratch(x.shape, x.dtype)
    xp.copyto(tmp, x)
    _lp_pow(xp, tmp, p)
    xp.sum(tmp, axis=tuple(range(2, x.ndim)), keepdims=True, out=out)
    _lp_root(xp, out, p)
    return out


@op("MaxUnpool", since=9)
def max_unpool(ctx, x, indices, output_shape=None):
    """Scatter pooled values back to the flat positions MaxPool's Indices name; zeros elsewhere."""
    xp = ctx.xp
    n_sp = x.ndim - 2
    kernel = list(ctx.attr("kernel_shape"))
    strides = list(ctx.attr("strides") or [1] * n_sp)
    pads = list(ctx.attr("pads") or [0] * (2 * n_sp))
    if output_shape is not None:
        shape = [int(v) for v in ctx.host(output_shape).reshape(-1)]
    else:
        shape = list(x.shape[:2]) + [(i - 1) * s + k - pads[a] - pads[a + n_sp]
                                     for a, (i, s, k) in enumerate(zip(x.shape[2:], strides, kernel))]
    if indices.shape != x.shape:
        raise NodeExecutionError(f"MaxUnpool: indices shape {indices.shape} differs from X shape {x.shape}")
    out = ctx.out(0, shape, x.dtype)
    out.fill(0)
    out.reshape(-1)[indices.reshape(-1)] = x.reshape(-1)
    return out
