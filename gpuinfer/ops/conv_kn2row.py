"""kn2row convolution: stride 1, 2-D, for layers with fewer output than input channels.

im2col copies C*K columns per output position and multiplies an M x CK matrix by them; when M is
small next to C that copy costs more than the product.  kn2row skips it: the weights stacked per tap
as a (K*M, C) matrix multiply the input image itself, read flat as (C, H*W) -- one GEMM per band of
input rows, which BLAS reads straight out of the image -- giving every tap's contribution at every
input position.  Tap (i, j) then adds its (M, rows, cols) block into the output shifted by
(pad_top - i*dh, pad_left - j*dw), clipped to the output: padding is never materialised (positions it
would feed just get no contribution), and each input row's products are computed exactly once.
Output rows are set to the bias (or zero) just before the first band that adds into them.
"""
from __future__ import annotations

import math

from gpuinfer.ops.tiles import CPU_TILE_BYTES, scaled

# The GEMM result of one band (taps x output channels x band rows x input width) holds at most this
# much, as an im2col column tile does.  4 MiB was measured 2-4% faster on the kn2row layers of
# u2netp and PP-OCRv4 det, but raises densenet121's arena peak by 17% (7.3 -> 8.6 MB).  That is on
# the CPU; a device scales it by its ``caps.tile_bytes`` (ops/tiles.py): the whole image on a GPU.
KN2ROW_BAND_BYTES = 2 << 20


def kn2row_fits(x_shape, w_shape, g) -> bool:
    """Whether kn2row can run ``g`` at all: 2-D, stride 1, a non-empty input and output."""
    return (len(g.kernel) == 2 and all(s == 1 for s in g.strides)
            and all(d > 0 for d in (*x_shape[2:], *g.out_shape[2:])))


def kn2row_plan(g, x_shape, w_shape, dt, tile_bytes=CPU_TILE_BYTES):
    """Set the band height (input rows) and scratch buffers (in request order) of a kn2row conv on
    geometry ``g``: the stacked weights, then the GEMM result of one band."""
    c, m = x_shape[1], w_shape[0]
    h, w = x_shape[2:]
    grp = g.group
    rows_out = math.prod(g.kernel) * (m // grp)  # rows of the stacked weights
    g.tile = max(1, min(h, scaled(KN2ROW_BAND_BYTES, tile_bytes) // max(rows_out * w * dt.itemsize, 1)))
    g.scratch += [((grp, rows_out, c // grp), dt), ((rows_out, g.tile * w), dt)]


def kn2row_conv(ctx, x, w, g, out, b=None):
    """The stride-1 2-D convolution of ``x`` by ``w`` plus bias ``b`` written into ``out``."""
    xp = ctx.xp
    n, c, h, wd = x.shape
    m = w.shape[0]
    grp = g.group
    cg, mg = c // grp, m // grp
    kh, kw = g.kernel
    dh, dw = g.dilations
    pt, pl = g.begin
    ho, wo = g.out_shape[2:]
    ws = ctx.scratch((grp, kh * kw * mg, cg), x.dtype)
    xp.copyto(ws.reshape(grp, kh, kw, mg, cg), w.reshape(grp, mg, cg, kh, kw).transpose(0, 3, 4, 1, 2))
    y = ctx.scratch((kh * kw * mg, g.tile * wd), x.dtype)
    bias = None if b is None else b.reshape(grp, mg, 1, 1)
    taps = []  # (tap, row shift, first and end output column, column shift) of the taps that reach the output
    for i in range(kh):
        for j in range(kw):
            shift_c = j * dw - pl  # input column = output column + shift_c
            c_lo, c_hi = max(0, -shift_c), min(wo, wd - shift_c)
            if c_lo < c_hi:
                taps.append((i * kw + j, i * dh - pt, c_lo, c_hi, shift_c))
    for ni in range(n):
        for gi in range(grp):
            src = x[ni, gi * cg:(gi + 1) * cg].reshape(cg, h * wd)
            dst = out[ni, gi * mg:(gi + 1) * mg]
            filled = 0  # output rows set to the bias so far
            for a in range(0, h, g.tile):
                rows = min(g.tile, h - a)
                yb = y[:, :rows * wd]
                xp.matmul(ws[gi], src[:, a * wd:(a + rows) * wd], out=yb)
                y4 = yb.reshape(kh * kw, mg, rows, wd)
                reach = min(ho, a + rows - min(t[1] for t in taps)) if taps else ho
                if reach > filled:  # rows first reached in this band: start them at the bias
                    block = dst[:, filled:reach]
                    if bias is None:
                        block.fill(0)
                    else:
                        xp.copyto(block, bias[gi])
                    filled = reach
                for k, shift_r, c_lo, c_hi, shift_c in taps:
                    r_lo, r_hi = max(0, a - shift_r), min(ho, a + rows - shift_r)  # input row = output row + shift_r
                    if r_lo >= r_hi:
                        continue
                    part = dst[:, r_lo:r_hi, c_lo:c_hi]
                    xp.add(part, y4[k, :, r_lo + shift_r - a:r_hi + shift_r - a, c_lo + shift_c:c_hi + shift_c],
                           out=part)
            if ho > filled:  # rows no tap reaches (pads wider than the kernel): the bias alone
                block = dst[:, filled:]
                if bias is None:
                    block.fill(0)
                else:
                    xp.copyto(block, bias[gi])
