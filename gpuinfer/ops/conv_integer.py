"""Integer convolutions: ConvInteger and QLinearConv, accumulated exactly in float64 through the
float Conv paths, plus the requantization QLinearMatMul shares."""
from __future__ import annotations

import numpy as np

from gpuinfer.ops.conv import conv_geometry, conv_into
from gpuinfer.ops.registry import op
from gpuinfer.ops.tiles import CPU_TILE_BYTES, tile_bytes_of


def _conv_integer_scratch(attrs, shapes, dtypes, tile_bytes=CPU_TILE_BYTES):
    g = conv_geometry(attrs, shapes[0], shapes[1], np.float64, tile_bytes)
    f8 = np.dtype(np.float64)
    return [(tuple(shapes[0]), f8), (tuple(shapes[1]), f8), (g.out_shape, f8)] + g.scratch


def _integer_conv(ctx, x, w, x_zero, w_zero):
    """sum (x - x_zero)(w - w_zero) as float64 (exact for 8-bit data), in a scratch buffer.

    Padding holds x_zero, i.e. contributes nothing, as onnxruntime does.
    """
    xp = ctx.xp
    g = conv_geometry(ctx.attrs, x.shape, w.shape, np.float64, tile_bytes_of(ctx))
    xf = ctx.scratch(x.shape, np.float64)
    wf = ctx.scratch(w.shape, np.float64)
    acc = ctx.scratch(g.out_shape, np.float64)
    xp.copyto(xf, x)
    xp.copyto(wf, w)
    if x_zero is not None:
        xf -= x_zero.astype(np.float64).reshape(-1)[0]
    if w_zero is not None:
        wz = w_zero.astype(np.float64).reshape(-1)
        wf -= wz.reshape((-1,) + (1,) * (w.ndim - 1)) if wz.size > 1 else wz[0]
    conv_into(ctx, xf, wf, g, acc)
    return g, acc


@op("ConvInteger", since=10, scratch=_conv_integer_scratch)
def conv_integer(ctx, x, w, x_zero=None, w_zero=None):
    """Convolution of 8-bit integers with zero points, accumulated exactly into int32."""
    g, acc = _integer_conv(ctx, x, w, x_zero, w_zero)
    out = ctx.out(0, g.out_shape, np.int32)
    ctx.xp.copyto(out, acc, casting="unsafe")
    return out


def requantize(xp, acc, multiplier, zero, out):
    """out = saturate(round_half_even(acc * multiplier) + zero) for an integer ``out``; ``acc`` is overwritten."""
    acc *= multiplier
    xp.rint(acc, out=acc)
    acc += zero
    info = np.iinfo(out.dtype)
    xp.clip(acc, info.min, info.max, out=acc)
    xp.copyto(out, acc, casting="unsafe")
    return out


@op("QLinearConv", since=10, scratch=_conv_integer_scratch)
def qlinear_conv(ctx, x, x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero, b=None):
    """Quantized convolution: integer accumulation, bias, then requantization to y's scale and zero point."""
    xp = ctx.xp
    g, acc = _integer_conv(ctx, x, w, x_zero, w_zero)
    m = w.shape[0]
    cshape = (1, m) + (1,) * (x.ndim - 2)
    if b is not None:
        acc += b.astype(np.float64).reshape(cshape)
    ws = w_scale.astype(np.float64).reshape(-1)
    mult = (x_scale.astype(np.float64).reshape(-1)[0] * ws / y_scale.astype(np.float64).reshape(-1)[0])
    mult = mult.reshape(cshape) if mult.size > 1 else mult[0]
    out = ctx.out(0, g.out_shape, y_zero.dtype if y_zero is not None else x.dtype)
    zero = y_zero.astype(np.float64).reshape(-1)[0] if y_zero is not None else 0.0
    return requantize(xp, acc, mult, zero, out)
