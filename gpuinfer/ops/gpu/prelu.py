"""PRelu on CUDA: a slope per channel is the ``bias_act`` epilogue's activation 8 (kernels/conv.cu).

CuPy's ufuncs take several launches for PRelu (clamp, multiply, clamp, add, with an output-sized
temporary); one ``bias_act`` launch applies it, and a Conv followed by PRelu (mtcnn: every conv)
applies it in the conv's own epilogue (ops/gpu/conv.py), no launch at all.  Only the per-channel
float32 case takes this path (the kernel reads ``slope[m]``); other slopes go to the shared kernel.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from gpuinfer.ops.registry import variant

PRELU = 8  # ACT_PRELU in kernels/conv.cu


def per_channel(slope_shape: tuple, x_shape: tuple, opset: int) -> bool:
    """Whether a slope of ``slope_shape`` gives each channel (axis 1) of ``x_shape`` one value:
    (C, 1, ..) or (1, C, 1, ..) by numpy broadcasting, or before opset 7 a 1-D (C,)."""
    if len(x_shape) < 2 or x_shape[1] < 1:
        return False
    c = x_shape[1]
    if opset < 7 and len(slope_shape) == 1:
        return slope_shape[0] == c
    if len(slope_shape) > len(x_shape) or math.prod(slope_shape) != c:
        return False
    full = (1,) * (len(x_shape) - len(slope_shape)) + tuple(slope_shape)
    return full[1] == c and all(d == 1 for i, d in enumerate(full) if i != 1)


def channel_slopes(ctx: Any, slope: Any, x_shape: tuple, opset: int) -> Optional[Any]:
    """``slope`` as C contiguous float32 values on the device, or None where the kernel does not apply."""
    if slope is None or slope.dtype != np.float32 or not per_channel(tuple(slope.shape), x_shape, opset):
        return None
    return ctx.xp.ascontiguousarray(slope)


def _scratch(shared: Any, attrs: dict, shapes: list, dtypes: list, **known: Any) -> list:
    """Nothing where the kernel applies; else the shared kernel's."""
    x, s = shapes[0], shapes[1] if len(shapes) > 1 else None
    if x is not None and s is not None and np.dtype(dtypes[0]) == np.float32 and (
            dtypes[1] is None or np.dtype(dtypes[1]) == np.float32) and per_channel(tuple(s), tuple(x), 7):
        return []
    return list(shared(attrs, shapes, dtypes) or ()) if shared is not None else []


@variant("PRelu", "cuda", scratch=_scratch)
def prelu_cuda(shared: Any, ctx: Any, x: Any, slope: Any) -> Any:
    s = channel_slopes(ctx, slope, tuple(x.shape), ctx.opset) if x.dtype == np.float32 else None
    if s is None:
        return shared(ctx, x, slope)
    out = ctx.out(0, x.shape, x.dtype)
    if out.size == 0:
        return out
    m, p = x.shape[1], math.prod(x.shape[2:])
    ctx.device.launch("bias_act", out.size, ctx.xp.ascontiguousarray(x), out, s, s, np.int64(out.size),
                      np.int32(m), np.int64(p), np.int32(0), np.int32(PRELU), np.float32(0), np.float32(0))
    return out
