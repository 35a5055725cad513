"""Depthwise convolution (one filter per channel), in whichever memory layout keeps numpy's inner
loops long: one BLAS product per kernel row on shifted copies ("rows", conv_depthwise_rows.py),
channels-last with one einsum over all taps ("nhwc"), or a tap-by-tap multiply-add on flat runs
("flat", conv_depthwise_flat.py) or window views ("strided")."""
from __future__ import annotations

import functools
import math

from gpuinfer.backends.numpy_threads import split_rows
from gpuinfer.ops.conv_depthwise_flat import depthwise_flat
from gpuinfer.ops.conv_depthwise_rows import depthwise_rows, rows_band, rows_elements, rows_fit
from gpuinfer.ops.conv_flat_columns import flat_columns_fit
from gpuinfer.ops.conv_window import kernel_offsets, pad_into, zero_margins

# A padded image above this many elements with at most this many taps runs "strided": the transposes
# into and out of channels-last (~1-3 ns an element on big maps with few channels) then cost more
# than the einsum saves (measured: PP-OCRv4 det's 96x80x80 and 48x160x160 3x3 maps; 192x40x40 5x5
# and 112x56x56 3x3 still gain 20-40% from "nhwc").
NHWC_MAX_ELEMENTS = 1 << 19
NHWC_MAX_BIG_TAPS = 9
# ... and so do padded rows this long from a third of that (the window views' inner loops are then
# long enough: PP-OCRv4 rec's 64x24x160 and 128x12x160 3x3 maps measured 3-7% slower in "nhwc").
NHWC_LONG_ROW = 128
NHWC_MAX_LONG_ROW_ELEMENTS = 3 << 16

# "rows" replaces "nhwc" on maps of at least this many output pixels (see _rows_pays).
ROWS_OVER_NHWC_PIXELS = 400

# Elements in one inner run of the "nhwc" einsum (see nhwc_run_pixels).
NHWC_RUN = 2048

# Both layouts work a block of channels at a time (channels are independent): the scratch ("nhwc":
# the block's padded channels-last image and the expanded weights; "strided": the block's padded
# copy and products) is held to a sixteenth of the conv's own input and output, at least this many
# bytes.  A whole padded image made PP-OCR cls's arena
# 2.8x and PP-OCRv4 rec's 1.9x the tensors' bound (their 200-480 channel maps are a few rows high,
# so a band of rows would still be most of the image); per block the output is built channels-last
# in its own NCHW block (contiguous) and moved through the padded block: no output-sized scratch.
BLOCK_SHARE = 16
MIN_BLOCK_BYTES = 16 << 10


def depthwise_layout(c, pshape, strides, taps, keeps_width=False, rows=False):
    """Which memory layout a depthwise conv runs in.

    "rows" (conv_depthwise_rows.py) where ``rows`` (stride 1 keeps the width and it runs faster
    than the layout it replaces: ``_rows_pays``): one BLAS product per kernel row.  Else "nhwc": 2-D,
    channels last, any stride or dilation: one einsum sums every tap's product in a single pass
    over each output element, its inner loop a run of pixels' channels (the weights expanded to
    match), against two passes per tap with the inner loop one channel's row (or the channels
    alone) on window views.  Costs two transposes, so big maps with small kernels take two passes
    a tap: "flat" (conv_depthwise_flat.py: contiguous runs of the unpadded input) where the conv
    keeps the width at stride 1 (``keeps_width``), else "strided" (window views of the padded
    input, any rank).
    """
    if len(pshape) != 4:
        return "strided"
    if rows:
        return "rows"
    size = math.prod(pshape[1:])
    if taps <= NHWC_MAX_BIG_TAPS and (size > NHWC_MAX_ELEMENTS or (
            pshape[3] >= NHWC_LONG_ROW and size > NHWC_MAX_LONG_ROW_ELEMENTS)):
        return "flat" if keeps_width else "strided"
    return "nhwc"


