"""Conv: geometry and path choice, the im2col and pointwise paths, and the Conv op.

Conv is im2col (columns built for a band of output rows at a time, as flat runs of the unpadded
input where the width is kept: conv_flat_columns.py) around BLAS matmuls, with a
direct matmul for 1x1 convolutions, kn2row (conv_kn2row.py) for stride-1 2-D convolutions with few
output channels, and a tap-by-tap multiply-add for depthwise ones (conv_depthwise.py).  The geometry
(pads, output size, which path runs, which scratch buffers it needs) is computed by pure functions of
attributes and shapes, shared by the kernel and by its ``scratch=`` function so the planner sees
exactly the buffers the kernel asks for.  ConvTranspose and Col2Im live in conv_transpose.py,
ConvInteger and QLinearConv in conv_integer.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.blas_widths import width_free
from gpuinfer.ops.conv_depthwise import column_phased, depthwise_conv, depthwise_plan, phase_into, tap_slices
from gpuinfer.ops.conv_flat_columns import fill_flat_columns, flat_columns_fit
from gpuinfer.ops.conv_kn2row import kn2row_conv, kn2row_fits, kn2row_plan
from gpuinfer.ops.conv_window import pad_into, window_attrs, window_pads
from gpuinfer.ops.registry import op
from gpuinfer.ops.tiles import CPU_TILE_BYTES, scaled, tile_bytes_of

# im2col columns are built for a band of output rows at a time: a band this size stays in cache
# for its matmul and keeps the scratch buffer small.  1 MiB rather than 2 lowers the arena peak
# where the columns are the biggest tensor of the busiest step (resnet50 8.6 -> 7.7 MiB, nudenet
# 5.9 -> 4.9 MiB) at no measurable cost except on VGG-19's huge layers (a few percent).  That is on
# the CPU; a device scales it by its ``caps.tile_bytes`` (ops/tiles.py): whole images on a GPU.
COLUMN_TILE_BYTES = 1 << 20
# On small images (input and output up to COLUMN_SMALL_IMAGE_BYTES), where a 1 MiB band is most of
# the step's memory (1.07x mtcnn pnet's whole tensors' bound), a band is held to a sixteenth of the
# conv's input and output, no less than the weights nor COLUMN_MIN_PIXELS output pixels (see
# column_band_bytes).  Everywhere, with a 64 KiB floor, took nudenet's bands a run from 65 to 953
# (one output row of 40 pixels a band), 40 -> 60 ms; with these floors 206 and u2netp's 605 -> 986.
COLUMN_SHARE = 16
COLUMN_MIN_PIXELS = 256
COLUMN_SMALL_IMAGE_BYTES = 4 << 20

# Where a band's products may be as wide as the band (ops/blas_widths.py), a band widened by the
# plan's slack may hold as many bytes as the weights, up to this: OpenBLAS packs every weight for
# each product, and VGG-19's 512-channel layers (9.4 MB of weights) packed them once per two output
# rows of 28.  Slack only: no plan's peak moves.
COLUMN_WEIGHTS_BYTES = 16 << 20

# Above this many kernel taps, im2col columns come from one strided view of the input instead of
# one slice copy per tap (Python overhead per tap dominates when the output is short).
WINDOW_GATHER_TAPS = 32


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
    path: str  # "pointwise", "depthwise", "kn2row" or "im2col"
    padded_shape: tuple = None  # scratch for the zero-padded input, or None
    tile: int = 0  # im2col, kn2row: output rows per band; depthwise "nhwc": output pixels per einsum run
    gemm_rows: int = 0  # im2col: output rows per matmul inside a band (0: the whole band; see _widened_tile)
    layout: str = ""  # depthwise: "rows", "strided", "flat" or "nhwc" (see conv_depthwise.depthwise_plan)
    blocks: int = 0  # depthwise "nhwc": channel blocks (conv_depthwise.channel_blocks)
    band_rows: int = 0  # depthwise "rows": output rows a band (conv_depthwise_rows.rows_band)
    phased: bool = False  # the padded copy is column-phased (see conv_depthwise.column_phased)
    flat: bool = False  # im2col: columns read as flat runs of the unpadded input (conv_flat_columns.py)
    scratch: list = field(default_factory=list)


# kn2row needs at least this many input channels per group: below it the per-group GEMMs are too thin
# (measured 1.4x slower than im2col with 4 channels per group, on par with 16 in one group).
KN2ROW_MIN_CHANNELS = 16


def use_kn2row(x_shape, w_shape, g) -> bool:
    """Whether a stride-1 2-D conv runs kn2row rather than im2col: when each group has at most half
    as many output as input channels (the im2col copy of C*K columns then costs more than the K
    shifted adds of M rows; measured on u2netp's, densenet121's, PP-OCRv4 det's and nudenet's shapes:
    M/C = 1/2 wins 3-25%, 2/3 breaks even, 3/4 and 1 lose 5-40%) and enough of them."""
    cg = x_shape[1] // g.group
    return kn2row_fits(x_shape, w_shape, g) and 2 * w_shape[0] <= x_shape[1] and cg >= KN2ROW_MIN_CHANNELS


def conv_geometry(attrs, x_shape, w_shape, dtype, tile_bytes=CPU_TILE_BYTES, slack=0) -> ConvGeometry:
    """The geometry of a Conv on a device whose tiles are ``tile_bytes`` (``caps.tile_bytes``),
    its scratch at most ``slack`` bytes over the smallest it would take (``scratch_slack``: room
    the plan has at this step, spent on longer bands and channel blocks, fewer Python passes)."""
    n_sp, kernel, strides, dil, group = window_attrs("Conv", attrs, x_shape, w_shape)
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
        depthwise_plan(g, pshape, padded, dt, slack)
    elif use_kn2row(x_shape, w_shape, g):
        g.path = "kn2row"
        kn2row_plan(g, x_shape, w_shape, dt, tile_bytes)
    else:
        row = c * math.prod(kernel) * math.prod(out_sp[1:]) * dt.itemsize
        band = column_band_bytes(c * math.prod(x_shape[2:]), m * math.prod(out_sp), math.prod(w_shape),
                                 c * math.prod(kernel), dt.itemsize, tile_bytes)
        g.tile = max(1, min(out_sp[0], band // max(row, 1)))
        g.flat = math.prod(kernel) <= WINDOW_GATHER_TAPS and flat_columns_fit(kernel, strides, x_shape, out_shape)
        padded = padded and not g.flat  # flat columns need no padded copy
        if slack > 0:
            most_band = scaled(COLUMN_TILE_BYTES, tile_bytes)
            whole = _products_width_free(g, m // group, c // group * math.prod(kernel))
            if whole:  # each band's product packs all the weights: bands as big as they are cut that short
                most_band = max(most_band, min(math.prod(w_shape) * dt.itemsize, scaled(COLUMN_WEIGHTS_BYTES, tile_bytes)))
            g.tile = _widened_tile(g, pshape, padded, row, most_band, slack, dt.itemsize, whole)
        if padded:
            g.padded_shape = (c, padded_rows(g, pshape[2]), *pshape[3:])
            g.phased = math.prod(kernel) <= WINDOW_GATHER_TAPS and column_phased(kernel, strides, dil)
            g.scratch.append((g.padded_shape, dt))
        g.scratch.append(((c * math.prod(kernel), g.tile * math.prod(out_sp[1:])), dt))
    return g


def _widened_tile(g: ConvGeometry, pshape, padded: bool, row: int, most_band: int, slack: int, itemsize: int,
                  whole: bool = False) -> int:
    """The most output rows a band may take when its scratch (columns, and the padded rows they
    read) may grow by ``slack`` bytes, its columns no more than ``most_band`` bytes (a band that size
    stays in cache): a multiple of ``g.tile``, whose matmuls stay ``g.tile`` rows each
    (``g.gemm_rows``).  One band's copies then cover several matmuls' columns, and the products are
    the very ones of the narrower bands: OpenBLAS's bytes change with a small product's width, so
    a wider matmul would make ``arena``'s results differ from the other modes'.  Where no product
    is that small (``whole``: ``_products_width_free``), a band is one product."""
    def scratch_bytes(tile: int) -> int:  # never falls as the tile grows
        g.tile = tile
        pad = pshape[1] * padded_rows(g, pshape[2]) * math.prod(pshape[3:]) * itemsize if padded else 0
        return tile * row + pad

    least = g.tile
    room = scratch_bytes(least) + slack
    lo, hi = 1, max(1, min(-(-g.out_shape[2] // least), most_band // max(row * least, 1)))
    while lo < hi:  # the most matmuls a band's columns may hold
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if scratch_bytes(mid * least) <= room else (lo, mid - 1)
    g.gemm_rows = 0 if whole else least
    g.tile = min(lo * least, g.out_shape[2]) if lo > 1 else least
    return g.tile


def _products_width_free(g: ConvGeometry, rows: int, inner: int) -> bool:
    """Whether every product of the narrowest bands (``g.tile`` output rows, and the image's last
    rows past a whole number of them) is big enough that a wider band's product gives the same
    bytes (ops/blas_widths.py): then any band, however wide the plan's slack makes it, is
    multiplied whole, and every mode still gives the same bytes."""
    row = math.prod(g.out_shape[3:])
    tail = g.out_shape[2] % g.tile
    return all(width_free(rows, inner, n * row) for n in ((g.tile, tail) if tail else (g.tile,)))


def column_band_bytes(in_elements: int, out_elements: int, w_elements: int, column: int, itemsize: int,
                      tile_bytes: int = CPU_TILE_BYTES) -> int:
    """Bytes of im2col columns one band may take: ``COLUMN_TILE_BYTES``; and where the conv's own
    input and output image is small (``COLUMN_SMALL_IMAGE_BYTES``), at most a ``COLUMN_SHARE``-th
    of it, but never less than the weights nor ``COLUMN_MIN_PIXELS`` output pixels' columns
    (``column`` elements a pixel): each band's matmul reads all the weights, and costs a Python
    pass of one copy a tap.  Sizes scaled to the device's tiles."""
    tile = scaled(COLUMN_TILE_BYTES, tile_bytes)
    image = (in_elements + out_elements) * itemsize
    if image > scaled(COLUMN_SMALL_IMAGE_BYTES, tile_bytes):  # the tile is already a small part of it
        return tile
    share = image // COLUMN_SHARE
    least = max(scaled(COLUMN_MIN_PIXELS * column * itemsize, tile_bytes), w_elements * itemsize)
    return min(tile, max(least, share))


