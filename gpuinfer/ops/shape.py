"""Shape and layout kernels: Reshape, Flatten, (Un)Squeeze, Transpose, Concat, Split, Slice, Expand,
Tile, Shape, Size, Constant(OfShape), Range, Depth/SpaceToDepth, EyeLike, Trilu.

Every kernel copies into its output buffer, even when a view would do (Reshape, Squeeze, ...):
aliasing is the planner's decision.  Shape-like inputs are read on the host with ``ctx.host``.
"""
from __future__ import annotations

import math

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.registry import op


def _ints(ctx, t):
    """A shape-like tensor input (or attribute list) as a list of Python ints; None stays None."""
    if t is None:
        return None
    if isinstance(t, (list, tuple)):
        return [int(v) for v in t]
    values = ctx.host(t).reshape(-1)
    if values.dtype.kind in "iu":  # tolist() already gives Python ints (the usual int64 shapes)
        return values.tolist()
    return [int(v) for v in values.tolist()]


def _tensor_attr(value):
    """A tensor attribute as numpy (the runtime gives np.ndarray; a raw TensorProto also works)."""
    if value is None or isinstance(value, np.ndarray):
        return value
    if hasattr(value, "data_type"):
        from onnx import numpy_helper

        return numpy_helper.to_array(value)
    return np.asarray(value)


def _axis(op_type, axis, rank, allow_end=False):
    """Normalize a possibly negative axis against ``rank`` (``rank`` itself allowed if allow_end)."""
    hi = rank + 1 if allow_end else rank
    if not -rank <= axis < hi:
        raise NodeExecutionError(f"{op_type}: axis {axis} out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _copy_out(ctx, src, shape=None, dtype=None):
    """Copy ``src`` (any view or broadcast) into a fresh output 0 of ``shape``."""
    shape = src.shape if shape is None else tuple(map(int, shape))
    out = ctx.out(0, shape, src.dtype if dtype is None else dtype)
    ctx.xp.copyto(out, src.reshape(shape) if src.shape != shape else src)
    return out


# ---------------------------------------------------------------------------------- reshaping


def _reshape_target(x, shape, allowzero):
    dims = []
    for i, s in enumerate(shape):
        if s == 0 and not allowzero:
            if i >= x.ndim:
                raise NodeExecutionError(f"Reshape: 0 at position {i} but input rank is {x.ndim}")
            s = int(x.shape[i])
        dims.append(s)
    if dims.count(-1) > 1:
        raise NodeExecutionError(f"Reshape: more than one -1 in shape {shape}")
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        if known == 0 or x.size % known:
            raise NodeExecutionError(f"Reshape: cannot infer -1 in {shape} for input {x.shape}")
        dims[dims.index(-1)] = x.size // known
    if math.prod(dims) != x.size or any(d < 0 for d in dims):
        raise NodeExecutionError(f"Reshape: cannot reshape {x.shape} to {shape}")
    return tuple(dims)


@op("Reshape", since=1, inplace=True)
def reshape_v1(ctx, x):
    """Reshape to the ``shape`` attribute (0 copies the input dim, -1 is inferred)."""
    return _copy_out(ctx, x, _reshape_target(x, _ints(ctx, ctx.attr("shape", [])), False))


@op("Reshape", since=5, inplace=True)
def reshape(ctx, x, shape):
    """Reshape to the ``shape`` input; 0 copies the input dim unless allowzero=1, -1 is inferred."""
    return _copy_out(ctx, x, _reshape_target(x, _ints(ctx, shape), bool(ctx.attr("allowzero", 0))))


@op("Flatten", since=1, inplace=True)
def flatten(ctx, x):
    """2-D view: dims before ``axis`` times dims from ``axis`` on."""
    axis = _axis("Flatten", int(ctx.attr("axis", 1)), x.ndim, allow_end=True)
    return _copy_out(ctx, x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))


@op("Squeeze", since=1, inplace=True)
def squeeze(ctx, x, axes=None):
    """Drop the given size-1 axes (attribute before opset 13, input after), or all size-1 axes."""
    axes = _ints(ctx, axes) if axes is not None else (ctx.attr("axes") if ctx.opset < 13 else None)
    if axes is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    axes = {_axis("Squeeze", a, x.ndim) for a in axes}
    for a in axes:
        if x.shape[a] != 1:
            raise NodeExecutionError(f"Squeeze: axis {a} has size {x.shape[a]}, expected 1")
    return _copy_out(ctx, x, tuple(d for i, d in enumerate(x.shape) if i not in axes))


