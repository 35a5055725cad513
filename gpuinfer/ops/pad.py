"""Pad: constant, edge, reflect and wrap padding (negative pads crop), written straight into the output.

The (cropped) input is copied into the interior once; then each padded axis fills its two border
slabs, either with the constant or by gathering from what is already in the output, so corners
come out right for every mode.
"""
from __future__ import annotations

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.registry import op


def _border_index(t, length, mode):
    """Interior index feeding border position ``t`` (relative to the interior start)."""
    if mode == "edge":
        return np.clip(t, 0, length - 1)
    if mode == "wrap":
        return np.mod(t, length)
    if length == 1:
        return np.zeros_like(t)
    period = 2 * (length - 1)
    m = np.mod(t, period)
    return np.where(m < length, m, period - m)


def pad_array(ctx, x, pads, mode, value):
    """Pad ``x`` by ``pads`` = [begin_0.., end_0..] into output 0."""
    xp = ctx.xp
    n = x.ndim
    if len(pads) != 2 * n:
        raise NodeExecutionError(f"Pad: expected {2 * n} pad values for rank {n}, got {len(pads)}")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise NodeExecutionError(f"Pad: unknown mode {mode!r}")
    begin, end = [int(p) for p in pads[:n]], [int(p) for p in pads[n:]]
    out_shape = [s + b + e for s, b, e in zip(x.shape, begin, end)]
    if any(d < 0 for d in out_shape):
        raise NodeExecutionError(f"Pad: pads {list(pads)} crop more than the input shape {x.shape}")
    out = ctx.out(0, out_shape, x.dtype)
    src = x[tuple(slice(max(-b, 0), s - max(-e, 0)) for s, b, e in zip(x.shape, begin, end))]
    lo = [max(b, 0) for b in begin]
    inner = [slice(l, l + s) for l, s in zip(lo, src.shape)]
    if out.size == 0:
        return out
    out[tuple(inner)] = src
    for a in range(n):
        if lo[a] == 0 and lo[a] + src.shape[a] == out_shape[a]:
            continue
        if mode != "constant" and src.shape[a] == 0:
            raise NodeExecutionError(f"Pad: cannot {mode}-pad axis {a} of size 0")
        full = [slice(None)] * a
        rest = inner[a + 1:] if mode != "constant" else [slice(None)] * (n - a - 1)
        for part in (slice(0, lo[a]), slice(lo[a] + src.shape[a], out_shape[a])):
            if part.stop <= part.start:
                continue
            dst = tuple(full + [part] + rest)
            if mode == "constant":
                out[dst] = value
            else:
                # the border's source positions depend on shapes alone: made (and uploaded) once
                idx = ctx.memo(("pad-index", mode, a, part.start, part.stop, lo[a], src.shape[a]),
                               lambda: xp.asarray(_border_index(np.arange(part.start, part.stop) - lo[a],
                                                                src.shape[a], mode)))
                out[dst] = xp.take(out[tuple(full + [inner[a]] + rest)], idx, axis=a)
    return out


def _value(x, v):
    """The constant as x's dtype (0 when absent)."""
    if v is None:
        return x.dtype.type(0)
    return np.asarray(v).reshape(-1)[0].astype(x.dtype) if np.asarray(v).size else x.dtype.type(0)


def _mode(ctx):
    m = ctx.attr("mode", "constant")
    return m.decode() if isinstance(m, bytes) else m


@op("Pad", since=1)
def pad_1(ctx, x):
    """Pad with attributes ``pads`` (``paddings`` in opset 1), ``mode`` and ``value``."""
    pads = ctx.attr("pads", ctx.attr("paddings"))
    return pad_array(ctx, x, list(pads), _mode(ctx), _value(x, ctx.attr("value", 0.0)))


@op("Pad", since=11)
def pad_11(ctx, x, pads, constant_value=None, axes=None):
    """Pad with ``pads``, optional ``constant_value`` and (opset 18) ``axes`` given as inputs."""
    pads = [int(p) for p in ctx.host(pads).reshape(-1)]
    if axes is not None:
        ax = [int(a) % x.ndim for a in ctx.host(axes).reshape(-1)]
        if len(pads) != 2 * len(ax):
            raise NodeExecutionError(f"Pad: {len(pads)} pads for {len(ax)} axes")
        full = [0] * (2 * x.ndim)
        for i, a in enumerate(ax):
            full[a] = pads[i]
            full[a + x.ndim] = pads[i + len(ax)]
        pads = full
    value = ctx.host(constant_value) if constant_value is not None else None
    return pad_array(ctx, x, pads, _mode(ctx), _value(x, value))


@op("CenterCropPad", since=18)
def center_crop_pad(ctx, x, shape):
    """Crop or zero-pad ``axes`` (default all) symmetrically around the centre to ``shape``."""
    target = [int(v) for v in ctx.host(shape).reshape(-1)]
    axes = ctx.attr("axes")
    axes = [int(a) % x.ndim for a in axes] if axes else list(range(x.ndim))
    if len(target) != len(axes):
        raise NodeExecutionError(f"CenterCropPad: {len(target)} sizes for {len(axes)} axes")
    out_shape = list(x.shape)
    src, dst = [slice(None)] * x.ndim, [slice(None)] * x.ndim
    for a, t in zip(axes, target):
        n = x.shape[a]
        out_shape[a] = t
        if t <= n:
            start = (n - t) // 2
            src[a] = slice(start, start + t)
        else:
            start = (t - n) // 2
            dst[a] = slice(start, start + n)
    out = ctx.out(0, out_shape, x.dtype)
    if any(t > x.shape[a] for a, t in zip(axes, target)):
        out.fill(0)
    out[tuple(dst)] = x[tuple(src)]
    return out
