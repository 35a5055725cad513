"""Recurrent layers: LSTM, GRU and RNN (ONNX opsets 1 to 22).

Every kernel works the same way: one matmul projects the whole input sequence for all
directions at once into a scratch buffer (biases folded in), then each time step does one small
matmul of the hidden state with the recurrence weights plus the elementwise gate updates, all into
preallocated buffers.  ``Y`` is written straight into its output buffer; with ragged
``sequence_lens`` finished rows keep their state and get zeros in ``Y``, as onnxruntime does.
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.elementwise import clamp
from gpuinfer.ops.registry import op

# ---------------------------------------------------------------- activation functions
# Each writes f(x) into ``out`` (which may be ``x`` itself); ``a``/``b`` are alpha/beta in x's dtype.


def _sigmoid(xp, x, out, a, b):
    half = out.dtype.type(0.5)  # 0.5 * tanh(x / 2) + 0.5: no overflow for large |x|
    xp.multiply(x, half, out=out)
    xp.tanh(out, out=out)
    xp.multiply(out, half, out=out)
    xp.add(out, half, out=out)


def _tanh(xp, x, out, a, b):
    xp.tanh(x, out=out)


def _relu(xp, x, out, a, b):
    clamp(xp, x, 0, None, out)


def _affine(xp, x, out, a, b):
    xp.multiply(x, a, out=out)
    xp.add(out, b, out=out)


def _leaky_relu(xp, x, out, a, b):
    out[...] = xp.where(x >= 0, x, x * a)


def _thresholded_relu(xp, x, out, a, b):
    out[...] = xp.where(x > a, x, out.dtype.type(0))


def _scaled_tanh(xp, x, out, a, b):
    xp.multiply(x, b, out=out)
    xp.tanh(out, out=out)
    xp.multiply(out, a, out=out)


def _hard_sigmoid(xp, x, out, a, b):
    xp.multiply(x, a, out=out)
    xp.add(out, b, out=out)
    xp.clip(out, 0, 1, out=out)


def _elu(xp, x, out, a, b):
    out[...] = xp.where(x >= 0, x, xp.expm1(xp.minimum(x, 0)) * a)


def _softsign(xp, x, out, a, b):
    den = xp.abs(x)
    den += 1
    xp.divide(x, den, out=out)


def _softplus(xp, x, out, a, b):
    xp.logaddexp(x, out.dtype.type(0), out=out)


# lower-case name -> (function, uses alpha, uses beta, default alpha, default beta).  Defaults are
# those of the ONNX operators of the same name (ScaledTanh has none in the spec: 1, 1 makes it Tanh).
# onnxruntime differs here: it defaults ThresholdedRelu, Affine and ScaledTanh to alpha = beta = 0.
_ACTIVATIONS = {
    "sigmoid": (_sigmoid, False, False, 0.0, 0.0),
    "tanh": (_tanh, False, False, 0.0, 0.0),
    "relu": (_relu, False, False, 0.0, 0.0),
    "affine": (_affine, True, True, 1.0, 0.0),
    "leakyrelu": (_leaky_relu, True, False, 0.01, 0.0),
    "thresholdedrelu": (_thresholded_relu, True, False, 1.0, 0.0),
    "scaledtanh": (_scaled_tanh, True, True, 1.0, 1.0),
    "hardsigmoid": (_hard_sigmoid, True, True, 0.2, 0.5),
    "elu": (_elu, True, False, 1.0, 0.0),
    "softsign": (_softsign, False, False, 0.0, 0.0),
    "softplus": (_softplus, False, False, 0.0, 0.0),
}

Act = Callable[..., None]  # act(x, out=None): in place unless out is given


def _activations(ctx, op_type: str, n_dir: int, dtype: np.dtype) -> list[list[Act]]:
    """The activation functions per direction; alphas (betas) go in order to those that take one."""
    defaults = _DEFAULT_ACTS[op_type]
    names = ctx.attr("activations") or defaults * n_dir
    alphas, betas = ctx.attr("activation_alpha") or (), ctx.attr("activation_beta") or ()
    return _bound_activations(ctx.xp, op_type, tuple(names), tuple(alphas), tuple(betas),
                              len(defaults), n_dir, np.dtype(dtype))


@functools.lru_cache(maxsize=256)
def _bound_activations(xp, op_type, names, alphas, betas, per_dir, n_dir, dtype):
    if len(names) != per_dir * n_dir:
        raise NodeExecutionError(f"{op_type}: expected {per_dir * n_dir} activations, got {list(names)}")
    alphas, betas, kind = list(alphas), list(betas), dtype.type
    bound: list[Act] = []
    for name in names:
        key = name.decode() if isinstance(name, bytes) else str(name)
        if key.lower() not in _ACTIVATIONS:
            raise NodeExecutionError(f"{op_type}: unknown activation {key!r}")
        fn, uses_a, uses_b, a, b = _ACTIVATIONS[key.lower()]
        if uses_a and alphas:
            a = alphas.pop(0)
        if uses_b and betas:
            b = betas.pop(0)
        bound.append(_bind(xp, fn, kind(a), kind(b)))
    return [bound[d * per_dir:(d + 1) * per_dir] for d in range(n_dir)]


def _bind(xp, fn, a, b) -> Act:
    def act(x, out=None):
        fn(xp, x, x if out is None else out, a, b)
    return act


# ---------------------------------------------------------------- shapes and scratch

_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_DEFAULT_ACTS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}


def _dims(op_type: str, attrs: dict, shapes: list, batchwise: bool) -> tuple[int, int, int, int, int]:
    """(seq_length, batch, num_directions, hidden, layout) from the input shapes and attributes."""
    x, w, r = shapes[0], shapes[1], shapes[2]
    if len(x) != 3 or len(w) != 3 or len(r) != 3:
        raise NodeExecutionError(f"{op_type}: X, W and R must be 3-D, got {x}, {w}, {r}")
    layout = int(attrs.get("layout", 0)) if batchwise else 0
    seq, batch = (x[1], x[0]) if layout else (x[0], x[1])
    return int(seq), int(batch), int(w[0]), int(r[-1]), layout


def _work_units(op_type: str, ragged: bool) -> int:
    """[batch, hidden] blocks of per-step work space: gates, two hidden states, then extras."""
    units = _GATES[op_type] + 2
    if op_type != "RNN":
        units += 1  # elementwise temporary
    if op_type == "LSTM":
        units += 2 if ragged else 1  # cell state (and its copy before a step, for ragged batches)
    return units


def _make_scratch(op_type: str, batchwise: bool):
    """The scratch function of ``op_type``; the kernel requests exactly this list, in this order."""
    def scratch(attrs: dict, shapes: list, dtypes: list) -> list:
        seq, batch, n_dir, hidden, _ = _dims(op_type, attrs, shapes, batchwise)
        dt = np.dtype(dtypes[0])
        ragged = len(shapes) > 4 and shapes[4] is not None
        return [((n_dir, seq * batch, _GATES[op_type] * hidden), dt),   # input projection, all steps
                ((_work_units(op_type, ragged), batch, hidden), dt)]    # per-step work space
    return scratch


_SCRATCH = {(op_type, batchwise): _make_scratch(op_type, batchwise)
            for op_type in _GATES for batchwise in (False, True)}


# ---------------------------------------------------------------- the step functions


def _clip(xp, x, clip):
    if clip is not None:
        xp.clip(x, -clip, clip, out=x)


def _lstm_step(xp, h, c, xw, rt, peep, acts, clip, input_forget, g, tmp, dst):
    """One LSTM step (gates i, o, f, c): updates ``c`` in place and writes the new hidden into ``dst``."""
    n = h.shape[-1]
    f_act, g_act, h_act = acts
    xp.matmul(h, rt, out=g)
    xp.add(g, xw, out=g)
    i, o, f, cand = g[:, :n], g[:, n:2 * n], g[:, 2 * n:3 * n], g[:, 3 * n:]
    if peep is None:
        _clip(xp, g, clip)
        f_act(g[:, :3 * n])  # i, o and f are adjacent and share f()
        g_act(cand)
    else:
        p_i, p_o, p_f = peep
        xp.multiply(c, p_i, out=tmp)
        xp.add(i, tmp, out=i)
        xp.multiply(c, p_f, out=tmp)
        xp.add(f, tmp, out=f)
        _clip(xp, i, clip)
        _clip(xp, g[:, 2 * n:], clip)
        f_act(i)
        f_act(f)
        g_act(cand)
    if input_forget:
        xp.subtract(1, i, out=f)
    xp.multiply(c, f, out=c)
    xp.multiply(i, cand, out=i)
    xp.add(c, i, out=c)
    if peep is not None:  # the output gate peeks at the new cell state
        xp.multiply(c, p_o, out=tmp)
        xp.add(o, tmp, out=o)
        _clip(xp, o, clip)
        f_act(o)
    h_act(c, out=tmp)
    xp.multiply(o, tmp, out=dst)


def _gru_step(xp, h, xw, rt, views, rbh, acts, clip, lbr, tmp, dst):
    """One GRU step (gates z, r, h); writes the new hidden into ``dst``."""
    n = h.shape[-1]
    f_act, g_act = acts
    zr, hh = views[0], views[1]
    if lbr:  # one matmul for all three gates: the reset gate scales (H R_h^T + Rb_h)
        xp.matmul(h, rt, out=views[2])
    else:
        xp.matmul(h, rt[:, :2 * n], out=zr)
    xp.add(zr, xw[:, :2 * n], out=zr)
    _clip(xp, zr, clip)
    f_act(zr)
    z, r = zr[:, :n], zr[:, n:]
    if lbr:
        if rbh is not None:
            xp.add(hh, rbh, out=hh)
        xp.multiply(hh, r, out=hh)
    else:
        xp.multiply(r, h, out=tmp)
        xp.matmul(tmp, rt[:, 2 * n:], out=hh)
    xp.add(hh, xw[:, 2 * n:], out=hh)
    _clip(xp, hh, clip)
    g_act(hh)
    xp.subtract(h, hh, out=tmp)  # H = (1 - z) hh + z H_prev = hh + z (H_prev - hh)
    xp.multiply(tmp, z, out=tmp)
    xp.add(hh, tmp, out=dst)


def _rnn_step(xp, h, xw, rt, acts, clip, g, dst):
    """One simple-RNN step: H = f(X W^T + H R^T + Wb + Rb) into ``dst``."""
    xp.matmul(h, rt, out=g)
    xp.add(g, xw, out=g)
    _clip(xp, g, clip)
    acts[0](g, out=dst)


# ---------------------------------------------------------------- the shared driver


class _Ragged:
    """Which batch rows have run out of sequence at each step (``sequence_lens`` shorter than X)."""

    def __init__(self, xp, lens: np.ndarray, seq: int):
        ended = lens[None, :] <= np.arange(seq)[:, None]  # [seq, batch] on the host
        self.any_ended = ended.any(axis=1)
        self.ended = xp.asarray(ended[:, :, None])
        self.running = xp.asarray(~ended[:, :, None])
        self.empty = xp.asarray((lens == 0)[:, None]) if (lens == 0).any() else None


def _sequence_lens(ctx, op_type: str, seq_lens, seq: int, batch: int) -> "_Ragged | None":
    if seq_lens is None:
        return None
    lens = np.asarray(ctx.host(seq_lens)).reshape(-1).astype(np.int64)
    if lens.shape != (batch,) or (lens < 0).any() or (lens > seq).any():
        raise NodeExecutionError(f"{op_type}: sequence_lens must be {batch} values in [0, {seq}], got {lens}")
    return None if (lens == seq).all() else _Ragged(ctx.xp, lens, seq)


def _direction(ctx, op_type: str, n_dir: int) -> str:
    direction = ctx.attr("direction", "forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction == "foward":  # the default as spelled in GRU-1's schema
        direction = "forward"
    if direction not in ("forward", "reverse", "bidirectional"):
        raise NodeExecutionError(f"{op_type}: direction must be forward, reverse or bidirectional, "
                                 f"got {direction!r}")
    if n_dir != (2 if direction == "bidirectional" else 1):
        raise NodeExecutionError(f"{op_type}: direction {direction} needs W.shape[0] == "
                                 f"{2 if direction == 'bidirectional' else 1}, got {n_dir}")
    return direction


def _check_shapes(ctx, op_type, n_dir, width, hidden, state_shape, x, w, r, b, states, peep) -> None:
    hs = ctx.attr("hidden_size")
    want_w, want_r = (n_dir, width, x.shape[2]), (n_dir, width, hidden)
    if (hs is not None and int(hs) != hidden) or w.shape != want_w or r.shape != want_r:
        raise NodeExecutionError(f"{op_type}: expected W {want_w} and R {want_r} (hidden_size={hs}), "
                                 f"got W {tuple(w.shape)}, R {tuple(r.shape)}")
    if b is not None and b.shape != (n_dir, 2 * width):
        raise NodeExecutionError(f"{op_type}: expected B {(n_dir, 2 * width)}, got {tuple(b.shape)}")
    for name, s in zip(("initial_h", "initial_c"), states):
        if s is not None and s.shape != state_shape:
            raise NodeExecutionError(f"{op_type}: expected {name} {state_shape}, got {tuple(s.shape)}")
    if peep is not None and peep.shape != (n_dir, 3 * hidden):
        raise NodeExecutionError(f"{op_type}: expected P {(n_dir, 3 * hidden)}, got {tuple(peep.shape)}")


def _sweep(xp, step, h, xw_at, y_at, seq: int, reverse: bool, hbuf, ragged, cell=None, cell_old=None):
    """Run ``step(h, xw_t, dst)`` over one direction's time steps; returns the last hidden state.

    Without ragged rows each new hidden state is written straight into Y (when Y is wanted) and
    read back from there by the next step; otherwise two scratch buffers take turns.
    """
    direct = y_at is not None and ragged is None
    for k in range(seq):
        t = seq - 1 - k if reverse else k
        dst = y_at(t) if direct else hbuf[k % 2]
        ended = ragged.ended[t] if ragged is not None and ragged.any_ended[t] else None
        if ended is not None and cell is not None:
            xp.copyto(cell_old, cell)
        step(h, xw_at(t), dst)
        if ended is not None:  # finished rows keep their state
            xp.copyto(dst, h, where=ended)
            if cell is not None:
                xp.copyto(cell, cell_old, where=ended)
        if y_at is not None and not direct:  # Y was zeroed: copy only the rows still running
            if ended is None:
                xp.copyto(y_at(t), dst)
            else:
                xp.copyto(y_at(t), dst, where=ragged.running[t])
        h = dst
    return h


def _run(ctx, op_type: str, batchwise: bool, x, w, r, b, seq_lens, init_h,
         init_c=None, peep=None) -> tuple:
    """Shared body of LSTM, GRU and RNN; returns (Y, Y_h[, Y_c]) cut to the node's outputs."""
    xp = ctx.xp
    shapes = [None if a is None else tuple(a.shape) for a in (x, w, r, b, seq_lens, init_h)]
    seq, batch, n_dir, hidden, layout = _dims(op_type, ctx.attrs, shapes, batchwise)
    width = _GATES[op_type] * hidden
    dtype = x.dtype
    direction = _direction(ctx, op_type, n_dir)
    state_shape = (batch, n_dir, hidden) if layout else (n_dir, batch, hidden)
    _check_shapes(ctx, op_type, n_dir, width, hidden, state_shape, x, w, r, b, (init_h, init_c), peep)
    clip = ctx.attr("clip")
    clip = None if clip is None else dtype.type(clip)
    acts = _activations(ctx, op_type, n_dir, dtype)
    lbr = int(ctx.attr("linear_before_reset", 0)) if op_type == "GRU" else 0
    input_forget = int(ctx.attr("input_forget", 0)) if op_type == "LSTM" else 0
    ragged = _sequence_lens(ctx, op_type, seq_lens, seq, batch)

    proj, work = [ctx.scratch(s, d) for s, d in _SCRATCH[op_type, batchwise](ctx.attrs, shapes, [dtype])]
    gates = work[:_GATES[op_type]].reshape(batch, width)
    hbuf, extra = work[_GATES[op_type]:_GATES[op_type] + 2], work[_GATES[op_type] + 2:]

    y = ctx.out(0, (batch, seq, n_dir, hidden) if layout else (seq, n_dir, batch, hidden), dtype) \
        if ctx.wants(0) else None
    y_h = ctx.out(1, state_shape, dtype) if ctx.wants(1) else None
    y_c = ctx.out(2, state_shape, dtype) if op_type == "LSTM" and ctx.wants(2) else None
    if y is not None and ragged is not None:
        y[...] = 0

    def at_t(a, t):  # time step t of a [seq, batch, ...] / [batch, seq, ...] array
        return a[:, t] if layout else a[t]

    def at_d(a, d):  # direction d of a [dirs, batch, ...] / [batch, dirs, ...] array
        return a[:, d] if layout else a[d]

    # the input projection of every step and direction in one matmul, biases folded in
    xp.matmul(x.reshape(seq * batch, x.shape[2]), w.transpose(0, 2, 1), out=proj)
    if b is not None:  # Wb + Rb, [dirs, gates * hidden], in the work space (free until the steps; an
        # empty batch has none, and nothing to add it to)
        room = work.reshape(-1)[:n_dir * width]
        bias = xp.add(b[:, :width], b[:, width:], out=room.reshape(n_dir, width) if room.size == n_dir * width else None)
        if lbr:  # Rb_h stays inside the reset gate's product
            xp.copyto(bias[:, 2 * hidden:], b[:, 2 * hidden:width])
        xp.add(proj, bias[:, None, :], out=proj)
    steps_in = proj.reshape((n_dir, batch, seq, width) if layout else (n_dir, seq, batch, width))

    cell = cell_old = None
    if op_type == "LSTM":
        tmp, cell = extra[0], extra[1]
        cell_old = extra[2] if ragged is not None else None
    elif op_type == "GRU":
        tmp = extra[0]
        if lbr:
            gru_views = (gates[:, :2 * hidden], gates[:, 2 * hidden:], gates)
        else:  # separate contiguous blocks, so both matmuls write whole arrays
            flat = gates.reshape(-1)
            gru_views = (flat[:batch * 2 * hidden].reshape(batch, 2 * hidden),
                         flat[batch * 2 * hidden:].reshape(batch, hidden))

    for d in range(n_dir):
        rt, act = r[d].T, acts[d]
        if op_type == "LSTM":
            p = None if peep is None else (peep[d, :hidden], peep[d, hidden:2 * hidden], peep[d, 2 * hidden:])
            def step(h, xw, dst, rt=rt, act=act, p=p):
                _lstm_step(xp, h, cell, xw, rt, p, act, clip, input_forget, gates, tmp, dst)
            if init_c is not None:
                xp.copyto(cell, at_d(init_c, d))
            else:
                cell[...] = 0
        elif op_type == "GRU":
            rbh = b[d, width + 2 * hidden:] if lbr and b is not None else None
            def step(h, xw, dst, rt=rt, act=act, rbh=rbh):
                _gru_step(xp, h, xw, rt, gru_views, rbh, act, clip, lbr, tmp, dst)
        else:
            def step(h, xw, dst, rt=rt, act=act):
                _rnn_step(xp, h, xw, rt, act, clip, gates, dst)
        if init_h is not None:
            h0 = at_d(init_h, d)
        else:
            h0 = hbuf[1]
            h0[...] = 0
        y_at = None if y is None else (lambda t, d=d: at_d(at_t(y, t), d))
        xw_d = steps_in[d]
        last = _sweep(xp, step, h0, lambda t: at_t(xw_d, t), y_at, seq,
                      direction == "reverse" or d == 1, hbuf, ragged, cell, cell_old)
        for out, final in ((y_h, last), (y_c, cell)):
            if out is not None:
                xp.copyto(at_d(out, d), final)
                if ragged is not None and ragged.empty is not None:  # as onnxruntime: empty rows end at 0
                    xp.copyto(at_d(out, d), 0, where=ragged.empty)

    outs = (y, y_h, y_c) if op_type == "LSTM" else (y, y_h)
    return outs[:max(1, ctx.n_outputs)]


