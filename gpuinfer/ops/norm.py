"""Normalizations: batch, layer, instance, group, RMS, LRN, Lp and mean-variance.

Most of them are "normalize rows of a 2-D view, then scale and shift per channel": the rows are
normalized in the output buffer (or in a float32 scratch copy for half-precision inputs), and the
row statistics, being small, are ordinary arrays.
"""
from __future__ import annotations

import math

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.registry import op
from gpuinfer.ops.tiles import CPU_TILE_BYTES, scaled, tile_bytes_of


def _row_sumsq(xp, a):
    """Sum of squares of every row of the 2-D array ``a`` without a full-size temporary."""
    if a.shape[1] == 0:
        return xp.zeros(a.shape[0], dtype=a.dtype)
    return xp.matmul(a[:, None, :], a[:, :, None]).reshape(a.shape[0])


def _stash_dtype(dtype):
    """Statistics are computed in at least float32 (the ONNX stash_type default)."""
    dtype = np.dtype(dtype)
    return dtype if dtype.itemsize >= 4 else np.dtype(np.float32)


def _needs_work(dtype):
    return _stash_dtype(dtype) != np.dtype(dtype)


def _normalize_rows(xp, src, dst, eps, inner):
    """dst = (src - mean) / sqrt(var + eps) row-wise; returns (mean, invstd) of shape (rows, 1)."""
    mean = xp.mean(src, axis=1, keepdims=True) if inner else xp.zeros((src.shape[0], 1), src.dtype)
    xp.subtract(src, mean, out=dst)
    var = _row_sumsq(xp, dst).reshape(-1, 1) / max(inner, 1)
    inv = 1 / xp.sqrt(var + dst.dtype.type(eps))
    dst *= inv
    return mean, inv


def _row_norm(ctx, x, outer, eps, affine):
    """Normalize ``x`` viewed as ``outer`` rows into output 0; ``affine(y)`` scales/shifts in place."""
    xp = ctx.xp
    out = ctx.out(0, x.shape, x.dtype)
    inner = x.size // outer if outer else 0
    if _needs_work(x.dtype):
        work = ctx.scratch((outer, inner), _stash_dtype(x.dtype))
        xp.copyto(work, x.reshape(outer, inner))
        mean, inv = _normalize_rows(xp, work, work, eps, inner)
        affine(work.reshape(x.shape))
        xp.copyto(out.reshape(outer, inner), work)
    else:
        mean, inv = _normalize_rows(xp, x.reshape(outer, inner), out.reshape(outer, inner), eps, inner)
        affine(out)
    return out, mean, inv


def _work_scratch_at(split, shape, dtype):
    """The float32 working copy half-precision inputs need, as (rows, columns) split at ``split``."""
    if not _needs_work(dtype):
        return []
    return [((math.prod(shape[:split]), math.prod(shape[split:])), _stash_dtype(dtype))]


def _axis_scratch(attrs, shapes, dtypes):
    return _work_scratch_at(int(attrs.get("axis", -1)) % len(shapes[0]), shapes[0], dtypes[0])


def _channel_shape(x):
    return (1, x.shape[1]) + (1,) * (x.ndim - 2) if x.ndim > 1 else (-1,)


# ------------------------------------------------------------------------------- BatchNormalization

def _batch_norm(ctx, x, scale, b, mean, var, training=False):
    xp = ctx.xp
    eps = float(ctx.attr("epsilon", 1e-5))
    out = ctx.out(0, x.shape, x.dtype)
    # per channel; before opset 9, spatial=0 gives statistics per (channel, position)
    cshape = (1,) + tuple(scale.shape) + (1,) * (x.ndim - 1 - scale.ndim)
    st = _stash_dtype(x.dtype)
    if training:
        axes = (0,) + tuple(range(2, x.ndim))
        bmean = xp.mean(x, axis=axes, dtype=st)
        bvar = xp.var(x, axis=axes, dtype=st)
        mom = float(ctx.attr("momentum", 0.9))
        run_mean = mean.astype(st) * mom + bmean * (1 - mom)
        run_var = var.astype(st) * mom + bvar * (1 - mom)
        mean, var = bmean, bvar
    a = scale.astype(st) / xp.sqrt(var.astype(st) + st.type(eps))
    shift = b.astype(st) - mean.astype(st) * a
    xp.multiply(x, a.astype(x.dtype).reshape(cshape), out=out)
    out += shift.astype(x.dtype).reshape(cshape)
    if training:
        results = [out]
        if ctx.wants(1):
            results.append(ctx.out(1, run_mean.shape, scale.dtype if ctx.opset >= 15 else x.dtype))
            xp.copyto(results[-1], run_mean)
        if ctx.wants(2):
            results.append(ctx.out(2, run_var.shape, scale.dtype if ctx.opset >= 15 else x.dtype))
            xp.copyto(results[-1], run_var)
        return tuple(results)
    return out


