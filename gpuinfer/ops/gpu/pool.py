"""MaxPool on CUDA: one ``maxpool_2d`` launch (2-D and 1-D, float32, no Indices output)."""
from __future__ import annotations

from typing import Any

import numpy as np

from gpuinfer.ops.pool import pool_geometry
from gpuinfer.ops.registry import variant


def _scratch(shared: Any, attrs: dict, shapes: list, dtypes: list, **known: Any) -> list:
    """None on the CUDA path (a 1-D/2-D float32 pool); else the shared kernel's."""
    if len(shapes[0]) in (3, 4) and np.dtype(dtypes[0]) == np.float32 and not int(attrs.get("storage_order", 0)):
        return []
    return list(shared(attrs, shapes, dtypes) or ()) if shared is not None else []


@variant("MaxPool", "cuda", scratch=_scratch)
def max_pool_cuda(shared: Any, ctx: Any, x: Any) -> Any:
    if x.dtype != np.float32 or x.ndim not in (3, 4) or ctx.wants(1) or int(ctx.attr("storage_order", 0)):
        return shared(ctx, x)
    g = ctx.memo(("cuda", x.shape), lambda: pool_geometry(ctx.attrs, x.shape))
    out = ctx.out(0, g.out_shape, x.dtype)
    if out.size == 0:
        return out
    one = x.ndim == 3  # 1-D as a 2-D window of height 1
    h, w = (1, x.shape[2]) if one else x.shape[2:]
    oh, ow = (1, g.out_shape[2]) if one else g.out_shape[2:]
    kh, kw = (1, g.kernel[0]) if one else g.kernel
    sh, sw = (1, g.strides[0]) if one else g.strides
    ph, pw = (0, g.begin[0]) if one else g.begin
    dh, dw = (1, g.dilations[0]) if one else g.dilations
    ctx.device.launch("maxpool_2d", out.size, ctx.xp.ascontiguousarray(x), out,
                      *[np.int32(v) for v in (x.shape[0], x.shape[1], h, w, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw)])
    return out
