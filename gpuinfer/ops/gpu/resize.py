"""Resize on CUDA: one ``resize_taps_2d`` launch over the last two axes.

The per-axis tap tables come from the same host code as the CPU path (``ops.resize.axis_taps``),
once per node and shape; they go up to the device once and are kept in the node's memo, so a
steady-state run uploads nothing.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from gpuinfer.ops.registry import variant_scratch



def resize_on_device(ctx: Any, x: Any, out: Any, taps: list) -> bool:
    """``taps``: per axis an ``ops.resize.AxisTaps`` (idx, weight, outside) or None (unchanged).

    Resize ``x`` into ``out`` with one kernel launch; False where the kernel does not apply
    (another dtype, a resized leading axis, extrapolated crop-and-resize positions)."""
    if not ctx.caps.fused_kernels or x.dtype != np.float32 or x.ndim < 2:
        return False
    if any(t is not None for t in taps[:-2]) or any(t is not None and t.outside is not None for t in taps[-2:]):
        return False
    h, w = x.shape[-2:]
    oh, ow = out.shape[-2:]
    tables = ctx.memo(("cuda-taps", x.shape, out.shape), lambda: _tables(ctx, taps[-2], taps[-1], h, w))
    ih, wh, iw, ww, th, tw = tables
    planes = math.prod(x.shape[:-2])
    ctx.device.launch("resize_taps_2d", out.size, ctx.xp.ascontiguousarray(x), out, ih, wh, iw, ww,
                      np.int64(planes), np.int32(h), np.int32(w), np.int32(oh), np.int32(ow), np.int32(th), np.int32(tw))
    return True


def _axis(t: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    if t is None:
        return np.arange(n, dtype=np.int64)[:, None], np.ones((n, 1), np.float32)
    weight = np.ones(t.idx.shape, np.float32) if t.weight is None else t.weight.astype(np.float32)
    return t.idx.astype(np.int64), weight


def _tables(ctx: Any, th_taps: Any, tw_taps: Any, h: int, w: int) -> tuple:
    """The tap tables on the device (uploaded once, when the node first sees this shape)."""
    ih, wh = _axis(th_taps, h)
    iw, ww = _axis(tw_taps, w)
    up = ctx.device.to_device
    return (up(np.ascontiguousarray(ih)), up(np.ascontiguousarray(wh)), up(np.ascontiguousarray(iw)),
            up(np.ascontiguousarray(ww)), ih.shape[1], iw.shape[1])


def resize_scratch(shared: Any, attrs: dict, shapes: list, dtypes: list, output_shapes: Any = None) -> list:
    """The plan's view of a CUDA Resize: no scratch where the kernel runs (float32, only the last
    two axes resized, no crop-and-resize); the shared path's buffers otherwise."""
    out = output_shapes[0] if output_shapes else None
    mode = attrs.get("coordinate_transformation_mode", b"")
    crop = (mode.decode() if isinstance(mode, bytes) else mode) == "tf_crop_and_resize"
    if out is not None and shapes[0] is not None and np.dtype(dtypes[0]) == np.float32 and not crop \
            and tuple(out[:-2]) == tuple(shapes[0][:-2]):
        return []
    return list(shared(attrs, shapes, dtypes, output_shapes=output_shapes) or ()) if shared is not None else []


for _op in ("Resize", "Upsample"):
    variant_scratch(_op, "cuda")(resize_scratch)
