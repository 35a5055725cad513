"""Optimizer steps of the ai.onnx.preview.training domain: Adagrad, Adam, Momentum.

Inputs are R (learning rate) and T (update count), both scalars read on the host, then the
variadic tensor groups (X..., G..., and the optimizer states); outputs are X_new... then the new
states.  Scalar coefficients are worked out on the host in float64 and cast to X's dtype; each
tensor's update is written through its output buffers plus one X-sized scratch buffer.
"""
from __future__ import annotations

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.registry import op

DOMAIN = "ai.onnx.preview.training"


def _groups(name, inputs, per):
    """Split (R, T, X..., G..., ...) into R, T and ``per`` lists of n tensors, checking shapes."""
    if len(inputs) < 2 + per or (len(inputs) - 2) % per:
        raise NodeExecutionError(f"{name}: want R, T and {per} groups of equally many tensors, "
                                 f"got {len(inputs)} inputs")
    r, t = inputs[0], inputs[1]
    if r is None or t is None or r.size != 1 or t.size != 1:
        raise NodeExecutionError(f"{name}: R and T must be scalars, got shapes "
                                 f"{None if r is None else tuple(r.shape)} and {None if t is None else tuple(t.shape)}")
    n = (len(inputs) - 2) // per
    groups = [list(inputs[2 + i * n:2 + (i + 1) * n]) for i in range(per)]
    for tensors in zip(*groups):
        x = tensors[0]
        for other in tensors[1:]:
            try:
                fits = other is not None and np.broadcast_shapes(tuple(other.shape), tuple(x.shape)) == tuple(x.shape)
            except ValueError:
                fits = False
            if not fits:
                raise NodeExecutionError(f"{name}: every input of a group must broadcast to X's shape "
                                         f"{tuple(x.shape)}, got {None if other is None else tuple(other.shape)}")
    return groups


def _scalars(ctx, r, t):
    """(learning rate, update count) as Python numbers."""
    return float(ctx.host(r).reshape(-1)[0]), int(ctx.host(t).reshape(-1)[0])


def _scratch(per):
    """One X-sized scratch buffer per optimized tensor, in tensor order."""
    def fn(attrs, shapes, dtypes):
        n = (len(shapes) - 2) // per
        return [(tuple(shapes[2 + i]), dtypes[2 + i]) for i in range(n)]
    return fn


def _regularized(xp, x, g, nc, out):
    """G + norm_coefficient * X into ``out``."""
    xp.multiply(x, nc, out=out)
    return xp.add(out, g, out=out)


@op("Adagrad", since=1, domain=DOMAIN, scratch=_scratch(3))
def adagrad(ctx, *inputs):
    """One ADAGRAD step per tensor: H += G_reg^2, X -= r * G_reg / (sqrt(H) + eps)."""
    xp = ctx.xp
    xs, gs, hs = _groups("Adagrad", inputs, 3)
    rate, count = _scalars(ctx, inputs[0], inputs[1])
    r = rate / (1.0 + count * float(ctx.attr("decay_factor", 0.0)))
    n = len(xs)
    x_new, h_new = [], []
    for i, (x, g, h) in enumerate(zip(xs, gs, hs)):
        kind = x.dtype.type
        xn, hn = ctx.out(i, x.shape, x.dtype), ctx.out(n + i, x.shape, x.dtype)
        tmp = ctx.scratch(x.shape, x.dtype)
        _regularized(xp, x, g, kind(ctx.attr("norm_coefficient", 0.0)), xn)
        xp.multiply(xn, xn, out=hn)
        xp.add(hn, h, out=hn)
        xp.sqrt(hn, out=tmp)
        xp.add(tmp, kind(ctx.attr("epsilon", 1e-6)), out=tmp)
        xp.divide(xn, tmp, out=xn)
        xp.multiply(xn, kind(r), out=xn)
        xp.subtract(x, xn, out=xn)
        x_new.append(xn)
        h_new.append(hn)
    return tuple(x_new + h_new)