@op("Unsqueeze", since=1, inplace=True)
def unsqueeze(ctx, x, axes=None):
    """Insert size-1 axes at positions of the output (attribute before opset 13, input after)."""
    axes = _ints(ctx, axes) if axes is not None else ctx.attr("axes", [])
    rank = x.ndim + len(axes)
    norm = sorted({_axis("Unsqueeze", a, rank) for a in axes})  # axes index the output
    if len(norm) != len(axes):
        raise NodeExecutionError(f"Unsqueeze: repeated axes {axes}")
    dims = list(x.shape)
    for a in norm:
        dims.insert(a, 1)
    return _copy_out(ctx, x, tuple(dims))


@op("Transpose", since=1)
def transpose(ctx, x):
    """Permute axes by ``perm`` (default: reverse them)."""
    perm = ctx.attr("perm")
    perm = list(range(x.ndim))[::-1] if perm is None else [_axis("Transpose", p, x.ndim) for p in perm]
    if sorted(perm) != list(range(x.ndim)):
        raise NodeExecutionError(f"Transpose: perm {perm} is not a permutation of rank {x.ndim}")
    return _copy_out(ctx, x.transpose(perm))


# ---------------------------------------------------------------------------- joining, parts


@op("Concat", since=1)
def concat(ctx, *inputs):
    """Join the inputs along ``axis`` (default 1 in opset 1)."""
    inputs = [x for x in inputs if x is not None]
    rank = inputs[0].ndim
    axis = _axis("Concat", int(ctx.attr("axis", 1)), rank)
    shape = list(inputs[0].shape)
    for x in inputs[1:]:
        if x.ndim != rank or any(x.shape[i] != shape[i] for i in range(rank) if i != axis):
            raise NodeExecutionError(f"Concat: shapes {[tuple(v.shape) for v in inputs]} differ off axis {axis}")
    shape[axis] = sum(int(x.shape[axis]) for x in inputs)
    out = ctx.out(0, shape, inputs[0].dtype)
    pos = 0
    for x in inputs:
        n = int(x.shape[axis])
        index = (slice(None),) * axis + (slice(pos, pos + n),)
        dst = out[index]
        if not ctx.same_memory(dst, x):  # the arena may have made x in place already
            ctx.xp.copyto(dst, x)
        pos += n
    return out


