"""Window folds shared by the pools: every tap of a sliding window folded into the output with a
ufunc, without a padded copy of the input (each tap covers only the outputs whose input under it
lies inside; padding adds 0 to a sum and never wins a max).

Three folds: ``fold_windows`` (one reduction per window, for few outputs), ``fold_separable`` (2-D
windows as rows then columns) and ``fold_taps`` (one pass per tap). Their plans depend on shapes
only and are cached: a model calls each pool with the same shapes every run, and for small maps
the Python bookkeeping would otherwise cost as much as the arithmetic.
"""
from __future__ import annotations

import functools
import itertools
import math

from gpuinfer.ops.tiles import CPU_TILE_BYTES, scaled

# The separable path's row-pooled tiles hold at most TILE_ELEMS elements (cache-sized); tiles
# carved from the unwritten output stop below MIN_TILE, where the per-call cost outweighs the gain.
# Both are the CPU's; a device scales them by its ``caps.tile_bytes`` (ops/tiles.py).  On a GPU the
# tile then covers the whole input, and carving stops at once (one pass per tap instead).
TILE_ELEMS = 1 << 18
MIN_TILE = 1 << 13


# A spatial axis of a window fold: (input size, output size, kernel, stride, dilation, begin pad).
# An axis that is not pooled in a pass is (n, n, 1, 1, 1, 0).
def _identity(n):
    return (n, n, 1, 1, 1, 0)