def channel_block_bytes(c, in_sp, out_sp, itemsize):
    """Scratch bytes one channel block of ``c`` channels' images may take (see BLOCK_SHARE)."""
    image = c * (math.prod(in_sp) + math.prod(out_sp)) * itemsize
    return max(MIN_BLOCK_BYTES, image // BLOCK_SHARE)


def nhwc_channel_block(c, padded_sp, budget, itemsize):
    """Channels per "nhwc" block: as many as the padded channels-last block fits in ``budget``."""
    return max(1, min(c, budget // max(math.prod(padded_sp) * itemsize, 1)))


def nhwc_run_pixels(c, out_sp, stride, taps, run=NHWC_RUN):
    """Output pixels per inner run of the "nhwc" einsum: their channels lie end to end (at stride 1),
    so the run is that many times longer than the channels alone, up to ``run`` elements (longer
    runs were measured slower: the expanded weights leave the cache), a divisor of the output width
    if one is near (no tail run), and the weights expanded to it, one run per tap, never more than
    one output."""
    if stride != 1:
        return 1
    ho, wo = out_sp
    most = max(1, min(wo, run // c, ho * wo // taps))
    return next((b for b in range(most, (most + 1) // 2 - 1, -1) if wo % b == 0), most)


def depthwise_plan(g, pshape, padded, dt, slack=0):
    """Set the layout and scratch buffers (in request order) of a depthwise conv on geometry ``g``,
    whose "strided" channel blocks may take ``slack`` bytes more than their share (``BLOCK_SHARE``):
    the widest blocks whose scratch fits, fewer passes for the same elementwise arithmetic."""
    c = pshape[1]
    out_sp = g.out_shape[2:]
    taps = math.prod(g.kernel)
    in_sp = [p - b - e for p, b, e in zip(pshape[2:], g.begin, g.end)]
    keeps_width = flat_columns_fit(g.kernel, g.strides, (*pshape[:2], *in_sp), g.out_shape)
    n = pshape[0]
    replaced = depthwise_layout(c, pshape, g.strides, taps, keeps_width)  # what "rows" would replace
    least_rows = n * _rows_block(g, pshape, in_sp, padded, dt, replaced) * math.prod(out_sp)  # elements
    rows = keeps_width and len(out_sp) == 2 and _rows_pays(g, taps, out_sp, least_rows, replaced)
    g.layout = depthwise_layout(c, pshape, g.strides, taps, keeps_width, rows)
    if g.layout == "nhwc":  # a channel block's padded channels-last image, its expanded weights
        least = channel_block_bytes(c, in_sp, out_sp, dt.itemsize)  # per image
        room = _nhwc_scratch(g, c, pshape, out_sp, taps, least, dt) + slack
        budget = least
        for wider in (least + slack, (least + slack) * 2 // 3, (least + slack) // 2):
            if wider > least and _nhwc_scratch(g, c, pshape, out_sp, taps, wider, dt) <= room:
                budget = wider
                break
        g.blocks, cb, g.tile = _nhwc_block(g, c, pshape, out_sp, taps, budget, dt)
        g.padded_shape = (*pshape[2:], cb)
        g.scratch += [(g.padded_shape, dt), ((*g.kernel, g.tile * cb), dt)]
    else:  # a channel block's padded copy (if padded) and its products
        if g.layout == "rows":  # bands fixed by the least scratch; never less than one channel's band
            g.band_rows = rows_band(g.kernel, g.dilations, out_sp, least_rows) or 1
            band = rows_elements(g.kernel, g.dilations, (g.band_rows, out_sp[1]))
            cb = max(_rows_block(g, pshape, in_sp, padded, dt, replaced, slack), -(-band // (n * math.prod(out_sp))))
        else:
            cb = _products_block(g, pshape, in_sp, padded, dt, slack)
        # "flat" takes the block "strided" would, less its copy: the same products buffer, so that
        # no mode's peak grows (with more channels a block, reuse's same-shape sharing matched
        # less: PP-OCRv4 det's reuse peak rose 0.5%)
        padded = padded and g.layout == "strided"
        if padded:
            g.padded_shape = (n, cb, *pshape[2:])
            g.phased = column_phased(g.kernel, g.strides, g.dilations)
            g.scratch.append((g.padded_shape, dt))
        g.tile = cb
        g.scratch.append(((n, cb, *out_sp), dt))


def _rows_pays(g, taps, out_sp, least_rows, replaced) -> bool:
    """Whether "rows" runs a width-keeping conv faster than the layout it would replace, inside the
    models (per-node timer, runs with and without it in turn).  Over "flat" (big maps) it does,
    in bands of rows where a channel's copies exceed the scratch.  Over "nhwc" (small maps) only
    for 5x5 and larger kernels on maps of ``ROWS_OVER_NHWC_PIXELS`` pixels or more, whole images a
    band: PP-OCRv4 det's 192x40x40 5x5 2.6-2.8 -> 1.6-2.0 ms a conv, but shufflenet's 3x3 on 28x28
    and smaller maps 1.5-2.5x slower (a BLAS call per channel and kernel row costs more than the
    einsum's whole pass), rec's 16x24x160 3x3 in bands 0.28 -> 0.5 ms."""
    if replaced != "nhwc":
        return rows_fit(g.kernel, g.dilations, out_sp, least_rows)
    return (taps > NHWC_MAX_BIG_TAPS and math.prod(out_sp) >= ROWS_OVER_NHWC_PIXELS
            and rows_fit(g.kernel, g.dilations, out_sp, least_rows, banded=False))


def _rows_block(g, pshape, in_sp, padded, dt, replaced, slack=0):
    """Output channels' worth of scratch the "rows" layout takes: what the layout it replaces
    (``replaced``) would (a "strided" products buffer, or "nhwc"'s padded block and weights), so
    that no mode's peak grows."""
    n, c = pshape[:2]
    out_sp = g.out_shape[2:]
    taps = math.prod(g.kernel)
    if replaced != "nhwc":
        return _products_block(g, pshape, in_sp, padded, dt, slack)
    least = channel_block_bytes(c, in_sp, out_sp, dt.itemsize)
    per_channel = n * math.prod(out_sp) * dt.itemsize
    nhwc = _nhwc_scratch(g, c, pshape, out_sp, taps, least, dt)
    return max(1, nhwc // per_channel) + slack // per_channel


def _products_block(g, pshape, in_sp, padded, dt, slack=0):
    """Channels per "strided" block: its padded copy (if padded) and products in the block's share
    of the conv's images (``channel_block_bytes``), widened by ``slack`` bytes."""
    n, c = pshape[:2]
    out_sp = g.out_shape[2:]
    copy, products = (math.prod(pshape[2:]) if padded else 0), math.prod(out_sp)
    per_channel = n * (copy + products) * dt.itemsize
    block = channel_block_bytes(n * c, in_sp, out_sp, dt.itemsize)
    cb = max(1, min(c, block // max(per_channel, 1)))
    return max(cb, min(c, (cb * per_channel + slack) // max(per_channel, 1)))


def _nhwc_block(g, c, pshape, out_sp, taps, budget, dt):
    """(channel blocks, channels in the largest, output pixels per einsum run) of an "nhwc"
    depthwise conv whose block may take ``budget`` bytes (its padded image; the expanded weights
    take up to half as much).  Blocks are balanced (``channel_blocks``), two channels at least."""
    blocks = block_count(c, nhwc_channel_block(c, pshape[2:], budget, dt.itemsize))
    cb = -(-c // blocks)
    run = min(NHWC_RUN, max(cb, budget // 2 // (taps * dt.itemsize)))
    return blocks, cb, nhwc_run_pixels(cb, out_sp, g.strides[1], taps, run)


def _nhwc_scratch(g, c, pshape, out_sp, taps, budget, dt) -> int:
    _, cb, tile = _nhwc_block(g, c, pshape, out_sp, taps, budget, dt)
    return (math.prod(pshape[2:]) * cb + taps * tile * cb) * dt.itemsize


def block_count(c: int, most: int) -> int:
    """How many blocks ``c`` channels go in when a block may hold ``most``: never so many that a
    block holds one channel alone (where ``c`` > 1; see ``channel_blocks``)."""
    n = -(-c // max(1, most))
    return max(1, min(n, c // 2) if c > 1 else n)


@functools.lru_cache(maxsize=1024)
def channel_blocks(c: int, n: int) -> tuple:
    """``c`` channels in ``n`` blocks as even as can be (from ``block_count``: never one channel
    alone).  A one-channel block's window view has its tap column stride equal to its element
    stride; einsum then puts a tap axis innermost and sums the taps in another order (PP-OCRv4
    rec's 120-channel maps in blocks of 17: a 1-channel tail block gave other bits than one block
    of 120).  Blocks of two or more channels sum them alike, however many, so a wider block
    (``scratch_slack``) gives the same bytes."""
    size, extra = divmod(c, n)
    bounds, start = [], 0
    for i in range(n):
        stop = start + size + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return tuple(bounds)


def depthwise_conv(ctx, x, w, g, out):
    """The depthwise convolution of ``x`` by ``w`` (no bias) into ``out``, in the layout ``g`` chose."""
    if g.layout == "nhwc":
        _depthwise_nhwc(ctx, x, w, g, out)
    elif g.layout == "flat":
        depthwise_flat(ctx, x, w, g, out)
    elif g.layout == "rows":
        depthwise_rows(ctx, x, w, g, out)
    else:
        _depthwise_strided(ctx, x, w, g, out)


def _depthwise_strided(ctx, x, w, g, out):
    """Depthwise conv on window views of the (padded) input: per tap one multiply and one add over
    the whole batch, any rank, stride or dilation; a block of ``g.tile`` channels at a time (their
    padded copy and products are the scratch, see BLOCK_SHARE), the block's channels in
    row blocks over the run's threads."""
    xp = ctx.xp
    c = x.shape[1]
    cb = g.tile
    pad_all = ctx.scratch(g.padded_shape, x.dtype) if g.padded_shape is not None else None
    tmp_all = ctx.scratch((x.shape[0], cb, *g.out_shape[2:]), x.dtype)
    wk = w.reshape(c, -1)
    rest = (1,) * (x.ndim - 2)
    slices = None
    for b0 in range(0, c, cb):
        b1 = min(c, b0 + cb)
        xb, ob = x[:, b0:b1], out[:, b0:b1]
        src = xb
        if pad_all is not None:
            src = pad_all[:, :b1 - b0]
            if g.phased:
                phase_into(src, xb, g.begin, 2, g.strides[-1])
            else:
                pad_into(src, xb, g.begin, 2)
        tmp = tmp_all[:, :b1 - b0]
        if slices is None:
            slices = tap_slices(g, g.out_shape[2:], src.shape[-1], lead=2)

        def channels(c0, c1, src=src, ob=ob, tmp=tmp, b0=b0):  # a block of channels: views of src, ob, tmp
            ch = (slice(None), slice(c0, c1))
            o, t = ob[ch], tmp[ch]
            for ki, sl in enumerate(slices):
                view = src[sl][ch]
                coef = wk[b0 + c0:b0 + c1, ki].reshape((1, c1 - c0) + rest)
                if ki == 0:
                    xp.multiply(view, coef, out=o)
                else:
                    xp.multiply(view, coef, out=t)
                    xp.add(o, t, out=o)

        # big maps: blocks of channels over the run's threads (each pass as before, on fewer channels)
        split_rows(ctx, b1 - b0, ob.nbytes * len(slices) // max(b1 - b0, 1), channels)


def column_phased(kernel, strides, dilations):
    """Whether a padded copy for these windows should be stored column-phased (see phase_into): when
    the last axis has a stride and some phase feeds more than one column tap.  Window views of a
    strided last axis run numpy's slow non-contiguous inner loops (stride 2 measured several times
    slower per element than contiguous), once per tap; de-interleaving costs one such pass over the
    input, after which every tap reads contiguous runs (PP-OCRv4 det's 3x3 stride-2 depthwise maps
    16-25% faster, its first conv 10%).  1x1, 2x2 stride 2 or 3x3 stride 3 kernels read each
    input column once anyway: no gain."""
    s, k, d = strides[-1], kernel[-1], dilations[-1]
    return s > 1 and k > len({j * d % s for j in range(k)})


def _phase_lengths(width, s):
    return [len(range(q, width, s)) for q in range(s)]


def phase_into(buf, x, begin, lead, s):
    """``pad_into`` with each row of ``buf`` stored column-phased for stride ``s``: the padded row's
    columns q, q+s, q+2s... side by side for q = 0..s-1, so a window view at that stride reads a
    contiguous run of one phase (``tap_slices``).  Same size as the padded copy, zero margins."""
    zero_margins(buf, begin[:-1], x.shape[lead:-1], lead)  # whole rows above/below the input
    rows = (slice(None),) * lead + tuple(slice(b, b + n) for b, n in zip(begin[:-1], x.shape[lead:-1]))
    b, w = begin[-1], x.shape[-1]
    start = 0
    for q, n in enumerate(_phase_lengths(buf.shape[-1], s)):
        # phase q's element t is padded column q + s*t, input column q + s*t - b
        t0 = min(n, max(0, -((q - b) // s)))
        t1 = min(n, max(t0, -((q - b - w) // s)))
        dst = buf[rows + (slice(start, start + n),)]
        dst[..., :t0] = 0
        dst[..., t1:] = 0
        if t1 > t0:
            i0 = q + s * t0 - b
            dst[..., t0:t1] = x[..., i0:i0 + s * (t1 - t0 - 1) + 1:s]
        start += n


def tap_slices(g, out_sp, width, lead, row0=0):
    """The input slices under each kernel tap of geometry ``g`` for outputs ``out_sp`` (from output
    row ``row0`` on): ``window_slices``, except that on a column-phased copy (``g.phased``, padded
    rows ``width`` long) the last axis is a contiguous run of one phase.  Cached: small convs spend
    as long building slices as copying."""
    return _tap_slices(tuple(g.kernel), tuple(g.dilations), tuple(g.strides), tuple(out_sp), width,
                       lead, row0, g.phased)


@functools.lru_cache(maxsize=1024)
def _tap_slices(kernel, dilations, strides, out_sp, width, lead, row0, phased):
    taps = []
    for offset in kernel_offsets(kernel):
        sl = []
        for a, (k, d, s, n) in enumerate(zip(offset, dilations, strides, out_sp)):
            o = k * d + (row0 * s if a == 0 else 0)
            if phased and a == len(out_sp) - 1:
                start = sum(_phase_lengths(width, s)[:o % s]) + o // s
                sl.append(slice(start, start + n))
            else:
                sl.append(slice(o, o + s * (n - 1) + 1, s))
        taps.append((slice(None),) * lead + tuple(sl))
    return tuple(taps)


def _depthwise_nhwc(ctx, x, w, g, out):
    """Depthwise conv channels-last, a block of ``g.padded_shape[-1]`` channels at a time: the whole
    kernel is one multiply-add per output element (an einsum summing over the taps) on window views
    whose inner run is ``g.tile`` pixels' channels, read against the taps' weights expanded to that
    run.  Per band of output rows only the kernel rows that reach real input are summed (on short
    maps most of a tall kernel reads padding).  The block's sum is built channels-last in its own
    (contiguous) NCHW block of ``out``, then moved through the padded block (free by then, never
    smaller than the output block) and transposed back: no output-sized scratch."""
    xp = ctx.xp
    c = x.shape[1]
    ho, wo = g.out_shape[2:]
    kh, kw = g.kernel
    b = g.tile
    cb = g.padded_shape[-1]
    pad_all = ctx.scratch(g.padded_shape, x.dtype)
    coef_all = ctx.scratch((kh, kw, b * cb), x.dtype)
    wt = w.reshape(c, kh, kw).transpose(1, 2, 0)
    inside = tuple(slice(b0, b0 + s) for b0, s in zip(g.begin, x.shape[2:]))
    blocks, tail = divmod(wo, b)
    as_strided = xp.lib.stride_tricks.as_strided
    bands = _row_bands(ho, x.shape[2], g.strides[0], g.dilations[0], kh, g.begin[0])
    for c0, c1 in channel_blocks(c, g.blocks):
        n_c = c1 - c0
        pad = pad_all if n_c == cb else pad_all.reshape(-1)[:math.prod(g.padded_shape[:2]) * n_c].reshape(
            *g.padded_shape[:2], n_c)
        coef = coef_all if n_c == cb else coef_all.reshape(-1)[:kh * kw * b * n_c].reshape(kh, kw, b * n_c)
        coef.reshape(kh, kw, b, n_c)[...] = wt[:, :, None, c0:c1]
        row, col, item = pad.strides
        for ni in range(x.shape[0]):
            zero_margins(pad, g.begin, x.shape[2:], 0)  # per block: the previous one's sum overwrote them
            pad[inside] = x[ni, c0:c1].transpose(1, 2, 0)
            acc = out[ni, c0:c1].reshape(ho, wo * n_c)  # a contiguous block of out, used channels-last
            for r0, r1, i0, i1 in bands:
                if i0 == i1:  # these output rows only see padding
                    acc[r0:r1] = 0
                    continue
                start = pad[r0 * g.strides[0] + i0 * g.dilations[0]]
                dims = (i1 - i0, kw, r1 - r0)
                steps = (g.dilations[0] * row, g.dilations[1] * col, g.strides[0] * row)
                for p0, n_px, width in ((0, blocks, b), (blocks * b, 1, tail)):
                    if n_px == 0 or width == 0:
                        continue
                    view = as_strided(start[p0 * g.strides[1]:], dims + (n_px, width * n_c),
                                      steps + (width * g.strides[1] * col, item))
                    dst = acc[r0:r1, p0 * n_c:(p0 + n_px * width) * n_c].reshape(r1 - r0, n_px, width * n_c)
                    _sum_taps(xp, ctx.caps.einsum_out, view, coef[i0:i1, :, :width * n_c], dst)
            moved = pad.reshape(-1)[:acc.size].reshape(ho, wo, n_c)
            moved[...] = acc.reshape(ho, wo, n_c)
            out[ni, c0:c1] = moved.transpose(2, 0, 1)


def _sum_taps(xp, einsum_out, view, coef, dst):
    """``dst[h, m, q] = sum over taps (i, j) of view[i, j, h, m, q] * coef[i, j, q]``: einsum's
    fused multiply-add reads each window once (twice as fast as a multiply then an add per tap), in
    tap order like the "strided" layout.  ``einsum_out``: the device's einsum writes into ``out=``
    (``caps.einsum_out``); CuPy's returns a new array, copied into place: one band-sized temporary
    the planner does not see."""
    if einsum_out:
        xp.einsum("ijhmq,ijq->hmq", view, coef, out=dst)
    else:
        dst[...] = xp.einsum("ijhmq,ijq->hmq", view, coef)


@functools.lru_cache(maxsize=1024)
def _row_bands(ho, h, stride, dil, k, begin):
    """Output rows grouped into runs whose windows reach real input rows through the same kernel rows
    [i0, i1): (r0, r1, i0, i1) per run; kernel rows outside read only zeros and are left out."""
    bands = []
    for r in range(ho):
        top = r * stride - begin  # input row under kernel row 0
        i0 = min(k, max(0, -(-(-top) // dil)))
        i1 = max(i0, min(k, -(-(h - top) // dil)))
        if bands and bands[-1][1] == r and bands[-1][2:] == (i0, i1):
            bands[-1] = (bands[-1][0], r + 1, i0, i1)
        else:
            bands.append((r, r + 1, i0, i1))
    return tuple(bands)
