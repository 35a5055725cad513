"""Index-driven kernels: Gather(Elements/ND), Scatter(Elements/ND), TensorScatter, NonZero, TopK,
OneHot, Compress, Unique, CumSum/CumProd, ReverseSequence.

Element-wise index ops turn their indices into flat offsets in an index-sized scratch buffer and
then do one ``take`` (or one scatter) on the flattened data.  Negative indices count from the end;
out-of-range indices raise: at once where arrays live on the host, after the run on a device (a
device flag handed to ``ctx.defer_check``; reading it mid-run would sync).  Ops whose output size
depends on the data (NonZero, Unique, Compress) compute that size on the host.
"""
from __future__ import annotations

import math

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.registry import op


def _axis(op_type, axis, rank):
    """``axis`` in [0, rank); every op here indexes a real axis, so a scalar (rank 0) has none."""
    if not -rank <= axis < rank:
        raise NodeExecutionError(f"{op_type}: axis {axis} out of range for rank {rank}"
                                 + (" (the input is a scalar; the op needs rank >= 1)" if rank == 0 else ""))
    return axis + rank if axis < 0 else axis


def _check_range(ctx, op_type, idx, dim):
    """Indices outside [-dim, dim) are an error.

    Host arrays (and host indices on any device): checked now.  On a device, reading the indices
    would sync mid-run: a device boolean "some index is out of range" goes to the runtime's
    deferred check (``ctx.defer_check(flag, message)``), which reads every flag of the run once,
    after it, and raises.  A context without that hook leaves device indices unchecked (a device
    ``take`` wraps them around)."""
    if idx.size == 0:
        return
    if ctx.caps.host_arrays or isinstance(idx, np.ndarray):
        lo, hi = int(idx.min()), int(idx.max())
        if lo < -dim or hi >= dim:
            raise NodeExecutionError(f"{op_type}: index out of range [{-dim}, {dim - 1}]: got min {lo}, max {hi}")
        return
    defer = getattr(ctx, "defer_check", None)
    if defer is not None:
        xp = ctx.xp
        bad = xp.logical_or(idx.min() < -dim, idx.max() >= dim)  # 0-d device bool: no sync
        defer(bad, f"{op_type}: index out of range [{-dim}, {dim - 1}]")


def _take(ctx, a, idx, axis, out):
    """take into ``out`` without numpy's buffered bounds-check mode (indices already checked; a
    device's take has no mode and wraps)."""
    if ctx.caps.host_arrays:
        return np.take(a, idx, axis=axis, out=out, mode="wrap")
    return ctx.xp.take(a, idx, axis=axis, out=out)


def _strides(shape):
    """C-order element strides of ``shape``."""
    st, acc = [], 1
    for d in reversed(shape):
        st.append(acc)
        acc *= int(d)
    return st[::-1]


def _flat_offsets(ctx, op_type, data_shape, idx, axis, flat):
    """flat = offset into C-contiguous data of each element index (``idx`` along ``axis``)."""
    xp = ctx.xp
    dim = int(data_shape[axis])
    _check_range(ctx, op_type, idx, dim)
    st = _strides(data_shape)
    if dim:
        xp.remainder(idx, dim, out=flat, casting="unsafe")  # -1 -> dim-1
    else:
        flat[...] = 0
    xp.multiply(flat, st[axis], out=flat)
    for d in range(idx.ndim):
        if d != axis and idx.shape[d] > 1:
            shape = [1] * idx.ndim
            shape[d] = int(idx.shape[d])
            xp.add(flat, (xp.arange(int(idx.shape[d]), dtype=np.int64) * st[d]).reshape(shape), out=flat)


def _idx_scratch(attrs, shapes, dtypes):
    """One int64 buffer shaped like the indices (input 1)."""
    return [] if shapes[1] is None else [(tuple(int(d) for d in shapes[1]), np.dtype(np.int64))]


