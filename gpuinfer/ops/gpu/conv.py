"""Conv on CUDA: ``im2col_2d`` + one batched matmul + ``bias_act`` (bias and a fused activation,
per-channel PRelu included), or one ``conv2d_direct`` launch for narrow convolutions.

Wide convolutions (more than ``DIRECT_MAX_M`` output channels a group) are GEMMs worth cuBLAS:
three launches (two for a pointwise one without bias or activation to apply, where the input
itself is the column matrix) where one image's columns (C*KH*KW, OH*OW) fit ``COLUMN_BUDGET``;
larger ones run in bands of output rows, two launches a band.  The column scratch is planned and
counted like every scratch buffer.  Narrow ones (u2netp's 16-channel RSU convolutions, side
outputs of one channel, depthwise convolutions) would write C*KH*KW/M times their output as
columns for a GEMM too thin to use it: ``conv2d_direct`` computes them from the input, bias and
activation included, in one launch and no scratch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from gpuinfer.graph.passes.hardswish import FUSED_TYPE as HARD_SWISH
from gpuinfer.graph.passes.silu import FUSED_TYPE as SILU
from gpuinfer.ops.conv_window import window_attrs, window_pads
from gpuinfer.ops.gpu.prelu import PRELU, channel_slopes
from gpuinfer.ops.registry import variant

# Bytes of im2col columns at most (the scratch of one band of output rows).  Whole-image columns
# of a wide early layer are many times its output (u2netp's first 64-channel 3x3 convs: 236 MB of
# columns for a 26 MB output; arena 559 MB against 105 MB on the CPU): banding holds the scratch
# near the tensors' own peak, at two launches a band.  Measured on the stand-in, u2netp arena
# (launches a run / peak): 8 MiB 959 / 96.6 MB, 16 MiB 693 / 101.4 MB, 32 MiB 671 / 115.6 MB,
# 64 MiB 613 / 148.0 MB, whole images 475 / 560.7 MB.  Memory first: launches are what a CUDA
# graph replays for free.
COLUMN_BUDGET = 16 << 20

# Output channels a group that ``conv2d_direct`` holds in registers (CONV_DIRECT_MAX_M in conv.cu).
DIRECT_MAX_M = 16

# activation fused into the epilogue: op type -> (code in kernels/conv.cu bias_act, its parameters)
ACTIVATIONS = {
    "Relu": (1, lambda attrs: (0.0, 0.0)),
    "Sigmoid": (2, lambda attrs: (0.0, 0.0)),
    "LeakyRelu": (3, lambda attrs: (float(attrs.get("alpha", 0.01)), 0.0)),
    "Tanh": (5, lambda attrs: (0.0, 0.0)),
    "HardSigmoid": (6, lambda attrs: (float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5)))),
    "HardSwish": (7, lambda attrs: (0.0, 0.0)),
    SILU: (9, lambda attrs: (0.0, 0.0)),  # x * Sigmoid(x), one step since graph/passes/silu.py
    HARD_SWISH: (7, lambda attrs: (0.0, 0.0)),  # hard-swish as exporters spell it (passes/hardswish.py)
    "Erf": (10, lambda attrs: (0.0, 0.0)),  # never after a Conv; one launch as an op (activation.py)
}


@dataclass(frozen=True)
class Geometry2d:
    out_shape: tuple
    kernel: tuple  # (KH, KW)
    strides: tuple
    pads: tuple  # (PH, PW) begin pads
    dilations: tuple
    group: int
    pointwise: bool  # 1x1, stride 1, unpadded: the input is the column matrix

    @property
    def direct(self) -> bool:
        """Narrow enough for ``conv2d_direct`` (one launch, no columns)."""
        return self.out_shape[1] // self.group <= DIRECT_MAX_M


def geometry(attrs: dict, x_shape: tuple, w_shape: tuple) -> Optional[Geometry2d]:
    """The 2-D geometry (1-D as H = 1), or None where this variant does not apply."""
    n_sp, kernel, strides, dil, group = window_attrs("Conv", attrs, x_shape, w_shape)
    if n_sp not in (1, 2) or x_shape[1] % group or w_shape[0] % group or w_shape[1] * group != x_shape[1]:
        return None
    begin, end, out_sp = window_pads(attrs.get("auto_pad"), attrs.get("pads"), x_shape[2:], kernel, strides, dil)
    if n_sp == 1:
        kernel, strides, dil, begin, end = [1, *kernel], [1, *strides], [1, *dil], [0, *begin], [0, *end]
    pointwise = all(k == 1 for k in kernel) and all(s == 1 for s in strides) and not any(begin) and not any(end)
    return Geometry2d((x_shape[0], w_shape[0], *out_sp), tuple(kernel), tuple(strides), tuple(begin),
                      tuple(dil), group, pointwise)


def applies(x_shape: tuple, w_shape: tuple, dtypes: list) -> bool:
    """Whether the CUDA path runs for these inputs (else the shared kernel does)."""
    return (len(x_shape) in (3, 4) and len(w_shape) == len(x_shape)
            and all(d is None or np.dtype(d) == np.float32 for d in dtypes[:3]))


def conv_scratch(shared: Any, attrs: dict, shapes: list, dtypes: list) -> list:
    """The plan's view of what the CUDA path asks: one image's columns (none for pointwise)."""
    x_shape, w_shape = shapes[0], shapes[1]
    if not applies(x_shape, w_shape, dtypes):
        return list(shared(attrs, shapes, dtypes) or ()) if shared is not None else []
    g = geometry(attrs, x_shape, w_shape)
    if g is None:
        return list(shared(attrs, shapes, dtypes) or ()) if shared is not None else []
    if g.pointwise or g.direct:
        return []
    ck = x_shape[1] * g.kernel[0] * g.kernel[1]
    oh, ow = (1, g.out_shape[2]) if len(g.out_shape) == 3 else g.out_shape[2:]
    return [((ck, band_rows(ck, oh, ow) * ow), np.dtype(np.float32))]


def _ints(*values: int) -> list:
    return [np.int32(v) for v in values]


@variant("Conv", "cuda", scratch=conv_scratch)
def conv_cuda(shared: Any, ctx: Any, x: Any, w: Any, b: Any = None) -> Any:
    if not applies(x.shape, w.shape, [x.dtype, w.dtype, None if b is None else b.dtype]):
        return shared(ctx, x, w, b)
    g = ctx.memo(("cuda", x.shape, w.shape), lambda: geometry(ctx.attrs, x.shape, w.shape))
    if g is None:
        return shared(ctx, x, w, b)
    out = ctx.out(0, g.out_shape, x.dtype)
    if out.size == 0:
        return out
    code, params, slope = fused_activation(ctx, out.shape)
    epilogue = (np.int32(b is not None), np.int32(code), np.float32(params[0]), np.float32(params[1]))
    if g.direct:
        conv_direct(ctx, x, w, b, slope, g, out, epilogue)
        return out
    conv_into(ctx, x, w, g, out)
    if b is not None or code:
        m, p = out.shape[1], math.prod(out.shape[2:])
        ctx.device.launch("bias_act", out.size, out, out, b if b is not None else out,
                          slope if slope is not None else out, np.int64(out.size), np.int32(m), np.int64(p), *epilogue)
    return out


def fused_activation(ctx: Any, out_shape: tuple) -> tuple:
    """(code, (a, b), slopes or None) of the activation a fusion pass put after this Conv, marking it
    absorbed where the epilogue applies it: one of ``ACTIVATIONS``, or PRelu with a slope per output
    channel (its slope is the fused step's next input, ``ctx.then_inputs``); (0, (0, 0), None) else."""
    then = getattr(ctx, "then", None)
    if then is None or then.domain:
        return 0, (0.0, 0.0), None
    if then.op_type in ACTIVATIONS:
        code, make = ACTIVATIONS[then.op_type]
        ctx.absorbed = True
        return code, make(then.attrs), None
    if then.op_type == "PRelu":
        rest = getattr(ctx, "then_inputs", ())
        slope = channel_slopes(ctx, rest[0], out_shape, then.opset) if rest else None
        if slope is not None:
            ctx.absorbed = True
            return PRELU, (0.0, 0.0), slope
    return 0, (0.0, 0.0), None


def conv_direct(ctx: Any, x: Any, w: Any, b: Any, slope: Any, g: Geometry2d, out: Any, epilogue: tuple) -> None:
    """The whole convolution, bias and activation (``epilogue``; ``slope``: PRelu's, or None) in one
    ``conv2d_direct`` launch."""
    one = x.ndim == 3  # 1-D as H = 1
    h, wd = (1, x.shape[2]) if one else x.shape[2:]
    oh, ow = (1, out.shape[2]) if one else out.shape[2:]
    xp = ctx.xp
    wc = xp.ascontiguousarray(w)
    ctx.device.launch("conv2d_direct", out.size // (out.shape[1] // g.group), xp.ascontiguousarray(x), wc,
                      xp.ascontiguousarray(b) if b is not None else wc, slope if slope is not None else wc, out,
                      *_ints(x.shape[0], x.shape[1], h, wd, out.shape[1], g.group, g.kernel[0], g.kernel[1], oh, ow,
                             g.strides[0], g.strides[1], g.pads[0], g.pads[1], g.dilations[0], g.dilations[1]),
                      *epilogue)


def conv_into(ctx: Any, x: Any, w: Any, g: Geometry2d, out: Any) -> None:
    """The convolution without bias into ``out``: per image and band of output rows one im2col
    launch and one matmul (pointwise: one matmul per image, the input is the column matrix)."""
    n, c = x.shape[:2]
    h, wd = (1, x.shape[2]) if x.ndim == 3 else x.shape[2:]
    oh, ow = (1, out.shape[2]) if out.ndim == 3 else out.shape[2:]
    m, grp = w.shape[0], g.group
    ck = c * g.kernel[0] * g.kernel[1]
    wr = w.reshape(grp, m // grp, ck // grp)
    xc = ctx.xp.ascontiguousarray(x)
    if g.pointwise:
        for ni in range(n):
            ctx.xp.matmul(wr, xc[ni].reshape(grp, c // grp, oh * ow), out=out[ni].reshape(grp, m // grp, oh * ow))
        return
    rows = band_rows(ck, oh, ow)
    cols = ctx.scratch((ck, rows * ow), x.dtype).reshape(-1)
    for ni in range(n):
        planes = out[ni].reshape(grp, m // grp, oh * ow)
        for r0 in range(0, oh, rows):
            r = min(rows, oh - r0)
            band = cols[:ck * r * ow]
            ctx.device.launch("im2col_2d", band.size, xc[ni], band,
                              *_ints(1, c, h, wd, g.kernel[0], g.kernel[1], r0, r, ow, g.strides[0], g.strides[1],
                                     g.pads[0], g.pads[1], g.dilations[0], g.dilations[1]))
            target = planes if r == oh else planes[:, :, r0 * ow:(r0 + r) * ow]
            ctx.xp.matmul(wr, band.reshape(grp, ck // grp, r * ow), out=target)


def band_rows(ck: int, oh: int, ow: int) -> int:
    """Output rows whose columns fit ``COLUMN_BUDGET`` bytes (at least one): the whole image where
    it fits, so most convolutions stay three launches."""
    return max(1, min(oh, COLUMN_BUDGET // max(ck * ow * 4, 1)))
