"""Matrix products: MatMul, Gemm, MatMulInteger and Einsum, each a single BLAS-backed call into the output."""
from __future__ import annotations

import math
import re

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.registry import op


def matmul_shape(a_shape, b_shape, name="MatMul"):
    """numpy.matmul's result shape: batch axes broadcast, 1-D operands promoted and dropped again."""
    a, b = list(a_shape), list(b_shape)
    if not a or not b:
        raise NodeExecutionError(f"{name}: operands must have rank >= 1, got {a_shape} and {b_shape}")
    a1, b1 = len(a) == 1, len(b) == 1
    if a1:
        a = [1] + a
    if b1:
        b = b + [1]
    if a[-1] != b[-2]:
        raise NodeExecutionError(f"{name}: inner dimensions differ: {a_shape} x {b_shape}")
    try:
        batch = list(np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2])))
    except ValueError:
        raise NodeExecutionError(f"{name}: batch dimensions do not broadcast: {a_shape} x {b_shape}") from None
    shape = batch + ([] if a1 else [a[-2]]) + ([] if b1 else [b[-1]])
    return tuple(int(d) for d in shape)


@op("MatMul", since=1)
def matmul(ctx, a, b):
    """numpy-style matrix product with broadcast batch axes."""
    out = ctx.out(0, matmul_shape(a.shape, b.shape), np.result_type(a.dtype, b.dtype))
    if a.shape[-1] == 0:  # empty inner dimension: the sum over nothing
        out.fill(0)
        return out
    if out.size == 0:
        return out
    return ctx.xp.matmul(a, b, out=out)


@op("Gemm", since=1)
def gemm(ctx, a, b, c=None):
    """alpha * A' B' + beta * C with optional transposes and a broadcast C."""
    xp = ctx.xp
    if a.ndim != 2 or b.ndim != 2:
        raise NodeExecutionError(f"Gemm: A and B must be 2-D, got {a.shape} and {b.shape}")
    if int(ctx.attr("transA", 0)):
        a = a.T
    if int(ctx.attr("transB", 0)):
        b = b.T
    if a.shape[1] != b.shape[0]:
        raise NodeExecutionError(f"Gemm: inner dimensions differ: {a.shape} x {b.shape}")
    alpha = float(ctx.attr("alpha", 1.0))
    beta = float(ctx.attr("beta", 1.0))
    out = ctx.out(0, (a.shape[0], b.shape[1]), a.dtype)
    if a.shape[1] == 0:
        out.fill(0)
    elif out.size:
        xp.matmul(a, b, out=out)
    t = a.dtype.type
    if alpha != 1.0:
        out *= t(alpha)
    if c is not None and beta != 0.0:
        if beta == 1.0:
            out += c
        else:
            out += c * t(beta)
    return out


def _matmul_int_scratch(attrs, shapes, dtypes):
    out = matmul_shape(shapes[0], shapes[1], "MatMulInteger")
    return [(tuple(shapes[0]), np.dtype(np.float64)), (tuple(shapes[1]), np.dtype(np.float64)),
            (out, np.dtype(np.float64))]


@op("MatMulInteger", since=10, scratch=_matmul_int_scratch)
def matmul_integer(ctx, a, b, a_zero=None, b_zero=None):
    """(A - a_zero) @ (B - b_zero) in int32, computed exactly by float64 BLAS.

    8-bit products summed over fewer than 2**37 terms are exact in float64.
    """
    xp = ctx.xp
    shape = matmul_shape(a.shape, b.shape, "MatMulInteger")
    af = ctx.scratch(a.shape, np.float64)
    bf = ctx.scratch(b.shape, np.float64)
    prod = ctx.scratch(shape, np.float64)
    xp.copyto(af, a)
    xp.copyto(bf, b)
    if a_zero is not None:
        # a per-row zero point has shape (M,) or (..., M, 1): align it with A's rows
        az = a_zero.astype(np.float64)
        if az.ndim == 1 and az.size > 1 and a.ndim >= 2:
            az = az.reshape(-1, 1)
        af -= az
    if b_zero is not None:
        bf -= b_zero.astype(np.float64)
    out = ctx.out(0, shape, np.int32)
    if a.shape[-1] == 0:
        out.fill(0)
        return out
    xp.matmul(af, bf, out=prod)
    xp.copyto(out, prod, casting="unsafe")
    return out


def _qlinear_matmul_scratch(attrs, shapes, dtypes):
    return _matmul_int_scratch(attrs, [shapes[0], shapes[3]], [dtypes[0], dtypes[3]])


