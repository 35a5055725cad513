"""PRelu in place on a fused producer's output, a band of channels at a time (numpy device).

The PRelu op (ops/binary.py) writes a new output beside an output-sized temporary.  After a Conv
in the same fused step (mtcnn: every conv) the conv's output is PRelu's input and output: the
temporary is all the step needs beyond its tensors, and it was 0.76x the tensors' bound of
mtcnn's pnet (arena 2.83x the bound with the im2col columns).  Here the same arithmetic runs per
image and band of channels (of rows, where one channel is over the budget) through a band-sized
temporary: the same bits, a 32nd of the output (``BAND_SHARE``, ``MIN_BAND_BYTES`` at least).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from gpuinfer.ops.binary import _prelu_slope, _slopes_at_most_one
from gpuinfer.ops.elementwise import clamp

BAND_SHARE = 32
MIN_BAND_BYTES = 16 << 10


def _full_slope_shape(slope_shape: tuple, ndim: int) -> Optional[tuple]:
    if len(slope_shape) > ndim:
        return None
    return (1,) * (ndim - len(slope_shape)) + tuple(slope_shape)


def band_shape(y_shape: tuple, slope_shape: tuple, dtype: Any, opset: int) -> Optional[tuple]:
    """The temporary's shape for PRelu in place on ``y_shape`` (one image, a band of channels), or
    None where the banded path does not apply (slope broadcasts ``y`` larger, or ``y`` has no
    channel axis)."""
    if len(y_shape) < 2 or y_shape[1] < 1:
        return None
    if opset < 7 and len(slope_shape) == 1 and slope_shape[0] == y_shape[1] != 1:
        slope_shape = (slope_shape[0],) + (1,) * (len(y_shape) - 2)
    full = _full_slope_shape(slope_shape, len(y_shape))
    if full is None or any(s not in (1, d) for s, d in zip(full, y_shape)):
        return None
    item = np.dtype(dtype).itemsize
    budget = max(MIN_BAND_BYTES, math.prod(y_shape) * item // BAND_SHARE)
    per_channel = math.prod(y_shape[2:]) * item
    if per_channel <= budget or len(y_shape) < 3:
        return (1, max(1, min(y_shape[1], budget // max(per_channel, 1))), *y_shape[2:])
    per_row = math.prod(y_shape[3:]) * item  # a channel is over the budget: a band of its rows
    return (1, 1, max(1, min(y_shape[2], budget // max(per_row, 1))), *y_shape[3:])


def prelu_in_bands(ctx: Any, y: Any, slope: Any, band: tuple) -> Any:
    """``y`` = PRelu(``y``, ``slope``) in place, the ops/binary.py kernel's arithmetic per band."""
    xp = ctx.xp
    slope = _prelu_slope(ctx, y, slope)
    full = slope.reshape(_full_slope_shape(slope.shape, y.ndim))
    t_all = ctx.scratch(band, y.dtype)
    cb, rb = band[1], band[2] if len(band) > 2 else 1
    rows = y.shape[2] if y.ndim > 2 else 1
    cheap = ctx.caps.host_arrays and y.dtype.kind == "f" and _slopes_at_most_one(slope)
    for n in range(y.shape[0]):
        for c0 in range(0, y.shape[1], cb):
            c1 = min(y.shape[1], c0 + cb)
            for r0 in range(0, rows, rb):
                r1 = min(rows, r0 + rb)
                at = (slice(n, n + 1), slice(c0, c1)) + ((slice(r0, r1),) if y.ndim > 2 else ())
                yb = y[at]
                sb = full[tuple(a if d > 1 else slice(None) for a, d in zip(at, full.shape))]
                t = t_all[tuple(slice(0, e - s) for s, e in ((a.start, a.stop) for a in at))]
                if cheap:  # max(x, slope*x): see ops/binary.py prelu
                    xp.multiply(yb, sb, out=t, casting="unsafe")
                    xp.maximum(yb, t, out=yb)
                else:
                    clamp(xp, yb, None, 0, t)
                    xp.multiply(t, sb, out=t, casting="unsafe")
                    clamp(xp, yb, 0, None, yb)
                    xp.add(yb, t, out=yb)
    return y
