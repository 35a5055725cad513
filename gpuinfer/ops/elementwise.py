"""Unary elementwise kernels: activations, math functions, predicates, Clip, Identity, Dropout.

Most are in-place safe (``inplace=True``): every step reads ``x`` before the output element is
written, or works on chunk-sized scratch buffers first.  Ops needing temporaries run over the
flattened input in chunks of ``_CHUNK`` elements on the CPU, so their planned scratch stays small
and fixed; a device scales the chunk by its ``caps.tile_bytes`` (ops/tiles.py: one chunk on a GPU).
"""
from __future__ import annotations

import math

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.values import OptionalValue, TensorSequence
from gpuinfer.backends.numpy_threads import ALIGN, SPLIT_MIN_BYTES, row_blocks, run_blocks, split_flat
from gpuinfer.ops.registry import op
from gpuinfer.ops.tiles import CPU_TILE_BYTES, scaled, tile_bytes_of

_CHUNK = 1 << 16  # elements per chunk for ops that need temporaries (CPU; see chunk_elements)
# ... and at most a sixteenth of the tensor, _CHUNK_MIN elements at least (scaled like _CHUNK): a
# whole-tensor chunk was the biggest scratch of small models' busiest steps (PP-OCR cls's
# hard-swish: arena 1.32x the tensors' bound).
_CHUNK_SHARE = 16
_CHUNK_MIN = 1 << 12