@op("BatchNormalization", since=1, inplace=True)
def batch_norm_1(ctx, x, scale, b, mean, var):
    """Inference batch norm with stored statistics (opsets 1-13; training outputs are not produced)."""
    return _batch_norm(ctx, x, scale, b, mean, var)


@op("BatchNormalization", since=14, inplace=True)
def batch_norm_14(ctx, x, scale, b, mean, var):
    """Batch norm; training_mode=1 normalizes with batch statistics and returns updated running ones."""
    return _batch_norm(ctx, x, scale, b, mean, var, training=bool(ctx.attr("training_mode", 0)))


# ------------------------------------------------------------------------- LayerNormalization etc.

@op("LayerNormalization", since=17, inplace=True, scratch=_axis_scratch)
def layer_norm(ctx, x, scale, b=None):
    """Normalize over the axes from ``axis`` on, then scale and shift; optional Mean and InvStdDev."""
    axis = int(ctx.attr("axis", -1))
    if not -x.ndim <= axis < x.ndim:
        raise NodeExecutionError(f"LayerNormalization: axis {axis} out of range for rank {x.ndim}")
    axis %= x.ndim
    outer = math.prod(x.shape[:axis])
    xp = ctx.xp

    def affine(y):
        y *= scale
        if b is not None:
            y += b

    out, mean, inv = _row_norm(ctx, x, outer, float(ctx.attr("epsilon", 1e-5)), affine)
    results = [out]
    stat_shape = tuple(x.shape[:axis]) + (1,) * (x.ndim - axis)
    for i, stat in ((1, mean), (2, inv)):
        if ctx.wants(i):
            buf = ctx.out(i, stat_shape, _stash_dtype(x.dtype))
            xp.copyto(buf, stat.reshape(stat_shape))
            results.append(buf)
    return tuple(results) if len(results) > 1 else out


def _per_channel_scratch(attrs, shapes, dtypes):
    return _work_scratch_at(2, shapes[0], dtypes[0])


@op("InstanceNormalization", since=1, inplace=True, scratch=_per_channel_scratch)
def instance_norm(ctx, x, scale, b):
    """Normalize each (sample, channel) plane over its spatial axes, then per-channel scale and shift."""
    if x.ndim < 2:
        raise NodeExecutionError(f"InstanceNormalization: input rank must be >= 2, got {x.ndim}")
    cshape = _channel_shape(x)

    def affine(y):
        y *= scale.reshape(cshape)
        y += b.reshape(cshape)

    return _row_norm(ctx, x, x.shape[0] * x.shape[1], float(ctx.attr("epsilon", 1e-5)), affine)[0]