@op("Adam", since=1, domain=DOMAIN, scratch=_scratch(4))
def adam(ctx, *inputs):
    """One Adam step per tensor, with bias-corrected rate and optional post-update decay."""
    xp = ctx.xp
    xs, gs, vs, hs = _groups("Adam", inputs, 4)
    rate, count = _scalars(ctx, inputs[0], inputs[1])
    alpha, beta = float(ctx.attr("alpha", 0.9)), float(ctx.attr("beta", 0.999))
    r = rate * np.sqrt(1.0 - beta ** count) / (1.0 - alpha ** count) if count > 0 else rate
    post = 1.0 - float(ctx.attr("norm_coefficient_post", 0.0))
    n = len(xs)
    x_new, v_new, h_new = [], [], []
    for i, (x, g, v, h) in enumerate(zip(xs, gs, vs, hs)):
        kind = x.dtype.type
        xn = ctx.out(i, x.shape, x.dtype)
        vn = ctx.out(n + i, x.shape, x.dtype)
        hn = ctx.out(2 * n + i, x.shape, x.dtype)
        g_reg = ctx.scratch(x.shape, x.dtype)
        _regularized(xp, x, g, kind(ctx.attr("norm_coefficient", 0.0)), g_reg)
        xp.multiply(v, kind(alpha), out=vn)  # V_new = alpha V + (1 - alpha) G_reg
        xp.multiply(g_reg, kind(1.0 - alpha), out=xn)
        xp.add(vn, xn, out=vn)
        xp.multiply(h, kind(beta), out=hn)  # H_new = beta H + (1 - beta) G_reg^2
        xp.multiply(g_reg, g_reg, out=xn)
        xp.multiply(xn, kind(1.0 - beta), out=xn)
        xp.add(hn, xn, out=hn)
        xp.sqrt(hn, out=g_reg)  # X_new = (X - r V_new / (sqrt(H_new) + eps)) * post
        xp.add(g_reg, kind(ctx.attr("epsilon", 1e-6)), out=g_reg)
        xp.divide(vn, g_reg, out=xn)
        xp.multiply(xn, kind(r), out=xn)
        xp.subtract(x, xn, out=xn)
        if post != 1.0:
            xp.multiply(xn, kind(post), out=xn)
        x_new.append(xn)
        v_new.append(vn)
        h_new.append(hn)
    return tuple(x_new + v_new + h_new)


@op("Momentum", since=1, domain=DOMAIN, scratch=_scratch(3))
def momentum(ctx, *inputs):
    """One SGD-with-momentum step per tensor, standard or Nesterov."""
    xp = ctx.xp
    xs, gs, vs = _groups("Momentum", inputs, 3)
    mode = ctx.attr("mode", "standard")
    if mode not in ("standard", "nesterov"):
        raise NodeExecutionError(f"Momentum: mode must be 'standard' or 'nesterov', got {mode!r}")
    for name in ("alpha", "beta", "norm_coefficient"):
        if ctx.attr(name) is None:
            raise NodeExecutionError(f"Momentum: attribute {name!r} is required")
    rate, count = _scalars(ctx, inputs[0], inputs[1])
    alpha = float(ctx.attr("alpha"))
    beta = float(ctx.attr("beta")) if count > 0 else 1.0
    n = len(xs)
    x_new, v_new = [], []
    for i, (x, g, v) in enumerate(zip(xs, gs, vs)):
        kind = x.dtype.type
        xn, vn = ctx.out(i, x.shape, x.dtype), ctx.out(n + i, x.shape, x.dtype)
        g_reg = ctx.scratch(x.shape, x.dtype)
        _regularized(xp, x, g, kind(ctx.attr("norm_coefficient")), g_reg)
        xp.multiply(v, kind(alpha), out=vn)  # V_new = alpha V + beta G_reg
        xp.multiply(g_reg, kind(beta), out=xn)
        xp.add(vn, xn, out=vn)
        if mode == "nesterov":  # step along G_reg + alpha V_new
            xp.multiply(vn, kind(alpha), out=xn)
            xp.add(xn, g_reg, out=xn)
        else:
            xn[...] = vn
        xp.multiply(xn, kind(rate), out=xn)
        xp.subtract(x, xn, out=xn)
        x_new.append(xn)
        v_new.append(vn)
    return tuple(x_new + v_new)
