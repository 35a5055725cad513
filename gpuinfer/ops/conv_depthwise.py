"""Depthwise convolution (one filter per channel): a tap-by-tap multiply-add, in whichever of three
memory layouts keeps numpy's inner loops long and contiguous for the shape."""
from __future__ import annotations

from gpuinfer.ops.conv_window import kernel_offsets, pad_into, window_slices, zero_margins

# A depthwise "flat" accumulator or product buffer (channels x output rows x padded width) holds at
# most this much, and the two together never more than one output image: "flat" must not cost more
# scratch than the "strided" path's one output-sized buffer (speed work must not raise the peak).
DEPTHWISE_TILE_BYTES = 4 << 20

# "flat" pays for its row tiles where the window views' inner loops are short: padded rows up to
# this long (measured: 1.4x faster on 28-wide maps, but slower than "strided" on 160-wide rows once
# its tiles are bounded as above).
FLAT_MAX_WIDTH = 64

# Channels from which a depthwise conv never runs "flat": from here channels-last is faster when a
# padded row is not much longer than the channels, and "flat" gains nothing over "strided" (measured
# on the benchmark models' shapes, as is the 4/5 ratio in depthwise_layout) for its extra scratch.
NHWC_MIN_CHANNELS = 88


def depthwise_layout(c, pshape, strides):
    """Which memory layout a 2-D depthwise conv runs in, so numpy's inner loops are long and contiguous.

    "nhwc": channels last, the inner loop runs over channels (any stride or dilation); wins when the
    channels are about as many as a padded row is long.  "flat": channels first with the image rows
    laid end to end at padded width, so a tap is one contiguous run per channel (stride 1 only); wins
    for few channels on short rows.  "strided": the window views, for
    the rest and for other ranks.
    """
    if len(pshape) != 4:
        return "strided"
    wide = 5 * c >= 4 * pshape[3]
    if c >= NHWC_MIN_CHANNELS:
        return "nhwc" if wide else "strided"
    if all(s == 1 for s in strides) and pshape[3] <= FLAT_MAX_WIDTH:
        return "flat"
    return "nhwc" if wide else "strided"


def depthwise_plan(g, pshape, padded, dt):
    """Set the layout and scratch buffers (in request order) of a depthwise conv on geometry ``g``."""
    n, c = pshape[:2]
    out_sp = g.out_shape[2:]
    g.layout = depthwise_layout(c, pshape, g.strides)
    if g.layout == "nhwc":  # padded channels-last image, one tap's products; the output holds the sum
        g.padded_shape = (*pshape[2:], c)
        g.scratch += [(g.padded_shape, dt), ((*out_sp, c), dt)]
    elif g.layout == "flat":  # padded image rows end to end (plus the last tap's overhang), two tiles
        hp, wp = pshape[2:]
        g.padded_shape = (c, hp * wp + (g.kernel[1] - 1) * g.dilations[1])
        row = c * wp * dt.itemsize
        one_output = c * out_sp[0] * out_sp[1] * dt.itemsize
        g.tile = max(1, min(out_sp[0], DEPTHWISE_TILE_BYTES // max(row, 1), one_output // (2 * row)))
        g.scratch += [(g.padded_shape, dt)] + [((c, g.tile * wp), dt)] * 2
    else:
        if padded:
            g.padded_shape = pshape
            g.scratch.append((pshape, dt))
        g.scratch.append((g.out_shape, dt))


def depthwise_conv(ctx, x, w, g, out):
    """The depthwise convolution of ``x`` by ``w`` (no bias) into ``out``, in the layout ``g`` chose."""
    if g.layout == "nhwc":
        _depthwise_nhwc(ctx, x, w, g, out)
    elif g.layout == "flat":
        _depthwise_flat(ctx, x, w, g, out)
    else:
        _depthwise_strided(ctx, x, w, g, out)


def _depthwise_strided(ctx, x, w, g, out):
    """Depthwise conv on window views of the (padded) input: per tap one multiply and one add over
    the whole batch, any rank, stride or dilation."""
    xp = ctx.xp
    c = x.shape[1]
    src = x
    if g.padded_shape is not None:
        src = ctx.scratch(g.padded_shape, x.dtype)
        pad_into(src, x, g.begin, 2)
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
    zero_margins(pad, g.begin, x.shape[2:], 0)  # once: each image only overwrites the inside
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
    zero_margins(img, g.begin, x.shape[2:], 1)  # once: each image only overwrites the inside
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