@op("Gather", since=1)
def gather(ctx, x, indices):
    """Pick slices of x along ``axis`` at ``indices`` (negative indices count from the end)."""
    axis = _axis("Gather", int(ctx.attr("axis", 0)), x.ndim)
    dim = int(x.shape[axis])
    _check_range(ctx, "Gather", indices, dim)
    shape = tuple(x.shape[:axis]) + tuple(indices.shape) + tuple(x.shape[axis + 1:])
    out = ctx.out(0, shape, x.dtype)
    if out.size == 0:
        return out
    if dim == 0:
        raise NodeExecutionError("Gather: gathering from an empty axis")
    return _take(ctx, x, indices, axis, out)


@op("GatherElements", since=11, scratch=_idx_scratch)
def gather_elements(ctx, x, indices):
    """out[i][j][k] = x[i][indices[i][j][k]][k] (for axis 1): an index per output element."""
    axis = _axis("GatherElements", int(ctx.attr("axis", 0)), x.ndim)
    if indices.ndim != x.ndim:
        raise NodeExecutionError(f"GatherElements: indices rank {indices.ndim} != data rank {x.ndim}")
    out = ctx.out(0, indices.shape, x.dtype)
    flat = ctx.scratch(indices.shape, np.int64)
    if out.size == 0:
        return out
    _flat_offsets(ctx, "GatherElements", x.shape, indices, axis, flat)
    return _take(ctx, x.reshape(-1), flat, None, out)


def _nd_offsets(ctx, op_type, data_shape, indices, batch_dims, lin):
    """lin = row of each index tuple in data viewed as (batch * prod(indexed dims), rest)."""
    xp = ctx.xp
    k = int(indices.shape[-1])
    block = [int(d) for d in data_shape[batch_dims:batch_dims + k]]
    st = _strides(block)
    lin[...] = 0
    for j, (dim, s) in enumerate(zip(block, st)):
        col = indices[..., j]
        _check_range(ctx, op_type, col, dim)
        if dim:
            xp.add(lin, xp.remainder(col, dim).astype(np.int64, copy=False) * s, out=lin)
    if batch_dims:
        nb = math.prod(int(d) for d in data_shape[:batch_dims])
        shape = [nb] + [1] * (lin.ndim - batch_dims)
        lv = lin.reshape([nb] + list(lin.shape[batch_dims:]))
        xp.add(lv, (xp.arange(nb, dtype=np.int64) * math.prod(block)).reshape(shape), out=lv)
    return math.prod(block)


def _nd_scratch(attrs, shapes, dtypes):
    if shapes[1] is None:
        return []
    return [(tuple(int(d) for d in shapes[1][:-1]), np.dtype(np.int64))]


@op("GatherND", since=11, scratch=_nd_scratch)
def gather_nd(ctx, x, indices):
    """Pick slices of x addressed by the index tuples in the last dim of ``indices`` (batch_dims)."""
    b = int(ctx.attr("batch_dims", 0))
    if x.ndim == 0 or indices.ndim == 0:
        raise NodeExecutionError(f"GatherND: data and indices must have rank >= 1, "
                                 f"got shapes {x.shape} and {indices.shape}")
    k = int(indices.shape[-1])
    if b + k > x.ndim or tuple(indices.shape[:b]) != tuple(x.shape[:b]):
        raise NodeExecutionError(f"GatherND: indices {indices.shape} do not fit data {x.shape} with batch_dims {b}")
    rest = tuple(int(d) for d in x.shape[b + k:])
    out = ctx.out(0, tuple(indices.shape[:-1]) + rest, x.dtype)
    lin = ctx.scratch(indices.shape[:-1], np.int64)
    if out.size == 0:
        return out
    _nd_offsets(ctx, "GatherND", x.shape, indices, b, lin)
    r = math.prod(rest)
    return _take(ctx, x.reshape(-1, r), lin.reshape(-1), 0, out.reshape(-1, r)).reshape(out.shape)