def tap_ranges(n_in, n_out, k, s, d, b):
    """For each tap of one axis: (r0, r1, i0, s), the output positions r0..r1-1 whose input under
    the tap lies inside the input, the first of them reading input index i0."""
    ranges = []
    for t in range(k):
        off = t * d - b
        r0, r1 = max(0, -(off // s)), min(n_out, (n_in - 1 - off) // s + 1)
        ranges.append((r0, r1, r0 * s + off, s))
    return ranges


@functools.lru_cache(maxsize=512)
def _taps_plan(axes, n_lead):
    """(first, second, rest, fills) for ``fold_taps``: the widest tap's (output, input) slices, the
    input slices of a second tap covering the same outputs (or None), the other taps' slices, and
    the output slices outside the first tap that start at the fill value."""
    lead = (slice(None),) * n_lead

    def views(box):
        return (lead + tuple(slice(r0, r1) for r0, r1, _, _ in box),
                lead + tuple(slice(i0, i0 + (r1 - r0 - 1) * s + 1, s) for r0, r1, i0, s in box))

    def volume(box):
        return math.prod(r1 - r0 for r0, r1, _, _ in box)

    boxes = sorted((b for b in itertools.product(*[tap_ranges(*a) for a in axes]) if volume(b)),
                   key=volume, reverse=True)
    if not boxes:
        return None, None, [], [lead]
    first, rest = views(boxes[0]), [views(b) for b in boxes[1:]]
    second = rest.pop(0)[1] if rest and rest[0][0] == first[0] else None
    fills, inside = [], lead
    for (r0, r1, _, _), a in zip(boxes[0], axes):
        fills += [inside + (slice(0, r0),)] * (r0 > 0) + [inside + (slice(r1, None),)] * (r1 < a[1])
        inside += (slice(r0, r1),)
    return first, second, rest, fills


def fold_taps(xp, ufunc, src, out, axes, fill):
    """out = ufunc over every tap of the windows along ``axes`` (the trailing axes), each tap one
    pass over the output positions whose input under it lies inside ``src``: padding is never
    copied. The widest tap (or pair of taps) initialises the output, what it misses starts at fill."""
    first, second, rest, fills = _taps_plan(tuple(axes), out.ndim - len(axes))
    if first is not None:
        o, i = first
        if second is not None:
            ufunc(src[i], src[second], out=out[o])
        else:
            xp.copyto(out[o], src[i])
    for f in fills:
        out[f] = fill
    for o, i in rest:
        ufunc(out[o], src[i], out=out[o])


@functools.lru_cache(maxsize=512)
def _windows_plan(axes, n_lead):
    """(output index, input slices or None when the window is empty) of every output position."""
    lead = (slice(None),) * n_lead
    plan = []
    for pos in itertools.product(*[range(a[1]) for a in axes]):
        sl = []
        for p, (n_in, _, k, s, d, b) in zip(pos, axes):
            start = p * s - b
            t0, t1 = max(0, -(start // d)), min(k, (n_in - 1 - start) // d + 1)
            sl.append(slice(start + t0 * d, start + (t1 - 1) * d + 1, d) if t1 > t0 else None)
        plan.append((lead + pos, None if None in sl else lead + tuple(sl)))
    return plan


def fold_windows(xp, reduce, src, out, axes, fill):
    """out = one ``reduce`` over the spatial axes of each window: few outputs, many taps."""
    spatial = tuple(range(out.ndim - len(axes), out.ndim))
    for o, i in _windows_plan(tuple(axes), out.ndim - len(axes)):
        if i is None:
            out[o] = fill
        else:
            reduce(src[i], axis=spatial, out=out[o])


@functools.lru_cache(maxsize=512)
def _shift_plan(geom, size, inner):
    """(flat range, flat tap offsets by |offset|, edge folds) for ``_fold_shifted``."""
    n_in, n, k, s, d, b = geom
    ranges = [((t * d - b) * inner, r) for t, r in enumerate(tap_ranges(*geom)) if r[1] > r[0]]
    offs = sorted((o for o, _ in ranges), key=abs)
    lo, hi = max(0, -min(offs)), size - max(0, max(offs))
    e0, e1 = max(r[0] for _, r in ranges), min(r[1] for _, r in ranges)
    edges = [(slice(0, e0), (n_in, e0, k, s, d, b))] * (e0 > 0)
    edges += [(slice(e1, n), (n_in, n - e1, k, s, d, b - e1))] * (e1 < n)
    return lo, hi, offs, edges


def _fold_shifted(xp, ufunc, src, out, geom, fill):
    """Stride-1 fold of axis 1 of ``src`` (m, n, inner) into ``out`` of the same shape, both
    contiguous: each tap is one shift of the flat buffer, a single contiguous pass (numpy 2.4
    buffers strided views with short rows, at 3-5x the cost per element). Outputs whose window
    crosses a row or channel end read a neighbour's data there; those edges are folded again."""
    lo, hi, offs, edges = _shift_plan(geom, out.size, out.shape[2])
    sf, of = src.reshape(-1), out.reshape(-1)
    if len(offs) > 1:
        ufunc(sf[lo + offs[0]:hi + offs[0]], sf[lo + offs[1]:hi + offs[1]], out=of[lo:hi])
    else:
        xp.copyto(of[lo:hi], sf[lo + offs[0]:hi + offs[0]])
    for o in offs[2:]:
        ufunc(of[lo:hi], sf[lo + o:hi + o], out=of[lo:hi])
    for rows, g in edges:
        fold_taps(xp, ufunc, src, out[:, rows], [g, _identity(out.shape[2])], fill)


def _fold_axis(xp, ufunc, src, out, geom, fill):
    """Fold the windows of axis 1 of ``src`` (m, n_in, inner) into ``out`` (m, n_out, inner)."""
    n_in, n_out, k, s, d, b = geom
    inside = min(n_out, (n_in - 1 - (k - 1) * d + b) // s + 1) - max(0, -(-b // s))  # whole windows
    if s == 1 and n_in == n_out and inside > 0 and src.flags.c_contiguous and out.flags.c_contiguous:
        _fold_shifted(xp, ufunc, src, out, geom, fill)
    else:
        fold_taps(xp, ufunc, src, out, [geom, _identity(out.shape[2])], fill)


def fold_separable(xp, ufunc, x, out, axes, fill, tmp, tile_bytes=CPU_TILE_BYTES):
    """2-D windows as k_h + k_w passes instead of k_h * k_w: rows first (the H taps read whole
    input rows, long runs), then the columns of a tile of row-pooled channels. The tile is ``tmp``
    or, without scratch, carved from the part of ``out`` not yet written: m channels need m*Ho*W
    elements, which the next m*W/Wo channels' outputs hold; the last channels, once too few are
    left to hold a worthwhile tile, are folded tap by tap."""
    ho, w, wo = out.shape[2], x.shape[3], out.shape[3]
    if x.flags.c_contiguous:  # images and channels tile together
        stacks = [(x.reshape((-1,) + x.shape[2:]), out.reshape((-1,) + out.shape[2:]))]
    else:
        stacks = list(zip(x, out))
    for xs, outs in stacks:
        flat, done = outs.reshape(-1), 0
        while done < xs.shape[0]:
            left = xs.shape[0] - done
            if tmp is not None:
                m = min(tmp.shape[0], left)
                t = tmp[:m]
            else:
                m = min(max(1, scaled(TILE_ELEMS, tile_bytes) // (ho * w)), left * wo // (w + wo))
                if m < 1 or m * ho * w < scaled(MIN_TILE, tile_bytes):
                    fold_taps(xp, ufunc, xs[done:], outs[done:], axes, fill)
                    break
                t = flat[(done + m) * ho * wo:(done + m) * ho * wo + m * ho * w].reshape(m, ho, w)
            _fold_axis(xp, ufunc, xs[done:done + m], t, axes[0], fill)
            _fold_axis(xp, ufunc, t.reshape(m * ho, w, 1), outs[done:done + m].reshape(m * ho, wo, 1),
                       axes[1], fill)
            done += m
