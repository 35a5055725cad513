"""Resize and Upsample: separable interpolation driven by per-axis (index, weight) tables.

For every resized axis the host computes, once, which input positions feed each output position
and with which weights (nearest: one tap; linear: two; cubic: four; antialias: a wider, scaled
filter).  Nearest resizes then gather the whole output with a single ``take`` over the flattened
trailing axes.  Linear and cubic resizes run one pass per axis (gather each tap, scale it, add),
in the cheapest order that needs no more scratch, a block of channels at a time, with
intermediates in scratch buffers a block's size.

Coordinates are computed in float32 arithmetic, as onnxruntime does, so nearest-neighbour ties
round the same way.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from gpuinfer.backends.numpy_threads import SPLIT_MIN_BYTES, row_blocks, run_blocks
from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.gpu.resize import resize_on_device
from gpuinfer.ops.registry import op

_F = np.float32


@dataclass
class AxisTaps:
    """How one output axis reads its input axis."""

    idx: np.ndarray  # (out, taps) int64 input positions, already clamped
    weight: np.ndarray | None  # (out, taps) float64 weights; None for one-tap nearest
    outside: np.ndarray | None  # (out,) bool: tf_crop_and_resize positions taking extrapolation_value

    def is_identity(self, n_in):
        """Whether this axis maps every output position to the same input position, unchanged."""
        if self.outside is not None or self.idx.shape[0] != n_in:
            return False
        at_self = self.idx == np.arange(n_in)[:, None]
        if self.weight is None:
            return bool(at_self.all())
        return bool(np.all(np.where(at_self, 0.0, self.weight) == 0)
                    and np.all(np.where(at_self, self.weight, 0.0).sum(axis=1) == 1))


def _source_coords(mode, n_in, n_out, scale, roi_start, roi_end):
    """Input-space coordinate of every output index (float32, as onnxruntime)."""
    x = np.arange(n_out, dtype=_F)
    scale = _F(scale)
    half = _F(0.5)
    if mode == "half_pixel":
        return (x + half) / scale - half
    if mode == "half_pixel_symmetric":
        adjustment = _F(n_out) / (scale * _F(n_in))
        center = _F(n_in) / _F(2)
        offset = center * (_F(1) - adjustment)
        return offset + (x + half) / scale - half
    if mode == "pytorch_half_pixel":
        return (x + half) / scale - half if n_out > 1 else np.zeros(n_out, _F)
    if mode == "align_corners":
        return x * _F(n_in - 1) / _F(n_out - 1) if n_out > 1 else np.zeros(n_out, _F)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + half) / scale
    if mode == "tf_crop_and_resize":
        s, e = _F(roi_start), _F(roi_end)
        if n_out > 1:
            return s * _F(n_in - 1) + x * (e - s) * _F(n_in - 1) / _F(n_out - 1)
        return np.full(n_out, half * (s + e) * _F(n_in - 1), _F)
    raise NodeExecutionError(f"Resize: unknown coordinate_transformation_mode {mode!r}")


def _nearest(coord, nearest_mode, downsample):
    if nearest_mode == "round_prefer_floor":
        return np.ceil(coord - _F(0.5))
    if nearest_mode == "round_prefer_ceil":
        return np.floor(coord + _F(0.5))
    if nearest_mode == "floor":
        return np.floor(coord)
    if nearest_mode == "ceil":
        return np.ceil(coord)
    if nearest_mode == "simple":  # Resize-10 and Upsample
        return np.ceil(coord) if downsample else np.floor(coord)
    raise NodeExecutionError(f"Resize: unknown nearest_mode {nearest_mode!r}")


def _cubic(t, a):
    """Keys cubic convolution kernel at distances ``t``."""
    t = np.abs(t)
    return np.where(t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1,
                    np.where(t < 2, ((a * t - 5 * a) * t + 8 * a) * t - 4 * a, 0.0))


def axis_taps(cfg, n_in, n_out, scale, roi_start, roi_end) -> AxisTaps:
    """The (index, weight) table of one axis."""
    coord = _source_coords(cfg["ctm"], n_in, n_out, scale, roi_start, roi_end)
    outside = None
    if cfg["ctm"] == "tf_crop_and_resize":
        outside = (coord < 0) | (coord > n_in - 1)
        if not outside.any():
            outside = None
    mode = cfg["mode"]
    if mode == "nearest":
        idx = _nearest(coord, cfg["nearest_mode"], scale < 1).astype(np.int64)
        return AxisTaps(np.clip(idx, 0, n_in - 1)[:, None], None, outside)
    coord = coord.astype(np.float64)
    if cfg["antialias"] and scale < 1:
        # the filter is stretched by 1/scale; taps are the n integers nearest the coordinate
        start = math.floor((-1.0 if mode == "linear" else -2.0) / scale) + 1
        n = 2 - 2 * start
        fl = np.floor(coord)
        fl = np.where(fl == coord, fl - 1, fl)
        pos = fl[:, None].astype(np.int64) + start + np.arange(n)[None, :]
        dist = (pos - coord[:, None]) * scale
        w = np.clip(1 - np.abs(dist), 0, None) if mode == "linear" else _cubic(dist, cfg["cubic_a"])
        if cfg["exclude_outside"]:
            w = np.where((pos < 0) | (pos >= n_in), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1, total)
        return AxisTaps(np.clip(pos, 0, n_in - 1), w, outside)
    if mode == "linear":
        c = np.clip(coord, 0, n_in - 1)
        x0 = np.floor(c).astype(np.int64)
        frac = c - x0
        idx = np.stack([x0, np.minimum(x0 + 1, n_in - 1)], axis=1)
        return AxisTaps(idx, np.stack([1 - frac, frac], axis=1), outside)
    if mode == "cubic":
        x0 = np.floor(coord).astype(np.int64)
        t = coord - x0
        pos = x0[:, None] + np.arange(-1, 3)[None, :]
        w = _cubic(t[:, None] - np.arange(-1, 3)[None, :], cfg["cubic_a"])
        if cfg["exclude_outside"]:
            w = np.where((pos < 0) | (pos >= n_in), 0.0, w)
            w = w / w.sum(axis=1, keepdims=True)
        return AxisTaps(np.clip(pos, 0, n_in - 1), w, outside)
    raise NodeExecutionError(f"Resize: unknown mode {mode!r}")


# ------------------------------------------------------------------------------------- geometry

# A pass along the last axis costs about this many times one along another axis, per output
# element: its gathers (``take``) copy one element at a time where the others copy whole rows
# (measured on a 64x320x160 -> 64x320x320 gather: 3.8 ms on the last axis, against 0.5 ms for a
# 64x160x160 -> 64x320x160 one on the row axis, half the elements; the multiply-adds cost the same).
LAST_AXIS_COST = 2.5


def _pass_sizes(in_shape, out_shape, order):
    shape, sizes = list(in_shape), []
    for a in order:
        shape[a] = out_shape[a]
        sizes.append(math.prod(shape))
    return sizes


def _pass_order(in_shape, out_shape, axes):
    """The order of the separable passes: the cheapest (``LAST_AXIS_COST``) among those whose
    intermediates are no bigger than when the most-shrinking axes go first.  A 2x upsampling of
    both image axes then resizes the rows' last axis first, on the small input: its intermediate
    is as big either way, and the costly pass does half the elements."""
    smallest = sorted(axes, key=lambda a: (out_shape[a] / max(in_shape[a], 1), a))
    if len(axes) < 2 or len(axes) > 3:
        return smallest

    def footprint(order):  # elements of scratch (``_scratch_elements``), the last pass into the output or not
        sizes = _pass_sizes(in_shape, out_shape, order)
        return sum(_scratch_elements(sizes, True)), sum(_scratch_elements(sizes, False))

    def cost(order):
        sizes = _pass_sizes(in_shape, out_shape, order)
        return sum(n * (LAST_AXIS_COST if a == len(in_shape) - 1 else 1) for n, a in zip(sizes, order))

    bound = footprint(smallest)
    fits = [list(o) for o in itertools.permutations(smallest)
            if all(f <= b for f, b in zip(footprint(o), bound))]
    return min(fits, key=cost)  # ``smallest`` is among them; ties keep the earlier order


def resize_scratch_for(in_shape, out_shape, dtype, active, n_taps):
    """Scratch buffers of the separable passes: one tap buffer, then up to two ping-pong intermediates.

    ``active`` are the axes getting a pass and ``n_taps`` their tap counts; nearest-only resizes
    (every count 1) gather in one go and need none.
    """
    if not active or all(t == 1 for t in n_taps):
        return []
    return _separable_layout(in_shape, out_shape, dtype, active)[1]


def _separable_layout(in_shape, out_shape, dtype, active):
    """(channels per block or None, scratch buffers) of the separable passes: the planner's
    declaration and the kernel's plan both read it, so the two cannot drift apart."""
    wdt = np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.dtype(np.float32)
    into_output = wdt == np.dtype(dtype)
    block = channel_block(in_shape, out_shape, active, wdt.itemsize, into_output)
    order = _pass_order(in_shape, out_shape, active)
    if block is not None:  # the passes work a block of one image's channels at a time
        in_shape, out_shape = (1, block, *in_shape[2:]), (1, block, *out_shape[2:])
    sizes = _pass_sizes(in_shape, out_shape, order)
    return block, [((n,), wdt) for n in _scratch_elements(sizes, into_output)]


