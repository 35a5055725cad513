"""Sampling ops: GridSample, AffineGrid, RoiAlign and DeformConv.

All of them read an image at fractional positions.  GridSample works in any rank: for each output
point it builds, per spatial axis, a few integer taps with weights (2 for linear, 4 for cubic, 1 for
nearest), then sums the tensor product of those taps, gathering ``X[n, :, taps]`` for all channels
at once into one (C, points) scratch buffer per batch item.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.registry import op

_CUBIC_A = -0.75  # Keys' cubic convolution constant (as in PyTorch / OpenCV)
_MODES = {"bilinear": "linear", "linear": "linear", "nearest": "nearest", "bicubic": "cubic", "cubic": "cubic"}


# --- GridSample ---------------------------------------------------------------------------------
def _reflect(xp, x, lo, hi):
    """Fold ``x`` back into [lo, hi] by mirroring at the borders as often as needed."""
    span = hi - lo
    if span <= 0:
        return xp.zeros_like(x) + lo
    below = x < lo
    dist = xp.where(below, lo - x, x - hi)
    flips = xp.floor(dist / span)
    rest = dist - flips * span
    even = (flips % 2) == 0
    from_lo = xp.where(even, lo + rest, hi - rest)  # reflected off the low border
    from_hi = xp.where(even, hi - rest, lo + rest)
    return xp.where(below, from_lo, xp.where(x > hi, from_hi, x))


def _cubic_weights(xp, t):
    """Keys cubic weights of the taps at offsets -1, 0, 1, 2 for fractional position ``t``."""
    a = _CUBIC_A

    def near(s):  # |s| <= 1
        return ((a + 2) * s - (a + 3)) * s * s + 1

    def far(s):  # 1 < |s| < 2
        return ((a * s - 5 * a) * s + 8 * a) * s - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _axis_taps(xp, coord, size, mode, padding, align):
    """Per-axis taps for one spatial axis: list of (index array, weight array, valid mask)."""
    if align:
        pos = (coord + 1) / 2 * (size - 1)
        lo, hi = 0.0, size - 1.0
    else:
        pos = ((coord + 1) * size - 1) / 2
        lo, hi = -0.5, size - 0.5
    if mode == "nearest":
        pos = xp.rint(pos)
    # nearest/linear move an outside position in first; cubic pads only its taps (as PyTorch and
    # onnxruntime do; the onnx reference also moves the position, which differs for border padding)
    if mode != "cubic":
        outside = (pos < lo) | (pos > hi)
        if padding == "border":
            pos = xp.where(outside, xp.clip(pos, 0, size - 1), pos)
        elif padding == "reflection":
            pos = xp.where(outside, _reflect(xp, pos, lo, hi), pos)

    if mode == "nearest":
        base = pos.astype(np.int64)
        offsets, weights = [0], [xp.ones_like(pos)]
    else:
        fl = xp.floor(pos)
        base = fl.astype(np.int64)
        t = pos - fl
        if mode == "linear":
            offsets, weights = [0, 1], [1 - t, t]
        else:
            offsets, weights = [-1, 0, 1, 2], _cubic_weights(xp, t)

    taps = []
    for off, w in zip(offsets, weights):
        idx = base + off
        if padding == "zeros":
            valid = (idx >= 0) & (idx < size)
        else:
            if padding == "border":
                idx = xp.clip(idx, 0, size - 1)
            else:
                idx = xp.clip(_reflect(xp, idx.astype(pos.dtype), lo, hi).astype(np.int64), 0, size - 1)
            valid = None
        taps.append((idx, w, valid))
    return taps


def _grid_sample_scratch(attrs, shapes, dtypes):
    x, grid = shapes[0], shapes[1]
    return [((int(x[1]), math.prod(int(d) for d in grid[1:-1])), np.dtype(dtypes[0]))]


@op("GridSample", since=16, scratch=_grid_sample_scratch)
def grid_sample(ctx, x, grid):
    """Sample X at the normalized positions of ``grid`` (nearest, linear or cubic; zeros/border/reflection)."""
    xp = ctx.xp
    r = x.ndim - 2
    if r < 1 or grid.ndim != x.ndim or grid.shape[-1] != r or grid.shape[0] != x.shape[0]:
        raise NodeExecutionError(f"GridSample: grid {tuple(grid.shape)} does not fit X {tuple(x.shape)} "
                                 f"(want (N, *out, {r}))")
    mode = _MODES.get(ctx.attr("mode", "linear" if ctx.opset >= 20 else "bilinear"))
    padding = ctx.attr("padding_mode", "zeros")
    if mode is None or padding not in ("zeros", "border", "reflection"):
        raise NodeExecutionError(f"GridSample: unsupported mode {ctx.attr('mode')!r} / padding {padding!r}")
    align = bool(ctx.attr("align_corners", 0))
    n, c = int(x.shape[0]), int(x.shape[1])
    dims = [int(d) for d in x.shape[2:]]
    out_sp = [int(d) for d in grid.shape[1:-1]]
    p = math.prod(out_sp)
    s = math.prod(dims)
    tmp = ctx.scratch((c, p), x.dtype)
    y = ctx.out(0, (n, c, *out_sp), x.dtype)
    if y.size == 0:
        return y
    y3 = y.reshape(n, c, p)
    y3[...] = 0
    cdt = np.result_type(x.dtype, np.float32)
    strides = [math.prod(dims[k + 1:]) for k in range(r)]
    x3 = x.reshape(n, c, s)
    for b in range(n):
        g = grid[b].reshape(p, r).astype(cdt)
        # grid's last axis lists coordinates innermost-first: (x, y, z) for dims (..., D, H, W)
        per_axis = [_axis_taps(xp, g[:, r - 1 - k], dims[k], mode, padding, align) for k in range(r)]
        for combo in itertools.product(*per_axis):
            flat = sum(idx * st for (idx, _, _), st in zip(combo, strides))
            weight = combo[0][1]
            for _, w, _ in combo[1:]:
                weight = weight * w
            for _, _, valid in combo:
                if valid is not None:
                    weight = xp.where(valid, weight, 0)
                    flat = xp.where(valid, flat, 0)
            if s == 0:
                continue
            xp.take(x3[b], flat, axis=1, out=tmp)
            tmp *= weight.astype(x.dtype)
            y3[b] += tmp
    return y


# --- AffineGrid ---------------------------------------------------------------------------------
def _normalized_coords(xp, length, align, dtype):
    """Pixel-centre (or corner-aligned) coordinates of one axis, mapped to [-1, 1]."""
    i = xp.arange(length, dtype=dtype)
    if not align:
        return (2 * i + 1) / dtype.type(length) - 1
    return i * dtype.type(2.0 / (length - 1)) - 1 if length > 1 else i * 0


@op("AffineGrid", since=20)
def affine_grid(ctx, theta, size):
    """Sampling grid (N, *spatial, r) of theta applied to normalized output coordinates (for GridSample)."""
    xp = ctx.xp
    sizes = [int(v) for v in ctx.host(size).reshape(-1)[2:]]
    r = len(sizes)
    n = int(theta.shape[0])
    if r not in (2, 3) or tuple(theta.shape) != (n, r, r + 1):
        raise NodeExecutionError(f"AffineGrid: theta {tuple(theta.shape)} does not fit size {sizes} "
                                 f"(want (N, {r}, {r + 1}))")
    align = bool(ctx.attr("align_corners", 0))
    out = ctx.out(0, (n, *sizes, r), theta.dtype)
    lead = (n,) + (1,) * r
    for k in range(r):  # output component k: theta[:, k] . (x, y[, z], 1); x runs along the last axis
        comp = out[..., k]
        xp.copyto(comp, theta[:, k, r].reshape(lead))
        for j in range(r):
            axis = r - 1 - j
            shape = [1] * r
            shape[axis] = sizes[axis]
            coord = _normalized_coords(xp, sizes[axis], align, theta.dtype).reshape(shape)
            comp += theta[:, k, j].reshape(lead) * coord
    return out
