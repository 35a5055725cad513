"""ConvTranspose (one matmul to columns, then a col2im scatter-add, or where the windows tile the
output each tap's block written in place) and Col2Im, which is that scatter."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.conv_window import auto_pad_name, kernel_offsets, window_attrs
from gpuinfer.ops.registry import op


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
    n_sp, kernel, strides, dil, group = window_attrs("ConvTranspose", attrs, x_shape, w_shape)
    outpad = list(attrs.get("output_padding") or [0] * n_sp)
    n, c = x_shape[:2]
    if c != w_shape[0] or c % group:
        raise NodeExecutionError(f"ConvTranspose: W shape {w_shape} does not fit X channels {c} with group {group}")
    m = w_shape[1] * group
    in_sp = x_shape[2:]
    full = [s * (i - 1) + op_ + (k - 1) * d + 1 for i, s, op_, k, d in zip(in_sp, strides, outpad, kernel, dil)]
    auto_pad = auto_pad_name(attrs.get("auto_pad"))
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


def tiles_exactly(g: ConvTransposeGeometry, in_sp) -> bool:
    """Whether every output position is one tap of one input position: windows that tile the output
    (kernel = stride, no dilation) with nothing cropped or added (a 2x2 stride-2 upsampling, as in
    PP-OCRv4 det's head)."""
    return (all(k == s and d == 1 for k, s, d in zip(g.kernel, g.strides, g.dilations)) and not any(g.begin)
            and list(g.out_shape[2:]) == [i * s for i, s in zip(in_sp, g.strides)])


def place_tiles(xp, dst, cols_v, kernel, in_sp, bias=None):
    """``dst`` (channels, *spatial) = each tap's block ``cols_v[:, k]`` at its place in the tiles (plus
    ``bias``): one write of every output position, where a scatter-add fills zeros, reads them back
    and adds the bias in a pass of its own."""
    tiles = dst.reshape((dst.shape[0],) + tuple(v for i, k in zip(in_sp, kernel) for v in (i, k)))
    for ki, off in enumerate(kernel_offsets(kernel)):
        place = tiles[(slice(None),) + tuple(v for o in off for v in (slice(None), o))]
        if bias is None:
            xp.copyto(place, cols_v[:, ki])
        else:
            xp.add(cols_v[:, ki], bias, out=place)


@op("ConvTranspose", since=1, scratch=_conv_transpose_scratch)
def conv_transpose(ctx, x, w, b=None):
    """Transposed (fractionally strided) convolution: one matmul to columns, then col2im scatter-add
    (or, where the windows tile the output, each tap's block in place: 2x2 stride 2 upsampling of
    24x160x160 8.7 -> 6.9 ms, throwaway timing, median of 20; the same bytes)."""
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
    tiled = tiles_exactly(g, x.shape[2:])
    bias = None if b is None else b.reshape((m,) + (1,) * (x.ndim - 2))
    for ni in range(n):
        xp.matmul(wr, x[ni].reshape(grp, c // grp, p), out=cols_g)
        if tiled:
            place_tiles(xp, out[ni], cols_v, g.kernel, x.shape[2:], bias)
            continue
        out[ni].fill(0)
        scatter_blocks(out[ni], cols_v, g.kernel, g.dilations, g.strides, g.begin, x.shape[2:])
    if bias is not None and not tiled:
        out += bias
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
