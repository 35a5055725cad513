"""NegativeLogLikelihoodLoss: -input[n, target[n, d...], d...], weighted, with ignore_index and reduction.

(SoftmaxCrossEntropyLoss lives beside Softmax in ``softmax.py``.)
"""
from __future__ import annotations

import math

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.registry import op


def _nll_scratch(attrs, shapes, dtypes):
    n_d = (int(shapes[1][0]), math.prod(int(s) for s in shapes[1][1:]))
    dt = np.dtype(dtypes[0])
    bufs = [(n_d, np.dtype(np.int64)), (n_d, dt)]
    if attrs.get("reduction", "mean") != "none":
        bufs.append((n_d, dt))
    return bufs


@op("NegativeLogLikelihoodLoss", since=12, scratch=_nll_scratch)
def negative_log_likelihood_loss(ctx, x, target, weight=None):
    """Per-element -x[n, target] times the class weight; 'none', 'sum' or weight-normalized 'mean'."""
    xp = ctx.xp
    if x.ndim < 2 or tuple(target.shape) != (x.shape[0],) + tuple(x.shape[2:]):
        raise NodeExecutionError(f"NegativeLogLikelihoodLoss: target shape {tuple(target.shape)} does not fit "
                                 f"input {tuple(x.shape)} (want (N, d1, ...))")
    reduction = ctx.attr("reduction", "mean")
    if reduction not in ("none", "sum", "mean"):
        raise NodeExecutionError(f"NegativeLogLikelihoodLoss: unknown reduction {reduction!r}")
    ignore = ctx.attr("ignore_index")
    n, c = int(x.shape[0]), int(x.shape[1])
    d = math.prod(int(s) for s in x.shape[2:])
    dt = x.dtype
    x3 = x.reshape(n, c, d)
    t2 = target.reshape(n, d)

    cls = ctx.scratch((n, d), np.int64)  # target with ignored entries pointed at class 0
    w = ctx.scratch((n, d), dt)  # per-element weight (0 where ignored)
    result = ctx.out(0, target.shape, dt) if reduction == "none" else None
    loss = ctx.scratch((n, d), dt) if result is None else result.reshape(n, d)
    xp.copyto(cls, t2, casting="unsafe")
    keep = None if ignore is None else cls != int(ignore)
    if keep is not None:
        cls[~keep] = 0
    if cls.size and (bool((cls < 0).any()) or bool((cls >= c).any())):
        raise NodeExecutionError(f"NegativeLogLikelihoodLoss: target outside [0, {c}) "
                                 f"(ignore_index={ignore})")
    if weight is not None:
        xp.take(weight, cls, out=w)
    else:
        w[...] = 1
    if keep is not None:
        w[~keep] = 0
    xp.multiply(xp.take_along_axis(x3, cls[:, None, :], axis=1)[:, 0, :], w, out=loss)
    xp.negative(loss, out=loss)

    if reduction == "none":
        return result
    out = ctx.out(0, (), dt)
    total = xp.sum(loss, dtype=dt)
    if reduction == "mean":
        total = total / xp.sum(w, dtype=dt)
    xp.copyto(out, total, casting="unsafe")
    return out