_REDUCTION_UFUNCS = {"add": "add", "mul": "multiply", "max": "maximum", "min": "minimum"}
# The dtypes whose ``ufunc.at`` a device without host arrays does with atomics (CuPy 14's scatter
# ops: add/maximum/minimum only, on these type codes); other reductions and dtypes there run
# ``_segmented_scatter``.  Host arrays (numpy) take every ufunc's ``at`` on every dtype.
DEVICE_SCATTER_DTYPES = {"add": "efdiIL", "maximum": "fdiIlL", "minimum": "fdiIlL"}


def _scatter_apply(ctx, target, where, values, reduction):
    """target[where] (op)= values; repeated indices accumulate for the reductions."""
    if reduction == "none":
        target[where] = values
        return
    name = _REDUCTION_UFUNCS.get(reduction)
    if name is None:
        raise NodeExecutionError(f"Scatter: unknown reduction {reduction!r}")
    ufunc = getattr(ctx.xp, name)
    caps = ctx.caps
    if name in caps.scatter_ufuncs and (caps.host_arrays or target.dtype.char in DEVICE_SCATTER_DTYPES.get(name, "")):
        ufunc.at(target, where, values)
    else:
        _segmented_scatter(ctx.xp, ufunc, target, where, values)


def _segmented_scatter(xp, ufunc, target, where, values):
    """``ufunc.at(target, where, values)`` without ``ufunc.at`` and without a device sync.

    The updates are sorted by target position (stable); each run of equal positions is reduced by
    a log-step inclusive scan inside the run (ceil(log2 n) rounds, each combining an element with
    the one ``shift`` before it when both lie in the same run); every element of a run then reads
    the run's total (at the run's last element) and writes ``ufunc(target, total)``: the writes
    of a run carry the same value, so their order does not matter.  Exact for integers and for
    max/min; floating sums and products are associated differently from a sequential loop (as
    with atomics).  ``target`` is (N,) or (N, r) and ``where`` (n,) positions along axis 0."""
    n = int(where.shape[0])
    if n == 0:
        return
    order = xp.argsort(where, kind="stable")
    pos = where[order]
    acc = values[order]
    first = xp.searchsorted(pos, pos, side="left")
    rank = xp.arange(n, dtype=np.int64) - first  # place of each update inside its run
    lead = (-1,) + (1,) * (acc.ndim - 1)
    shift = 1
    while shift < n:
        reach = (rank[shift:] >= shift).reshape(lead)
        acc[shift:] = xp.where(reach, ufunc(acc[:-shift], acc[shift:]), acc[shift:])
        shift *= 2
    last = xp.searchsorted(pos, pos, side="right") - 1
    target[pos] = ufunc(target[pos], acc[last])


def _scatter_elements(ctx, x, indices, updates, reduction):
    axis = _axis(ctx.op_type, int(ctx.attr("axis", 0)), x.ndim)
    if indices.shape != updates.shape or indices.ndim != x.ndim:
        raise NodeExecutionError(f"{ctx.op_type}: indices {indices.shape} / updates {updates.shape} / data {x.shape}")
    out = ctx.out(0, x.shape, x.dtype)
    ctx.xp.copyto(out, x)
    flat = ctx.scratch(indices.shape, np.int64)
    if indices.size:
        _flat_offsets(ctx, ctx.op_type, x.shape, indices, axis, flat)
        _scatter_apply(ctx, out.reshape(-1), flat.reshape(-1), updates.reshape(-1), reduction)
    return out


@op("ScatterElements", since=11, scratch=_idx_scratch)
def scatter_elements(ctx, x, indices, updates):
    """A copy of x with updates written (or reduced: add/mul/max/min) at per-element indices."""
    return _scatter_elements(ctx, x, indices, updates, ctx.attr("reduction", "none"))


