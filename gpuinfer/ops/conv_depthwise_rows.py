"""Depthwise convolution as one small matrix product per kernel row: the "rows" layout.

For a stride-1 2-D depthwise convolution that keeps the width, copy each channel ``kw`` times, the
copy for kernel column j shifted by that column's offset (one contiguous run of the flat input,
its wrapped edge columns zeroed, zero rows above and below for the padding): a (kw, rows * W)
matrix R per channel.  Output row r under kernel row i reads R's rows r + i * dilation, so the
kernel row's whole contribution is ``w[c, i] (1 x kw) @ R[:, i*d*W : i*d*W + N]``, a BLAS product
of a contiguous window of R.  A 3x3 kernel is then three copies and three products (the rows'
sums added), where "flat" (conv_depthwise_flat.py) makes nine broadcast multiplies and nine adds:
numpy's per-channel broadcast multiply runs at half the speed of a contiguous one.  Inside the
models (per-node timer, 10 runs, with and without "rows" in turn): PP-OCRv4 rec's 128x12x160 3x3
2.0-2.3 -> 1.0-1.3 ms; det's 16x320x320 3x3 4.4-4.6 -> 3.4, 96x80x80 2.5 -> 1.6, 192x40x40 5x5
(4 convs) 10.2-11.0 -> 6.8-7.3 ms a run.  Which convs take it: ``conv_depthwise._rows_pays``.

R is ``kw`` times a channel's padded image: far more than the products buffer the other layouts
keep.  It lives in the output's channels not yet written: while the first channels are built, the
last ones' bytes are free, so the blocks shrink as the output fills (each block's R and row sums
just past its own output channels), and the last blocks work in the declared scratch (what the
replaced layout would take, never less than one channel's R for one band).  Where one channel's R
exceeds that scratch (big maps), channels go in bands of output rows, the band fixed by the shapes
and the least scratch.  Every channel is then the same products whatever block it falls in, so
every memory mode gives the same bytes.
"""
from __future__ import annotations

import functools
import math

from gpuinfer.backends.numpy_threads import split_rows
from gpuinfer.errors import NodeExecutionError

# A kernel row's product reads R's rows for all output rows: a tall kernel on a short map reads
# mostly padding, and R (written to memory the model last touched long before) grows past the
# caches.  Beyond this many elements of R and row sums per output element "rows" measured no faster
# than "nhwc" inside the model: PP-OCRv4 rec's 240x12x80 5x5 (7.7) ran 2.0-2.1 -> 1.9-2.3 ms a conv
# and 480x6x80 (9.3) 2.1-2.3 -> 2.4-2.9, where det's 192x40x40 5x5 (6.5) went 2.6-2.8 -> 1.6-2.0
# (per-node timer, 10 runs, runs with and without "rows" in turn; alone, outside the model, all of
# them ran faster).
ROWS_MAX_RATIO = 7.5
# Blocks in the output's free channels are worth their Python calls from this many channels up
# (smaller ones go to the declared scratch).
MIN_OUT_BLOCK = 4


def rows_elements(kernel, dilations, band) -> int:
    """Elements one channel's R and row sums take for a band of (rows, width) output pixels."""
    (kh, kw), (rows, width) = kernel, band
    return kw * (rows + (kh - 1) * dilations[0]) * width + (rows * width if kh > 1 else 0)


