"""Pooling: Max/Average/Lp pools over sliding windows, and their global forms.

The windows are folded by ``pool_fold`` without a padded copy of the input, by the path ``_plan``
picks from the shapes: few output positions -> one reduction per window; 2-D windows -> separable
(rows, then columns); otherwise one pass per kernel tap.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np

from gpuinfer.backends.numpy_threads import SPLIT_MIN_BYTES, row_blocks, run_blocks
from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops import pool_fold
from gpuinfer.ops.conv_window import window_pads
from gpuinfer.ops.registry import op
from gpuinfer.ops.tiles import CPU_TILE_BYTES, scaled, tile_bytes_of


@dataclass
class PoolGeometry:
    """Per spatial axis: kernel, stride, dilation, begin/end pads; and the output shape."""

    kernel: list
    strides: list
    dilations: list
    begin: list
    end: list
    out_shape: tuple


def pool_geometry(attrs, x_shape) -> PoolGeometry:
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
    return PoolGeometry(kernel, strides, dil, begin, end, tuple(x_shape[:2]) + tuple(out_sp))


@functools.lru_cache(maxsize=512)
def _plan(key, x_shape, tile_bytes=CPU_TILE_BYTES, slack_elems=0):
    """(geometry, per-axis fold specs, "windows" | "separable" | "taps", scratch shapes) of a pool call
    on a device whose tiles are ``tile_bytes``, whose scratch tile may take ``slack_elems`` more
    elements than its share (``scratch_slack``): fewer tiles, each folded alike."""
    g = pool_geometry(dict(key), x_shape)
    out_sp, in_sp = g.out_shape[2:], x_shape[2:]
    axes = tuple(zip(in_sp, out_sp, g.kernel, g.strides, g.dilations, g.begin))
    if math.prod(out_sp) * 4 <= math.prod(g.kernel):
        return g, axes, "windows", []
    if len(g.kernel) != 2 or min(g.kernel) < 2:
        return g, axes, "taps", []
    # a tile of scratch only where windows reach into padding: there a padded copy of x used to be
    # made, so a tile no larger than the output (and that copy) leaves the step's memory as it was
    rows, ho, w = x_shape[0] * x_shape[1], out_sp[0], in_sp[1]
    reach = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(out_sp, g.strides, g.kernel, g.dilations)]
    if not any(g.begin) and all(r <= i for r, i in zip(reach, in_sp)):
        return g, axes, "separable", []
    padded = rows * math.prod(max(i + b + e, r) for i, b, e, r in zip(in_sp, g.begin, g.end, reach))
    # ... and at most a sixteenth of the step's own input and output, one row at least (mtcnn onet's
    # output-sized tile was 0.2x its whole tensors' bound)
    share = max(ho * w, rows * (math.prod(in_sp) + math.prod(out_sp)) // 16)
    most = scaled(pool_fold.TILE_ELEMS, tile_bytes)
    budget = min(most, rows * math.prod(out_sp), padded, scaled(share, tile_bytes))
    m = max(1, min(rows, budget // (ho * w)))
    if slack_elems:
        m = max(m, min(rows, min(most, m * ho * w + slack_elems) // (ho * w)))
    return g, axes, "separable", [(m, ho, w)]


_WINDOW_ATTRS = ("auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides")


def _key(attrs):
    return tuple((k, tuple(v) if isinstance(v, (list, tuple)) else v)
                 for k in _WINDOW_ATTRS if (v := attrs.get(k)) is not None)


def _pool_into(ctx, ufunc, reduce, x, fill, use_scratch=True):
    """The pooled output of ``x``, folded by the path ``_plan`` picks; returns (out, geometry)."""
    tile_bytes = tile_bytes_of(ctx)
    slack_elems = ctx.scratch_slack // x.dtype.itemsize if use_scratch else 0
    g, axes, kind, scratch = _plan(_key(ctx.attrs), tuple(x.shape), tile_bytes, slack_elems)
    out = ctx.out(0, g.out_shape, x.dtype)
    tmp = ctx.scratch(scratch[0], x.dtype) if scratch and use_scratch else None
    if out.size == 0:
        return out, g

    def fold(src, dst):
        if kind == "windows":
            pool_fold.fold_windows(ctx.xp, reduce, src, dst, axes, fill)
        elif kind == "separable":
            pool_fold.fold_separable(ctx.xp, ufunc, src, dst, axes, fill, tmp, tile_bytes)
        else:
            pool_fold.fold_taps(ctx.xp, ufunc, src, dst, axes, fill)

    # Big inputs: blocks of (batch x channel) rows over the run's threads, each block a view of x
    # and of out.  Not with a scratch tile, which all rows share; and a separable sum only in one
    # piece: where it stops tiling (rows fold tap by tap after) depends on the rows it is given,
    # and the order of a sum changes its last bit (a maximum's does not).
    rows = x.shape[0] * x.shape[1]
    splits = tmp is None and (kind != "separable" or ufunc is ctx.xp.maximum)
    blocks = row_blocks(ctx, rows, x.nbytes // rows) if splits and x.nbytes >= SPLIT_MIN_BYTES else [(0, rows)]
    if len(blocks) == 1 or not (x.flags.c_contiguous and out.flags.c_contiguous):
        fold(x, out)
        return out, g
    xr, outr = x.reshape((1, rows) + x.shape[2:]), out.reshape((1, rows) + out.shape[2:])
    run_blocks(blocks, lambda _, start, stop: fold(xr[:, start:stop], outr[:, start:stop]))
    return out, g


def _pool_scratch(attrs, shapes, dtypes, tile_bytes=CPU_TILE_BYTES, scratch_slack=0):
    dtype = np.dtype(dtypes[0])
    return [(s, dtype) for s in _plan(_key(attrs), tuple(shapes[0]), tile_bytes, scratch_slack // dtype.itemsize)[3]]


def _lp_scratch(attrs, shapes, dtypes):
    return [(tuple(shapes[0]), np.dtype(dtypes[0]))]


def _lowest(dtype):
    dtype = np.dtype(dtype)
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


@functools.lru_cache(maxsize=512)
def _divisor(key, x_shape, include_pad, dtype):
    """AveragePool's divisor: how many taps of each window count (padding only with
    count_include_pad, ceil-mode overhang never), as one number when it is the same everywhere."""
    g = pool_geometry(dict(key), x_shape)
    counts = np.ones((), np.int64)
    for i, b, e, o, s, k, d in zip(x_shape[2:], g.begin, g.end, g.out_shape[2:], g.strides, g.kernel, g.dilations):
        pos = np.arange(o)[:, None] * s - b + np.arange(k)[None, :] * d
        lo, hi = (-b, i + e) if include_pad else (0, i)
        counts = np.multiply.outer(counts, ((pos >= lo) & (pos < hi)).sum(axis=1))
    if counts.size and (counts == counts.flat[0]).all():
        return dtype.type(counts.flat[0])
    return counts.astype(dtype)


def _max_indices(ctx, x, out, g):
    """Flat argmax index (first maximum wins) of every max-pool window; storage_order 1 is column-major."""
    xp = ctx.xp
    ind = ctx.out(1, g.out_shape, np.int64)
    n, c = x.shape[:2]
    in_sp = x.shape[2:]
    nsp = len(in_sp)
    col_major = int(ctx.attr("storage_order", 0)) == 1
    strides_flat = [0] * nsp
    acc = 1
    for a in (range(nsp) if col_major else reversed(range(nsp))):
        strides_flat[a] = acc
        acc *= in_sp[a]
    base = xp.asarray((np.arange(n * c, dtype=np.int64) * math.prod(in_sp)).reshape((n, c) + (1,) * nsp))
    axes = zip(in_sp, g.out_shape[2:], g.kernel, g.strides, g.dilations, g.begin)
    ind.fill(0)
    # walk the taps backwards so that the first tap holding the maximum writes last
    for box in reversed(list(itertools.product(*[pool_fold.tap_ranges(*a) for a in axes]))):
        if any(r1 <= r0 for r0, r1, _, _ in box):
            continue
        o = (slice(None),) * 2 + tuple(slice(r0, r1) for r0, r1, _, _ in box)
        i = (slice(None),) * 2 + tuple(slice(i0, i0 + (r1 - r0 - 1) * s + 1, s) for r0, r1, i0, s in box)
        flat = base
        for a, (r0, r1, i0, s) in enumerate(box):
            shape = [1] * (nsp + 2)
            shape[2 + a] = -1
            flat = flat + xp.asarray(((i0 + np.arange(r1 - r0) * s) * strides_flat[a]).reshape(shape))
        xp.copyto(ind[o], xp.broadcast_to(flat, ind[o].shape), where=(x[i] == out[o]))
    return ind


@op("MaxPool", since=1, scratch=_pool_scratch)
def max_pool(ctx, x):
    """Window maximum (padding never wins), with optional flat argmax Indices."""
    out, g = _pool_into(ctx, ctx.xp.maximum, ctx.xp.max, x, _lowest(x.dtype))
    if ctx.wants(1):
        return out, _max_indices(ctx, x, out, g)
    return out


@op("AveragePool", since=1, scratch=_pool_scratch)
def average_pool(ctx, x):
    """Window mean; the divisor counts padding only with count_include_pad=1 (never ceil-mode overhang)."""
    xp = ctx.xp
    out, _ = _pool_into(ctx, xp.add, xp.sum, x, 0)
    if out.size:
        div = _divisor(_key(ctx.attrs), tuple(x.shape), int(ctx.attr("count_include_pad", 0)), x.dtype)
        if div.ndim:  # a table of divisors by position, the same every run: on a device, uploaded once
            div = ctx.memo(("avgpool-divisor", tuple(x.shape)), lambda: xp.asarray(div))
        out /= div
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
    src = ctx.scratch(x.shape, x.dtype)
    xp.copyto(src, x)
    _lp_pow(xp, src, p)
    # the |x|^p copy takes the place of the old padded copy: no tile scratch on top of it
    out, _ = _pool_into(ctx, xp.add, xp.sum, src, 0, use_scratch=False)
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
