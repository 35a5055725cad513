"""Attention family: Attention (23-25), RotaryEmbedding (23), LinearAttention and CausalConvWithState (27),
and ai.onnx.preview FlexAttention.

Attention works on 4-D views ``(batch, heads, seq, head_size)``; 3-D inputs are viewed that way
without copying.  Grouped-query attention never repeats K/V: queries are viewed as
``(batch, kv_heads, group, seq, head_size)`` and K/V broadcast over the group axis.
"""
from __future__ import annotations

import math

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.registry import op


# --- Attention ----------------------------------------------------------------------------------
def _softmax_dtype(attrs, dtype):
    """The dtype softmax runs in: ``softmax_precision`` if given, else the input's."""
    prec = attrs.get("softmax_precision")
    if prec is None:
        return np.dtype(dtype)
    from onnx import helper
    return np.dtype(helper.tensor_dtype_to_np_dtype(int(prec)))


def _dims(attrs, q_shape, k_shape, v_shape, past_shape):
    """(batch, q_heads, kv_heads, q_len, kv_len incl. past, head_size, v_head_size, past_len)."""
    if len(q_shape) == 3:
        hq, hkv = attrs.get("q_num_heads"), attrs.get("kv_num_heads")
        if hq is None or hkv is None:
            raise NodeExecutionError("Attention: 3-D inputs need q_num_heads and kv_num_heads")
        b, sq = q_shape[0], q_shape[1]
        d, s, dv = q_shape[2] // hq, k_shape[1], v_shape[2] // hkv
    elif len(q_shape) == 4:
        b, hq, sq, d = q_shape
        hkv, s, dv = k_shape[1], k_shape[2], v_shape[3]
    else:
        raise NodeExecutionError(f"Attention: Q must be 3-D or 4-D, got rank {len(q_shape)}")
    past = past_shape[2] if past_shape is not None else 0
    return int(b), int(hq), int(hkv), int(sq), int(s) + int(past), int(d), int(dv), int(past)


def _bias_shape(mask_shape, nonpad, b, sq, t):
    """Shape of the additive bias: the mask (right-aligned, last axis padded to t) and the per-batch rows."""
    base = (b if nonpad else 1, 1, sq, t)
    if mask_shape is None:
        return base
    m = (1,) * (4 - len(mask_shape)) + tuple(mask_shape[:-1]) + (t,)
    return tuple(int(x) for x in np.broadcast_shapes(m, base))


def _attention_scratch(attrs, shapes, dtypes):
    q, k, v = shapes[0], shapes[1], shapes[2]
    past = shapes[4] if len(shapes) > 4 else None
    b, hq, hkv, sq, t, d, dv, _ = _dims(attrs, q, k, v, past)
    dt = np.dtype(dtypes[0])
    mask = shapes[3] if len(shapes) > 3 else None
    nonpad = len(shapes) > 6 and shapes[6] is not None
    out = [((b, hq, sq, d), dt), ((b, hkv, t, d), dt), (_bias_shape(mask, nonpad, b, sq, t), dt),
           ((b, hq, sq, t), dt)]
    sdt = _softmax_dtype(attrs, dt)
    if sdt != dt:
        out.append(((b, hq, sq, t), sdt))
    return out


