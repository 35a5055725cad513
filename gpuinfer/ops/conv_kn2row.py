"""kn2row convolution: stride 1, 2-D, for layers with fewer output than input channels.

im2col copies C*K columns per output position and multiplies an M x CK matrix by them; when M is
small next to C that copy costs more than the product.  kn2row copies less: per band of input rows,
the rows shifted by each kernel column (``kw`` copies of the band, the padding's columns zero) are
stacked as a (kw*C, rows*Wo) matrix, and the weights stacked per kernel row as a (kh*M, kw*C) one
multiply them -- one GEMM per band -- giving every kernel row's contribution at every input row.
Kernel row i then adds its (M, rows, Wo) block into the output rows shifted by pad_top - i*dh,
clipped to the output: whole output rows, each one contiguous pass, and each input row's products
computed exactly once.  Output rows are set to the bias (or zero) just before the first band that
adds into them.

That is the "rows" layout.  The "taps" one stacks the weights per tap (kh*kw*M, C) to multiply the
image itself (no copy), and each of the kh*kw taps adds a column-shifted block: kh*kw strided adds
where "rows" has kw shifted copies and kh contiguous adds, but no copy of the input: it runs where
the shifted copies would take more scratch than the per-tap result (C > 2M at 3x3), so that no
step's scratch grows (``kn2row_layout``).  Measured (throwaway /tmp/probe/kn2.py, a whole conv, the
same band budget): u2netp's 128 -> 64 at 320x320 147 -> 121 ms, u2net's 1024 -> 512 at 20x20
46 -> 33 ("rows" runs both); with C = 4M "rows" gained less (PP-OCRv4 det's 96 -> 24 at 160x160
15.8 -> 14.5, 64 -> 16 at 320x320 none) and would need more scratch: those stay "taps".
"""
from __future__ import annotations

from gpuinfer.ops.conv_flat_columns import flat_columns_fit
from gpuinfer.ops.tiles import CPU_TILE_BYTES, scaled

# The scratch of one band (its shifted rows and GEMM result: (kw*C + kh*M) x band rows x output
# width) holds at most this much, as an im2col column tile does.  4 MiB was measured 2-4% faster on
# the kn2row layers of u2netp and PP-OCRv4 det, but raises densenet121's arena peak by 17% (7.3 ->
# 8.6 MB).  That is on the CPU; a device scales it by its ``caps.tile_bytes`` (ops/tiles.py): the
# whole image on a GPU.
KN2ROW_BAND_BYTES = 2 << 20


def kn2row_fits(x_shape, w_shape, g) -> bool:
    """Whether kn2row can run ``g`` at all: 2-D, stride 1, a non-empty input and output."""
    return (len(g.kernel) == 2 and all(s == 1 for s in g.strides)
            and all(d > 0 for d in (*x_shape[2:], *g.out_shape[2:])))


def kn2row_layout(cg: int, mg: int, kh: int, kw: int, wd: int, wo: int) -> str:
    """"rows" where one input row's shifted copies and GEMM result, (kw*C + kh*M) x Wo, take no more
    than its per-tap GEMM result, kh*kw*M x W (C = 2M at 3x3 "same": u2net's RSU blocks), so that
    no step's scratch grows; "taps" otherwise."""
    return "rows" if (kw * cg + kh * mg) * wo <= kh * kw * mg * wd else "taps"