@op("Split", since=1)
def split(ctx, x, split_sizes=None):
    """Cut along ``axis`` by ``split`` (attribute before 13, input after) or into equal parts."""
    xp = ctx.xp
    axis = _axis("Split", int(ctx.attr("axis", 0)), x.ndim)
    dim = int(x.shape[axis])
    sizes = _ints(ctx, split_sizes)
    if sizes is None and ctx.opset < 13:
        sizes = ctx.attr("split")
    if not sizes:
        n = int(ctx.attr("num_outputs", ctx.n_outputs)) if ctx.opset >= 18 else ctx.n_outputs
        if ctx.opset >= 18 and dim % n:
            part = -(-dim // n)
            sizes = [part] * (n - 1) + [dim - part * (n - 1)]
        elif dim % n:
            raise NodeExecutionError(f"Split: axis size {dim} not divisible into {n} outputs")
        else:
            sizes = [dim // n] * n
    if sum(sizes) != dim or any(s < 0 for s in sizes):
        raise NodeExecutionError(f"Split: sizes {sizes} do not add up to axis size {dim}")
    outs, pos = [], 0
    for i, s in enumerate(sizes):
        shape = list(x.shape)
        shape[axis] = s
        out = ctx.out(i, shape, x.dtype)
        xp.copyto(out, x[(slice(None),) * axis + (slice(pos, pos + s),)])
        outs.append(out)
        pos += s
    return tuple(outs)


def _slice_index(op_type, x, starts, ends, axes, steps):
    """A tuple of Python slices implementing ONNX Slice clamping on ``x``."""
    if axes is None:
        axes = list(range(len(starts)))
    if steps is None:
        steps = [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise NodeExecutionError(f"{op_type}: starts/ends/axes/steps lengths differ")
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _axis(op_type, axis, x.ndim)
        dim = int(x.shape[axis])
        if step == 0:
            raise NodeExecutionError(f"{op_type}: step 0 on axis {axis}")
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        index[axis] = slice(start, end if end >= 0 else None, step)
    return tuple(index)


@op("Slice", since=1)
def slice_v1(ctx, x):
    """Slice with starts/ends/axes attributes (step 1)."""
    index = _slice_index("Slice", x, ctx.attr("starts"), ctx.attr("ends"), ctx.attr("axes"), None)
    return _copy_out(ctx, x[index])


@op("Slice", since=10)
def slice_(ctx, x, starts, ends, axes=None, steps=None):
    """Slice with starts/ends/axes/steps inputs; out-of-range bounds clamp as the spec says."""
    index = _slice_index("Slice", x, _ints(ctx, starts), _ints(ctx, ends), _ints(ctx, axes), _ints(ctx, steps))
    return _copy_out(ctx, x[index])


@op("Expand", since=8)
def expand(ctx, x, shape):
    """Broadcast x against ``shape`` (bidirectionally, so 1s in shape keep x's dims)."""
    try:
        target = np.broadcast_shapes(tuple(x.shape), tuple(_ints(ctx, shape)))
    except ValueError:
        raise NodeExecutionError(f"Expand: {x.shape} does not broadcast to {_ints(ctx, shape)}") from None
    out = ctx.out(0, target, x.dtype)
    ctx.xp.copyto(out, x)
    return out


def _tile_into(ctx, x, reps):
    if len(reps) != x.ndim:
        raise NodeExecutionError(f"Tile: {len(reps)} repeats for rank {x.ndim}")
    out = ctx.out(0, [int(d) * r for d, r in zip(x.shape, reps)], x.dtype)
    # out viewed as (r0, d0, r1, d1, ...) receives x broadcast as (1, d0, 1, d1, ...).
    inter = [v for r, d in zip(reps, x.shape) for v in (r, int(d))]
    src = x.reshape([v for d in x.shape for v in (1, int(d))])
    ctx.xp.copyto(out.reshape(inter), src)
    return out


@op("Tile", since=1)
def tile_v1(ctx, x, tiles, axis):
    """Repeat x ``tiles`` times along one ``axis`` (both scalar inputs)."""
    reps = [1] * x.ndim
    reps[_axis("Tile", _ints(ctx, axis)[0], x.ndim)] = _ints(ctx, tiles)[0]
    return _tile_into(ctx, x, reps)


@op("Tile", since=6)
def tile(ctx, x, repeats):
    """Repeat x along every axis by ``repeats``."""
    return _tile_into(ctx, x, _ints(ctx, repeats))


# ----------------------------------------------------------------------------- shape queries


@op("Shape", since=1, shape_only=True)
def shape(ctx, x):
    """The input's shape as int64, sliced by start/end (opset 15) like a Python list."""
    dims = list(x.shape)[int(ctx.attr("start", 0)):ctx.attr("end")]
    out = ctx.out(0, (len(dims),), np.int64)
    out[...] = ctx.xp.asarray(np.array(dims, dtype=np.int64))
    return out


@op("Size", since=1, shape_only=True)
def size(ctx, x):
    """The number of elements, an int64 scalar."""
    out = ctx.out(0, (), np.int64)
    out[...] = int(math.prod(x.shape))
    return out


# -------------------------------------------------------------------------------- generators


@op("ConstantOfShape", since=9)
def constant_of_shape(ctx, shape):
    """A tensor of the given shape filled with ``value`` (float32 0 by default)."""
    value = _tensor_attr(ctx.attr("value"))
    value = np.zeros(1, np.float32) if value is None else value
    out = ctx.out(0, _ints(ctx, shape), value.dtype)
    out[...] = value.reshape(-1)[0]
    return out


@op("Constant", since=1)
def constant(ctx):
    """The tensor held by whichever value attribute is set."""
    for name, dtype in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                        ("value_int", np.int64), ("value_ints", np.int64), ("value_string", object),
                        ("value_strings", object)):
        value = ctx.attr(name)
        if value is None:
            continue
        host = _tensor_attr(value) if dtype is None else np.asarray(value, dtype=dtype)
        out = ctx.out(0, host.shape, host.dtype)
        if host.dtype == object:
            out[...] = host
        else:
            ctx.xp.copyto(out, ctx.xp.asarray(host))
        return out
    raise NodeExecutionError("Constant: no supported value attribute (sparse_value is not supported)")


@op("Range", since=11)
def range_(ctx, start, limit, delta):
    """start, start+delta, ... up to (not including) limit, accumulated as onnxruntime does."""
    xp = ctx.xp
    s, l, d = (ctx.host(v).reshape(-1)[0] for v in (start, limit, delta))
    dtype = np.dtype(start.dtype)
    if d == 0:
        raise NodeExecutionError("Range: delta is 0")
    if dtype.kind in "iu":
        s, l, d = int(s), int(l), int(d)
        n = max(-((s - l) // d), 0)
    else:
        n = max(int(math.ceil((float(l) - float(s)) / float(d))), 0)
    out = ctx.out(0, (n,), dtype)
    if n:
        out[0] = s
        out[1:] = d
        xp.cumsum(out, out=out)
    return out


# ----------------------------------------------------------------------------- rearrangements


def _blocksize(ctx):
    b = int(ctx.attr("blocksize"))
    if b <= 0:
        raise NodeExecutionError(f"{ctx.op_type}: blocksize must be positive, got {b}")
    return b


@op("DepthToSpace", since=1)
def depth_to_space(ctx, x):
    """Move channel blocks into b x b spatial tiles (mode DCR or CRD)."""
    b = _blocksize(ctx)
    if x.ndim != 4 or x.shape[1] % (b * b):
        raise NodeExecutionError(f"DepthToSpace: need NCHW with C divisible by {b * b}, got {x.shape}")
    n, c, h, w = (int(d) for d in x.shape)
    c2 = c // (b * b)
    out = ctx.out(0, (n, c2, h * b, w * b), x.dtype)
    if ctx.attr("mode", "DCR") == "CRD":
        src = x.reshape(n, c2, b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    else:
        src = x.reshape(n, b, b, c2, h, w).transpose(0, 3, 4, 1, 5, 2)
    ctx.xp.copyto(out.reshape(n, c2, h, b, w, b), src)
    return out


@op("SpaceToDepth", since=1)
def space_to_depth(ctx, x):
    """Move b x b spatial tiles into channels (inverse of DepthToSpace; mode CRD from opset 28)."""
    b = _blocksize(ctx)
    if x.ndim != 4 or x.shape[2] % b or x.shape[3] % b:
        raise NodeExecutionError(f"SpaceToDepth: need NCHW with H, W divisible by {b}, got {x.shape}")
    n, c, h, w = (int(d) for d in x.shape)
    out = ctx.out(0, (n, c * b * b, h // b, w // b), x.dtype)
    blocks = x.reshape(n, c, h // b, b, w // b, b)
    if ctx.attr("mode", "DCR") == "CRD":
        ctx.xp.copyto(out.reshape(n, c, b, b, h // b, w // b), blocks.transpose(0, 1, 3, 5, 2, 4))
    else:
        ctx.xp.copyto(out.reshape(n, b, b, c, h // b, w // b), blocks.transpose(0, 3, 5, 1, 2, 4))
    return out


@op("EyeLike", since=9)
def eye_like(ctx, x):
    """A 2-D tensor shaped like x with ones on diagonal ``k`` (dtype attr, else x's dtype)."""
    from gpuinfer.ops.cast import onnx_to_np_dtype

    if x.ndim != 2:
        raise NodeExecutionError(f"EyeLike: input must be 2-D, got shape {x.shape}")
    dtype = x.dtype if ctx.attr("dtype") is None else onnx_to_np_dtype(ctx.attr("dtype"))
    rows, cols = (int(d) for d in x.shape)
    k = int(ctx.attr("k", 0))
    out = ctx.out(0, (rows, cols), dtype)
    out[...] = 0
    n = max(min(rows, cols - k) if k >= 0 else min(cols, rows + k), 0)
    first = k if k >= 0 else -k * cols
    if n:
        out.reshape(-1)[first:first + (n - 1) * (cols + 1) + 1:cols + 1] = 1
    return out


@op("Trilu", since=14, inplace=True)
def trilu(ctx, x, k=None):
    """Keep the upper (default) or lower triangle of the last two dims, offset by diagonal k."""
    xp = ctx.xp
    k = 0 if k is None else _ints(ctx, k)[0]
    out = ctx.out(0, x.shape, x.dtype)
    xp.copyto(out, x)
    if x.ndim < 2:
        raise NodeExecutionError(f"Trilu: input must have rank >= 2, got {x.shape}")
    rows, cols = int(x.shape[-2]), int(x.shape[-1])
    k = max(min(k, cols + 1), -rows - 1)  # huge offsets behave like these; keeps tri() small
    if ctx.attr("upper", 1):
        drop = xp.asarray(np.tri(rows, cols, k - 1, dtype=bool))
    else:
        drop = xp.asarray(~np.tri(rows, cols, k, dtype=bool))
    xp.copyto(out, 0, where=drop)
    return out