def _as4d(x, heads):
    """View a (batch, seq, heads*size) tensor as (batch, heads, seq, size); 4-D passes through."""
    if x.ndim == 4:
        return x
    b, s, hidden = x.shape
    return x.reshape(b, s, heads, hidden // heads).transpose(0, 2, 1, 3)


def _build_bias(ctx, xp, bias, mask, offset, nonpad, causal, left, right):
    """Fill ``bias`` with the additive mask: float mask values, -inf where a key is not allowed."""
    dt = bias.dtype
    sq, t = bias.shape[-2:]
    neg_inf = dt.type(-np.inf)
    bias[...] = 0
    if mask is not None:
        n = mask.shape[-1]
        if n > t:
            raise NodeExecutionError(f"Attention: attn_mask has {n} keys, more than the {t} available")
        m4 = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
        if mask.dtype == np.bool_:
            xp.copyto(bias[..., :n], neg_inf, where=xp.logical_not(m4))
        else:
            xp.copyto(bias[..., :n], m4)
        bias[..., n:] = neg_inf
    # offset: scalar (past length / 0) or per-batch (nonpad_kv_seqlen - q_len), shape (B, 1, 1, 1)
    pos = xp.arange(sq).reshape(sq, 1) + offset  # absolute position of each query
    j = xp.arange(t)
    blocked = xp.zeros(pos.shape[:-1] + (t,), dtype=bool)
    if causal:
        blocked |= j > pos
    if left >= 0:
        blocked |= pos - j > left
    if right >= 0:
        blocked |= j - pos > right
    if nonpad is not None:
        blocked |= j >= nonpad.reshape(-1, 1, 1, 1)
    xp.copyto(bias, neg_inf, where=blocked)


def _softmax_rows(xp, p):
    """In-place softmax over the last axis; a row of all -inf becomes all 0 (not NaN)."""
    m = xp.max(p, axis=-1, keepdims=True)
    m[xp.isneginf(m)] = 0
    p -= m
    xp.exp(p, out=p)
    s = xp.sum(p, axis=-1, keepdims=True)
    s[s == 0] = 1
    p /= s


@op("Attention", since=23, scratch=_attention_scratch)
def attention(ctx, q, k, v, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None):
    """Scaled dot-product attention with masks, causal/window limits, GQA, KV cache and softcap."""
    xp = ctx.xp
    attrs = ctx.attrs
    if q.ndim != k.ndim or q.ndim != v.ndim:
        raise NodeExecutionError(f"Attention: Q, K, V ranks differ: {q.ndim}, {k.ndim}, {v.ndim}")
    if (past_key is None) != (past_value is None):
        raise NodeExecutionError("Attention: past_key and past_value must be given together")
    b, hq, hkv, sq, t, d, dv, past = _dims(attrs, q.shape, k.shape, v.shape,
                                           None if past_key is None else past_key.shape)
    if hq % hkv:
        raise NodeExecutionError(f"Attention: q heads {hq} not a multiple of kv heads {hkv}")
    g = hq // hkv
    dt = q.dtype
    sdt = _softmax_dtype(attrs, dt)
    mode = int(ctx.attr("qk_matmul_output_mode", 0))
    softcap = float(ctx.attr("softcap", 0.0))
    causal = bool(ctx.attr("is_causal", 0))
    left = int(ctx.attr("left_window_size", -1)) if ctx.opset >= 25 else -1
    right = int(ctx.attr("right_window_size", -1)) if ctx.opset >= 25 else -1
    scale = ctx.attr("scale")
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    root = dt.type(math.sqrt(scale))  # Q and K are each scaled by sqrt(scale) (overflow guard)

    q4, k4, v4 = _as4d(q, hq), _as4d(k, hkv), _as4d(v, hkv)
    mask_shape = None if attn_mask is None else attn_mask.shape
    qs = ctx.scratch((b, hq, sq, d), dt)
    ks = ctx.scratch((b, hkv, t, d), dt)
    bias = ctx.scratch(_bias_shape(mask_shape, nonpad_kv_seqlen is not None, b, sq, t), dt)
    scores = ctx.scratch((b, hq, sq, t), dt)
    probs = ctx.scratch((b, hq, sq, t), sdt) if sdt != dt else scores

    # present key/value = past ++ new (a view of K/V when there is no past and no output wanted)
    if past_key is not None or ctx.wants(1):
        keys = ctx.out(1, (b, hkv, t, d), dt)
        values = ctx.out(2, (b, hkv, t, dv), v.dtype)
        if past_key is not None:
            xp.copyto(keys[:, :, :past], past_key)
            xp.copyto(values[:, :, :past], past_value)
        xp.copyto(keys[:, :, past:], k4)
        xp.copyto(values[:, :, past:], v4)
    else:
        keys, values = k4, v4

    xp.multiply(q4, root, out=qs)
    xp.multiply(keys, root, out=ks)
    s5 = scores.reshape(b, hkv, g, sq, t)
    xp.matmul(qs.reshape(b, hkv, g, sq, d), ks[:, :, None].swapaxes(-1, -2), out=s5)

    qk = ctx.out(3, (b, hq, sq, t), dt) if ctx.wants(3) else None
    if qk is not None and mode == 0:
        xp.copyto(qk, scores)
    if softcap > 0:
        cap = dt.type(softcap)
        scores /= cap
        xp.tanh(scores, out=scores)
        scores *= cap
    if qk is not None and mode == 1:
        xp.copyto(qk, scores)

    if nonpad_kv_seqlen is not None and ctx.opset >= 24:
        lens = xp.asarray(nonpad_kv_seqlen).astype(np.int64)
        offset = (lens - sq).reshape(-1, 1, 1, 1)
    else:
        lens, offset = None, past
    _build_bias(ctx, xp, bias, attn_mask, offset, lens, causal, left, right)
    scores += bias
    if qk is not None and mode == 2:
        xp.copyto(qk, scores)

    if probs is not scores:
        xp.copyto(probs, scores, casting="unsafe")
    _softmax_rows(xp, probs)
    dead = xp.isneginf(xp.max(bias, axis=-1, keepdims=True))  # rows with no allowed key
    xp.copyto(probs, sdt.type(0), where=dead)
    if probs is not scores:
        xp.copyto(scores, probs, casting="unsafe")
    if qk is not None and mode == 3:
        xp.copyto(qk, scores)
    if qk is not None and mode not in (0, 1, 2, 3):
        raise NodeExecutionError(f"Attention: qk_matmul_output_mode must be 0..3, got {mode}")

    if q.ndim == 4:
        y = ctx.out(0, (b, hq, sq, dv), dt)
        y5 = y.reshape(b, hkv, g, sq, dv)
    else:
        y = ctx.out(0, (b, sq, hq * dv), dt)
        y5 = y.reshape(b, sq, hkv, g, dv).transpose(0, 2, 3, 1, 4)
    xp.matmul(s5, values[:, :, None], out=y5)
    results = [y]
    if ctx.wants(1) or ctx.wants(3):
        results += [keys if ctx.wants(1) else None, values if ctx.wants(2) else None]
    if ctx.wants(3):
        results.append(qk)
    return tuple(results) if len(results) > 1 else y


op("Attention", since=24, scratch=_attention_scratch)(attention)
op("Attention", since=25, scratch=_attention_scratch)(attention)


# --- LinearAttention ----------------------------------------------------------------------------
def _linear_attention_scratch(attrs, shapes, dtypes):
    b, hkv = int(shapes[0][0]), int(attrs["kv_num_heads"])
    dk = int(shapes[0][2]) // int(attrs["q_num_heads"])
    dv = int(shapes[2][2]) // hkv
    state_dtype = np.dtype(dtypes[3] if len(dtypes) > 3 and dtypes[3] is not None else dtypes[0])
    bufs = [((b, hkv, dk, dv), np.dtype(np.float32))]  # k_t (x) v_t
    if state_dtype != np.float32:
        bufs.append(((b, hkv, dk, dv), np.dtype(np.float32)))  # the running state
    return bufs


@op("LinearAttention", since=27, scratch=_linear_attention_scratch)
def linear_attention(ctx, query, key, value, past_state=None, decay=None, beta=None):
    """Recurrent linear attention (linear / gated / delta / gated_delta), token by token in float32."""
    xp = ctx.xp
    rule = ctx.attr("update_rule", "gated_delta")
    hq, hkv = ctx.attr("q_num_heads"), ctx.attr("kv_num_heads")
    if rule not in ("linear", "gated", "delta", "gated_delta"):
        raise NodeExecutionError(f"LinearAttention: unknown update_rule {rule!r}")
    if hq is None or hkv is None or hq <= 0 or hkv <= 0 or hq % hkv:
        raise NodeExecutionError(f"LinearAttention: q_num_heads {hq} must be a positive multiple of "
                                 f"kv_num_heads {hkv}")
    if any(t.ndim != 3 for t in (query, key, value)):
        raise NodeExecutionError("LinearAttention: query, key, value must be (B, T, H*D)")
    gated, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
    if gated != (decay is not None) or delta != (beta is not None):
        raise NodeExecutionError(f"LinearAttention: update_rule {rule!r} needs decay={gated}, beta={delta}")
    b, t, _ = query.shape
    dk, dv, g = query.shape[2] // hq, value.shape[2] // hkv, hq // hkv
    f32 = np.dtype(np.float32)
    scale = float(ctx.attr("scale", 0.0)) or 1.0 / math.sqrt(dk)
    state_dtype = past_state.dtype if past_state is not None else query.dtype
    if past_state is not None and tuple(past_state.shape) != (b, hkv, dk, dv):
        raise NodeExecutionError(f"LinearAttention: past_state {tuple(past_state.shape)} != {(b, hkv, dk, dv)}")

    outer = ctx.scratch((b, hkv, dk, dv), f32)
    present = ctx.out(1, (b, hkv, dk, dv), state_dtype) if state_dtype == f32 else None
    state = present if present is not None else ctx.scratch((b, hkv, dk, dv), f32)
    if present is None:
        present = ctx.out(1, (b, hkv, dk, dv), state_dtype)
    if past_state is not None:
        xp.copyto(state, past_state, casting="unsafe")
    else:
        state[...] = 0
    y = ctx.out(0, (b, t, hq * dv), query.dtype)
    y5 = y.reshape(b, t, hkv, g, dv)
    q5 = query.reshape(b, t, hkv, g, dk)
    k4, v4 = key.reshape(b, t, hkv, dk), value.reshape(b, t, hkv, dv)
    if gated:
        per_key = decay.shape[-1] == hkv * dk
        if not per_key and decay.shape[-1] != hkv:
            raise NodeExecutionError(f"LinearAttention: decay last dim {decay.shape[-1]} must be {hkv} or {hkv * dk}")
        g4 = decay.reshape(b, t, hkv, dk if per_key else 1)
    if delta:
        beta3 = beta.reshape(b, t, beta.shape[-1])
    for i in range(t):
        k_t, v_t = k4[:, i].astype(f32), v4[:, i].astype(f32)
        if gated:
            state *= xp.exp(g4[:, i].astype(f32))[..., None]
        if delta:
            recalled = xp.einsum("bhkv,bhk->bhv", state, k_t)
            v_t = beta3[:, i].astype(f32)[..., None] * (v_t - recalled)
        xp.multiply(k_t[..., :, None], v_t[..., None, :], out=outer)
        state += outer
        o = xp.einsum("bhgk,bhkv->bhgv", q5[:, i].astype(f32), state)
        o *= f32.type(scale)
        xp.copyto(y5[:, i], o, casting="unsafe")
    if present is not state:
        xp.copyto(present, state, casting="unsafe")
    return y, present


# --- CausalConvWithState ------------------------------------------------------------------------
def _causal_conv_scratch(attrs, shapes, dtypes):
    b, c, n = (int(d) for d in shapes[0])
    dt, acc = np.dtype(dtypes[0]), np.result_type(dtypes[0], np.float32)
    bufs = [((b, c, n + int(shapes[1][2]) - 1), dt)]
    if acc != dt:
        bufs.append(((b, c, n), acc))  # float32 accumulator for half inputs
    return bufs


@op("CausalConvWithState", since=27, scratch=_causal_conv_scratch)
def causal_conv_with_state(ctx, x, weight, bias=None, past_state=None):
    """Depthwise causal 1-D convolution over [carry state ++ input]; returns output and the new carry."""
    xp = ctx.xp
    act = ctx.attr("activation", "none")
    if act not in ("none", "silu", "swish"):
        raise NodeExecutionError(f"CausalConvWithState: unknown activation {act!r}")
    if x.ndim != 3 or weight.ndim != 3 or weight.shape[0] != x.shape[1] or weight.shape[1] != 1:
        raise NodeExecutionError(f"CausalConvWithState: want input (B, C, L) and weight (C, 1, k), "
                                 f"got {tuple(x.shape)} and {tuple(weight.shape)}")
    b, c, n = (int(d) for d in x.shape)
    k = int(weight.shape[2])
    padded = ctx.scratch((b, c, n + k - 1), x.dtype)
    if past_state is not None:
        xp.copyto(padded[:, :, :k - 1], past_state, casting="unsafe")
    else:
        padded[:, :, :k - 1] = 0
    padded[:, :, k - 1:] = x
    cdt = np.result_type(x.dtype, np.float32)
    acc = ctx.scratch((b, c, n), cdt) if cdt != x.dtype else None
    y = ctx.out(0, (b, c, n), x.dtype)
    if acc is None:
        acc = y
    if bias is not None:
        xp.copyto(acc, bias.reshape(1, c, 1), casting="unsafe")
    else:
        acc[...] = 0
    w = weight.astype(cdt)
    for j in range(k):
        acc += w[:, 0, j].reshape(1, c, 1) * padded[:, :, j:j + n]
    if acc is not y:
        xp.copyto(y, acc, casting="unsafe")
    if act != "none":  # silu(v) = v * sigmoid(v), in float32 at least, of the rounded conv output
        if acc is not y:
            xp.copyto(acc, y)
        acc /= 1 + xp.exp(-acc)
        xp.copyto(y, acc, casting="unsafe")
    state = ctx.out(1, (b, c, k - 1), x.dtype)
    xp.copyto(state, padded[:, :, n:])
    return y, state


# --- FlexAttention (ai.onnx.preview) ------------------------------------------------------------
def _flex_dtype(attrs, dtype):
    """Softmax dtype: softmax_precision if given, else float32 (float64 stays float64)."""
    if attrs.get("softmax_precision") is not None:
        return _softmax_dtype(attrs, dtype)
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def _flex_scratch(attrs, shapes, dtypes):
    (b, hq, sq, d), (_, hkv, s, _), (_, _, _, dv) = (tuple(int(x) for x in sh) for sh in shapes[:3])
    dt, cdt = np.dtype(dtypes[0]), _flex_dtype(attrs, dtypes[0])
    bufs = [((b, hq, sq, d), dt), ((b, hkv, s, d), dt), ((b, hq, sq, s), dt)]
    if cdt != dt:
        bufs.append(((b, hq, sq, s), cdt))
    if cdt != np.dtype(dtypes[2]):
        bufs += [((b, hkv, s, dv), cdt), ((b, hq, sq, dv), cdt)]
    return bufs


def _run_mod(ctx, graph, x):
    """Run a score/prob modifier subgraph on ``x`` and copy its result back into ``x``."""
    result = ctx.run_graph(graph, [x])
    if len(result) != 1 or tuple(result[0].shape) != tuple(x.shape):
        raise NodeExecutionError(f"FlexAttention: modifier must return one tensor of shape {tuple(x.shape)}")
    ctx.xp.copyto(x, result[0], casting="unsafe")


@op("FlexAttention", since=1, domain="ai.onnx.preview", scratch=_flex_scratch)
def flex_attention(ctx, q, k, v):
    """Scaled dot-product attention with optional score_mod / prob_mod subgraphs (GQA by head groups)."""
    xp = ctx.xp
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise NodeExecutionError(f"FlexAttention: Q, K, V must be rank 4, got {q.ndim}, {k.ndim}, {v.ndim}")
    b, hq, sq, d = (int(x) for x in q.shape)
    hkv, s, dv = int(k.shape[1]), int(k.shape[2]), int(v.shape[3])
    if hkv <= 0 or hq % hkv or v.shape[1] != hkv or v.shape[2] != s or k.shape[3] != d:
        raise NodeExecutionError(f"FlexAttention: shapes do not fit: Q {tuple(q.shape)}, K {tuple(k.shape)}, "
                                 f"V {tuple(v.shape)}")
    g = hq // hkv
    dt, cdt = q.dtype, _flex_dtype(ctx.attrs, q.dtype)
    scale = ctx.attr("scale")
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    root = dt.type(math.sqrt(np.float32(scale)))

    qs = ctx.scratch((b, hq, sq, d), dt)
    ks = ctx.scratch((b, hkv, s, d), dt)
    raw = ctx.scratch((b, hq, sq, s), dt)
    scores = ctx.scratch((b, hq, sq, s), cdt) if cdt != dt else raw
    if cdt != v.dtype:
        vc = ctx.scratch((b, hkv, s, dv), cdt)
        yc = ctx.scratch((b, hq, sq, dv), cdt)
        xp.copyto(vc, v, casting="unsafe")
    else:
        vc, yc = v, None
    y = ctx.out(0, (b, hq, sq, dv), v.dtype)
    if yc is None:
        yc = y

    xp.multiply(q, root, out=qs)
    xp.multiply(k, root, out=ks)
    xp.matmul(qs.reshape(b, hkv, g, sq, d), ks[:, :, None].swapaxes(-1, -2), out=raw.reshape(b, hkv, g, sq, s))
    if scores is not raw:
        xp.copyto(scores, raw, casting="unsafe")
    if ctx.attr("score_mod") is not None:
        _run_mod(ctx, ctx.attr("score_mod"), scores)
    scores -= xp.max(scores, axis=-1, keepdims=True)
    xp.exp(scores, out=scores)
    scores /= xp.sum(scores, axis=-1, keepdims=True)
    if ctx.attr("prob_mod") is not None:
        _run_mod(ctx, ctx.attr("prob_mod"), scores)
    xp.matmul(scores.reshape(b, hkv, g, sq, s), vc[:, :, None], out=yc.reshape(b, hkv, g, sq, dv))
    if yc is not y:
        xp.copyto(y, yc, casting="unsafe")
    return y


# --- RotaryEmbedding ----------------------------------------------------------------------------
def _rope_dims(attrs, shape):
    """(batch, seq, heads, head_size, rotary_dim) of a 3-D or 4-D RotaryEmbedding input."""
    if len(shape) == 4:
        b, h, s, d = (int(x) for x in shape)
    elif len(shape) == 3:
        h = int(attrs.get("num_heads") or 0)
        if h <= 0:
            raise NodeExecutionError("RotaryEmbedding: 3-D input needs the num_heads attribute")
        b, s, d = int(shape[0]), int(shape[1]), int(shape[2]) // h
    else:
        raise NodeExecutionError(f"RotaryEmbedding: input must be 3-D or 4-D, got rank {len(shape)}")
    r = int(attrs.get("rotary_embedding_dim") or 0) or d
    return b, s, h, d, r


def _rope_scratch(attrs, shapes, dtypes):
    b, s, h, _, r = _rope_dims(attrs, shapes[0])
    return [((b, s, h, r // 2), np.dtype(dtypes[0]))]


@op("RotaryEmbedding", since=23, scratch=_rope_scratch)
def rotary_embedding(ctx, x, cos_cache, sin_cache, position_ids=None):
    """Rotate (half-split or interleaved) pairs of each head's first rotary_dim features by position angles."""
    xp = ctx.xp
    b, s, h, d, r = _rope_dims(ctx.attrs, x.shape)
    if r % 2 or r > d:
        raise NodeExecutionError(f"RotaryEmbedding: rotary dim {r} must be even and at most head size {d}")
    half = r // 2
    if position_ids is not None:
        cos, sin = cos_cache[position_ids], sin_cache[position_ids]
    else:
        cos, sin = cos_cache, sin_cache
    if cos.shape != (b, s, half) or sin.shape != (b, s, half):
        raise NodeExecutionError(f"RotaryEmbedding: cos/sin give {tuple(cos.shape)}, want {(b, s, half)}")
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    tmp = ctx.scratch((b, s, h, half), x.dtype)
    out = ctx.out(0, x.shape, x.dtype)
    if x.ndim == 4:  # work on (batch, seq, heads, head_size) views
        xv, ov = x.transpose(0, 2, 1, 3), out.transpose(0, 2, 1, 3)
    else:
        xv, ov = x.reshape(b, s, h, d), out.reshape(b, s, h, d)
    if ctx.attr("interleaved", 0):
        x1, x2, o1, o2 = xv[..., 0:r:2], xv[..., 1:r:2], ov[..., 0:r:2], ov[..., 1:r:2]
    else:
        x1, x2, o1, o2 = xv[..., :half], xv[..., half:r], ov[..., :half], ov[..., half:r]
    xp.multiply(cos, x1, out=o1)  # o1 = cos*x1 - sin*x2
    xp.multiply(sin, x2, out=tmp)
    o1 -= tmp
    xp.multiply(cos, x2, out=o2)  # o2 = sin*x1 + cos*x2
    xp.multiply(sin, x1, out=tmp)
    o2 += tmp
    ov[..., r:] = xv[..., r:]
    return out
