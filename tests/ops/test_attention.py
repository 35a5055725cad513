"""Attention, RotaryEmbedding, LinearAttention, CausalConvWithState and FlexAttention kernels.

Attention (23, 24) and RotaryEmbedding (23) run against onnxruntime; what onnxruntime lacks
(Attention-25 windows, the opset-27 ops, ai.onnx.preview FlexAttention) runs against plain numpy
formulas written here, token by token where the op is a recurrence.
"""
import math

import numpy as np
import pytest
from onnx import TensorProto, helper

import gpuinfer.ops  # noqa: F401  (registers the kernels)
from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.context import StandaloneContext
from gpuinfer.ops.registry import lookup
from tests.node_helpers import check_against_onnxruntime, run_kernel

rng = np.random.default_rng(0)


def rand(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# --- Attention against onnxruntime --------------------------------------------------------------
def qkv(b=2, hq=4, hkv=4, sq=3, skv=5, d=8, dv=8, dtype=np.float32):
    return rand(b, hq, sq, d, dtype=dtype), rand(b, hkv, skv, d, dtype=dtype), rand(b, hkv, skv, dv, dtype=dtype)


@pytest.mark.parametrize("opset", [23, 24])
@pytest.mark.parametrize("attrs", [{}, {"is_causal": 1}, {"scale": 0.3}, {"softcap": 1.5},
                                   {"is_causal": 1, "softcap": 2.0, "scale": 0.2}])
def test_attention_4d_mha_and_gqa(opset, attrs):
    for hq, hkv in ((4, 4), (4, 2), (4, 1)):
        q, k, v = qkv(hq=hq, hkv=hkv, dv=6)
        check_against_onnxruntime("Attention", [q, k, v], opset=opset, rtol=1e-4, atol=1e-5, **attrs)


@pytest.mark.parametrize("mask_shape", [(3, 5), (2, 1, 3, 5), (2, 4, 3, 5), (4, 3, 5)])
@pytest.mark.parametrize("causal", [0, 1])
def test_attention_float_and_bool_masks(mask_shape, causal):
    q, k, v = qkv()
    fmask = rand(*mask_shape)
    check_against_onnxruntime("Attention", [q, k, v, fmask], opset=23, rtol=1e-4, atol=1e-5, is_causal=causal)
    bmask = rng.random(mask_shape) > 0.3
    bmask[..., 0] = True  # keep every row attendable: onnxruntime returns NaN for fully-masked rows
    check_against_onnxruntime("Attention", [q, k, v, bmask], opset=23, rtol=1e-4, atol=1e-5, is_causal=causal)


def test_attention_3d_inputs_gqa():
    b, sq, skv, hq, hkv, d, dv = 2, 3, 4, 6, 2, 4, 5
    q, k, v = rand(b, sq, hq * d), rand(b, skv, hkv * d), rand(b, skv, hkv * dv)
    check_against_onnxruntime("Attention", [q, k, v], opset=23, rtol=1e-4, atol=1e-5,
                              q_num_heads=hq, kv_num_heads=hkv, is_causal=1)


@pytest.mark.parametrize("three_d", [False, True])
def test_attention_past_and_present(three_d):
    b, hq, hkv, sq, skv, past, d = 2, 4, 2, 3, 3, 4, 8
    q, k, v = qkv(b, hq, hkv, sq, skv, d, d)
    pk, pv = rand(b, hkv, past, d), rand(b, hkv, past, d)
    mask = rand(sq, past + skv)
    attrs = {}
    if three_d:
        q = q.transpose(0, 2, 1, 3).reshape(b, sq, hq * d)
        k = k.transpose(0, 2, 1, 3).reshape(b, skv, hkv * d)
        v = v.transpose(0, 2, 1, 3).reshape(b, skv, hkv * d)
        attrs = {"q_num_heads": hq, "kv_num_heads": hkv}
    check_against_onnxruntime("Attention", [q, k, v, mask, pk, pv], n_outputs=3, opset=23, rtol=1e-4,
                              atol=1e-5, **attrs)
    check_against_onnxruntime("Attention", [q, k, v, None, pk, pv], n_outputs=3, opset=23, rtol=1e-4,
                              atol=1e-5, is_causal=1, **attrs)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_attention_qk_matmul_output_modes(mode):
    q, k, v = qkv()
    pk, pv = rand(2, 4, 2, 8), rand(2, 4, 2, 8)
    mask = rand(3, 7)
    check_against_onnxruntime("Attention", [q, k, v, mask, pk, pv], n_outputs=4, opset=23, rtol=1e-4,
                              atol=1e-5, qk_matmul_output_mode=mode, softcap=2.0)


def test_attention_float16():
    q, k, v = qkv(dtype=np.float16)
    mask = rand(3, 5, dtype=np.float16)
    check_against_onnxruntime("Attention", [q, k, v, mask], opset=23, rtol=2e-2, atol=2e-3, is_causal=1)


# --- Attention against a numpy formula (opset 24 nonpad, opset 25 windows, masked rows) ---------
def attention_formula(q, k, v, allowed, scale=None, bias=0.0):
    """Softmax(QK^T * scale) V over the allowed keys; a row with none allowed gives zeros."""
    g = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q.astype(np.float64) @ k.swapaxes(-1, -2)) * scale + bias
    s = np.where(allowed, s, -np.inf)
    m = s.max(-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(m), m, 0))
    tot = e.sum(-1, keepdims=True)
    p = e / np.where(tot == 0, 1, tot)
    return (p @ v).astype(q.dtype)