def _work_dtype(dtype) -> np.dtype:
    """The dtype temporaries use: float32 for half floats, else the input's own dtype."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype.kind == "f" and dtype.itemsize < 4 else dtype


def chunk_elements(tile_bytes=CPU_TILE_BYTES) -> int:
    """Elements per chunk on a device whose tiles are ``tile_bytes``: ``_CHUNK`` on the CPU."""
    return scaled(_CHUNK, tile_bytes)


def chunk_for(n: int, tile_bytes=CPU_TILE_BYTES, slack_elements: int = 0) -> int:
    """Elements per chunk of an ``n``-element tensor (see _CHUNK_SHARE; whole tensors on a GPU),
    widened by up to ``slack_elements`` (the plan's spare scratch at this step, ``scratch_slack``,
    in chunk elements), never past ``_CHUNK``: fewer chunks, fewer Python passes of the same
    elementwise arithmetic."""
    least = max(scaled(_CHUNK_MIN, tile_bytes), -(-n // _CHUNK_SHARE))
    most = chunk_elements(tile_bytes)
    if slack_elements > 0:
        least = max(least, min(most, least + slack_elements) // ALIGN * ALIGN)
    return min(n, most, least)


def _slack_elements(slack: int, dtypes: list) -> int:
    """Chunk elements ``slack`` spare bytes buy when each element takes one of each of ``dtypes``."""
    per_element = sum(np.dtype(d).itemsize for d in dtypes)
    return slack // per_element if per_element else 0


def chunk_scratch(*kinds):
    """Scratch declaration for ``chunked``: one chunk-sized buffer per kind (None = work dtype)."""

    def fn(attrs, shapes, dtypes, tile_bytes=CPU_TILE_BYTES, scratch_slack=0):
        n = math.prod(shapes[0]) if shapes and shapes[0] is not None else 0
        types = [_work_dtype(dtypes[0]) if k is None else np.dtype(k) for k in kinds]
        c = chunk_for(n, tile_bytes, _slack_elements(scratch_slack, types))
        return [((c,), t) for t in types]

    return fn


# A thread's share of a chunk must hold at least this many elements for a chunked op to be split
# over the run's threads: each share is worked in chunks of its own, and below this the Python
# passes per chunk cost more than the second thread gives (PP-OCRv4 rec's 28 hard-swish chains,
# 1x240x12x80 and the like: 7.2 ms a run split into shares of 3,600 elements, 4.6 ms unsplit, in
# ``python bench/profile_model.py shared/ch_PP-OCRv4_rec_infer.onnx --mode arena --runs 20`` run
# as is and with the split turned off by a throwaway patch of SPLIT_MIN_BYTES).
MIN_THREAD_CHUNK = 1 << 14


def chunked(ctx, x, kinds, body):
    """Run ``body(x_chunk, out_chunk, *tmps)`` over flat chunks; tmps are scratch of each kind.

    Big inputs go in row blocks over the run's threads (backends/numpy_threads.py): block ``b``
    of ``B`` works in chunks of ``c // B`` through its own slice of the same scratch, so the
    scratch is shared out, not multiplied; as many blocks as leave each ``MIN_THREAD_CHUNK``
    elements or more.

    Inside a fused step the chunk grows into what the producer's spent scratch holds
    (``ctx.lent_room``, up to ``_CHUNK``): a Python pass per chunk is most of a small chunk's cost
    (nudenet's 57 SiLUs, 3.4M elements a run: 6.3 -> 5.1 ms, ``ops/fused.py``)."""
    out = ctx.out(0, x.shape, x.dtype)
    n = int(x.size)
    types = [_work_dtype(x.dtype) if k is None else np.dtype(k) for k in kinds]
    tile = tile_bytes_of(ctx)
    c = chunk_for(n, tile, _slack_elements(ctx.scratch_slack, types))
    room = ctx.lent_room(sum(t.itemsize for t in types), len(types))
    if room > c:  # spent bytes of a fused step's producer: wider chunks, fewer Python passes
        c = max(c, min(n, chunk_elements(tile), room // ALIGN * ALIGN))
    tmps = [ctx.scratch((c,), t) for t in types]
    xf, of = x.reshape(-1), out.reshape(-1)

    def run(s0, e0, tmp_slices, size):
        for s in range(s0, e0, max(size, 1)):
            e = min(s + size, e0)
            body(xf[s:e], of[s:e], *(t[: e - s] for t in tmp_slices))

    blocks = row_blocks(ctx, n, x.itemsize, ALIGN, most=c // MIN_THREAD_CHUNK) \
        if x.nbytes >= SPLIT_MIN_BYTES and x.flags.c_contiguous and out.flags.c_contiguous else [(0, n)]
    share = c // len(blocks) // ALIGN * ALIGN  # scratch elements per block
    if len(blocks) == 1 or not share:
        run(0, n, tmps, c)
        return out
    run_blocks(blocks, lambda i, s0, e0: run(s0, e0, [t[i * share:(i + 1) * share] for t in tmps], share))
    return out


def _unary(name, since, ufunc_name, doc):
    """Register a one-ufunc op: out = xp.<ufunc>(x)."""

    def kernel(ctx, x):
        out = ctx.out(0, x.shape, x.dtype)
        fn = getattr(ctx.xp, ufunc_name)
        if x.nbytes < SPLIT_MIN_BYTES:
            return fn(x, out=out)
        split_flat(ctx, lambda o, xb: fn(xb, out=o), out, x)  # big: row blocks over the run's threads
        return out

    kernel.__name__ = kernel.__qualname__ = name.lower()
    kernel.__doc__ = doc
    op(name, since=since, inplace=True)(kernel)


for _name, _since, _fn, _doc in [
    ("Tanh", 1, "tanh", "Hyperbolic tangent."),
    ("Exp", 1, "exp", "e to the power x."),
    ("Log", 1, "log", "Natural logarithm (-inf at 0, NaN below)."),
    ("Sqrt", 1, "sqrt", "Square root (NaN for negatives)."),
    ("Abs", 1, "absolute", "Absolute value, any numeric type."),
    ("Neg", 1, "negative", "Negation, any signed type."),
    ("Reciprocal", 1, "reciprocal", "1 / x."),
    ("Floor", 1, "floor", "Round toward -inf."),
    ("Ceil", 1, "ceil", "Round toward +inf."),
    ("Round", 11, "rint", "Round half to even, as the spec requires."),
    ("Sign", 9, "sign", "-1, 0 or 1 by sign, any numeric type."),
    ("Not", 1, "logical_not", "Boolean negation."),
    ("Sin", 7, "sin", "Sine."),
    ("Cos", 7, "cos", "Cosine."),
    ("Tan", 7, "tan", "Tangent."),
    ("Asin", 7, "arcsin", "Arc sine."),
    ("Acos", 7, "arccos", "Arc cosine."),
    ("Atan", 7, "arctan", "Arc tangent."),
    ("Sinh", 9, "sinh", "Hyperbolic sine."),
    ("Cosh", 9, "cosh", "Hyperbolic cosine."),
    ("Asinh", 9, "arcsinh", "Inverse hyperbolic sine."),
    ("Acosh", 9, "arccosh", "Inverse hyperbolic cosine."),
    ("Atanh", 9, "arctanh", "Inverse hyperbolic tangent."),
]:
    _unary(_name, _since, _fn, _doc)


# numpy's clip ufunc itself: ``np.clip`` reaches it through three Python wrappers that cost ~4 us a
# call, more than the whole pass on a small tensor (16 elements: 5.3 us vs 1.3 us; same results).
_CLIP_UFUNC = getattr(getattr(getattr(np, "_core", None), "umath", None), "clip", None)
if not isinstance(_CLIP_UFUNC, np.ufunc):  # another numpy layout: np.clip, wrappers and all
    _CLIP_UFUNC = None


def _clip(xp, x, lo, hi, out):
    # numpy's private clip ufunc takes host numpy arrays only: asked of the operands, as clamp's
    # callers pass no context (a device array goes to its module's clip)
    if _CLIP_UFUNC is not None and isinstance(x, np.ndarray) and isinstance(out, np.ndarray):
        return _CLIP_UFUNC(x, lo, hi, out=out)
    return xp.clip(x, lo, hi, out=out)


def clamp(xp, x, lo, hi, out):
    """out = min(max(x, lo), hi); a None bound is no bound.  One ``clip`` pass: for float32, numpy's
    clip runs ~2.5x faster than ``maximum``/``minimum`` with a scalar, and NaN passes through both."""
    if x.dtype.kind == "f":
        lo = -np.inf if lo is None else lo
        hi = np.inf if hi is None else hi
        return _clip(xp, x, lo, hi, out)
    if lo is not None and hi is not None:
        return _clip(xp, x, lo, hi, out)
    if lo is not None:
        return xp.maximum(x, lo, out=out)
    if hi is not None:
        return xp.minimum(x, hi, out=out)
    xp.copyto(out, x)
    return out


def _scalar(x, value):
    """An attribute value as a scalar of x's dtype (no float64 promotion)."""
    return _work_dtype(x.dtype).type(value)


# float dtype -> (0, inf) as scalars of that dtype: the same clip, without numpy converting two
# Python scalars on every call (0.75 -> 0.52 us on a small tensor, a quarter of a tiny Relu's time)
_RELU_BOUNDS: dict = {}


@op("Relu", since=1, inplace=True)
def relu(ctx, x):
    """max(x, 0), for float and signed integer types."""
    out = ctx.out(0, x.shape, x.dtype)
    if x.dtype.kind != "f":
        return clamp(ctx.xp, x, 0, None, out)
    bounds = _RELU_BOUNDS.get(x.dtype)
    if bounds is None:
        bounds = _RELU_BOUNDS[x.dtype] = (x.dtype.type(0), x.dtype.type(np.inf))
    if x.nbytes < SPLIT_MIN_BYTES:
        return _clip(ctx.xp, x, bounds[0], bounds[1], out)
    split_flat(ctx, lambda o, xb: _clip(ctx.xp, xb, bounds[0], bounds[1], o), out, x)
    return out


@op("Sigmoid", since=1, inplace=True)
def sigmoid(ctx, x):
    """1 / (1 + e^-x): e^-x overflowing to inf gives the right limit 0, and small results keep
    full relative precision (unlike the tanh form, which numpy also runs 2x slower than exp)."""
    xp = ctx.xp
    out = ctx.out(0, x.shape, x.dtype)

    def passes(o, xb):
        xp.negative(xb, out=o)
        xp.exp(o, out=o)
        xp.add(o, 1, out=o)
        xp.divide(1, o, out=o)  # the same IEEE quotient; numpy runs it ~2x faster than reciprocal

    split_flat(ctx, passes, out, x)  # big: the four passes per row block, each block in cache
    return out


@op("HardSigmoid", since=1, inplace=True)
def hard_sigmoid(ctx, x):
    """max(0, min(1, alpha*x + beta))."""
    xp = ctx.xp
    out = ctx.out(0, x.shape, x.dtype)
    alpha, beta = _scalar(x, ctx.attr("alpha", 0.2)), _scalar(x, ctx.attr("beta", 0.5))

    def passes(o, xb):
        xp.multiply(xb, alpha, out=o)
        xp.add(o, beta, out=o)
        clamp(xp, o, 0, 1, o)

    split_flat(ctx, passes, out, x)
    return out


@op("HardSwish", since=14, inplace=True, scratch=chunk_scratch(None))
def hard_swish(ctx, x):
    """x * max(0, min(1, x/6 + 1/2))."""
    xp = ctx.xp

    def body(xc, oc, t):
        xp.multiply(xc, _scalar(x, 1.0 / 6.0), out=t)
        xp.add(t, 0.5, out=t)
        clamp(xp, t, 0, 1, t)
        xp.multiply(xc, t, out=oc)

    return chunked(ctx, x, [None], body)


@op("LeakyRelu", since=1, inplace=True, scratch=chunk_scratch(None))
def leaky_relu(ctx, x):
    """x for x >= 0 else alpha*x, as max(x,0) + alpha*min(x,0) (right for any alpha)."""
    xp = ctx.xp
    alpha = _scalar(x, ctx.attr("alpha", 0.01))

    def body(xc, oc, t):
        clamp(xp, xc, None, 0, t)
        xp.multiply(t, alpha, out=t)
        clamp(xp, xc, 0, None, oc)
        xp.add(oc, t, out=oc)

    return chunked(ctx, x, [None], body)


def _elu_into(xp, xc, oc, t, alpha, gamma=None):
    """oc = [gamma*] (max(x,0) + alpha*expm1(min(x,0)))."""
    clamp(xp, xc, None, 0, t)
    xp.expm1(t, out=t)
    xp.multiply(t, alpha, out=t)
    clamp(xp, xc, 0, None, oc)
    xp.add(oc, t, out=oc)
    if gamma is not None:
        xp.multiply(oc, gamma, out=oc)


@op("Elu", since=1, inplace=True, scratch=chunk_scratch(None))
def elu(ctx, x):
    """x for x >= 0 else alpha*(e^x - 1)."""
    alpha = _scalar(x, ctx.attr("alpha", 1.0))
    return chunked(ctx, x, [None], lambda xc, oc, t: _elu_into(ctx.xp, xc, oc, t, alpha))


@op("Selu", since=1, inplace=True, scratch=chunk_scratch(None))
def selu(ctx, x):
    """gamma * (x for x > 0 else alpha*(e^x - 1))."""
    alpha = _scalar(x, ctx.attr("alpha", 1.67326319217681884765625))
    gamma = _scalar(x, ctx.attr("gamma", 1.05070102214813232421875))
    return chunked(ctx, x, [None], lambda xc, oc, t: _elu_into(ctx.xp, xc, oc, t, alpha, gamma))


@op("Celu", since=12, inplace=True, scratch=chunk_scratch(None))
def celu(ctx, x):
    """max(0, x) + min(0, alpha*(e^(x/alpha) - 1))."""
    xp = ctx.xp
    alpha = _scalar(x, ctx.attr("alpha", 1.0))

    def body(xc, oc, t):
        xp.divide(xc, alpha, out=t)
        clamp(xp, t, None, 0, t)
        xp.expm1(t, out=t)
        xp.multiply(t, alpha, out=t)
        clamp(xp, xc, 0, None, oc)
        xp.add(oc, t, out=oc)

    return chunked(ctx, x, [None], body)


@op("Softplus", since=1, inplace=True)
def softplus(ctx, x):
    """log(1 + e^x), via logaddexp so large x does not overflow."""
    with np.errstate(all="ignore"):
        return ctx.xp.logaddexp(x, 0, out=ctx.out(0, x.shape, x.dtype))


@op("Softsign", since=1, inplace=True, scratch=chunk_scratch(None))
def softsign(ctx, x):
    """x / (1 + |x|)."""
    xp = ctx.xp

    def body(xc, oc, t):
        xp.absolute(xc, out=t)
        xp.add(t, 1, out=t)
        xp.divide(xc, t, out=oc)

    return chunked(ctx, x, [None], body)


@op("Mish", since=18, inplace=True, scratch=chunk_scratch(None, None))
def mish(ctx, x):
    """x * tanh(softplus(x)), using tanh(log(1 + e)) = n / (n + 2) with n = e(e + 2), e = e^x
    (x capped at 20, where the factor is 1 in float32): only fast exp/mul/div passes."""
    xp = ctx.xp

    def body(xc, oc, t, n):
        xp.minimum(xc, 20, out=t)
        xp.exp(t, out=t)
        xp.add(t, 2, out=n)
        xp.multiply(n, t, out=n)
        xp.add(n, 2, out=t)
        xp.divide(n, t, out=n)
        xp.multiply(xc, n, out=oc)

    return chunked(ctx, x, [None, None], body)


def _swish_into(xp, xc, oc, t, alpha):
    """oc = xc / (1 + e^(-alpha*xc)), i.e. xc * sigmoid(alpha*xc)."""
    xp.multiply(xc, -alpha, out=t)
    xp.exp(t, out=t)
    xp.add(t, 1, out=t)
    xp.divide(xc, t, out=oc)


@op("Swish", since=24, inplace=True, scratch=chunk_scratch(None))
def swish(ctx, x):
    """x * sigmoid(alpha * x)."""
    alpha = _scalar(x, ctx.attr("alpha", 1.0))
    return chunked(ctx, x, [None], lambda xc, oc, t: _swish_into(ctx.xp, xc, oc, t, alpha))


@op("SwiGLU", since=28, inplace=True, scratch=chunk_scratch(None))
def swiglu(ctx, a, b):
    """Swish_alpha(a) * b for same-shaped gate a and value b (no broadcasting)."""
    xp = ctx.xp
    if tuple(a.shape) != tuple(b.shape):
        raise NodeExecutionError(f"SwiGLU: A {a.shape} and B {b.shape} must have the same shape")
    alpha = _scalar(a, ctx.attr("alpha", 1.0))
    bf = b.reshape(-1)
    pos = [0]

    def body(ac, oc, t):
        s, e = pos[0], pos[0] + ac.size
        pos[0] = e
        _swish_into(xp, ac, t, t, alpha)
        xp.multiply(t, bf[s:e], out=oc)

    return chunked(ctx, a, [None], body)


# erf(x) ~= tanh(x * P(x^2)) on [-4, 4] (erf(4) rounds to 1 in float32, and so does the tanh
# there): P fits atanh(erf(x)) / x, weighted by how much an error in it moves erf (1 - erf^2) and
# by 1 / erf for relative precision near 0, by iterated least squares (made for gpuinfer).  In
# float32 its largest error is 1.7e-7 absolute, 2.6e-7 relative (test_erf_accuracy_and_range in
# tests/ops/test_elementwise.py); 16 numpy passes where the rational fit it replaced took 28
# (and was less precise: 3.3e-7).
_ERF_P = (1.1283792744548584, 0.10276905193390665, -0.00019181663159447695, -0.0006198014347021708,
          8.764535660580129e-05, -5.670079852684025e-06, 1.4196228138648718e-07)


def _erf_into(xp, x, out, t, acc):
    """out = erf(x) with two temporaries of x's size; ``out`` may be ``x`` (read once, first)."""
    clamp(xp, x, -4, 4, out)  # the clip ufunc itself: no wrappers, no objects left in their caches
    xp.multiply(out, out, out=t)
    xp.multiply(t, _ERF_P[-1], out=acc)  # Horner's rule on t = x^2
    xp.add(acc, _ERF_P[-2], out=acc)
    for c in _ERF_P[-3::-1]:
        xp.multiply(acc, t, out=acc)
        xp.add(acc, c, out=acc)
    xp.multiply(out, acc, out=out)
    xp.tanh(out, out=out)


@op("Erf", since=9, inplace=True, scratch=chunk_scratch(None, None))
def erf(ctx, x):
    """Gauss error function, tanh(x * P(x^2)) in the work dtype (no scipy)."""
    xp = ctx.xp
    return chunked(ctx, x, [None, None], lambda xc, oc, t, acc: _erf_into(xp, xc, oc, t, acc))


def _gelu_scratch(attrs, shapes, dtypes, tile_bytes=CPU_TILE_BYTES, scratch_slack=0):
    kinds = (None,) if attrs.get("approximate", "none") == "tanh" else (None, None, None)
    return chunk_scratch(*kinds)(attrs, shapes, dtypes, tile_bytes, scratch_slack)


@op("Gelu", since=20, inplace=True, scratch=_gelu_scratch)
def gelu(ctx, x):
    """0.5*x*(1 + erf(x/sqrt 2)), or the tanh approximation when approximate='tanh'."""
    xp = ctx.xp
    approximate = ctx.attr("approximate", "none")
    if approximate == "tanh":
        c = _scalar(x, math.sqrt(2.0 / math.pi))

        def body(xc, oc, t):
            xp.multiply(xc, xc, out=t)
            xp.multiply(t, 0.044715, out=t)
            xp.add(t, 1, out=t)
            xp.multiply(t, xc, out=t)
            xp.multiply(t, c, out=t)
            xp.tanh(t, out=t)
            xp.add(t, 1, out=t)
            xp.multiply(t, 0.5, out=t)
            xp.multiply(xc, t, out=oc)

        return chunked(ctx, x, [None], body)
    if approximate != "none":
        raise NodeExecutionError(f"Gelu: approximate must be 'none' or 'tanh', got {approximate!r}")

    def body3(xc, oc, t0, t1, t2):
        xp.multiply(xc, _scalar(x, 1.0 / math.sqrt(2.0)), out=t0)
        _erf_into(xp, t0, t0, t1, t2)
        xp.add(t0, 1, out=t0)
        xp.multiply(t0, 0.5, out=t0)
        xp.multiply(xc, t0, out=oc)

    return chunked(ctx, x, [None, None, None], body3)


@op("ThresholdedRelu", since=10, inplace=True, scratch=chunk_scratch(np.bool_))
def thresholded_relu(ctx, x):
    """x where x > alpha, else 0."""
    xp = ctx.xp
    alpha = _scalar(x, ctx.attr("alpha", 1.0))

    def body(xc, oc, b):
        xp.greater(xc, alpha, out=b)
        xp.logical_not(b, out=b)
        xp.copyto(oc, xc)
        xp.copyto(oc, 0, where=b)

    return chunked(ctx, x, [np.bool_], body)


@op("Shrink", since=9, inplace=True, scratch=chunk_scratch(None, np.bool_))
def shrink(ctx, x):
    """x - bias where x > lambd, x + bias where x < -lambd, else 0."""
    xp = ctx.xp
    lambd = float(ctx.attr("lambd", 0.5))
    bias = float(ctx.attr("bias", 0.0))
    wt = _work_dtype(x.dtype)
    if wt.kind == "f":
        bias = wt.type(bias)

    def body(xc, oc, t, b):
        t[...] = 0
        xp.greater(xc, lambd, out=b)
        xp.subtract(xc, bias, out=t, where=b, casting="unsafe")
        xp.less(xc, -lambd, out=b)
        xp.add(xc, bias, out=t, where=b, casting="unsafe")
        xp.copyto(oc, t)

    def masked_body(xc, oc, t, b):  # no where= on ufuncs (CuPy): masks go to copyto
        xp.subtract(xc, bias, out=t, casting="unsafe")
        xp.greater(xc, lambd, out=b)
        xp.logical_not(b, out=b)  # not above lambd, NaN included (neither above nor below: 0)
        xp.copyto(t, 0, where=b)  # t: x - bias above lambd, else 0
        xp.less(xc, -lambd, out=b)
        xp.add(xc, bias, out=oc, casting="unsafe")  # x is read for the last time (oc may be x)
        xp.logical_not(b, out=b)
        xp.copyto(oc, t, where=b, casting="unsafe")  # x + bias below -lambd (wins, as above), else t

    return chunked(ctx, x, [None, np.bool_], body if ctx.caps.ufunc_where else masked_body)


def _bound(ctx, x, value):
    """A Clip bound (attribute number or 1-element tensor) as a scalar of x's dtype, or None."""
    if value is None:
        return None
    if not isinstance(value, (int, float)):
        value = ctx.host(value)
        if value.size == 0:
            return None
        value = value.reshape(-1)[0].item()
    return x.dtype.type(value)


def _clip_into(ctx, x, lo, hi):
    out = ctx.out(0, x.shape, x.dtype)
    split_flat(ctx, lambda o, xb: clamp(ctx.xp, xb, lo, hi, o), out, x)
    return out


@op("Clip", since=1, inplace=True)
def clip_v1(ctx, x):
    """Clip with min/max attributes (opset < 11); absent bounds mean unbounded."""
    return _clip_into(ctx, x, _bound(ctx, x, ctx.attr("min")), _bound(ctx, x, ctx.attr("max")))


@op("Clip", since=11, inplace=True)
def clip_v11(ctx, x, lo=None, hi=None):
    """Clip with optional scalar min/max inputs; min > max gives max everywhere, as the spec says."""
    return _clip_into(ctx, x, _bound(ctx, x, lo), _bound(ctx, x, hi))


@op("IsNaN", since=9)
def is_nan(ctx, x):
    """Boolean mask of NaN elements."""
    return ctx.xp.isnan(x, out=ctx.out(0, x.shape, np.bool_))


@op("IsInf", since=10)
def is_inf(ctx, x):
    """Boolean mask of infinities, optionally only +inf or only -inf."""
    xp = ctx.xp
    out = ctx.out(0, x.shape, np.bool_)
    pos, neg = ctx.attr("detect_positive", 1), ctx.attr("detect_negative", 1)
    if pos and neg:
        return xp.isinf(x, out=out)
    if pos:
        return xp.equal(x, np.inf, out=out)
    if neg:
        return xp.equal(x, -np.inf, out=out)
    out[...] = False
    return out


@op("Identity", since=1, inplace=True)
def identity(ctx, x):
    """A copy of the input (sequences and optionals pass through as they are)."""
    if isinstance(x, TensorSequence):
        return (TensorSequence(x),)
    if isinstance(x, OptionalValue):
        return (x,)
    out = ctx.out(0, x.shape, x.dtype)
    ctx.xp.copyto(out, x)
    return out


@op("Dropout", since=1, inplace=True)
def dropout(ctx, x, ratio=None, training_mode=None):
    """Inference: a copy of x and an all-true mask; training_mode (opset 12+) drops at random."""
    xp = ctx.xp
    out = ctx.out(0, x.shape, x.dtype)
    mask_dtype = np.bool_ if ctx.opset >= 10 else x.dtype
    training = training_mode is not None and bool(ctx.host(training_mode).reshape(-1)[0])
    r = 0.5 if ratio is None else float(ctx.host(ratio).reshape(-1)[0])
    if ctx.opset < 12:
        training, r = False, ctx.attr("ratio", 0.5)
    if not training or r == 0.0:
        xp.copyto(out, x)
        if ctx.wants(1):
            mask = ctx.out(1, x.shape, mask_dtype)
            mask[...] = True
            return out, mask
        return out
    # Host RandomState(seed).uniform, the draw the ONNX reference uses, so seeded runs agree.
    keep = xp.asarray(np.random.RandomState(ctx.attr("seed")).uniform(0.0, 1.0, x.shape) >= r)
    xp.multiply(x, keep, out=out)
    xp.multiply(out, x.dtype.type(1.0 / (1.0 - r)), out=out)
    if ctx.wants(1):
        mask = ctx.out(1, x.shape, mask_dtype)
        xp.copyto(mask, keep)
        return out, mask
    return out
