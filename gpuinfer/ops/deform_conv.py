"""DeformConv: convolution whose kernel taps sample the input at learned fractional offsets.

Per image, the taps of every output position are sampled by (multi)linear interpolation (corners
outside the input read as zero), scaled by the optional mask, and written to a columns scratch of
shape (C * K, P) (K kernel taps, P output positions); each group is then one matmul with its
weights.  Works for any number of spatial dims (2**n interpolation corners).
"""
from __future__ import annotations

import itertools

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.registry import op


def _dims(attrs, x_shape, w_shape):
    """Kernel shape, strides, dilations, begin/end pads for the spatial dims."""
    nd = len(x_shape) - 2
    kernel = tuple(int(k) for k in (attrs.get("kernel_shape") or w_shape[2:]))
    strides = tuple(int(s) for s in (attrs.get("strides") or [1] * nd))
    dilations = tuple(int(d) for d in (attrs.get("dilations") or [1] * nd))
    pads = tuple(int(p) for p in (attrs.get("pads") or [0] * (2 * nd)))
    return kernel, strides, dilations, pads[:nd], pads[nd:]


def _deform_scratch(attrs, shapes, dtypes):
    """The columns (C*K, P) and one corner's gathered samples (C/offset_group, K*P)."""
    x_shape, w_shape, off_shape = shapes[0], shapes[1], shapes[2]
    kernel = _dims(attrs, x_shape, w_shape)[0]
    k, p = int(np.prod(kernel)), int(np.prod(off_shape[2:]))
    channels, offset_group = int(x_shape[1]), int(attrs.get("offset_group", 1))
    return [((channels * k, p), dtypes[0]), ((channels // offset_group, k * p), dtypes[0])]


def _check(x, w, offset, bias, mask, kernel, strides, dilations, begin, end, group, offset_group):
    """Shapes the spec requires; returns the expected output spatial shape."""
    nd = x.ndim - 2
    name = "DeformConv"
    if nd < 1 or w.ndim != x.ndim or offset.ndim != x.ndim:
        raise NodeExecutionError(f"{name}: want X, W and offset of equal rank >= 3, got shapes "
                                 f"{tuple(x.shape)}, {tuple(w.shape)}, {tuple(offset.shape)}")
    if any(len(v) != nd for v in (kernel, strides, dilations, begin, end)):
        raise NodeExecutionError(f"{name}: kernel_shape/strides/dilations want {nd} values and pads {2 * nd}")
    if tuple(w.shape[2:]) != kernel:
        raise NodeExecutionError(f"{name}: kernel_shape {list(kernel)} does not match W shape {tuple(w.shape)}")
    channels, out_c = x.shape[1], w.shape[0]
    if group < 1 or channels != w.shape[1] * group or out_c % group:
        raise NodeExecutionError(f"{name}: want C = W.shape[1] * group and oC divisible by group, got C={channels}, "
                                 f"W shape {tuple(w.shape)}, group={group}")
    if offset_group < 1 or channels % offset_group:
        raise NodeExecutionError(f"{name}: C={channels} is not divisible by offset_group={offset_group}")
    out_sp = tuple((x.shape[2 + d] + begin[d] + end[d] - (kernel[d] - 1) * dilations[d] - 1) // strides[d] + 1
                   for d in range(nd))
    taps = int(np.prod(kernel))
    want = (x.shape[0], offset_group * taps * nd, *out_sp)
    if tuple(offset.shape) != want:
        raise NodeExecutionError(f"{name}: offset shape should be {want}, got {tuple(offset.shape)}")
    if mask is not None and tuple(mask.shape) != (x.shape[0], offset_group * taps, *out_sp):
        raise NodeExecutionError(f"{name}: mask shape should be {(x.shape[0], offset_group * taps, *out_sp)}, "
                                 f"got {tuple(mask.shape)}")
    if bias is not None and tuple(bias.shape) != (out_c,):
        raise NodeExecutionError(f"{name}: bias shape should be ({out_c},), got {tuple(bias.shape)}")
    return out_sp


def _base_positions(kernel, strides, dilations, begin, out_sp):
    """(nd, K, P) undeformed input coordinates of every kernel tap at every output position."""
    taps = np.stack(np.meshgrid(*[np.arange(k) for k in kernel], indexing="ij"), 0).reshape(len(kernel), -1)
    outs = np.stack(np.meshgrid(*[np.arange(o) for o in out_sp], indexing="ij"), 0).reshape(len(out_sp), -1)
    dil, st, pb = (np.array(v, np.int64)[:, None] for v in (dilations, strides, begin))
    return (taps * dil)[:, :, None] + (outs * st - pb)[:, None, :]


@op("DeformConv", since=19, scratch=_deform_scratch)
def deform_conv(ctx, x, w, offset, bias=None, mask=None):
    """Deformable convolution: bilinear samples at offset tap positions, masked, then grouped matmul."""
    xp = ctx.xp
    attrs = {k: ctx.attr(k) for k in ("kernel_shape", "strides", "dilations", "pads")}
    kernel, strides, dilations, begin, end = _dims(attrs, x.shape, w.shape)
    group, offset_group = int(ctx.attr("group", 1)), int(ctx.attr("offset_group", 1))
    out_sp = _check(x, w, offset, bias, mask, kernel, strides, dilations, begin, end, group, offset_group)
    nd, n, channels, out_c = x.ndim - 2, x.shape[0], x.shape[1], w.shape[0]
    taps, positions = int(np.prod(kernel)), int(np.prod(out_sp))
    in_sp = x.shape[2:]
    out = ctx.out(0, (n, out_c, *out_sp), x.dtype)
    cols = ctx.scratch((channels * taps, positions), x.dtype)
    gathered = ctx.scratch((channels // offset_group, taps * positions), x.dtype)
    base = xp.asarray(_base_positions(kernel, strides, dilations, begin, out_sp).astype(x.dtype))
    in_strides = [int(np.prod(in_sp[d + 1:])) for d in range(nd)]
    cpg, cpo, opg = channels // group, channels // offset_group, out_c // group
    weights = w.reshape(out_c, cpg * taps)
    flat_x = x.reshape(n, channels, -1)
    out3 = out.reshape(n, out_c, positions)
    one = x.dtype.type(1)
    for b in range(n):
        offs = offset[b].reshape(offset_group, taps, nd, positions)
        masks = None if mask is None else mask[b].reshape(offset_group, taps * positions)
        for g in range(offset_group):
            # per spatial dim: floor corner, fractional part
            lows, fracs = [], []
            for d in range(nd):
                pos = base[d] + offs[g, :, d, :]
                low = xp.floor(pos)
                lows.append(low.astype(np.int64).reshape(-1))
                fracs.append((pos - low).reshape(-1))
            cols_g = cols[g * cpo * taps:(g + 1) * cpo * taps].reshape(cpo, taps * positions)
            for c, corner in enumerate(itertools.product((0, 1), repeat=nd)):
                weight = None
                index = None
                inside = None
                for d, step in enumerate(corner):
                    idx = lows[d] + step
                    wd = fracs[d] if step else one - fracs[d]
                    ok = (idx >= 0) & (idx < in_sp[d])
                    weight = wd if weight is None else weight * wd
                    term = idx * in_strides[d]
                    index = term if index is None else index + term
                    inside = ok if inside is None else inside & ok
                weight = xp.where(inside, weight, 0).astype(x.dtype, copy=False)
                if masks is not None:
                    weight = weight * masks[g]
                index = xp.where(inside, index, 0)
                target = cols_g if c == 0 else gathered
                xp.take(flat_x[b, g * cpo:(g + 1) * cpo], index, axis=1, out=target)
                target *= weight
                if c:
                    cols_g += gathered
        for g in range(group):
            xp.matmul(weights[g * opg:(g + 1) * opg], cols[g * cpg * taps:(g + 1) * cpg * taps],
                      out=out3[b, g * opg:(g + 1) * opg])
    if bias is not None:
        out3 += bias[:, None]
    return out