def rows_band(kernel, dilations, out_sp, scratch_elements: int) -> int:
    """Output rows a band of "rows" takes: all of them where one channel's R fits in
    ``scratch_elements``, else as many as fit, the bands made even (big maps: PP-OCRv4 det's
    16x320x320 in 5 bands of 64 rows); 0 where not one row fits.  Fixed by the shapes and the
    least scratch: a band's products have its width, and their bytes may follow it."""
    (kh, kw), (ho, wo) = kernel, out_sp
    if rows_elements(kernel, dilations, out_sp) <= scratch_elements:
        return ho
    most = (scratch_elements // max(wo, 1) - kw * (kh - 1) * dilations[0]) // (kw + (1 if kh > 1 else 0))
    if most < 1:
        return 0
    return -(-ho // -(-ho // most))


def rows_fit(kernel, dilations, out_sp, scratch_elements: int, banded: bool = True) -> bool:
    """Whether "rows" pays for a conv whose declared scratch holds ``scratch_elements``: one
    channel's R fits it (in bands of output rows, where ``banded``), and R is no more than
    ``ROWS_MAX_RATIO`` times the band's output."""
    rows = rows_band(kernel, dilations, out_sp, scratch_elements)
    if not banded and rows < out_sp[0]:
        return False
    return rows > 0 and rows_elements(kernel, dilations, (rows, out_sp[1])) <= ROWS_MAX_RATIO * rows * out_sp[1]


def rows_plan(g, n: int, scratch_elements: int, lend_output: bool = True) -> tuple:
    """(elements a channel's R and row sums take for one band, the blocks ``rows_blocks`` makes) of a
    "rows" conv on geometry ``g`` over ``n`` images with ``scratch_elements`` of declared scratch."""
    out_rows, width = g.out_shape[2:]
    per = rows_elements(g.kernel, g.dilations, (g.band_rows, width))
    return per, rows_blocks(g.out_shape[1], out_rows * width, per, max(1, scratch_elements // per), lend_output)


@functools.lru_cache(maxsize=1024)
def rows_blocks(c: int, out_size: int, per: int, scratch_channels: int, in_out: bool) -> tuple:
    """(first channel, end, whether R lies in the output) per block: while the output channels after
    a block hold its R and row sums (``per`` elements a channel), a block as big as they allow (at
    least ``MIN_OUT_BLOCK``, more than the scratch takes); then ``scratch_channels`` a block."""
    blocks, b0 = [], 0
    while b0 < c:
        cb = (c - b0) * out_size // (out_size + per) if in_out else 0
        if cb >= max(MIN_OUT_BLOCK, scratch_channels + 1):
            blocks.append((b0, b0 + cb, True))
        else:
            cb = min(c - b0, scratch_channels)
            blocks.append((b0, b0 + cb, False))
        b0 += cb
    return tuple(blocks)


def depthwise_rows(ctx, x, w, g, out, lend_output: bool = True):
    """``out`` (C-contiguous, as the plan's buffers are) = the depthwise convolution of ``x`` by
    ``w`` (no bias), block by block (see ``rows_blocks``; ``lend_output``: whether the output's free
    channels hold blocks' R), each block in bands of ``g.band_rows`` output rows, its channels over
    the run's threads."""
    n, c, height, width = x.shape
    kh, kw = g.kernel
    d0 = g.dilations[0]
    out_rows, band = g.out_shape[2], g.band_rows
    size, out_size = height * width, out_rows * width
    r_size = (band + (kh - 1) * d0) * width
    scratch = ctx.scratch((n, g.tile, out_rows, width), x.dtype).reshape(-1)
    per, blocks = rows_plan(g, n, scratch.size, lend_output)
    wk = w.reshape(c, kh, kw)
    if not out.flags.c_contiguous:
        # the plan places a conv's output inside a Concat's only where it stays contiguous
        raise NodeExecutionError(f"depthwise conv (\"rows\" layout) needs a C-contiguous output, got one of "
                                 f"shape {out.shape} with strides {out.strides}")
    for ni in range(n):
        xf = x[ni].reshape(c, size)
        of = out[ni].reshape(-1)
        for b0, b1, lent in blocks:
            buf = of[b1 * out_size:] if lent else scratch
            r_all = buf[:(b1 - b0) * kw * r_size].reshape(b1 - b0, kw, r_size)
            sums = buf[(b1 - b0) * kw * r_size:(b1 - b0) * per].reshape(b1 - b0, 1, -1)
            o_all = of[b0 * out_size:b1 * out_size].reshape(b1 - b0, 1, out_size)
            for r0 in range(0, out_rows, band):
                rows = min(band, out_rows - r0)

                def channels(c0, c1, b0=b0, r_all=r_all, sums=sums, o_all=o_all, r0=r0, rows=rows):
                    r = r_all[c0:c1, :, :(rows + (kh - 1) * d0) * width]
                    _fill_rows(r, xf[b0 + c0:b0 + c1], width, height, r0 - g.begin[0], g.begin[1], g.dilations[1])
                    o = o_all[c0:c1, :, r0 * width:(r0 + rows) * width]
                    t = sums[c0:c1, :, :rows * width]
                    for i in range(kh):
                        coef = wk[b0 + c0:b0 + c1, i].reshape(c1 - c0, 1, kw)
                        window = r[:, :, i * d0 * width:(i * d0 + rows) * width]
                        if i == 0:
                            ctx.xp.matmul(coef, window, out=o)
                        else:
                            ctx.xp.matmul(coef, window, out=t)
                            ctx.xp.add(o, t, out=o)

                split_rows(ctx, b1 - b0, per * x.itemsize * 2, channels)


def _fill_rows(r, xf, width, height, first, left, d1):
    """R (channels, kw, rows * W) of the channels ``xf`` (channels, H * W), its row 0 the image's
    row ``first`` (negative: above the image): per kernel column one shifted run of the flat
    image, its wrapped edge columns and the rows outside the image zero."""
    size, rows = height * width, r.shape[2] // width
    a0, a1 = min(rows, max(0, -first)), max(0, min(rows, height - first))
    a1 = max(a0, a1)
    r[:, :, :a0 * width] = 0
    r[:, :, a1 * width:] = 0
    grid = r.reshape(r.shape[0], r.shape[1], rows, width)
    begin = (first + a0) * width  # the flat image's pixel under R's first row inside it
    for j in range(r.shape[1]):
        dc = j * d1 - left
        lo, hi = max(0, -(begin + dc)), min((a1 - a0) * width, size - begin - dc)
        if hi > lo:  # what the run leaves out lies in the edge columns zeroed next
            r[:, j, a0 * width + lo:a0 * width + hi] = xf[:, begin + dc + lo:begin + dc + hi]
        if dc < 0:
            grid[:, j, a0:a1, :min(width, -dc)] = 0
        elif dc > 0:
            grid[:, j, a0:a1, width - min(width, dc):] = 0
