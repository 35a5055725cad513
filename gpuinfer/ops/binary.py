"""Broadcasting binary and variadic elementwise kernels: arithmetic, comparison, logic, bitwise, Where.

Outputs follow numpy (multidirectional) broadcasting; before opset 7 the arithmetic and logic ops
use the old ``broadcast``/``axis`` attributes instead, handled by ``_legacy_rhs``.  Ufunc calls
write straight into the output buffer, which is safe when that buffer is one of the inputs.
"""
from __future__ import annotations

import functools

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.elementwise import clamp
from gpuinfer.ops.registry import op


def _out_shape(op_type, *arrays):
    """The broadcast shape of the inputs as Python ints, or a NodeExecutionError.

    Called on every binary op of every run, so equal shapes (the common case) skip numpy, and
    other combinations are looked up in a cache keyed by the input shapes.
    """
    first = arrays[0].shape
    if len(arrays) == 2 and arrays[1].shape == first:
        return first
    try:
        return _broadcast(tuple(a.shape for a in arrays))
    except ValueError:
        shapes = ", ".join(str(tuple(a.shape)) for a in arrays)
        raise NodeExecutionError(f"{op_type}: inputs do not broadcast: {shapes}") from None


@functools.lru_cache(maxsize=4096)
def _broadcast(shapes):
    return tuple(int(d) for d in np.broadcast_shapes(*shapes))


def _legacy_rhs(ctx, a, b):
    """Opset < 7: with broadcast=1 and axis, B's dims align with A's from ``axis`` on."""
    if ctx.opset >= 7 or not ctx.attr("broadcast", 0):
        return b
    axis = ctx.attr("axis")
    if axis is None or b.ndim == 0:
        return b  # suffix alignment, which numpy broadcasting already does
    if axis < 0:
        axis += a.ndim
    trailing = a.ndim - axis - b.ndim
    if trailing < 0:
        raise NodeExecutionError(f"{ctx.op_type}: B of shape {b.shape} does not fit A {a.shape} at axis {axis}")
    return b.reshape(tuple(b.shape) + (1,) * trailing)


def _binary(name, since, ufunc, doc, *, legacy=False, to_bool=False):
    """Register out = xp.<ufunc>(a, b) with broadcasting (and legacy attrs when asked)."""

    def kernel(ctx, a, b):
        if legacy and ctx.opset < 7:  # asked here: a call on every Add of every run costs ~0.1 us
            b = _legacy_rhs(ctx, a, b)
        out = ctx.out(0, _out_shape(name, a, b), np.bool_ if to_bool else a.dtype)
        return getattr(ctx.xp, ufunc)(a, b, out=out)  # IEEE warnings are off for the whole run

    kernel.__name__ = kernel.__qualname__ = name.lower()
    kernel.__doc__ = doc
    op(name, since=since, inplace=True)(kernel)


for _name, _since, _fn, _doc, _legacy, _bool in [
    ("Add", 1, "add", "a + b (integers wrap).", True, False),
    ("Sub", 1, "subtract", "a - b.", True, False),
    ("Mul", 1, "multiply", "a * b.", True, False),
    ("And", 1, "logical_and", "Boolean and.", True, False),
    ("Or", 1, "logical_or", "Boolean or.", True, False),
    ("Xor", 1, "logical_xor", "Boolean exclusive or.", True, False),
    ("Equal", 1, "equal", "a == b as bool.", True, True),
    ("Greater", 1, "greater", "a > b as bool.", True, True),
    ("Less", 1, "less", "a < b as bool.", True, True),
    ("GreaterOrEqual", 12, "greater_equal", "a >= b as bool.", False, True),
    ("LessOrEqual", 12, "less_equal", "a <= b as bool.", False, True),
    ("BitwiseAnd", 18, "bitwise_and", "Bitwise and of integers.", False, False),
    ("BitwiseOr", 18, "bitwise_or", "Bitwise or of integers.", False, False),
    ("BitwiseXor", 18, "bitwise_xor", "Bitwise xor of integers.", False, False),
]:
    _binary(_name, _since, _fn, _doc, legacy=_legacy, to_bool=_bool)


