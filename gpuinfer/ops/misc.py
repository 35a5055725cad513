"""Ops of no other family: Det, and the small ai.onnx.ml ops LabelEncoder, Binarizer and
ArrayFeatureExtractor.
"""
from __future__ import annotations

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.registry import op


@op("Det", since=11)
def det(ctx, x):
    """Determinant of each trailing square matrix: [..., M, M] -> [...]."""
    xp = ctx.xp
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise NodeExecutionError(f"Det: expected [..., M, M], got shape {list(x.shape)}")
    out = ctx.out(0, x.shape[:-2], x.dtype)
    if out.size:
        work = x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)
        xp.copyto(out, xp.linalg.det(work), casting="same_kind")
    return out


def _text(v):
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _mapping_side(ctx, side: str):
    """(values as a host list, dtype) of keys_* / values_* (tensor or list attribute)."""
    tensor = ctx.attr(f"{side}_tensor")
    if tensor is not None:
        arr = np.asarray(tensor)
        return ([_text(v) for v in arr.reshape(-1)] if arr.dtype.kind in "OUS" else arr.reshape(-1).tolist(),
                np.dtype(object) if arr.dtype.kind in "OUS" else arr.dtype)
    for suffix, dtype in (("strings", object), ("int64s", np.int64), ("floats", np.float32)):
        values = ctx.attr(f"{side}_{suffix}")
        if values is not None:
            return ([_text(v) for v in values] if dtype is object else list(values)), np.dtype(dtype)
    raise NodeExecutionError(f"LabelEncoder: no {side}_* attribute")


def _default(ctx, dtype: np.dtype):
    tensor = ctx.attr("default_tensor")
    if tensor is not None:
        value = np.asarray(tensor).reshape(-1)[0]
        return _text(value) if dtype == object else value
    if dtype == object:
        return _text(ctx.attr("default_string", "_Unused"))
    if dtype.kind in "iu":
        return int(ctx.attr("default_int64", -1))
    return float(ctx.attr("default_float", -0.0))


@op("LabelEncoder", since=2, domain="ai.onnx.ml")
def label_encoder(ctx, x):
    """Map each element through the keys -> values table; unknown keys get the default."""
    keys, key_dtype = _mapping_side(ctx, "keys")
    values, value_dtype = _mapping_side(ctx, "values")
    if len(keys) != len(values):
        raise NodeExecutionError(f"LabelEncoder: {len(keys)} keys but {len(values)} values")
    host = ctx.host(x)
    if key_dtype == object:
        lookup_keys = [_text(v) for v in host.reshape(-1)]
    else:
        lookup_keys = host.reshape(-1).astype(key_dtype).tolist()
    table = dict(zip(keys, values))
    default = _default(ctx, value_dtype)
    mapped = [table.get(k, default) for k in lookup_keys]
    result = np.empty(len(mapped), dtype=value_dtype)
    result[:] = mapped
    out = ctx.out(0, host.shape, value_dtype)
    if value_dtype == object:
        out[...] = result.reshape(host.shape)
    else:
        ctx.xp.copyto(out, ctx.xp.asarray(result.reshape(host.shape)))
    return out


@op("Binarizer", since=1, domain="ai.onnx.ml", inplace=True)
def binarizer(ctx, x):
    """1 where x > threshold, else 0, in x's dtype."""
    out = ctx.out(0, x.shape, x.dtype)
    ctx.xp.greater(x, x.dtype.type(ctx.attr("threshold", 0.0)), out=out, casting="unsafe")
    return out


@op("ArrayFeatureExtractor", since=1, domain="ai.onnx.ml")
def array_feature_extractor(ctx, x, indices):
    """Select columns ``indices`` of the last axis (a 1-D input gives a [1, N] result)."""
    idx = ctx.host(indices).reshape(-1).astype(np.int64)
    last = x.shape[-1] if x.ndim else 0
    if idx.size and (idx.min() < 0 or idx.max() >= last):
        raise NodeExecutionError(f"ArrayFeatureExtractor: indices {idx.tolist()} out of range for size {last}")
    lead = x.shape[:-1] if x.ndim > 1 else (1,)
    out = ctx.out(0, tuple(lead) + (idx.size,), x.dtype)
    src = x.reshape(tuple(lead) + (last,))
    if x.dtype == object:
        out[...] = src[..., idx]
    else:
        ctx.xp.take(src, ctx.xp.asarray(idx), axis=-1, out=out)
    return out