def _group_scratch(attrs, shapes, dtypes):
    if not _needs_work(dtypes[0]):
        return []
    shape = shapes[0]
    g = int(attrs["num_groups"])
    return [((shape[0] * g, math.prod(shape) // max(shape[0] * g, 1)), _stash_dtype(dtypes[0]))]


def _group_norm(ctx, x, scale, b, per_group):
    g = int(ctx.attr("num_groups"))
    n, c = x.shape[:2]
    if c % g:
        raise NodeExecutionError(f"GroupNormalization: {c} channels not divisible by num_groups {g}")
    cshape = _channel_shape(x)
    if per_group:
        scale = ctx.xp.repeat(scale, c // g)
        b = ctx.xp.repeat(b, c // g)

    def affine(y):
        y *= scale.reshape(cshape)
        y += b.reshape(cshape)

    return _row_norm(ctx, x, n * g, float(ctx.attr("epsilon", 1e-5)), affine)[0]


@op("GroupNormalization", since=18, inplace=True, scratch=_group_scratch)
def group_norm_18(ctx, x, scale, b):
    """Normalize channel groups; scale and bias are per group (opset 18)."""
    return _group_norm(ctx, x, scale, b, per_group=True)


@op("GroupNormalization", since=21, inplace=True, scratch=_group_scratch)
def group_norm_21(ctx, x, scale, b):
    """Normalize channel groups; scale and bias are per channel (opset 21)."""
    return _group_norm(ctx, x, scale, b, per_group=False)


@op("RMSNormalization", since=23, inplace=True, scratch=_axis_scratch)
def rms_norm(ctx, x, scale):
    """x / sqrt(mean(x^2) + eps) over the axes from ``axis`` on, times scale."""
    xp = ctx.xp
    axis = int(ctx.attr("axis", -1)) % x.ndim
    outer = math.prod(x.shape[:axis])
    inner = x.size // outer if outer else 0
    out = ctx.out(0, x.shape, x.dtype)
    eps = float(ctx.attr("epsilon", 1e-5))
    dst = ctx.scratch((outer, inner), _stash_dtype(x.dtype)) if _needs_work(x.dtype) else out.reshape(outer, inner)
    xp.copyto(dst, x.reshape(outer, inner))
    inv = 1 / xp.sqrt(_row_sumsq(xp, dst).reshape(-1, 1) / max(inner, 1) + dst.dtype.type(eps))
    dst *= inv
    dst.reshape(x.shape)[...] *= scale
    if dst is not out.reshape(outer, inner):
        xp.copyto(out.reshape(outer, inner), dst)
    return out


# ------------------------------------------------------------------------------------ the others

# LRN sums the squares of nearby channels; the squares of a band of channels at a time (the band
# plus its size-1 neighbours) keep its scratch an eighth of the input, where squares of all
# channels were as big as the input itself (zfnet512, inception_v1: the step's largest buffer).
LRN_BANDS = 8


def _lrn_band(c: int, tile_bytes: int) -> int:
    """Channels a band (all of them on a device whose tiles are whole tensors)."""
    return min(c, scaled(max(1, -(-c // LRN_BANDS)), tile_bytes))


def _lrn_scratch(attrs, shapes, dtypes, tile_bytes=CPU_TILE_BYTES):
    shape = list(shapes[0])
    shape[1] = _lrn_band(shape[1], tile_bytes) + int(attrs["size"]) - 1
    return [(tuple(shape), np.dtype(dtypes[0]))]


@op("LRN", since=1, scratch=_lrn_scratch)
def lrn(ctx, x):
    """Local response normalization across nearby channels, a band of channels at a time."""
    xp = ctx.xp
    size = int(ctx.attr("size"))
    alpha, beta, bias = (float(ctx.attr(k, d)) for k, d in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    c = x.shape[1]
    lo = (size - 1) // 2
    band = _lrn_band(c, tile_bytes_of(ctx))
    sq = ctx.scratch((x.shape[0], band + size - 1) + tuple(x.shape[2:]), x.dtype)
    out = ctx.out(0, x.shape, x.dtype)
    t = x.dtype.type
    for c0 in range(0, c, band):
        c1 = min(c, c0 + band)
        # padded channel p (input channel p - lo) for p in c0 .. c1 + size - 2: zero outside the input
        first, last = max(0, c0 - lo), min(c, c1 + size - 1 - lo)
        at = first + lo - c0
        sq[:, :at] = 0
        sq[:, at + last - first:] = 0
        xp.multiply(x[:, first:last], x[:, first:last], out=sq[:, at:at + last - first])
        o = out[:, c0:c1]
        xp.copyto(o, sq[:, 0:c1 - c0])
        for j in range(1, size):
            o += sq[:, j:j + c1 - c0]
        o *= t(alpha / size)
        o += t(bias)
        _power_into(xp, o, beta, sq[:, :c1 - c0])
        xp.divide(x[:, c0:c1], o, out=o)
    return out


def _power_into(xp, a, beta: float, tmp):
    """a **= beta in place; the usual LRN exponents through square roots, which numpy runs several
    times faster than a float power (AlexNet and GoogLeNet use 0.75: 2.4 ms -> 0.4 ms a call)."""
    if beta == 1.0:
        return
    if beta == 0.5:
        xp.sqrt(a, out=a)
    elif beta == 0.75:  # a^(1/2) * a^(1/4)
        xp.sqrt(a, out=tmp)
        xp.sqrt(tmp, out=a)
        xp.multiply(a, tmp, out=a)
    else:
        xp.power(a, a.dtype.type(beta), out=a)


@op("LpNormalization", since=1)
def lp_normalization(ctx, x):
    """x divided by its L1 or L2 norm along ``axis``."""
    xp = ctx.xp
    axis = int(ctx.attr("axis", -1))
    p = int(ctx.attr("p", 2))
    if p not in (1, 2):
        raise NodeExecutionError(f"LpNormalization: p must be 1 or 2, got {p}")
    out = ctx.out(0, x.shape, x.dtype)
    if p == 2:
        xp.multiply(x, x, out=out)
    else:
        xp.abs(x, out=out)
    norm = xp.sum(out, axis=axis, keepdims=True)
    if p == 2:
        norm = xp.sqrt(norm)
    norm[norm == 0] = 1  # an all-zero slice stays zero (onnxruntime), not NaN
    return xp.divide(x, norm, out=out)


@op("MeanVarianceNormalization", since=1)
def mean_variance_normalization(ctx, x):
    """(x - mean) / (std + 1e-9) over ``axes`` (default N, H, W)."""
    xp = ctx.xp
    axes = tuple(int(a) % x.ndim for a in (ctx.attr("axes") or [0, 2, 3]))
    out = ctx.out(0, x.shape, x.dtype)
    mean = xp.mean(x, axis=axes, keepdims=True)
    xp.subtract(x, mean, out=out)
    xp.multiply(out, out, out=out)
    std = xp.sqrt(xp.mean(out, axis=axes, keepdims=True))
    std += x.dtype.type(1e-9)
    xp.subtract(x, mean, out=out)
    out /= std
    return out