def padded_rows(g: ConvGeometry, all_rows: int) -> int:
    """Rows of the zero-padded input copy of one image: all of them where a band of output rows is
    the whole image (or the conv is 1-D, its one axis the phased one), else the padded rows one
    band of ``g.tile`` output rows reads.  A whole padded image is as big as the input itself: on
    VGG-19's 224x224x64 layers (13 MB, 2-row bands) it made the arena 1.56x the tensors' bound,
    where a band's rows take 0.23 MB, for copying each input row about twice instead of once."""
    if len(g.kernel) < 2 or g.tile >= g.out_shape[2]:
        return all_rows
    return min(all_rows, (g.tile - 1) * g.strides[0] + (g.kernel[0] - 1) * g.dilations[0] + 1)


def _conv_scratch(attrs, shapes, dtypes, tile_bytes=CPU_TILE_BYTES, scratch_slack=0):
    return conv_geometry(attrs, shapes[0], shapes[1], dtypes[0], tile_bytes, scratch_slack).scratch


def conv_into(ctx, x, w, g, out, b=None):
    """The convolution of ``x`` by ``w`` plus bias ``b`` (if any) written into ``out``, along the path
    ``g`` chose."""
    if out.size == 0:
        return
    if g.path == "kn2row":
        kn2row_conv(ctx, x, w, g, out, b)  # adds the bias along with the first tap
        return
    if g.path == "pointwise":
        _pointwise(ctx, x, w, g, out)
    elif g.path == "depthwise":
        depthwise_conv(ctx, x, w, g, out)
    else:
        _im2col(ctx, x, w, g, out)
    if b is not None:
        out += b.reshape((1, w.shape[0]) + (1,) * (x.ndim - 2))