def kn2row_plan(g, x_shape, w_shape, dt, tile_bytes=CPU_TILE_BYTES):
    """Set the band height (input rows), the layout and the scratch buffers (in request order) of a
    kn2row conv on geometry ``g``: the stacked weights, then (``g.layout`` "rows") the band's
    shifted rows and GEMM result in one buffer, or ("taps") the band's per-tap GEMM result."""
    c, m = x_shape[1], w_shape[0]
    h, wd = x_shape[2:]
    grp = g.group
    kh, kw = g.kernel
    wo = g.out_shape[3]
    cg, mg = c // grp, m // grp
    band = scaled(KN2ROW_BAND_BYTES, tile_bytes) // dt.itemsize
    g.layout = kn2row_layout(cg, mg, kh, kw, wd, wo)
    if g.layout == "rows":
        g.tile = max(1, min(h, band // ((kw * cg + kh * mg) * wo)))
        g.scratch += [((grp, kh * mg, kw * cg), dt), ((kw * cg + kh * mg, g.tile * wo), dt)]
    else:
        g.tile = max(1, min(h, band // (kh * kw * mg * wd)))
        g.scratch += [((grp, kh * kw * mg, cg), dt), ((kh * kw * mg, g.tile * wd), dt)]


def kn2row_conv(ctx, x, w, g, out, b=None):
    """The stride-1 2-D convolution of ``x`` by ``w`` plus bias ``b`` written into ``out``, in the
    layout ``kn2row_plan`` chose."""
    if g.layout == "rows":
        _kn2row_rows(ctx, x, w, g, out, b)
    else:
        _kn2row_taps(ctx, x, w, g, out, b)


def _fill_rows(xp, block, bias):
    """Output rows set to the bias (or zero) before any kernel row adds into them."""
    if bias is None:
        block.fill(0)
    else:
        xp.copyto(block, bias)


def _sizes(x, w, g) -> tuple:
    """(n, h, wd, grp, cg, mg, kh, kw, dh, dw, pt, pl, ho, wo) of a kn2row conv."""
    n, c, h, wd = x.shape
    grp = g.group
    return (n, h, wd, grp, c // grp, w.shape[0] // grp, *g.kernel, *g.dilations, *g.begin, *g.out_shape[2:])


def _kn2row_rows(ctx, x, w, g, out, b=None):
    """kn2row over rows shifted by each kernel column: one GEMM and kh contiguous adds a band."""
    xp = ctx.xp
    n, h, wd, grp, cg, mg, kh, kw, dh, dw, pt, pl, ho, wo = _sizes(x, w, g)
    ws = ctx.scratch((grp, kh * mg, kw * cg), x.dtype)
    xp.copyto(ws.reshape(grp, kh, mg, kw, cg), w.reshape(grp, mg, cg, kh, kw).transpose(0, 3, 1, 4, 2))
    # one buffer: the band's shifted rows, then its GEMM result (at C = 2M, 3x3 "same", the very
    # shape of the per-tap result "taps" asks for, so a mode sharing same-shaped buffers shares it alike)
    both = ctx.scratch((kw * cg + kh * mg, g.tile * wo), x.dtype)
    shifted, y = both[:kw * cg].reshape(-1), both[kw * cg:]
    bias = None if b is None else b.reshape(grp, mg, 1, 1)
    # kernel column j reads input column output column + j*dw - pl, inside for output columns [lo, hi)
    columns = [(j * dw - pl, max(0, pl - j * dw), min(wo, wd + pl - j * dw)) for j in range(kw)]
    reaches = any(lo < hi for _, lo, hi in columns)  # some kernel column sees the input at all
    row_shifts = [i * dh - pt for i in range(kh)]  # input row = output row + shift
    for ni in range(n):
        for gi in range(grp):
            src = x[ni, gi * cg:(gi + 1) * cg]
            dst = out[ni, gi * mg:(gi + 1) * mg]
            filled = 0  # output rows set to the bias so far
            for a in range(0, h, g.tile) if reaches else ():
                rows = min(g.tile, h - a)
                band = shifted[:kw * cg * rows * wo].reshape(kw, cg, rows, wo)  # contiguous prefix
                for j, (shift, lo, hi) in enumerate(columns):
                    part = band[j]
                    if lo >= hi:
                        part.fill(0)
                        continue
                    part[..., :lo] = 0
                    part[..., hi:] = 0
                    xp.copyto(part[..., lo:hi], src[:, a:a + rows, lo + shift:hi + shift])
                yb = y[:, :rows * wo]
                xp.matmul(ws[gi], band.reshape(kw * cg, rows * wo), out=yb)
                y4 = yb.reshape(kh, mg, rows, wo)
                reach = min(ho, a + rows - min(row_shifts))
                if reach > filled:  # rows first reached in this band: start them at the bias
                    _fill_rows(xp, dst[:, filled:reach], None if bias is None else bias[gi])
                    filled = reach
                for i, shift in enumerate(row_shifts):
                    r_lo, r_hi = max(0, a - shift), min(ho, a + rows - shift)  # input row = output row + shift
                    if r_lo >= r_hi:
                        continue
                    part = dst[:, r_lo:r_hi]
                    xp.add(part, y4[i, :, r_lo + shift - a:r_hi + shift - a], out=part)
            if ho > filled:  # rows no kernel row reaches (pads wider than the kernel): the bias alone
                _fill_rows(xp, dst[:, filled:], None if bias is None else bias[gi])


def _kn2row_taps(ctx, x, w, g, out, b=None):
    """kn2row over the image itself: the weights stacked per tap (kh*kw*M, C) multiply a band of
    input rows read straight out of the image (no copy), and each tap adds its column-shifted
    block: where C > 2M, copying the shifted rows would take more scratch than the per-tap result."""
    xp = ctx.xp
    n, h, wd, grp, cg, mg, kh, kw, dh, dw, pt, pl, ho, wo = _sizes(x, w, g)
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
    flat = flat_columns_fit(g.kernel, g.strides, x.shape, g.out_shape)  # each tap's add one run (_add_flat)
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
                    _fill_rows(xp, dst[:, filled:reach], None if bias is None else bias[gi])
                    filled = reach
                for k, shift_r, c_lo, c_hi, shift_c in taps:
                    r_lo, r_hi = max(0, a - shift_r), min(ho, a + rows - shift_r)  # input row = output row + shift_r
                    if r_lo >= r_hi:
                        continue
                    if flat:
                        _add_flat(xp, dst, y4[k], r_lo, r_hi, shift_r - a, c_lo, c_hi, shift_c)
                        continue
                    part = dst[:, r_lo:r_hi, c_lo:c_hi]
                    xp.add(part, y4[k, :, r_lo + shift_r - a:r_hi + shift_r - a, c_lo + shift_c:c_hi + shift_c],
                           out=part)
            if ho > filled:  # rows no tap reaches (pads wider than the kernel): the bias alone
                _fill_rows(xp, dst[:, filled:], None if bias is None else bias[gi])


def _add_flat(xp, dst, yk, r_lo, r_hi, row_shift, c_lo, c_hi, col_shift):
    """``dst[:, r, c] += yk[:, r + row_shift, c + col_shift]`` for output rows [r_lo, r_hi) and
    columns [c_lo, c_hi) of a conv that keeps the width: flat, that is one shift of whole rows, one
    contiguous add per channel instead of a short one per row (PP-OCRv4 det's 96 -> 24 at 160x160,
    per conv inside the model: 8.6 -> 7.5 ms, of which its GEMMs take ~5.6).  The product's columns
    that the shifted run reads in place of the missing ones (the other edge of the neighbouring row)
    are zeroed first: only this tap reads its product."""
    m, rows, width = yk.shape
    if c_lo:  # output columns [0, c_lo) read product columns [width - c_lo, width) of the row above
        yk[:, :, width - c_lo:] = 0
    if c_hi < width:  # columns [c_hi, width) read product columns [0, width - c_hi) of the row below
        yk[:, :, :width - c_hi] = 0
    shift = row_shift * width + col_shift
    start, stop = max(r_lo * width, -shift), min(r_hi * width, rows * width - shift)
    out = dst.reshape(m, -1)[:, start:stop]
    xp.add(out, yk.reshape(m, -1)[:, start + shift:stop + shift], out=out)
