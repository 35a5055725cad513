"""Depthwise convolution on flat runs of the unpadded input: the "flat" layout.

For a stride-1 2-D depthwise convolution that keeps the width (3x3 with one column of padding each
side, 5x5 with two), output pixel p of a channel, taken flat (row * W + column), reads input pixel
p + dr * W + dc under a tap: one shift for the whole channel.  Each tap is then one multiply of a
contiguous run of the input by the channel's weight and one add into the output, over the output
rows whose input row exists; what the shifted run reads at the left and right edges (the
neighbouring row's pixels, where the padding held zeros) is zeroed in the product before the add.
The "strided" layout instead copies the channels into a padded buffer and multiplies window views
whose inner loop is one row (numpy's per-row cost on 80-160 pixel rows is most of the pass).

No padded copy: a block's scratch is its products alone, the very buffer "strided" takes beside
its copy (same channels a block, so no mode's peak grows), and the sum runs in tap order as the
other layouts' do.  Whole convolutions, one thread, same channel blocks (throwaway /tmp timing,
median of 30): PP-OCRv4 det's 16x320x320 3x3 5.8 -> 4.4 ms, 48x160x160 4.7 -> 3.2, 96x80x80
2.9 -> 2.0.
"""
from __future__ import annotations

import functools

from gpuinfer.backends.numpy_threads import split_rows


@functools.lru_cache(maxsize=1024)
def flat_taps(kernel: tuple, dilations: tuple, begin: tuple, height: int, out_rows: int, width: int) -> tuple:
    """Per tap (row-major): (output range start, stop, input shift, first and last valid output
    row, columns to zero at the left, at the right).  The range covers the output rows whose input
    row exists, less a pixel at either end where the shifted run would leave the image."""
    size = height * width
    taps = []
    for i in range(kernel[0]):
        dr = i * dilations[0] - begin[0]
        r_lo, r_hi = min(out_rows, max(0, -dr)), max(0, min(out_rows, height - dr))
        r_hi = max(r_lo, r_hi)
        for j in range(kernel[1]):
            dc = j * dilations[1] - begin[1]
            shift = dr * width + dc
            start, stop = max(r_lo * width, -shift), min(r_hi * width, size - shift)
            taps.append((start, max(start, stop), shift, r_lo, r_hi, min(width, max(0, -dc)), min(width, max(0, dc))))
    return tuple(taps)


def depthwise_flat(ctx, x, w, g, out):
    """``out`` = the depthwise convolution of ``x`` by ``w`` (no bias), a block of ``g.tile``
    channels at a time (the products' scratch), each block's channels in row blocks over the run's
    threads.  The first tap writes the whole output (zeros where its window reads only padding)."""
    xp = ctx.xp
    n, c, height, width = x.shape
    out_rows = g.out_shape[2]
    size, out_size = height * width, out_rows * width
    cb = g.tile
    tmp_all = ctx.scratch((n, cb, out_rows, width), x.dtype)
    wk = w.reshape(c, -1)
    taps = flat_taps(tuple(g.kernel), tuple(g.dilations), tuple(g.begin[:2]), height, out_rows, width)
    for b0 in range(0, c, cb):
        b1 = min(c, b0 + cb)
        xf = x[:, b0:b1].reshape(n, b1 - b0, size)
        of = out[:, b0:b1].reshape(n, b1 - b0, out_size)
        tf = tmp_all[:, :b1 - b0].reshape(n, b1 - b0, out_size)

        def channels(c0, c1, xf=xf, of=of, tf=tf, b0=b0):
            ch = (slice(None), slice(c0, c1))
            xs, o, t = xf[ch], of[ch], tf[ch]
            for ki, (start, stop, shift, r_lo, r_hi, left, right) in enumerate(taps):
                coef = wk[b0 + c0:b0 + c1, ki].reshape(1, c1 - c0, 1)
                dst = o if ki == 0 else t
                if ki == 0:  # outside the first tap's range the sum starts at zero
                    o[..., :start] = 0
                    o[..., stop:] = 0
                xp.multiply(xs[..., start + shift:stop + shift], coef, out=dst[..., start:stop])
                edges = dst.reshape(n, c1 - c0, out_rows, width)[:, :, r_lo:r_hi]
                if left:
                    edges[..., :left] = 0
                if right:
                    edges[..., width - right:] = 0
                if ki:
                    xp.add(o[..., start:stop], t[..., start:stop], out=o[..., start:stop])

        split_rows(ctx, b1 - b0, of.nbytes * len(taps) // max(b1 - b0, 1), channels)
