"""Linear (de)quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear.

Scale and zero point are per tensor (scalar), per axis (1-D along ``axis``) or blocked (same rank
as the input, ``ceil(D/block_size)`` along ``axis``).  Blocked parameters are lined up with the
input by splitting the axis into (blocks, block_size) views, so nothing input-sized is repeated.
The 4-/2-bit and float8/float4 types come from ml_dtypes and are computed on the host.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.registry import op

_LOW_PREFIXES = ("bfloat16", "float8", "float4", "int4", "uint4", "int2", "uint2")


def _is_low(dtype) -> bool:
    """An ml_dtypes element type (numpy knows it only as an opaque kind-'V' type)."""
    return np.dtype(dtype).name.startswith(_LOW_PREFIXES)


def _onnx_dtype(code: int, op_name: str) -> np.dtype:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(int(code)))
    except Exception as e:  # noqa: BLE001 - any lookup failure means the type is unknown here
        raise NodeExecutionError(f"{op_name}: unsupported output_dtype {code}") from e


def _work_dtype(dtype) -> np.dtype:
    """The float type arithmetic runs in: float16/32/64 as given, anything narrower in float32."""
    dtype = np.dtype(dtype)
    return dtype if dtype in (np.float16, np.float32, np.float64) else np.dtype(np.float32)


def _parts(xp, shape, axis, block, params, op_name):
    """Pieces covering the input: (index, split shape or None, params lined up with that piece)."""
    nd = len(shape)
    present = [p for p in params if p is not None]
    if not present:
        yield (Ellipsis,), None, params
        return
    ref = present[0]
    if block <= 0 and ref.size == 1 and ref.ndim <= 1:
        yield (Ellipsis,), None, [None if p is None else p.reshape(()) for p in params]
        return
    axis = _axis(axis, nd, op_name)
    if block <= 0:
        if ref.ndim != 1 or ref.shape[0] != shape[axis]:
            raise NodeExecutionError(f"{op_name}: per-axis scale must be 1-D of length {shape[axis]} "
                                     f"(axis {axis} of {list(shape)}), got shape {list(ref.shape)}")
        bshape = [1] * nd
        bshape[axis] = shape[axis]
        yield (Ellipsis,), None, [None if p is None else p.reshape(bshape) for p in params]
        return
    d = shape[axis]
    n_blocks = -(-d // block)
    want = tuple(shape[:axis]) + (n_blocks,) + tuple(shape[axis + 1:])
    if tuple(ref.shape) != want:
        raise NodeExecutionError(f"{op_name}: blocked scale for input {list(shape)}, axis {axis}, block_size "
                                 f"{block} must have shape {list(want)}, got {list(ref.shape)}")
    head = (slice(None),) * axis
    full = d // block
    if full:
        split = tuple(shape[:axis]) + (full, block) + tuple(shape[axis + 1:])
        yield head + (slice(0, full * block),), split, [
            None if p is None else xp.expand_dims(p[head + (slice(0, full),)], axis + 1) for p in params]
    if d % block:
        yield head + (slice(full * block, d),), None, [
            None if p is None else p[head + (slice(full, full + 1),)] for p in params]


def _views(sel, split, *arrays):
    views = [a[sel] for a in arrays]
    return [v.reshape(split) for v in views] if split is not None else views


def _axis(axis: int, ndim: int, op_name: str) -> int:
    if not -ndim <= axis < ndim:
        raise NodeExecutionError(f"{op_name}: axis {axis} out of range for rank {ndim}")
    return axis % ndim


def _quant_out_dtype(attrs, zero_point_dtype) -> np.dtype:
    if zero_point_dtype is not None:
        return np.dtype(zero_point_dtype)
    code = int(attrs.get("output_dtype", 0) or 0)
    return _onnx_dtype(code, "QuantizeLinear") if code else np.dtype(np.uint8)


def _quant_work_dtype(attrs, scale_dtype) -> np.dtype:
    precision = int(attrs.get("precision", 0) or 0)
    if precision:
        return _work_dtype(_onnx_dtype(precision, "QuantizeLinear"))
    return _work_dtype(scale_dtype if scale_dtype is not None else np.float32)


def _quantize_scratch(attrs, shapes, dtypes):
    return [(shapes[0], _quant_work_dtype(attrs, dtypes[1]))]


def _int_range(dtype):
    import ml_dtypes

    info = ml_dtypes.iinfo(dtype) if _is_low(dtype) else np.iinfo(dtype)
    return int(info.min), int(info.max)


@op("QuantizeLinear", since=10, scratch=_quantize_scratch)
def quantize_linear(ctx, x, scale, zero_point=None):
    """y = saturate(round_half_even(x / scale) + zero_point), in the zero point's (or output_dtype's) type."""
    out_dtype = _quant_out_dtype(ctx.attrs, None if zero_point is None else zero_point.dtype)
    work = _quant_work_dtype(ctx.attrs, scale.dtype)
    block = int(ctx.attr("block_size", 0) or 0)
    axis = int(ctx.attr("axis", 1))
    tmp = ctx.scratch(x.shape, work)
    out = ctx.out(0, x.shape, out_dtype)
    host = _is_low(out_dtype) or _is_low(x.dtype) or _is_low(scale.dtype)
    xp = np if host else ctx.xp
    if host:
        x, scale = ctx.host(x), ctx.host(scale)
        zero_point = ctx.host(zero_point)
        if not isinstance(tmp, np.ndarray):
            tmp = np.empty(x.shape, work)
        dst = out if isinstance(out, np.ndarray) else np.empty(x.shape, out_dtype)
    else:
        dst = out
    if x.size == 0:
        return out
    xs = x.astype(work) if _is_low(x.dtype) else x
    s = scale.astype(work)
    z = None if zero_point is None else zero_point.astype(work)
    is_float = out_dtype.kind == "f" or out_dtype.name.startswith(("float8", "float4"))
    saturate = bool(ctx.attr("saturate", 1))
    for sel, split, (sv, zv) in _parts(xp, x.shape, axis, block, [s, z], "QuantizeLinear"):
        xv, tv, ov = _views(sel, split, xs, tmp, dst)
        xp.divide(xv, sv, out=tv, casting="unsafe")
        if not is_float:
            xp.rint(tv, out=tv)
        if zv is not None:
            xp.add(tv, zv, out=tv)
        if is_float:
            if saturate and out_dtype.name.startswith("float8"):
                import ml_dtypes

                info = ml_dtypes.finfo(out_dtype)
                xp.clip(tv, float(info.min), float(info.max), out=tv)
        else:
            lo, hi = _int_range(out_dtype)
            xp.clip(tv, lo, hi, out=tv)
        ov[...] = tv
    if dst is not out:
        ctx.xp.copyto(out, ctx.xp.asarray(dst))
    return out


def _dequant_out_dtype(attrs, scale_dtype) -> np.dtype:
    code = int(attrs.get("output_dtype", 0) or 0)
    return _onnx_dtype(code, "DequantizeLinear") if code else np.dtype(scale_dtype)


def _dequantize_scratch(attrs, shapes, dtypes):
    out_dtype = _dequant_out_dtype(attrs, dtypes[1])
    work = _work_dtype(out_dtype)
    return [] if work == out_dtype else [(shapes[0], work)]


@op("DequantizeLinear", since=10, scratch=_dequantize_scratch)
def dequantize_linear(ctx, x, scale, zero_point=None):
    """y = (x - zero_point) * scale, in the scale's (or output_dtype's) type."""
    out_dtype = _dequant_out_dtype(ctx.attrs, scale.dtype)
    work = _work_dtype(out_dtype)
    block = int(ctx.attr("block_size", 0) or 0)
    axis = int(ctx.attr("axis", 1))
    out = ctx.out(0, x.shape, out_dtype)
    tmp = out if work == out_dtype else ctx.scratch(x.shape, work)
    host = _is_low(out_dtype) or _is_low(x.dtype) or _is_low(scale.dtype)
    xp = np if host else ctx.xp
    if host:
        x, scale, zero_point = ctx.host(x), ctx.host(scale), ctx.host(zero_point)
        if not isinstance(tmp, np.ndarray):
            tmp = np.empty(x.shape, work)
    if x.size == 0:
        return out
    s = scale.astype(work)
    z = None if zero_point is None else zero_point.astype(work)
    tmp[...] = x.astype(work) if _is_low(x.dtype) else x
    for sel, split, (sv, zv) in _parts(xp, x.shape, axis, block, [s, z], "DequantizeLinear"):
        (tv,) = _views(sel, split, tmp)
        if zv is not None:
            xp.subtract(tv, zv, out=tv)
        xp.multiply(tv, sv, out=tv)
    if tmp is not out:
        if isinstance(out, np.ndarray):
            out[...] = tmp
        else:
            ctx.xp.copyto(out, ctx.xp.asarray(tmp), casting="unsafe")
    return out


def _dynamic_scratch(attrs, shapes, dtypes):
    return [(shapes[0], np.dtype(np.float32))]


@op("DynamicQuantizeLinear", since=11, scratch=_dynamic_scratch)
def dynamic_quantize_linear(ctx, x):
    """uint8 quantization with scale and zero point chosen from the data range (which always holds 0)."""
    xp = ctx.xp
    if x.dtype != np.float32:
        raise NodeExecutionError(f"DynamicQuantizeLinear: expected float32 input, got {x.dtype}")
    lo = min(0.0, float(ctx.host(x.min()))) if x.size else 0.0
    hi = max(0.0, float(ctx.host(x.max()))) if x.size else 0.0
    scale = np.float32((np.float32(hi) - np.float32(lo)) / np.float32(255))
    if scale == 0:  # an all-zero input: onnxruntime reports scale 1 (any scale quantizes 0 to 0)
        scale = np.float32(1)
    zp = float(np.clip(np.rint(np.float32(0) - np.float32(lo) / scale), 0, 255))
    tmp = ctx.scratch(x.shape, np.float32)
    y = ctx.out(0, x.shape, np.uint8)
    if x.size:
        xp.divide(x, scale, out=tmp)
        xp.rint(tmp, out=tmp)
        xp.add(tmp, np.float32(zp), out=tmp)
        xp.clip(tmp, 0, 255, out=tmp)
        xp.copyto(y, tmp, casting="unsafe")
    y_scale = ctx.out(1, (), np.float32)
    y_scale[...] = scale
    y_zp = ctx.out(2, (), np.uint8)
    y_zp[...] = np.uint8(zp)
    return y, y_scale, y_zp