def _zero_aligned(z, rows_axis):
    """A zero point/scale as float64, per-row ones shaped to broadcast against A's rows."""
    z = z.astype(np.float64)
    if z.size > 1 and rows_axis:
        return z.reshape(z.shape + (1,)) if z.ndim == 1 else z
    return z


@op("QLinearMatMul", since=10, scratch=_qlinear_matmul_scratch)
def qlinear_matmul(ctx, a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero):
    """Quantized matmul: exact integer product, rescaled by a_scale*b_scale/y_scale, rounded and saturated."""
    from gpuinfer.ops.conv_integer import requantize

    xp = ctx.xp
    shape = matmul_shape(a.shape, b.shape, "QLinearMatMul")
    af = ctx.scratch(a.shape, np.float64)
    bf = ctx.scratch(b.shape, np.float64)
    acc = ctx.scratch(shape, np.float64)
    xp.copyto(af, a)
    xp.copyto(bf, b)
    af -= _zero_aligned(a_zero, a.ndim >= 2)
    bf -= b_zero.astype(np.float64)
    xp.matmul(af, bf, out=acc)
    mult = _zero_aligned(a_scale, a.ndim >= 2) * b_scale.astype(np.float64) / y_scale.astype(np.float64)
    out = ctx.out(0, shape, y_zero.dtype)
    return requantize(xp, acc, mult, y_zero.astype(np.float64), out)


def _einsum_shape(equation, shapes):
    """Output shape of an einsum ``equation`` over operands of ``shapes`` (implicit or explicit form)."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise NodeExecutionError(f"Einsum: equation {equation!r} has {len(terms)} operands, got {len(shapes)}")
    sizes, ell_shapes, counts = {}, [], {}
    for term, shape in zip(terms, shapes):
        letters = term.replace("...", "")
        n_ell = len(shape) - len(letters) if "..." in term else 0
        if n_ell < 0 or ("..." not in term and len(letters) != len(shape)):
            raise NodeExecutionError(f"Einsum: term {term!r} does not match operand shape {tuple(shape)}")
        head, _, tail = term.partition("...")
        if "..." not in term:
            head, tail = term, ""
        dims = list(shape)
        for ch, d in zip(head, dims[:len(head)]):
            sizes[ch] = d if sizes.get(ch, 1) == 1 else sizes[ch]
            counts[ch] = counts.get(ch, 0) + 1
        for ch, d in zip(tail, dims[len(dims) - len(tail):] if tail else []):
            sizes[ch] = d if sizes.get(ch, 1) == 1 else sizes[ch]
            counts[ch] = counts.get(ch, 0) + 1
        ell_shapes.append(tuple(dims[len(head):len(head) + n_ell]))
    ell = np.broadcast_shapes(*ell_shapes) if ell_shapes else ()
    if not arrow:
        rhs = ("..." if any(ell_shapes) or "..." in lhs else "") + "".join(
            sorted(ch for ch, n in counts.items() if n == 1))
    shape = []
    head, _, tail = rhs.partition("...")
    for ch in head:
        shape.append(sizes[ch])
    if "..." in rhs:
        shape.extend(ell)
        for ch in tail:
            shape.append(sizes[ch])
    return tuple(int(d) for d in shape)


@op("Einsum", since=12)
def einsum(ctx, *inputs):
    """Einstein summation, written straight into the output buffer."""
    equation = ctx.attr("equation")
    if isinstance(equation, bytes):
        equation = equation.decode()
    if not re.fullmatch(r"[A-Za-z,.\->\s]*", equation):
        raise NodeExecutionError(f"Einsum: malformed equation {equation!r}")
    shape = _einsum_shape(equation, [x.shape for x in inputs])
    dtype = np.result_type(*[x.dtype for x in inputs])
    out = ctx.out(0, shape, dtype)
    if math.prod(shape) == 0:
        return out
    eq = equation.replace(" ", "")
    xp = ctx.xp
    optimize = len(inputs) > 2
    if dtype.kind not in "biufc":  # bfloat16 and friends: numpy's einsum has no loop for them
        xp.copyto(out, xp.einsum(eq, *[x.astype(np.float32) for x in inputs], optimize=optimize), casting="unsafe")
    elif ctx.caps.einsum_out:
        xp.einsum(eq, *inputs, out=out, optimize=optimize)
    else:  # cupy's einsum takes no out=
        xp.copyto(out, xp.einsum(eq, *inputs))
    return out