@op("Scatter", since=9, scratch=_idx_scratch)
def scatter(ctx, x, indices, updates):
    """Deprecated name of ScatterElements without reduction."""
    return _scatter_elements(ctx, x, indices, updates, "none")


@op("ScatterND", since=11, scratch=_nd_scratch)
def scatter_nd(ctx, x, indices, updates):
    """A copy of x with slices replaced (or reduced) at the index tuples of ``indices``."""
    if x.ndim == 0 or indices.ndim == 0:
        raise NodeExecutionError(f"ScatterND: data and indices must have rank >= 1, "
                                 f"got shapes {x.shape} and {indices.shape}")
    k = int(indices.shape[-1])
    rest = tuple(int(d) for d in x.shape[k:])
    if k > x.ndim or tuple(updates.shape) != tuple(indices.shape[:-1]) + rest:
        raise NodeExecutionError(f"ScatterND: updates {updates.shape} do not fit indices {indices.shape} / data {x.shape}")
    out = ctx.out(0, x.shape, x.dtype)
    ctx.xp.copyto(out, x)
    lin = ctx.scratch(indices.shape[:-1], np.int64)
    if lin.size:
        _nd_offsets(ctx, "ScatterND", x.shape, indices, 0, lin)
        r = math.prod(rest)
        _scatter_apply(ctx, out.reshape(-1, r), lin.reshape(-1), updates.reshape(-1, r),
                       ctx.attr("reduction", "none"))
    return out


@op("NonZero", since=9)
def non_zero(ctx, x):
    """Indices of the nonzero elements, one row per dimension (int64, row-major order)."""
    host = ctx.host(x)
    coords = np.nonzero(host.reshape(1) if host.ndim == 0 else host)
    n = int(coords[0].size)
    out = ctx.out(0, (len(coords), n), np.int64)
    for d, c in enumerate(coords):
        out[d] = ctx.xp.asarray(c)
    return out


def _topk(ctx, x, k):
    xp = ctx.xp
    axis = _axis("TopK", int(ctx.attr("axis", -1)), x.ndim)
    n = int(x.shape[axis])
    if not 0 <= k <= n:
        raise NodeExecutionError(f"TopK: k={k} outside [0, {n}]")
    shape = list(x.shape)
    shape[axis] = k
    values = ctx.out(0, shape, x.dtype)
    indices = ctx.out(1, shape, np.int64)
    if values.size == 0:
        return values, indices
    head = (slice(None),) * axis + (slice(0, k),)
    if ctx.attr("largest", 1):
        # Stable ascending sort of the reversed axis, read backwards: values descending and,
        # among equal values, the lower original index first.
        order = xp.argsort(xp.flip(x, axis), axis=axis, kind="stable")
        xp.subtract(n - 1, xp.flip(order, axis)[head], out=indices)
    else:
        order = xp.argsort(x, axis=axis, kind="stable")
        xp.copyto(indices, order[head])
    xp.copyto(values, xp.take_along_axis(x, indices, axis=axis))
    return values, indices


@op("TopK", since=1)
def top_k_v1(ctx, x):
    """The ``k`` (attribute) largest elements along ``axis`` and their indices."""
    return _topk(ctx, x, int(ctx.attr("k")))


@op("TopK", since=10)
def top_k(ctx, x, k):
    """The k largest (or smallest) elements along ``axis``, ties in index order, always sorted."""
    return _topk(ctx, x, int(ctx.host(k).reshape(-1)[0]))


