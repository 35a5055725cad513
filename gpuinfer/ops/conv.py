"""Convolutions: Conv, ConvTranspose, Col2Im and the integer/quantized ConvInteger and QLinearConv.

Conv is im2col (columns built for a band of output rows at a time) around BLAS matmuls, with a
direct matmul for 1x1 convolutions and a tap-by-tap multiply-add for depthwise ones (in one of three
memory layouts, whichever keeps numpy's inner loops long and contiguous for the shape); ConvTranspose
is one matmul to columns then a col2im scatter-add.  The geometry (pads, output size, which path runs, which scratch buffers it needs) is computed by
pure functions of attributes and shapes, shared by the kernels and by their ``scratch=`` functions
so the planner sees exactly the buffers the kernels ask for.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.registry import op


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else (v or "NOTSET")


def window_pads(auto_pad, pads, in_sp, kernel, strides, dilations, ceil_mode=0):
    """(begin pads, end pads, output sizes) of a sliding window, as Conv and the pools define them."""
    n = len(in_sp)
    auto_pad = _s(auto_pad)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-i // s) for i, s in zip(in_sp, strides)]
        total = [max(0, (o - 1) * s + e - i) for o, s, e, i in zip(out, strides, eff, in_sp)]
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        begin, end = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        return begin, end, out
    if auto_pad == "VALID":
        begin, end = [0] * n, [0] * n
    elif auto_pad == "NOTSET":
        pads = list(pads) if pads else [0] * (2 * n)
        begin, end = pads[:n], pads[n:]
    else:
        raise NodeExecutionError(f"unknown auto_pad {auto_pad!r}")
    out = []
    for i, b, e, k, s in zip(in_sp, begin, end, eff, strides):
        span = i + b + e - k
        if ceil_mode:
            o = -(-span // s) + 1
            if (o - 1) * s >= i + b:  # the last window would start inside the end padding only
                o -= 1
        else:
            o = span // s + 1
        out.append(max(o, 0))
    return begin, end, out


def kernel_offsets(kernel):
    """Every kernel position as a tuple, in row-major order."""
    return list(itertools.product(*[range(k) for k in kernel]))


def window_slices(offset, dilations, strides, out_sp, lead=2):
    """Slices picking, for one kernel offset, the input element under every output position."""
    sl = tuple(slice(o * d, o * d + s * (n - 1) + 1, s) for o, d, s, n in zip(offset, dilations, strides, out_sp))
    return (slice(None),) * lead + sl


# ----------------------------------------------------------------------------------------- Conv

# im2col columns are built for a band of output rows at a time: a band this size stays in cache
# for its matmul and keeps the scratch buffer small.
COLUMN_TILE_BYTES = 2 << 20


@dataclass
class ConvGeometry:
    """Everything the Conv kernel decides from attributes and shapes alone."""

    group: int
    kernel: list
    strides: list
    dilations: list
    begin: list
    end: list
    out_shape: tuple
    path: str  # "pointwise", "depthwise" or "im2col"
    padded_shape: tuple = None  # scratch for the zero-padded input, or None
    tile: int = 0  # im2col, depthwise "flat": output rows (first spatial axis) per tile
    layout: str = ""  # depthwise: "strided", "flat" or "nhwc" (see _depthwise_layout)
    scratch: list = field(default_factory=list)


def _window_attrs(op_type: str, attrs, x_shape, w_shape):
    """(spatial rank, kernel, strides, dilations, group) shared by Conv and ConvTranspose."""
    if len(x_shape) < 3 or len(w_shape) != len(x_shape):
        raise NodeExecutionError(f"{op_type}: X and W must have the same rank >= 3, got {x_shape} and {w_shape}")
    n_sp = len(x_shape) - 2
    kernel = list(attrs.get("kernel_shape") or w_shape[2:])
    strides = list(attrs.get("strides") or [1] * n_sp)
    dil = list(attrs.get("dilations") or [1] * n_sp)
    return n_sp, kernel, strides, dil, int(attrs.get("group", 1))


def conv_geometry(attrs, x_shape, w_shape, dtype) -> ConvGeometry:
    n_sp, kernel, strides, dil, group = _window_attrs("Conv", attrs, x_shape, w_shape)
    n, c = x_shape[:2]
    m = w_shape[0]
    if c % group or m % group or w_shape[1] * group != c:
        raise NodeExecutionError(f"Conv: W shape {w_shape} does not fit X channels {c} with group {group}")
    begin, end, out_sp = window_pads(attrs.get("auto_pad"), attrs.get("pads"), x_shape[2:], kernel, strides, dil)
    out_shape = (n, m, *out_sp)
    padded = any(begin) or any(end)
    pshape = (n, c, *[i + b + e for i, b, e in zip(x_shape[2:], begin, end)])
    g = ConvGeometry(group, kernel, strides, dil, begin, end, out_shape, "im2col")
    dt = np.dtype(dtype)
    if all(k == 1 for k in kernel) and all(s == 1 for s in strides) and not padded:
        g.path = "pointwise"
    elif group == c == m and c > 1:
        g.path = "depthwise"
        _depthwise_plan(g, pshape, padded, dt)
    else:
        if padded:
            g.padded_shape = (c, *pshape[2:])
            g.scratch.append((g.padded_shape, dt))
        row = c * math.prod(kernel) * math.prod(out_sp[1:]) * dt.itemsize
        g.tile = max(1, min(out_sp[0], COLUMN_TILE_BYTES // max(row, 1)))
        g.scratch.append(((c * math.prod(kernel), g.tile * math.prod(out_sp[1:])), dt))
    return g

# A depthwise "flat" accumulator or product buffer (channels x output rows x padded width) holds at
# most this much: whole images in the benchmark models.  Splitting an image into row tiles that fit
# L2 was measured slower (1.3-2x), so tiles only bound the scratch of very large images.
DEPTHWISE_TILE_BYTES = 4 << 20

# Channels from which a depthwise conv never runs "flat": from here channels-last is faster when a
# padded row is not much longer than the channels, and "flat" gains nothing over "strided" (measured
# on the benchmark models' shapes, as is the 4/5 ratio in _depthwise_layout) for its extra scratch.
NHWC_MIN_CHANNELS = 88


def _depthwise_layout(c, pshape, strides):
    """Which memory layout a 2-D depthwise conv runs in, so numpy's inner loops are long and contiguous.

    "nhwc": channels last, the inner loop runs over channels (any stride or dilation); wins when the
    channels are about as many as a padded row is long.  "flat": channels first with the image rows
    laid end to end at padded width, so a tap is one contiguous run per channel (stride 1 only); wins
    for few channels, but needs one more output-sized scratch buffer.  "strided": the window views, for
    the rest and for other ranks.
    """
    if len(pshape) != 4:
        return "strided"
    wide = 5 * c >= 4 * pshape[3]
    if c >= NHWC_MIN_CHANNELS:
        return "nhwc" if wide else "strided"
    if all(s == 1 for s in strides):
        return "flat"
    return "nhwc" if wide else "strided"


def _depthwise_plan(g, pshape, padded, dt):
    """Layout and scratch buffers (in request order) of a depthwise conv."""
    n, c = pshape[:2]
    out_sp = g.out_shape[2:]
    g.layout = _depthwise_layout(c, pshape, g.strides)
    if g.layout == "nhwc":  # padded channels-last image, one tap's products; the output holds the sum
        g.padded_shape = (*pshape[2:], c)
        g.scratch += [(g.padded_shape, dt), ((*out_sp, c), dt)]
    elif g.layout == "flat":  # padded image rows end to end (plus the last tap's overhang), two tiles
        hp, wp = pshape[2:]
        g.padded_shape = (c, hp * wp + (g.kernel[1] - 1) * g.dilations[1])
        row = c * wp * dt.itemsize
        g.tile = max(1, min(out_sp[0], DEPTHWISE_TILE_BYTES // max(row, 1)))
        g.scratch += [(g.padded_shape, dt)] + [((c, g.tile * wp), dt)] * 2
    else:
        if padded:
            g.padded_shape = pshape
            g.scratch.append((pshape, dt))
        g.scratch.append((g.out_shape, dt))


def _conv_scratch(attrs, shapes, dtypes):
    return conv_geometry(attrs, shapes[0], shapes[1], dtypes[0]).scratch


def _pad_into(xp, buf, x, begin, lead):
    """Copy ``x`` into ``buf`` at offset ``begin`` on the trailing axes, zeros around it."""
    _zero_margins(buf, begin, x.shape[lead:], lead)
    buf[(slice(None),) * lead + tuple(slice(b, b + s) for b, s in zip(begin, x.shape[lead:]))] = x


def _zero_margins(buf, begin, inner, first):
    """Zero what lies outside the box ``begin`` + ``inner`` on axes ``first``.. of ``buf``, leaving the
    box itself (about to be overwritten) alone: a full fill would write every byte twice."""
    lead = (slice(None),) * first
    for a, (b, size) in enumerate(zip(begin, inner)):
        before = (slice(None),) * a
        buf[lead + before + (slice(0, b),)] = 0
        buf[lead + before + (slice(b + size, None),)] = 0


def _conv_into(ctx, x, w, g, out):
    """The convolution of ``x`` by ``w`` (no bias) written into ``out``, along the path ``g`` chose."""
    xp = ctx.xp
    n, c = x.shape[:2]
    m = w.shape[0]
    grp = g.group
    p = math.prod(g.out_shape[2:])
    if out.size == 0:
        return
    if g.path == "pointwise":
        xr = x.reshape(n, grp, c // grp, p)
        outr = out.reshape(n, grp, m // grp, p)
        wr = w.reshape(grp, m // grp, c // grp)
        for gi in range(grp):
            xp.matmul(wr[gi], xr[:, gi], out=outr[:, gi])
    elif g.path == "depthwise" and g.layout == "nhwc":
        _depthwise_nhwc(ctx, x, w, g, out)
    elif g.path == "depthwise" and g.layout == "flat":
        _depthwise_flat(ctx, x, w, g, out)
    elif g.path == "depthwise":
        src = x
        if g.padded_shape is not None:
            src = ctx.scratch(g.padded_shape, x.dtype)
            _pad_into(xp, src, x, g.begin, 2)
        tmp = ctx.scratch(g.out_shape, x.dtype)
        wk = w.reshape(c, -1)
        bshape = (1, c) + (1,) * (x.ndim - 2)
        for ki, off in enumerate(kernel_offsets(g.kernel)):
            view = src[window_slices(off, g.dilations, g.strides, g.out_shape[2:])]
            coef = wk[:, ki].reshape(bshape)
            if ki == 0:
                xp.multiply(view, coef, out=out)
            else:
                xp.multiply(view, coef, out=tmp)
                xp.add(out, tmp, out=out)
    else:
        pad_buf = ctx.scratch(g.padded_shape, x.dtype) if g.padded_shape is not None else None
        k = math.prod(g.kernel)
        out_sp = tuple(g.out_shape[2:])
        row = math.prod(out_sp[1:])
        cols = ctx.scratch((c * k, g.tile * row), x.dtype).reshape(-1)
        wr = w.reshape(grp, m // grp, (c // grp) * k)
        offsets = kernel_offsets(g.kernel)
        for ni in range(n):
            src = x[ni]
            if pad_buf is not None:
                _pad_into(xp, pad_buf, src, g.begin, 1)
                src = pad_buf
            out_n = out[ni].reshape(grp, m // grp, out_sp[0], row)
            for r0 in range(0, out_sp[0], g.tile):
                rows = min(g.tile, out_sp[0] - r0)
                band = (rows,) + out_sp[1:]
                cols_band = cols[:c * k * rows * row]  # contiguous prefix: reshapes stay views
                shift = r0 * g.strides[0]
                if k > WINDOW_GATHER_TAPS:  # long kernels (STFT-as-Conv): one strided copy, not k slices
                    windows = _windows(xp, src, g, band, shift)
                    cols_band.reshape(windows.shape)[...] = windows
                else:
                    cols_v = cols_band.reshape((c, k) + band)
                    for ki, off in enumerate(offsets):
                        sl = window_slices(off, g.dilations, g.strides, band, lead=1)
                        sl = (sl[0], slice(sl[1].start + shift, sl[1].stop + shift, sl[1].step)) + sl[2:]
                        cols_v[:, ki] = src[sl]
                cols_g = cols_band.reshape(grp, (c // grp) * k, rows * row)
                xp.matmul(wr, cols_g, out=out_n[:, :, r0:r0 + rows].reshape(grp, m // grp, rows * row))


def _depthwise_nhwc(ctx, x, w, g, out):
    """Depthwise conv channels-last: per tap, one multiply of a (rows, cols, C) window by the tap's
    (C,) weights, added up in ``out[n]``'s own memory (read as (rows, cols, C)); the last tap's sum
    lands in the product buffer, which is transposed back into ``out[n]``."""
    xp = ctx.xp
    c = x.shape[1]
    out_sp = g.out_shape[2:]
    pad = ctx.scratch(g.padded_shape, x.dtype)
    prod = ctx.scratch((*out_sp, c), x.dtype)
    wt = xp.ascontiguousarray(w.reshape(c, -1).T)  # (taps, C)
    offsets = kernel_offsets(g.kernel)
    last = len(offsets) - 1
    _zero_margins(pad, g.begin, x.shape[2:], 0)  # once: each image only overwrites the inside
    inside = tuple(slice(b, b + s) for b, s in zip(g.begin, x.shape[2:]))
    for ni in range(x.shape[0]):
        pad[inside] = x[ni].transpose(1, 2, 0)
        acc = out[ni].reshape(prod.shape)
        for ki, off in enumerate(offsets):
            view = pad[window_slices(off, g.dilations, g.strides, out_sp, lead=0)]
            if ki == 0:
                xp.multiply(view, wt[ki], out=prod if ki == last else acc)
            else:
                xp.multiply(view, wt[ki], out=prod)
                xp.add(acc, prod, out=prod if ki == last else acc)
        out[ni] = prod.transpose(2, 0, 1)


def _depthwise_flat(ctx, x, w, g, out):
    """Depthwise conv (stride 1) channels-first with image rows laid end to end at padded width: tap
    (i, j) of a tile of output rows is then one contiguous run per channel starting i*Wp + j further
    on.  The columns past the output width are computed and dropped when the tile is copied out."""
    xp = ctx.xp
    c = x.shape[1]
    hp, wp = (i + b + e for i, b, e in zip(x.shape[2:], g.begin, g.end))
    ho, wo = g.out_shape[2:]
    pad = ctx.scratch(g.padded_shape, x.dtype)
    acc = ctx.scratch((c, g.tile * wp), x.dtype)
    prod = ctx.scratch((c, g.tile * wp), x.dtype)
    img = pad[:, :hp * wp].reshape(c, hp, wp)
    coef = w.reshape(c, -1, 1)  # (C, taps, 1)
    offsets = [i * g.dilations[0] * wp + j * g.dilations[1] for i, j in kernel_offsets(g.kernel)]
    pad[:, hp * wp:] = 0  # the overhang only feeds dropped columns; zeros keep them finite
    _zero_margins(img, g.begin, x.shape[2:], 1)  # once: each image only overwrites the inside
    inside = (slice(None),) + tuple(slice(b, b + s) for b, s in zip(g.begin, x.shape[2:]))
    for ni in range(x.shape[0]):
        img[inside] = x[ni]
        for r0 in range(0, ho, g.tile):
            rows = min(g.tile, ho - r0)
            span = rows * wp
            a, t = acc[:, :span], prod[:, :span]
            for ki, off in enumerate(offsets):
                view = pad[:, r0 * wp + off:r0 * wp + off + span]
                if ki == 0:
                    xp.multiply(view, coef[:, ki], out=a)
                else:
                    xp.multiply(view, coef[:, ki], out=t)
                    xp.add(a, t, out=a)
            out[ni, :, r0:r0 + rows] = a.reshape(c, rows, wp)[:, :, :wo]


# Above this many kernel taps, im2col columns come from one strided view of the input instead of
# one slice copy per tap (Python overhead per tap dominates when the output is short).
WINDOW_GATHER_TAPS = 32


def _windows(xp, src, g, band, shift):
    """View of ``src`` (C, *spatial) as (C, *kernel, *band): element [c, k.., o..] is the input under
    kernel tap k of output position o (rows offset by ``shift``).  No copy."""
    strides = src.strides
    shape = (src.shape[0], *g.kernel, *band)
    view_strides = ((strides[0],) + tuple(s * d for s, d in zip(strides[1:], g.dilations))
                    + tuple(s * st for s, st in zip(strides[1:], g.strides)))
    start = src[(slice(None), slice(shift, None)) + (slice(None),) * (src.ndim - 2)]
    return xp.lib.stride_tricks.as_strided(start, shape=shape, strides=view_strides)


@op("Conv", since=1, scratch=_conv_scratch)
def conv(ctx, x, w, b=None):
    """N-d grouped, strided, dilated, padded convolution (cross-correlation) with optional bias."""
    g = conv_geometry(ctx.attrs, x.shape, w.shape, x.dtype)
    out = ctx.out(0, g.out_shape, x.dtype)
    _conv_into(ctx, x, w, g, out)
    if b is not None:
        out += b.reshape((1, w.shape[0]) + (1,) * (x.ndim - 2))
    return out


def _conv_integer_scratch(attrs, shapes, dtypes):
    g = conv_geometry(attrs, shapes[0], shapes[1], np.float64)
    f8 = np.dtype(np.float64)
    return [(tuple(shapes[0]), f8), (tuple(shapes[1]), f8), (g.out_shape, f8)] + g.scratch


def _integer_conv(ctx, x, w, x_zero, w_zero):
    """sum (x - x_zero)(w - w_zero) as float64 (exact for 8-bit data), in a scratch buffer.

    Padding holds x_zero, i.e. contributes nothing, as onnxruntime does.
    """
    xp = ctx.xp
    g = conv_geometry(ctx.attrs, x.shape, w.shape, np.float64)
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
    _conv_into(ctx, xf, wf, g, acc)
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


# -------------------------------------------------------------------------------- ConvTranspose

@dataclass
class ConvTransposeGeometry:
    group: int
    kernel: list
    strides: list
    dilations: list
    begin: list  # pads cropped from the front of the full result (negative: zeros added)
    out_shape: tuple
    scratch: list = field(default_factory=list)


def conv_transpose_geometry(attrs, x_shape, w_shape, dtype) -> ConvTransposeGeometry:
    n_sp, kernel, strides, dil, group = _window_attrs("ConvTranspose", attrs, x_shape, w_shape)
    outpad = list(attrs.get("output_padding") or [0] * n_sp)
    n, c = x_shape[:2]
    if c != w_shape[0] or c % group:
        raise NodeExecutionError(f"ConvTranspose: W shape {w_shape} does not fit X channels {c} with group {group}")
    m = w_shape[1] * group
    in_sp = x_shape[2:]
    full = [s * (i - 1) + op_ + (k - 1) * d + 1 for i, s, op_, k, d in zip(in_sp, strides, outpad, kernel, dil)]
    auto_pad = _s(attrs.get("auto_pad"))
    out_shape_attr = attrs.get("output_shape")
    if out_shape_attr:
        target = list(out_shape_attr)[-n_sp:]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = [i * s for i, s in zip(in_sp, strides)]
    else:
        target = None
    if target is not None:
        total = [f - t for f, t in zip(full, target)]
        if auto_pad == "SAME_UPPER":
            begin = [t // 2 for t in total]
        else:
            begin = [t - t // 2 for t in total]
        out_sp = target
    else:
        pads = list(attrs.get("pads") or [0] * (2 * n_sp))
        if auto_pad == "VALID":
            pads = [0] * (2 * n_sp)
        begin = pads[:n_sp]
        out_sp = [f - b - e for f, b, e in zip(full, pads[:n_sp], pads[n_sp:])]
    out_shape = (n, m, *out_sp)
    scratch = [((m * math.prod(kernel), math.prod(in_sp)), np.dtype(dtype))]
    return ConvTransposeGeometry(group, kernel, strides, dil, begin, out_shape, scratch)


def _conv_transpose_scratch(attrs, shapes, dtypes):
    return conv_transpose_geometry(attrs, shapes[0], shapes[1], dtypes[0]).scratch


def scatter_blocks(dst, cols_v, kernel, dilations, strides, begin, n_blocks):
    """col2im: add block values ``cols_v[:, k, j...]`` at ``offset_k * dilation - begin + stride * j``.

    ``dst`` is (channels, *spatial); positions falling outside it (cropped pads) are dropped.
    """
    for ki, off in enumerate(kernel_offsets(kernel)):
        d_sl, s_sl = [slice(None)], [slice(None), ki]
        for o, d, s, b, n, size in zip(off, dilations, strides, begin, n_blocks, dst.shape[1:]):
            first = o * d - b  # position of block 0
            j_lo = max(0, -(first // s)) if first < 0 else 0
            j_hi = min(n, (size - 1 - first) // s + 1) if size - 1 - first >= 0 else 0
            if j_hi <= j_lo:
                break
            d_sl.append(slice(first + s * j_lo, first + s * (j_hi - 1) + 1, s))
            s_sl.append(slice(j_lo, j_hi))
        else:
            dst[tuple(d_sl)] += cols_v[tuple(s_sl)]


@op("ConvTranspose", since=1, scratch=_conv_transpose_scratch)
def conv_transpose(ctx, x, w, b=None):
    """Transposed (fractionally strided) convolution: one matmul to columns, then col2im scatter-add."""
    xp = ctx.xp
    g = conv_transpose_geometry(ctx.attrs, x.shape, w.shape, x.dtype)
    out = ctx.out(0, g.out_shape, x.dtype)
    n, c = x.shape[:2]
    m = g.out_shape[1]
    grp = g.group
    k = math.prod(g.kernel)
    p = math.prod(x.shape[2:])
    cols = ctx.scratch((m * k, p), x.dtype)
    if out.size == 0:
        return out
    wr = w.reshape(grp, c // grp, (m // grp) * k).transpose(0, 2, 1)
    cols_g = cols.reshape(grp, (m // grp) * k, p)
    cols_v = cols.reshape((m, k) + tuple(x.shape[2:]))
    for ni in range(n):
        xp.matmul(wr, x[ni].reshape(grp, c // grp, p), out=cols_g)
        out[ni].fill(0)
        scatter_blocks(out[ni], cols_v, g.kernel, g.dilations, g.strides, g.begin, x.shape[2:])
    if b is not None:
        out += b.reshape((1, m) + (1,) * (x.ndim - 2))
    return out


@op("Col2Im", since=18)
def col2im(ctx, x, image_shape, block_shape):
    """Rearrange (N, C*prod(block), L) columns back into (N, C, *image), summing overlaps."""
    img = [int(v) for v in ctx.host(image_shape).reshape(-1)]
    blk = [int(v) for v in ctx.host(block_shape).reshape(-1)]
    nsp = len(img)
    if x.ndim != 3 or len(blk) != nsp or x.shape[1] % math.prod(blk):
        raise NodeExecutionError(f"Col2Im: input {x.shape} does not fit block_shape {blk} and image_shape {img}")
    strides = list(ctx.attr("strides") or [1] * nsp)
    dil = list(ctx.attr("dilations") or [1] * nsp)
    pads = list(ctx.attr("pads") or [0] * (2 * nsp))
    n_blocks = [(i + pads[a] + pads[a + nsp] - ((k - 1) * d + 1)) // s + 1
                for a, (i, k, d, s) in enumerate(zip(img, blk, dil, strides))]
    if math.prod(n_blocks) != x.shape[2]:
        raise NodeExecutionError(f"Col2Im: expected {math.prod(n_blocks)} blocks, got {x.shape[2]}")
    c = x.shape[1] // math.prod(blk)
    out = ctx.out(0, (x.shape[0], c, *img), x.dtype)
    out.fill(0)
    for ni in range(x.shape[0]):
        cols_v = x[ni].reshape((c, math.prod(blk)) + tuple(n_blocks))
        scatter_blocks(out[ni], cols_v, blk, dil, strides, pads[:nsp], n_blocks)
    return out