@op("BitwiseNot", since=18, inplace=True)
def bitwise_not(ctx, x):
    """Bitwise complement of integers."""
    return ctx.xp.invert(x, out=ctx.out(0, x.shape, x.dtype))


@op("BitShift", since=11, inplace=True)
def bit_shift(ctx, x, y):
    """x << y or x >> y on unsigned integers, by the ``direction`` attribute."""
    direction = ctx.attr("direction")
    if direction not in ("LEFT", "RIGHT"):
        raise NodeExecutionError(f"BitShift: direction must be 'LEFT' or 'RIGHT', got {direction!r}")
    ufunc = ctx.xp.left_shift if direction == "LEFT" else ctx.xp.right_shift
    return ufunc(x, y, out=ctx.out(0, _out_shape("BitShift", x, y), x.dtype))


def _div_scratch(attrs, shapes, dtypes):
    if dtypes[0] is None or np.dtype(dtypes[0]).kind != "i" or None in shapes[:2]:
        return []
    return [(tuple(int(d) for d in np.broadcast_shapes(shapes[0], shapes[1])), np.dtype(dtypes[0]))]


@op("Div", since=1, inplace=True, scratch=_div_scratch)
def div(ctx, a, b):
    """a / b; integer division truncates toward zero as in C (numpy floors)."""
    xp = ctx.xp
    b = _legacy_rhs(ctx, a, b)
    shape = _out_shape("Div", a, b)
    out = ctx.out(0, shape, a.dtype)
    with np.errstate(all="ignore"):
        if a.dtype.kind not in "iu":
            return xp.divide(a, b, out=out)
        if a.dtype.kind == "u":
            return xp.floor_divide(a, b, out=out)
        # C remainder r has the dividend's sign, so (a - r) / b is exact and truncated.  The last
        # step reads r and b elementwise, so out may be a's or b's buffer.
        r = ctx.scratch(shape, a.dtype)
        xp.fmod(a, b, out=r)
        xp.subtract(a, r, out=r)
        return xp.floor_divide(r, b, out=out)


@op("Mod", since=10, inplace=True)
def mod(ctx, a, b):
    """Remainder: sign of the divisor (fmod=0, integer Mod) or of the dividend (fmod=1, C fmod)."""
    xp = ctx.xp
    out = ctx.out(0, _out_shape("Mod", a, b), a.dtype)
    with np.errstate(all="ignore"):
        if ctx.attr("fmod", 0):
            return xp.fmod(a, b, out=out)
        return xp.remainder(a, b, out=out)


@op("Pow", since=1, inplace=True)
def pow_(ctx, a, b):
    """a ** b with the base's dtype; integer bases go through float64 as C's pow does."""
    b = _legacy_rhs(ctx, a, b)
    out = ctx.out(0, _out_shape("Pow", a, b), a.dtype)
    with np.errstate(all="ignore"):
        if a.dtype.kind in "iub":
            return ctx.xp.power(a, b, out=out, dtype=np.float64, casting="unsafe")
        return ctx.xp.power(a, b, out=out, casting="unsafe")


def _variadic(ctx, name, inputs, ufunc):
    """Fold ``ufunc`` over all inputs into one broadcast output (which may be one of them)."""
    xp = ctx.xp
    inputs = [x for x in inputs if x is not None]
    if not inputs:
        raise NodeExecutionError(f"{name}: needs at least one input")
    out = ctx.out(0, _out_shape(name, *inputs), inputs[0].dtype)
    # Start from the input whose buffer the output may be, so no input is overwritten early.
    first = next((i for i, x in enumerate(inputs) if x.shape == out.shape and xp.may_share_memory(x, out)), 0)
    order = [inputs[first]] + inputs[:first] + inputs[first + 1:]
    with np.errstate(all="ignore"):
        if len(order) == 1:
            xp.copyto(out, order[0])
        else:
            ufunc(order[0], order[1], out=out)
            for x in order[2:]:
                ufunc(out, x, out=out)
    return out