@op("OneHot", since=9)
def one_hot(ctx, indices, depth, values):
    """values[1] at each index along a new axis of size depth, values[0] elsewhere."""
    xp = ctx.xp
    d = int(ctx.host(depth).reshape(-1)[0])
    if d < 0:
        raise NodeExecutionError(f"OneHot: depth must be non-negative, got {d}")
    rank = indices.ndim + 1
    axis = _axis("OneHot", int(ctx.attr("axis", -1)), rank)
    vals = values.reshape(-1)
    out = ctx.out(0, tuple(indices.shape[:axis]) + (d,) + tuple(indices.shape[axis:]), values.dtype)
    xp.copyto(out, vals[0])
    outer = math.prod(int(s) for s in indices.shape[:axis])
    inner = math.prod(int(s) for s in indices.shape[axis:])
    if ctx.caps.ufunc_where:  # host: scatter the on-values at the valid indices found
        idx = indices.reshape(outer, inner).astype(np.int64)
        xp.add(idx, d, out=idx, where=idx < 0)
        o_i, i_i = xp.nonzero((idx >= 0) & (idx < d))
        out.reshape(outer, d, inner)[o_i, idx[o_i, i_i], i_i] = vals[1]
        return out
    # device: no where= on ufuncs, and nonzero would sync: compare every index with 0..d-1
    # (out-of-range indices match none and stay off)
    idx = indices.reshape(outer, 1, inner).astype(np.int64)
    idx = xp.where(idx < 0, idx + d, idx)
    hit = idx == xp.arange(d, dtype=np.int64).reshape(1, d, 1)
    xp.copyto(out.reshape(outer, d, inner), vals[1], where=hit)
    return out


@op("Compress", since=9)
def compress(ctx, x, condition):
    """The slices of x (flattened when no axis) where the 1-D condition is true."""
    cond = ctx.host(condition).reshape(-1).astype(bool)
    axis = ctx.attr("axis")
    src = x.reshape(-1) if axis is None else x
    axis = 0 if axis is None else _axis("Compress", int(axis), x.ndim)
    dim = int(src.shape[axis])
    if cond.size > dim:
        if cond[dim:].any():
            raise NodeExecutionError(f"Compress: condition longer than axis size {dim} selects past the end")
        cond = cond[:dim]
    shape = list(src.shape)
    shape[axis] = int(cond.sum())
    out = ctx.out(0, shape, x.dtype)
    if out.size:
        ctx.xp.compress(ctx.xp.asarray(cond), src, axis=axis, out=out)
    return out


@op("Unique", since=11)
def unique(ctx, x):
    """Unique values (sorted, or in first-occurrence order with sorted=0) with their first index,
    inverse indices and counts; along ``axis`` when given, else over the flattened input."""
    xp = ctx.xp
    host = ctx.host(x)
    axis = ctx.attr("axis")
    if axis is not None:
        axis = _axis("Unique", int(axis), host.ndim)
    else:
        host = host.reshape(-1)
    y, first, inverse, counts = np.unique(host, return_index=True, return_inverse=True,
                                          return_counts=True, axis=axis)
    inverse = inverse.reshape(-1)
    if not ctx.attr("sorted", 1):
        perm = np.argsort(first, kind="stable")
        rank = np.empty_like(perm)
        rank[perm] = np.arange(perm.size)
        y = np.take(y, perm, axis=0 if axis is None else axis)
        first, counts, inverse = first[perm], counts[perm], rank[inverse]
    results = []
    for i, v in enumerate((y, first, inverse, counts)):
        if i >= ctx.n_outputs:
            break
        buf = ctx.out(i, v.shape, x.dtype if i == 0 else np.int64)
        xp.copyto(buf, xp.asarray(v))
        results.append(buf)
    return tuple(results)


def _cumulative(ctx, x, axis, accumulate, identity):
    """Running ``accumulate`` along ``axis`` with the exclusive / reverse attributes."""
    xp = ctx.xp
    ax = _axis(ctx.op_type, int(ctx.host(axis).reshape(-1)[0]), x.ndim)
    out = ctx.out(0, x.shape, x.dtype)
    src, dst = x, out
    if ctx.attr("reverse", 0):
        src, dst = xp.flip(x, ax), xp.flip(out, ax)
    n = int(x.shape[ax])
    if ctx.attr("exclusive", 0) and n:
        pre = (slice(None),) * ax
        dst[pre + (0,)] = identity
        accumulate(src[pre + (slice(0, n - 1),)], axis=ax, dtype=x.dtype, out=dst[pre + (slice(1, n),)])
    else:
        accumulate(src, axis=ax, dtype=x.dtype, out=dst)
    return out