def test_attention_short_mask_is_padded_with_neg_inf():
    q, k, v = qkv()
    mask = rand(3, 3)  # covers 3 of the 5 keys (onnxruntime refuses this; the spec pads with -inf)
    (y,) = run_kernel("Attention", [q, k, v, mask], opset=23)
    expected = attention_formula(q[..., :], k[:, :, :3], v[:, :, :3], True, scale=1 / math.sqrt(8),
                                 bias=mask)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_attention_nonpad_kv_seqlen_causal_offsets():
    q, k, v = qkv(b=3, hq=4, hkv=2, sq=2, skv=6)
    lens = np.array([6, 3, 1], np.int64)  # batch 2: offset -1, its first query sees nothing
    (y,) = run_kernel("Attention", [q, k, v, None, None, None, lens], opset=24, is_causal=1)
    i, j = np.arange(2)[:, None], np.arange(6)
    allowed = (j <= i + (lens - 2)[:, None, None, None]) & (j < lens[:, None, None, None])
    np.testing.assert_allclose(y, attention_formula(q, k, v, allowed), rtol=1e-5, atol=1e-6)
    assert not np.isnan(y).any() and np.all(y[2, :, 0] == 0)


@pytest.mark.parametrize("left,right,causal", [(2, -1, 1), (1, 2, 0), (0, 0, 0), (-1, -1, 0)])
def test_attention_25_sliding_window(left, right, causal):
    q, k, v = qkv(sq=4, skv=6)
    pk, pv = rand(2, 4, 2, 8), rand(2, 4, 2, 8)
    y, present_k, present_v = run_kernel("Attention", [q, k, v, None, pk, pv], n_outputs=3, opset=25,
                                         left_window_size=left, right_window_size=right, is_causal=causal)
    keys, values = np.concatenate([pk, k], 2), np.concatenate([pv, v], 2)
    pos, j = np.arange(4)[:, None] + 2, np.arange(8)
    allowed = np.ones((4, 8), bool)
    if causal:
        allowed &= j <= pos
    if left >= 0:
        allowed &= pos - j <= left
    if right >= 0:
        allowed &= j - pos <= right
    np.testing.assert_allclose(y, attention_formula(q, keys, values, allowed), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(present_k, keys)
    np.testing.assert_array_equal(present_v, values)


def test_attention_fully_masked_row_gives_zeros_and_mode3_zeros():
    q, k, v = qkv()
    mask = np.ones((3, 5), bool)
    mask[1] = False
    y, _, _, probs = run_kernel("Attention", [q, k, v, mask], n_outputs=4, opset=23, qk_matmul_output_mode=3)
    assert np.all(y[:, :, 1] == 0) and np.all(probs[:, :, 1] == 0)
    np.testing.assert_allclose(probs[:, :, [0, 2]].sum(-1), 1, rtol=1e-6)


def test_attention_softmax_precision_keeps_output_dtype():
    q, k, v = qkv(dtype=np.float16)
    y, _, _, probs = run_kernel("Attention", [q, k, v], n_outputs=4, opset=24, softmax_precision=1,
                                qk_matmul_output_mode=3)
    assert y.dtype == probs.dtype == np.float16
    np.testing.assert_allclose(y, attention_formula(q, k, v, True), rtol=2e-2, atol=2e-3)


def test_attention_scratch_function_matches_requests():
    q, k, v = qkv(hq=4, hkv=2)
    mask, pk, pv = rand(2, 1, 3, 7), rand(2, 2, 2, 8), rand(2, 2, 2, 8)
    spec = lookup("Attention", 23)
    asked = []

    class Recording(StandaloneContext):
        def scratch(self, shape, dtype):
            asked.append((tuple(shape), np.dtype(dtype)))
            return super().scratch(shape, dtype)

    attrs = {"softmax_precision": TensorProto.DOUBLE}
    spec.kernel(Recording(attrs=attrs, opset=23, n_outputs=3), q, k, v, mask, pk, pv)
    inputs = [q, k, v, mask, pk, pv]
    predicted = spec.scratch(attrs, [x.shape for x in inputs], [x.dtype for x in inputs])
    assert [(tuple(s), np.dtype(d)) for s, d in predicted] == asked


def test_attention_rejects_bad_heads():
    q, k, v = qkv(hq=3, hkv=2)
    with pytest.raises(NodeExecutionError, match="multiple"):
        run_kernel("Attention", [q, k, v], opset=23)
    with pytest.raises(NodeExecutionError, match="q_num_heads"):
        run_kernel("Attention", [rand(1, 2, 8), rand(1, 2, 8), rand(1, 2, 8)], opset=23)


# --- RotaryEmbedding against onnxruntime ---------------------------------------------------------
@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rotary_dim", [0, 4])
@pytest.mark.parametrize("three_d", [False, True])
def test_rotary_embedding(interleaved, rotary_dim, three_d):
    b, h, s, d = 2, 3, 4, 8
    half = (rotary_dim or d) // 2
    x = rand(b, s, h * d) if three_d else rand(b, h, s, d)
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": rotary_dim}
    if three_d:
        attrs["num_heads"] = h
    angles = rng.random((10, half)).astype(np.float32) * 3
    pos = rng.integers(0, 10, (b, s)).astype(np.int64)
    check_against_onnxruntime("RotaryEmbedding", [x, np.cos(angles), np.sin(angles), pos], opset=23,
                              rtol=1e-5, atol=1e-6, **attrs)
    cos3, sin3 = np.cos(angles[pos]), np.sin(angles[pos])  # no position_ids: caches are (B, S, half)
    check_against_onnxruntime("RotaryEmbedding", [x, cos3, sin3], opset=23, rtol=1e-5, atol=1e-6, **attrs)


# --- LinearAttention and CausalConvWithState against numpy recurrences --------------------------
def linear_attention_formula(q, k, v, state, decay, beta, hq, hkv, rule, scale):
    b, t, _ = q.shape
    dk, dv = q.shape[2] // hq, v.shape[2] // hkv
    q4, k4, v4 = q.reshape(b, t, hq, dk), k.reshape(b, t, hkv, dk), v.reshape(b, t, hkv, dv)
    s = state.astype(np.float64).copy()
    out = np.zeros((b, t, hq, dv))
    for i in range(t):
        for h in range(hkv):
            kt, vt = k4[:, i, h], v4[:, i, h]
            if decay is not None:
                g = decay.reshape(b, t, hkv, -1)[:, i, h]
                s[:, h] *= np.exp(g)[:, :, None]
            if beta is not None:
                vt = beta.reshape(b, t, -1)[:, i, h if beta.shape[-1] > 1 else 0][:, None] * \
                    (vt - np.einsum("bkv,bk->bv", s[:, h], kt))
            s[:, h] += kt[:, :, None] * vt[:, None, :]
        for hh in range(hq):
            out[:, i, hh] = scale * np.einsum("bk,bkv->bv", q4[:, i, hh], s[:, hh // (hq // hkv)])
    return out.reshape(b, t, hq * dv), s


@pytest.mark.parametrize("rule", ["linear", "gated", "delta", "gated_delta"])
@pytest.mark.parametrize("hq,hkv", [(2, 2), (4, 2), (2, 1)])
def test_linear_attention(rule, hq, hkv):
    b, t, dk, dv = 2, 3, 4, 5
    q, k, v = rand(b, t, hq * dk), rand(b, t, hkv * dk), rand(b, t, hkv * dv)
    state = rand(b, hkv, dk, dv)
    decay = -rng.random((b, t, hkv * dk)).astype(np.float32) if "gated" in rule else None
    beta = rng.random((b, t, hkv)).astype(np.float32) if "delta" in rule else None
    y, present = run_kernel("LinearAttention", [q, k, v, state, decay, beta], n_outputs=2, opset=27,
                            q_num_heads=hq, kv_num_heads=hkv, update_rule=rule, scale=0.7)
    ey, es = linear_attention_formula(q, k, v, state, decay, beta, hq, hkv, rule, 0.7)
    assert y.dtype == present.dtype == np.float32
    np.testing.assert_allclose(y, ey, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(present, es, rtol=1e-4, atol=1e-5)


def test_linear_attention_default_scale_no_past_and_head_decay_fp16():
    b, t, h, dk, dv = 1, 2, 2, 4, 4
    q, k, v = (rand(b, t, h * dk, dtype=np.float16) for _ in range(3))
    decay = -rng.random((b, t, h)).astype(np.float16)
    y, present = run_kernel("LinearAttention", [q, k, v, None, decay, None], n_outputs=2, opset=27,
                            q_num_heads=h, kv_num_heads=h, update_rule="gated")
    ey, es = linear_attention_formula(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32),
                                      np.zeros((b, h, dk, dv)), decay.astype(np.float32), None, h, h,
                                      "gated", 1 / math.sqrt(dk))
    assert y.dtype == present.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float32), ey, rtol=1e-2, atol=1e-2)
    with pytest.raises(NodeExecutionError, match="decay"):
        run_kernel("LinearAttention", [q, k, v], n_outputs=2, opset=27, q_num_heads=h, kv_num_heads=h)


@pytest.mark.parametrize("act", ["none", "silu", "swish"])
@pytest.mark.parametrize("k,n,past", [(3, 5, True), (4, 2, False), (1, 3, False), (2, 1, True)])
def test_causal_conv_with_state(act, k, n, past):
    b, c = 2, 3
    x, w, bias = rand(b, c, n), rand(c, 1, k), rand(c)
    state = rand(b, c, k - 1) if past else None
    y, present = run_kernel("CausalConvWithState", [x, w, bias, state], n_outputs=2, opset=27, activation=act)
    padded = np.concatenate([state if past else np.zeros((b, c, k - 1), np.float32), x], axis=2)
    ey = bias[None, :, None] + sum(w[None, :, 0, j, None] * padded[:, :, j:j + n] for j in range(k))
    if act != "none":
        ey = ey / (1 + np.exp(-ey))
    np.testing.assert_allclose(y, ey, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(present, padded[:, :, n:])


# --- FlexAttention (ai.onnx.preview) ------------------------------------------------------------
def _flex(q, k, v, **attrs):
    spec = lookup("FlexAttention", 1, "ai.onnx.preview")
    return spec.kernel(StandaloneContext(attrs=attrs, opset=1, runner=_run_tiny_graph), q, k, v)


def _run_tiny_graph(graph, inputs):
    """Subgraph runner for the one-node Sqrt modifier these tests build (the session runs real ones)."""
    assert [n.op_type for n in graph.node] == ["Sqrt"]
    return [np.sqrt(inputs[0])]


@pytest.mark.parametrize("hq,hkv", [(4, 4), (4, 2)])
def test_flex_attention_plain_matches_formula(hq, hkv):
    q, k, v = qkv(hq=hq, hkv=hkv, dv=6)
    y = _flex(q, k, v, scale=0.4)
    np.testing.assert_allclose(y, attention_formula(q, k, v, True, scale=0.4), rtol=1e-5, atol=1e-6)


def test_flex_attention_prob_mod_runs_subgraph_and_fp16_uses_float32():
    q, k, v = qkv(dtype=np.float16)
    node = helper.make_node("Sqrt", ["p"], ["o"])
    g = helper.make_graph([node], "mod", [helper.make_tensor_value_info("p", TensorProto.FLOAT, None)],
                          [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)])
    y = _flex(q, k, v, prob_mod=g)
    assert y.dtype == np.float16
    kk, vv = k.astype(np.float32), v.astype(np.float32)
    s = q.astype(np.float32) @ kk.swapaxes(-1, -2) / math.sqrt(8)
    p = np.exp(s - s.max(-1, keepdims=True))
    p = np.sqrt(p / p.sum(-1, keepdims=True))
    np.testing.assert_allclose(y.astype(np.float32), p @ vv, rtol=1e-2, atol=1e-2)