@op("Sum", since=1, inplace=True)
def sum_(ctx, *inputs):
    """Elementwise sum of any number of broadcast inputs."""
    return _variadic(ctx, "Sum", inputs, ctx.xp.add)


@op("Mean", since=1, inplace=True)
def mean(ctx, *inputs):
    """Elementwise mean of any number of broadcast inputs."""
    out = _variadic(ctx, "Mean", inputs, ctx.xp.add)
    n = sum(x is not None for x in inputs)
    return ctx.xp.divide(out, out.dtype.type(n), out=out, casting="unsafe")


@op("Max", since=1, inplace=True)
def max_(ctx, *inputs):
    """Elementwise maximum of any number of broadcast inputs."""
    return _variadic(ctx, "Max", inputs, ctx.xp.maximum)


@op("Min", since=1, inplace=True)
def min_(ctx, *inputs):
    """Elementwise minimum of any number of broadcast inputs."""
    return _variadic(ctx, "Min", inputs, ctx.xp.minimum)


def _prelu_slope(ctx, x, slope):
    """Before opset 7 a 1-D slope of length C applies per channel (axis 1)."""
    if ctx.opset < 7 and slope.ndim == 1 and x.ndim >= 2 and slope.shape[0] == x.shape[1] != 1:
        return slope.reshape((slope.shape[0],) + (1,) * (x.ndim - 2))
    return slope


def _prelu_scratch(attrs, shapes, dtypes):
    if shapes[0] is None or shapes[1] is None:
        return []
    try:
        shape = np.broadcast_shapes(shapes[0], shapes[1])
    except ValueError:
        shape = shapes[0]
    return [(tuple(int(d) for d in shape), np.dtype(dtypes[0]))]


@op("PRelu", since=1, inplace=True, scratch=_prelu_scratch)
def prelu(ctx, x, slope):
    """x for x >= 0 else slope*x, slope broadcast to x (per channel before opset 7)."""
    xp = ctx.xp
    slope = _prelu_slope(ctx, x, slope)
    shape = _out_shape("PRelu", x, slope)
    out = ctx.out(0, shape, x.dtype)
    t = ctx.scratch(shape, x.dtype)
    if ctx.caps.host_arrays and x.dtype.kind == "f" and _slopes_at_most_one(slope):
        # with slope <= 1, slope*x <= x exactly when x >= 0 (negative slopes too), so PRelu is
        # max(x, slope*x): two passes instead of four, the same bits
        xp.multiply(x, slope, out=t, casting="unsafe")
        return xp.maximum(x, t, out=out)
    clamp(xp, x, None, 0, t)
    xp.multiply(t, slope, out=t, casting="unsafe")
    clamp(xp, x, 0, None, out)
    return xp.add(out, t, out=out)


def _slopes_at_most_one(slope) -> bool:
    """Whether every slope is finite, non-zero and at most 1, as learned PReLU slopes nearly always
    are (a few microseconds on the C slopes, against two full passes saved).  Zero and infinite
    slopes stay on the general path: 0 * inf and inf * 0 are NaN where PRelu is not.  Host arrays
    only: on CUDA the check would cost a device sync every run."""
    ok = (slope != 0) & (slope <= 1) & (slope > -np.inf)
    return slope.size > 0 and bool(np.logical_and.reduce(ok, axis=None))


@op("Where", since=9)
def where(ctx, cond, x, y):
    """x where cond else y, all three broadcast together."""
    xp = ctx.xp
    out = ctx.out(0, _out_shape("Where", cond, x, y), x.dtype)
    xp.copyto(out, y)
    xp.copyto(out, x, where=cond)
    return out
