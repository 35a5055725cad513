"""Cast, CastLike and BitCast: numeric, bool, string and (host-only, via ml_dtypes) bfloat16 / float8 /
4- and 2-bit conversions.

Numeric casts are C-style (float -> int truncates, nonzero -> True).  Strings live on the host as
object arrays; numbers print as onnxruntime prints them (8 significant digits, INF/-INF/NaN).
Casts to float8 saturate to the finite range unless ``saturate=0``; FLOAT8E8M0 (a power of two, no
mantissa) goes through onnx's own converter with the node's ``round_mode``.
"""
from __future__ import annotations

import functools

import numpy as np
import onnx
import onnx.numpy_helper
from onnx import helper

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.registry import op

_ROUND_MODES = ("up", "down", "nearest")
_SATURATING = ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")


@functools.lru_cache(maxsize=None)
def onnx_to_np_dtype(to) -> np.dtype:
    """The numpy dtype of an ONNX element type given as TensorProto int or (Cast-1) name.

    Cached: the protobuf enum lookups cost more than a small Cast itself."""
    if isinstance(to, (bytes, str)):
        name = to.decode() if isinstance(to, bytes) else to
        code = getattr(onnx.TensorProto, name.upper(), None)
    else:
        code = int(to)
        name = onnx.TensorProto.DataType.Name(code) if code in onnx.TensorProto.DataType.values() else str(to)
    if code is None or code == onnx.TensorProto.UNDEFINED:
        raise NodeExecutionError(f"Cast: unsupported target type {name}")
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(code))
    except Exception as e:  # noqa: BLE001 - any lookup failure means the type is unknown here
        raise NodeExecutionError(f"Cast: unsupported target type {name}") from e


def _is_low_precision(dtype: np.dtype) -> bool:
    """ml_dtypes types (bfloat16, float8, 4- and 2-bit): host-only, converted through numpy."""
    return dtype.name.startswith(("bfloat16", "float8", "float4", "int4", "uint4", "int2", "uint2"))


def _low_precision_cast(ctx, x, dtype: np.dtype, saturate: bool):
    """Host conversion to or from an ml_dtypes type; float8 saturates to its finite range if asked."""
    host = ctx.host(x)
    if dtype.name.startswith("float8_e8m0") and host.dtype.kind == "f":
        round_mode = ctx.attr("round_mode", "up")
        if round_mode not in _ROUND_MODES:
            raise NodeExecutionError(f"Cast: round_mode must be one of {_ROUND_MODES}, got {round_mode!r}")
        return onnx.numpy_helper.to_float8e8m0(host.astype(np.float32), saturate, round_mode)
    if saturate and dtype.name in _SATURATING and host.dtype.kind == "f":
        import ml_dtypes

        info = ml_dtypes.finfo(dtype)
        host = np.clip(host, float(info.min), float(info.max))
    return host.astype(dtype)


def _to_string(v) -> str:
    """One number as onnxruntime's Cast prints it."""
    if isinstance(v, (bool, np.bool_)):
        return "1" if v else "0"
    if isinstance(v, (float, np.floating)):
        if np.isnan(v):
            return "NaN"
        if np.isinf(v):
            return "INF" if v > 0 else "-INF"
        return "%.8g" % float(v)
    return str(int(v))


def _parse(s, dtype: np.dtype):
    """One string as a number of ``dtype`` (strtod-like for floats, integer text for ints)."""
    s = s.decode() if isinstance(s, bytes) else str(s)
    t = s.strip()
    if dtype.kind == "b":
        low = t.lower()
        if low in ("true", "false"):
            return low == "true"
        return float(t) != 0
    if dtype.kind in "iu":
        try:
            return int(t)
        except ValueError:
            return int(float(t))
    try:
        return float(t)
    except ValueError:
        return float.fromhex(t)


def cast_into(ctx, x, dtype: np.dtype):
    """Write ``x`` converted to ``dtype`` into output 0."""
    xp = ctx.xp
    out = ctx.out(0, x.shape, dtype)
    if dtype == object:
        flat = out.reshape(-1)
        for i, v in enumerate(ctx.host(x).reshape(-1).tolist() if x.dtype != object else x.reshape(-1)):
            flat[i] = v if x.dtype == object else _to_string(x.dtype.type(v))
        return out
    if _is_low_precision(dtype) or _is_low_precision(x.dtype):
        xp.copyto(out, xp.asarray(_low_precision_cast(ctx, x, dtype, bool(ctx.attr("saturate", 1)))))
        return out
    if x.dtype == object:
        values = [_parse(v, dtype) for v in x.reshape(-1)]
        host = np.asarray(values).astype(dtype).reshape(x.shape)
        xp.copyto(out, xp.asarray(host))
        return out
    with np.errstate(all="ignore"):
        xp.copyto(out, x, casting="unsafe")
    return out


@op("Cast", since=1)
def cast(ctx, x):
    """Convert to the element type named by ``to`` (``saturate`` applies to float8 targets)."""
    return cast_into(ctx, x, onnx_to_np_dtype(ctx.attr("to")))


@op("CastLike", since=15)
def cast_like(ctx, x, target):
    """Convert to the element type of the second input."""
    return cast_into(ctx, x, np.dtype(target.dtype))


@op("BitCast", since=26)
def bit_cast(ctx, x):
    """Reinterpret the bytes as element type ``to`` of the same width (little endian)."""
    dtype = onnx_to_np_dtype(ctx.attr("to"))
    if dtype == object or x.dtype == object or dtype.itemsize != x.dtype.itemsize or dtype.name.startswith(
            ("int4", "uint4", "int2", "uint2", "float4")):
        raise NodeExecutionError(f"BitCast: cannot reinterpret {x.dtype} as {dtype} (widths must match)")
    out = ctx.out(0, x.shape, dtype)
    ctx.xp.copyto(out.view(x.dtype), x)
    return out