def _pointwise(ctx, x, w, g, out):
    """1x1 unpadded stride-1 conv: per group one (M, C) @ (C, P) matmul over the whole batch."""
    n, c = x.shape[:2]
    m, grp = w.shape[0], g.group
    p = math.prod(g.out_shape[2:])
    xr = x.reshape(n, grp, c // grp, p)
    outr = out.reshape(n, grp, m // grp, p)
    wr = w.reshape(grp, m // grp, c // grp)
    for gi in range(grp):
        ctx.xp.matmul(wr[gi], xr[:, gi], out=outr[:, gi])


def _im2col(ctx, x, w, g, out):
    """General conv: per band of output rows, copy the input under every tap into columns
    (C*K, rows*cols) and multiply each group's weights by its columns."""
    xp = ctx.xp
    n, c = x.shape[:2]
    m, grp = w.shape[0], g.group
    mg, cg = m // grp, c // grp
    pad_buf = ctx.scratch(g.padded_shape, x.dtype) if g.padded_shape is not None else None
    k = math.prod(g.kernel)
    out_sp = tuple(g.out_shape[2:])
    row = math.prod(out_sp[1:])
    cols = ctx.scratch((c * k, g.tile * row), x.dtype).reshape(-1)
    wr = w.reshape(grp, mg, cg * k)
    banded = pad_buf is not None and pad_buf.shape[1] < x.shape[2] + g.begin[0] + g.end[0]
    gemm_rows = g.gemm_rows or g.tile
    for ni in range(n):
        src = x[ni]
        if pad_buf is not None and not banded:  # the whole image padded once
            _pad_rows(pad_buf, src, g, 0, pad_buf.shape[1])
            src = pad_buf
        out_n = out[ni].reshape(grp, mg, out_sp[0], row)
        for r0 in range(0, out_sp[0], g.tile):
            rows = min(g.tile, out_sp[0] - r0)
            band = (rows,) + out_sp[1:]
            cols_band = cols[:c * k * rows * row]  # contiguous prefix: reshapes stay views
            if g.flat:  # runs of the unpadded image (conv_flat_columns.py)
                fill_flat_columns(cols_band.reshape(c, k, rows * row), src, g.kernel, g.dilations, g.begin, r0, rows)
            else:
                _tap_columns(xp, cols_band, x[ni], src, pad_buf if banded else None, g, r0, band)
            _band_products(xp, wr, cols_band.reshape(grp, cg * k, rows * row), out_n, r0, rows, row, gemm_rows)


def _tap_columns(xp, cols_band, x_n, src, band_pad, g, r0, band):
    """Columns of one band copied from ``src`` (the image, or its padded copy) tap by tap, or for
    long kernels from one strided view; ``band_pad``: pad just the rows this band reads into it first."""
    c, k, rows = x_n.shape[0], math.prod(g.kernel), band[0]
    shift = r0 * g.strides[0]
    r0_src = r0
    if band_pad is not None:
        _pad_rows(band_pad, x_n, g, shift, (rows - 1) * g.strides[0] + (g.kernel[0] - 1) * g.dilations[0] + 1)
        src, shift, r0_src = band_pad, 0, 0
    if k > WINDOW_GATHER_TAPS:  # long kernels (STFT-as-Conv): one strided copy, not k slices
        windows = _windows(xp, src, g, band, shift)
        cols_band.reshape(windows.shape)[...] = windows
    else:
        cols_v = cols_band.reshape((c, k) + band)
        for ki, sl in enumerate(tap_slices(g, band, src.shape[-1], 1, r0_src)):
            cols_v[:, ki] = src[sl]


def _band_products(xp, wr, cols_g, out_n, r0, rows, row, gemm_rows):
    """Each group's weights (M/g, C/g*K) times its columns of one band, ``gemm_rows`` output rows a
    matmul (2-D matmuls: a 3-D stacked matmul was measured ~20% slower)."""
    mg = wr.shape[1]
    for s0 in range(0, rows, gemm_rows):
        s1 = min(rows, s0 + gemm_rows)
        for gi in range(wr.shape[0]):
            xp.matmul(wr[gi], cols_g[gi, :, s0 * row:s1 * row],
                      out=out_n[gi, :, r0 + s0:r0 + s1].reshape(mg, (s1 - s0) * row))


def _pad_rows(buf, x, g, first, count):
    """Padded rows ``first`` .. ``first + count - 1`` of image ``x`` (C, *spatial) into the leading
    rows of ``buf``: zeros where they fall in the padding, column-phased where ``g.phased``."""
    top = g.begin[0]
    lo, hi = max(0, first - top), min(x.shape[1], first + count - top)
    hi = max(hi, lo)
    part = buf if count == buf.shape[1] else buf[:, :count]
    begin = (lo + top - first, *g.begin[1:])
    if g.phased:  # stride on the last axis: taps then copy contiguous runs
        phase_into(part, x[:, lo:hi], begin, 1, g.strides[-1])
    else:
        pad_into(part, x[:, lo:hi], begin, 1)


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
    slack = ctx.scratch_slack
    g = ctx.memo((x.shape, w.shape, x.dtype, slack),
                 lambda: conv_geometry(ctx.attrs, x.shape, w.shape, x.dtype, tile_bytes_of(ctx), slack))
    out = ctx.out(0, g.out_shape, x.dtype)
    conv_into(ctx, x, w, g, out, b)
    return out