@op("CumSum", since=11)
def cum_sum(ctx, x, axis):
    """Running sum along ``axis``; exclusive leaves out the current element, reverse runs backwards."""
    return _cumulative(ctx, x, axis, ctx.xp.cumsum, 0)


@op("CumProd", since=26)
def cum_prod(ctx, x, axis):
    """Running product along ``axis``; exclusive starts from 1, reverse runs backwards."""
    return _cumulative(ctx, x, axis, ctx.xp.cumprod, 1)


@op("ReverseSequence", since=10)
def reverse_sequence(ctx, x, sequence_lens):
    """Reverse the first sequence_lens[b] steps along time_axis for each batch b on batch_axis."""
    xp = ctx.xp
    batch_axis = _axis("ReverseSequence", int(ctx.attr("batch_axis", 1)), x.ndim)
    time_axis = _axis("ReverseSequence", int(ctx.attr("time_axis", 0)), x.ndim)
    if {batch_axis, time_axis} != {0, 1}:
        raise NodeExecutionError(f"ReverseSequence: batch_axis/time_axis must be 0 and 1, got {batch_axis}/{time_axis}")
    lens = [int(v) for v in ctx.host(sequence_lens).reshape(-1)]
    steps = int(x.shape[time_axis])
    if len(lens) != x.shape[batch_axis] or any(not 0 <= n <= steps for n in lens):
        raise NodeExecutionError(f"ReverseSequence: sequence_lens {lens} do not fit input {x.shape}")
    out = ctx.out(0, x.shape, x.dtype)
    xp.copyto(out, x)
    for b, n in enumerate(lens):
        if n < 2:
            continue
        dst = [slice(None)] * x.ndim
        src = [slice(None)] * x.ndim
        dst[batch_axis] = src[batch_axis] = b
        dst[time_axis] = slice(0, n)
        src[time_axis] = slice(n - 1, None, -1) if n == steps else slice(n - 1, -steps - 1, -1)
        xp.copyto(out[tuple(dst)], x[tuple(src)])
    return out


@op("TensorScatter", since=24)
def tensor_scatter(ctx, past, update, write_indices=None):
    """KV-cache update: a copy of past_cache with update written along ``axis`` at each batch's
    write index (wrapping around when mode='circular')."""
    xp = ctx.xp
    axis = _axis("TensorScatter", int(ctx.attr("axis", -2)), past.ndim)
    mode = ctx.attr("mode", "linear")
    if axis == 0 or update.ndim != past.ndim or any(
            update.shape[i] != past.shape[i] for i in range(past.ndim) if i != axis):
        raise NodeExecutionError(f"TensorScatter: update {update.shape} does not fit cache {past.shape} on axis {axis}")
    batch, length, capacity = int(past.shape[0]), int(update.shape[axis]), int(past.shape[axis])
    starts = [0] * batch if write_indices is None else [int(v) for v in ctx.host(write_indices).reshape(-1)]
    out = ctx.out(0, past.shape, past.dtype)
    xp.copyto(out, past)
    lead = (slice(None),) * (axis - 1)
    for b, w in enumerate(starts):
        if mode == "circular":
            where = xp.asarray((np.arange(length) + w) % max(capacity, 1))
        elif mode == "linear":
            if w < 0 or w + length > capacity:
                raise NodeExecutionError(f"TensorScatter: write index {w} + {length} exceeds {capacity}")
            where = slice(w, w + length)
        else:
            raise NodeExecutionError(f"TensorScatter: unknown mode {mode!r}")
        out[b][lead + (where,)] = update[b]
    return out