# A linear resize works a block of one image's channels at a time through all its passes, so its
# scratch (the tap buffer and the intermediates) holds a block's planes, not the whole tensor's: at
# most a sixteenth of the resize's own input and output, RESIZE_MIN_BLOCK_BYTES at least, one
# channel at least.  u2netp's 64x160x160 -> 320x320 took 39 MB of whole-tensor intermediates, and
# that step was its arena's peak.
RESIZE_SHARE = 16
RESIZE_MIN_BLOCK_BYTES = 256 << 10


def channel_block(in_shape, out_shape, active, itemsize, into_output):
    """Channels per block of a separable resize (``RESIZE_SHARE``), or None where the batch or
    channel axis is itself resized (or there is none): then the passes take the whole tensor."""
    if len(in_shape) < 3 or any(a < 2 for a in active):
        return None
    plane_in, plane_out = (1, 1, *in_shape[2:]), (1, 1, *out_shape[2:])
    per_channel = sum(_scratch_elements(_pass_sizes(plane_in, plane_out, _pass_order(in_shape, out_shape, active)),
                                        into_output)) * itemsize
    budget = max(RESIZE_MIN_BLOCK_BYTES, (math.prod(in_shape) + math.prod(out_shape)) * itemsize // RESIZE_SHARE)
    return max(1, min(in_shape[1], budget // max(per_channel, 1)))


def _scratch_elements(sizes, last_into_output):
    """Elements of each scratch buffer of passes making ``sizes`` elements in turn: the tap buffer,
    then the ping-pong intermediates (the last pass writes the output itself when its work type is
    the output's)."""
    inters = sizes[:-1] if last_into_output else sizes
    return [max(sizes)] + [max(inters[i::2]) for i in range(min(len(inters), 2))]


def _resize_scratch(attrs, shapes, dtypes, output_shapes=None):
    """Scratch of Resize/Upsample, which depends on the output shape.

    Upsample-7 carries its scales as an attribute, so the output shape follows from the input
    shape.  Otherwise the output shape comes from input *values* (scales, sizes) that a
    shape-only call does not see: pass ``output_shapes`` to get the exact list; without it this
    returns [] and the runtime serves (and learns) the scratch at the first run.
    """
    if shapes[0] is None:
        return []
    in_shape = tuple(shapes[0])
    if output_shapes and output_shapes[0] is not None:
        out_shape = tuple(output_shapes[0])
    elif attrs.get("scales") and len(attrs["scales"]) == len(in_shape):
        out_shape = tuple(_from_scales(in_shape, attrs["scales"])[0])
    else:
        return []
    mode = _str(attrs.get("mode", "nearest"))
    active = [a for a in range(len(in_shape)) if in_shape[a] != out_shape[a]]
    taps = [1 if mode == "nearest" else 2 for _ in active]
    return resize_scratch_for(in_shape, out_shape, dtypes[0], active, taps)


def _str(v):
    return v.decode() if isinstance(v, bytes) else v


# ------------------------------------------------------------------------------------ execution

def _take(ctx, a, idx, axis, out):
    """take into ``out``; the tables' indices are already clamped, so numpy's cheaper "clip" mode
    changes nothing (a device's take has no mode)."""
    if ctx.caps.host_arrays:
        return np.take(a, idx, axis=axis, out=out, mode="clip")
    return ctx.xp.take(a, idx, axis=axis, out=out)


def _integer_factors(x_shape, taps):
    """Per-axis repeat factors when every nearest axis reads input i // f at output i, else None."""
    factors = []
    for n, t in zip(x_shape, taps):
        if t is None:
            factors.append(1)
            continue
        f = t.idx.shape[0] // n
        if f * n != t.idx.shape[0] or not np.array_equal(t.idx[:, 0], np.arange(t.idx.shape[0]) // f):
            return None
        factors.append(f)
    return factors


def _gather_nearest(ctx, x, out, taps):
    """Integer upsampling as one broadcast copy, anything else as one flat gather over trailing axes."""
    xp = ctx.xp
    factors = _integer_factors(x.shape, taps)
    if factors is not None and math.prod(factors) <= 16:
        # one strided copy of x per phase (i mod f along every axis): contiguous reads, few passes
        inter = []
        for n, f in zip(x.shape, factors):
            inter += [n, f]
        view = out.reshape(inter)
        for phase in itertools.product(*[range(f) for f in factors]):
            view[tuple(sl for p in phase for sl in (slice(None), p))] = x
        return
    active = [a for a, t in enumerate(taps) if t is not None]
    first = active[0]
    tail_in = x.shape[first:]
    flat = np.zeros(out.shape[first:], dtype=np.int64)
    stride = 1
    for a in reversed(range(first, x.ndim)):
        sel = taps[a].idx[:, 0] if taps[a] is not None else np.arange(x.shape[a])
        shape = [1] * (x.ndim - first)
        shape[a - first] = -1
        flat += (sel * stride).reshape(shape)
        stride *= x.shape[a]
    src = xp.ascontiguousarray(x).reshape(x.shape[:first] + (math.prod(tail_in),))
    dst = out.reshape(out.shape[:first] + (math.prod(out.shape[first:]),))
    _take(ctx, src, xp.asarray(flat.reshape(-1)), first, dst)


def _by_rows(ctx, x, out, taps, fn):
    """``fn(x_rows, out_rows, start, stop, rows)``: at once, or, for a big resize that leaves batch
    and channels alone, over blocks of those (batch x channel) rows on the run's threads, each
    block a view of x and of out (``rows``: how many there are, for sharing out scratch)."""
    if x.ndim < 3 or taps[0] is not None or taps[1] is not None or out.nbytes < SPLIT_MIN_BYTES:
        fn(x, out, 0, 1, 1)
        return
    rows = x.shape[0] * x.shape[1]
    blocks = row_blocks(ctx, rows, out.nbytes // rows)
    if len(blocks) == 1 or not (x.flags.c_contiguous and out.flags.c_contiguous):
        fn(x, out, 0, 1, 1)
        return
    xr, outr = x.reshape((1, rows) + x.shape[2:]), out.reshape((1, rows) + out.shape[2:])
    run_blocks(blocks, lambda _, start, stop: fn(xr[:, start:stop], outr[:, start:stop], start, stop, rows))


def _separable_plan(ctx, x_shape, out_shape, dtype, taps):
    """What the separable passes need that shapes alone decide, made once per node and shape
    (``ctx.memo``): the scratch, the pass order, and per pass its axis and each tap's indices and
    weights (in the work type, shaped to broadcast) as device arrays -- on small maps building
    these took most of a resize (u2netp's 16x10x10 -> 20x20: 0.38 ms a call)."""
    xp = ctx.xp
    active = [a for a, t in enumerate(taps) if t is not None]
    block, scratch = _separable_layout(x_shape, out_shape, dtype, active)
    wdt = scratch[0][1]
    passes = []
    for a in _pass_order(x_shape, out_shape, active):
        t = taps[a]
        if t.weight is None:  # a nearest axis inside a linear resize: one tap of weight 1
            t = AxisTaps(t.idx, np.ones(t.idx.shape), t.outside)
        wshape = [1] * len(x_shape)
        wshape[a] = -1
        passes.append((a, tuple((xp.asarray(np.ascontiguousarray(t.idx[:, k])),
                                 xp.asarray(t.weight[:, k].astype(wdt).reshape(wshape)))
                                for k in range(t.idx.shape[1]))))
    return scratch, tuple(passes), block


def _separable(ctx, x, out, taps, plan):
    """One gather-scale-add pass per resized axis, intermediates in scratch, a block of channels
    at a time (``channel_block``); each row block of a threaded resize works in its own share of
    the block's scratch (sized by the rows)."""
    scratch, passes, block = plan
    tmp_all = ctx.scratch(*scratch[0])
    inter_all = [ctx.scratch(*s) for s in scratch[1:]]

    def rows(xb, ob, start, stop, count):
        share = [(f.size // count) for f in (tmp_all, *inter_all)]
        _separable_passes(ctx, xb, ob, passes, scratch[0][1], tmp_all[start * share[0]:stop * share[0]],
                          [f[start * n:stop * n] for f, n in zip(inter_all, share[1:])])

    if block is None:
        _by_rows(ctx, x, out, taps, rows)
        return
    for ni in range(x.shape[0]):
        for c0 in range(0, x.shape[1], block):
            c1 = min(x.shape[1], c0 + block)
            _by_rows(ctx, x[ni:ni + 1, c0:c1], out[ni:ni + 1, c0:c1], taps, rows)


def _separable_passes(ctx, x, out, passes, wdt, tmp_flat, inter_flat):
    xp = ctx.xp
    cur = x
    shape = list(x.shape)
    for i, (a, tables) in enumerate(passes):
        shape[a] = out.shape[a]
        last = i == len(passes) - 1
        n = math.prod(shape)
        dst = out if (last and wdt == out.dtype) else inter_flat[i % 2][:n].reshape(shape)
        tmp = tmp_flat[:n].reshape(shape)
        for k, (idx, weight) in enumerate(tables):
            into = dst if k == 0 else tmp
            if cur.dtype != wdt:  # integer input: the first pass converts it (a small, rare temporary)
                xp.copyto(into, xp.take(cur, idx, axis=a))
            else:
                _take(ctx, cur, idx, a, into)
            into *= weight
            if k:
                dst += tmp
        cur = dst
    if cur is not out:
        if out.dtype.kind in "iu":
            info = np.iinfo(out.dtype)
            xp.trunc(cur, out=cur)  # onnxruntime truncates integer interpolation
            xp.clip(cur, info.min, info.max, out=cur)
        xp.copyto(out, cur, casting="unsafe")


def resize_into(ctx, x, out_shape, scales, roi, cfg):
    """Resize ``x`` to ``out_shape`` given per-axis ``scales`` and ``roi`` (starts then ends)."""
    out = ctx.out(0, out_shape, x.dtype)
    if out.size == 0:
        return out
    if x.size == 0:
        raise NodeExecutionError(f"Resize: cannot resize an empty input of shape {x.shape} to {out_shape}")
    key = ("resize", tuple(x.shape), tuple(out_shape), tuple(scales), tuple(roi), x.dtype)
    taps = ctx.memo(key, lambda: _all_taps(cfg, x.shape, out_shape, scales, roi))
    if ctx.caps.fused_kernels and resize_on_device(ctx, x, out, taps):
        return out  # one kernel launch (ops/gpu/resize.py)
    if all(t is None for t in taps):
        ctx.xp.copyto(out, x)
    elif all(t is None or t.weight is None for t in taps):
        _by_rows(ctx, x, out, taps, lambda xb, ob, *_: _gather_nearest(ctx, xb, ob, taps))
    else:
        plan = ctx.memo(key + ("separable",), lambda: _separable_plan(ctx, x.shape, out.shape, x.dtype, taps))
        _separable(ctx, x, out, taps, plan)
    value = out.dtype.type(cfg.get("extrapolation_value", 0.0))
    for a, t in enumerate(taps):
        if t is not None and t.outside is not None:
            out[(slice(None),) * a + (ctx.xp.asarray(np.nonzero(t.outside)[0]),)] = value
    return out


def _all_taps(cfg, x_shape, out_shape, scales, roi) -> tuple:
    """Every axis's ``AxisTaps``, None where the axis maps onto itself unchanged."""
    r = len(x_shape)
    taps = []
    for a in range(r):
        t = axis_taps(cfg, x_shape[a], out_shape[a], scales[a], roi[a], roi[a + r])
        taps.append(None if t.is_identity(x_shape[a]) else t)
    return tuple(taps)


def _config(ctx, opset_style):
    cfg = {
        "mode": _str(ctx.attr("mode", "nearest")),
        "ctm": _str(ctx.attr("coordinate_transformation_mode", "half_pixel")),
        "nearest_mode": _str(ctx.attr("nearest_mode", "round_prefer_floor")),
        "cubic_a": float(ctx.attr("cubic_coeff_a", -0.75)),
        "exclude_outside": int(ctx.attr("exclude_outside", 0)),
        "extrapolation_value": float(ctx.attr("extrapolation_value", 0.0)),
        "antialias": int(ctx.attr("antialias", 0)),
    }
    if cfg["mode"] == "bilinear":
        cfg["mode"] = "linear"
    if opset_style == "old":  # Resize-10 and Upsample: asymmetric, truncating nearest
        cfg["ctm"] = "asymmetric"
        cfg["nearest_mode"] = "simple"
    if cfg["mode"] not in ("nearest", "linear", "cubic"):
        raise NodeExecutionError(f"{ctx.op_type}: unknown mode {cfg['mode']!r}")
    return cfg


def _from_scales(x_shape, scales):
    scales = [float(s) for s in scales]
    if len(scales) != len(x_shape):
        raise NodeExecutionError(f"Resize: {len(scales)} scales for an input of rank {len(x_shape)}")
    if any(s <= 0 for s in scales):
        raise NodeExecutionError(f"Resize: scales must be positive, got {scales}")
    return [int(math.floor(_F(d) * _F(s))) for d, s in zip(x_shape, scales)], scales


@op("Resize", since=10, scratch=_resize_scratch)
def resize_10(ctx, x, scales):
    """Resize-10: nearest or linear with asymmetric coordinates, sizes from ``scales``."""
    out_shape, sc = _from_scales(x.shape, ctx.host(scales).reshape(-1))
    return resize_into(ctx, x, out_shape, sc, [0.0] * x.ndim + [1.0] * x.ndim, _config(ctx, "old"))


@op("Resize", since=11, scratch=_resize_scratch)
def resize_11(ctx, x, roi=None, scales=None, sizes=None):
    """Resize-11 and later: roi, scales or sizes, axes, keep_aspect_ratio_policy, antialias."""
    cfg = _config(ctx, "new")
    r = x.ndim
    axes = ctx.attr("axes")
    axes = [int(a) % r for a in axes] if axes else list(range(r))
    roi_h = ctx.host(roi)
    full_roi = [0.0] * r + [1.0] * r
    if roi_h is not None and roi_h.size:
        roi_h = roi_h.reshape(-1).astype(np.float64)
        if len(roi_h) != 2 * len(axes):
            raise NodeExecutionError(f"Resize: roi has {len(roi_h)} values for {len(axes)} axes")
        for i, a in enumerate(axes):
            full_roi[a], full_roi[a + r] = roi_h[i], roi_h[i + len(axes)]
    scales_h = ctx.host(scales)
    sizes_h = ctx.host(sizes)
    if sizes_h is not None and sizes_h.size:
        sizes_h = [int(v) for v in sizes_h.reshape(-1)]
        if len(sizes_h) != len(axes):
            raise NodeExecutionError(f"Resize: {len(sizes_h)} sizes for {len(axes)} axes")
        policy = _str(ctx.attr("keep_aspect_ratio_policy", "stretch"))
        out_shape = list(x.shape)
        sc = [1.0] * r
        if policy == "stretch":
            for a, s in zip(axes, sizes_h):
                out_shape[a] = s
                sc[a] = float(_F(s) / _F(x.shape[a]))
        elif policy in ("not_larger", "not_smaller"):
            ratios = [_F(s) / _F(x.shape[a]) for a, s in zip(axes, sizes_h)]
            scale = min(ratios) if policy == "not_larger" else max(ratios)
            for a in axes:
                out_shape[a] = int(math.floor(float(scale) * x.shape[a] + 0.5))
                sc[a] = float(scale)
        else:
            raise NodeExecutionError(f"Resize: unknown keep_aspect_ratio_policy {policy!r}")
    elif scales_h is not None and scales_h.size:
        vals = [float(v) for v in scales_h.reshape(-1)]
        if len(vals) != len(axes):
            raise NodeExecutionError(f"Resize: {len(vals)} scales for {len(axes)} axes")
        sc = [1.0] * r
        for a, v in zip(axes, vals):
            sc[a] = v
        out_shape, sc = _from_scales(x.shape, sc)
    else:
        raise NodeExecutionError("Resize: one of scales and sizes must be given")
    return resize_into(ctx, x, out_shape, sc, full_roi, cfg)


@op("Upsample", since=7, scratch=_resize_scratch)
def upsample_7(ctx, x):
    """Upsample-7: nearest or (bi)linear by the ``scales`` attribute, asymmetric coordinates."""
    out_shape, sc = _from_scales(x.shape, ctx.attr("scales"))
    return resize_into(ctx, x, out_shape, sc, [0.0] * x.ndim + [1.0] * x.ndim, _config(ctx, "old"))


@op("Upsample", since=9, scratch=_resize_scratch)
def upsample_9(ctx, x, scales):
    """Upsample-9: as Upsample-7 with ``scales`` as an input."""
    out_shape, sc = _from_scales(x.shape, ctx.host(scales).reshape(-1))
    return resize_into(ctx, x, out_shape, sc, [0.0] * x.ndim + [1.0] * x.ndim, _config(ctx, "old"))
