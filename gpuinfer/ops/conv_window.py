"""Sliding-window geometry shared by the convolutions and the pools: pads and output sizes, kernel
offsets, the input slice under one tap, and zero-padded copies."""
from __future__ import annotations

import itertools

from gpuinfer.errors import NodeExecutionError


def auto_pad_name(v) -> str:
    """The auto_pad attribute as a str ("NOTSET" when absent)."""
    return v.decode() if isinstance(v, bytes) else (v or "NOTSET")


def window_pads(auto_pad, pads, in_sp, kernel, strides, dilations, ceil_mode=0):
    """(begin pads, end pads, output sizes) of a sliding window, as Conv and the pools define them.

    Raises ``NodeExecutionError`` for a kernel, strides or dilations that are not one positive
    value per spatial axis, or pads that are not 2 non-negative values per axis."""
    n = len(in_sp)
    for name, values in (("kernel_shape", kernel), ("strides", strides), ("dilations", dilations)):
        if len(values) != n or any(int(v) < 1 for v in values):
            raise NodeExecutionError(f"{name} must be {n} positive value(s), one per spatial axis of the "
                                     f"input {list(in_sp)}, got {list(values)}")
    auto_pad = auto_pad_name(auto_pad)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-i // s) for i, s in zip(in_sp, strides)]
        total = [max(0, (o - 1) * s + e - i) for o, s, e, i in zip(out, strides, eff, in_sp)]
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        begin, end = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        return begin, end, out
    if auto_pad == "VALID":
        begin, end = [0] * n, [0] * n
    elif auto_pad == "NOTSET":
        pads = list(pads) if pads else [0] * (2 * n)
        if len(pads) != 2 * n or any(int(p) < 0 for p in pads):
            raise NodeExecutionError(f"pads must be {2 * n} non-negative values (begin and end of each spatial "
                                     f"axis of the input {list(in_sp)}), got {pads}")
        begin, end = pads[:n], pads[n:]
    else:
        raise NodeExecutionError(f"unknown auto_pad {auto_pad!r}")
    out = []
    for i, b, e, k, s in zip(in_sp, begin, end, eff, strides):
        span = i + b + e - k
        if ceil_mode:
            o = -(-span // s) + 1
            if (o - 1) * s >= i + b:  # the last window would start inside the end padding only
                o -= 1
        else:
            o = span // s + 1
        out.append(max(o, 0))
    return begin, end, out


def window_attrs(op_type: str, attrs, x_shape, w_shape):
    """(spatial rank, kernel, strides, dilations, group) shared by Conv and ConvTranspose."""
    if len(x_shape) < 3 or len(w_shape) != len(x_shape):
        raise NodeExecutionError(f"{op_type}: X and W must have the same rank >= 3, got {x_shape} and {w_shape}")
    n_sp = len(x_shape) - 2
    kernel = list(attrs.get("kernel_shape") or w_shape[2:])
    strides = list(attrs.get("strides") or [1] * n_sp)
    dil = list(attrs.get("dilations") or [1] * n_sp)
    return n_sp, kernel, strides, dil, int(attrs.get("group", 1))


def kernel_offsets(kernel):
    """Every kernel position as a tuple, in row-major order."""
    return list(itertools.product(*[range(k) for k in kernel]))


def pad_into(buf, x, begin, lead):
    """Copy ``x`` into ``buf`` at offset ``begin`` on the trailing axes, zeros around it."""
    zero_margins(buf, begin, x.shape[lead:], lead)
    buf[(slice(None),) * lead + tuple(slice(b, b + s) for b, s in zip(begin, x.shape[lead:]))] = x


def zero_margins(buf, begin, inner, first):
    """Zero what lies outside the box ``begin`` + ``inner`` on axes ``first``.. of ``buf``, leaving the
    box itself (about to be overwritten) alone: a full fill would write every byte twice."""
    lead = (slice(None),) * first
    for a, (b, size) in enumerate(zip(begin, inner)):
        before = (slice(None),) * a
        buf[lead + before + (slice(0, b),)] = 0
        buf[lead + before + (slice(b + size, None),)] = 0
