"""Random generators: RandomUniform(Like), RandomNormal(Like), Bernoulli, Multinomial.

Samples are drawn on the host with numpy's ``Generator`` (a fresh one seeded by the ``seed``
attribute when given, so a seeded node repeats its draw; else one shared unseeded generator) and
copied into the output buffer.  Values cannot match another runtime's generator, only its
distribution, shapes and dtypes.
"""
from __future__ import annotations

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.cast import onnx_to_np_dtype
from gpuinfer.ops.registry import op

_SHARED = np.random.default_rng()


def _rng(ctx) -> np.random.Generator:
    seed = ctx.attr("seed")
    if seed is None:
        return _SHARED
    return np.random.default_rng(int(np.float64(seed).view(np.uint64)))  # the float's bits: every seed distinct


def _dtype(ctx, default) -> np.dtype:
    code = ctx.attr("dtype")
    dtype = np.dtype(default) if code is None else onnx_to_np_dtype(code)
    if dtype.kind != "f" and ctx.op_type.startswith("Random"):
        raise NodeExecutionError(f"{ctx.op_type}: output dtype must be floating point, got {dtype}")
    return dtype


def _emit(ctx, values: np.ndarray, dtype) -> object:
    out = ctx.out(0, tuple(int(d) for d in values.shape), dtype)
    ctx.xp.copyto(out, ctx.xp.asarray(values.astype(dtype)))
    return out


def _uniform(ctx, shape, dtype):
    low, high = float(ctx.attr("low", 0.0)), float(ctx.attr("high", 1.0))
    return _emit(ctx, _rng(ctx).uniform(low, high, size=shape), dtype)


def _normal(ctx, shape, dtype):
    mean, scale = float(ctx.attr("mean", 0.0)), float(ctx.attr("scale", 1.0))
    return _emit(ctx, _rng(ctx).normal(mean, scale, size=shape), dtype)


@op("RandomUniform", since=1)
def random_uniform(ctx):
    """Uniform samples in [low, high) of attribute ``shape``."""
    return _uniform(ctx, tuple(int(d) for d in ctx.attr("shape")), _dtype(ctx, np.float32))


@op("RandomNormal", since=1)
def random_normal(ctx):
    """Normal samples (mean, scale) of attribute ``shape``."""
    return _normal(ctx, tuple(int(d) for d in ctx.attr("shape")), _dtype(ctx, np.float32))


@op("RandomUniformLike", since=1)
def random_uniform_like(ctx, x):
    """Uniform samples in [low, high) shaped like the input (its dtype unless ``dtype`` says)."""
    return _uniform(ctx, x.shape, _dtype(ctx, x.dtype))


@op("RandomNormalLike", since=1)
def random_normal_like(ctx, x):
    """Normal samples (mean, scale) shaped like the input."""
    return _normal(ctx, x.shape, _dtype(ctx, x.dtype))


@op("Bernoulli", since=15)
def bernoulli(ctx, p):
    """1 with probability p (elementwise), else 0."""
    probs = ctx.host(p).astype(np.float64)
    draws = _rng(ctx).random(size=probs.shape) < probs
    return _emit(ctx, draws, _dtype(ctx, p.dtype))


@op("Multinomial", since=7)
def multinomial(ctx, logits):
    """``sample_size`` class indices per batch row, drawn from softmax(row) (input is unnormalized log-probs)."""
    host = ctx.host(logits).astype(np.float64)
    if host.ndim != 2:
        raise NodeExecutionError(f"Multinomial: expected input [batch, classes], got {list(host.shape)}")
    dtype = _dtype(ctx, np.int32)
    if dtype not in (np.int32, np.int64):
        raise NodeExecutionError(f"Multinomial: output dtype must be int32 or int64, got {dtype}")
    count = int(ctx.attr("sample_size", 1))
    probs = np.exp(host - host.max(axis=1, keepdims=True))
    cumulative = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    draws = _rng(ctx).random(size=(host.shape[0], count))
    picks = np.stack([np.searchsorted(c, d, side="right") for c, d in zip(cumulative, draws)]) \
        if host.shape[0] else np.zeros((0, count), np.int64)
    return _emit(ctx, np.minimum(picks, host.shape[1] - 1), dtype)