# ---------------------------------------------------------------- registrations
# Opset 14 added ``layout`` (batch-major X, Y, states); 22 only widened the types.


@op("LSTM", since=1, scratch=_SCRATCH["LSTM", False])
@op("LSTM", since=7, scratch=_SCRATCH["LSTM", False])
def lstm_7(ctx, x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None):
    """Long short-term memory layer: Y (every hidden state), Y_h and Y_c (last hidden and cell)."""
    return _run(ctx, "LSTM", False, x, w, r, b, sequence_lens, initial_h, initial_c, p)


@op("LSTM", since=14, scratch=_SCRATCH["LSTM", True])
@op("LSTM", since=22, scratch=_SCRATCH["LSTM", True])
def lstm_14(ctx, x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None):
    """LSTM with ``layout`` (1: batch-major X, Y and states)."""
    return _run(ctx, "LSTM", True, x, w, r, b, sequence_lens, initial_h, initial_c, p)


@op("GRU", since=1, scratch=_SCRATCH["GRU", False])
@op("GRU", since=3, scratch=_SCRATCH["GRU", False])
@op("GRU", since=7, scratch=_SCRATCH["GRU", False])
def gru_7(ctx, x, w, r, b=None, sequence_lens=None, initial_h=None):
    """Gated recurrent unit layer: Y (every hidden state) and Y_h (the last one)."""
    return _run(ctx, "GRU", False, x, w, r, b, sequence_lens, initial_h)


@op("GRU", since=14, scratch=_SCRATCH["GRU", True])
@op("GRU", since=22, scratch=_SCRATCH["GRU", True])
def gru_14(ctx, x, w, r, b=None, sequence_lens=None, initial_h=None):
    """GRU with ``layout`` (1: batch-major X, Y and states)."""
    return _run(ctx, "GRU", True, x, w, r, b, sequence_lens, initial_h)


@op("RNN", since=1, scratch=_SCRATCH["RNN", False])
@op("RNN", since=7, scratch=_SCRATCH["RNN", False])
def rnn_7(ctx, x, w, r, b=None, sequence_lens=None, initial_h=None):
    """Simple (Elman) recurrent layer: Y (every hidden state) and Y_h (the last one)."""
    return _run(ctx, "RNN", False, x, w, r, b, sequence_lens, initial_h)


@op("RNN", since=14, scratch=_SCRATCH["RNN", True])
@op("RNN", since=22, scratch=_SCRATCH["RNN", True])
def rnn_14(ctx, x, w, r, b=None, sequence_lens=None, initial_h=None):
    """RNN with ``layout`` (1: batch-major X, Y and states)."""
    return _run(ctx, "RNN", True, x, w, r, b, sequence_lens, initial_h)
