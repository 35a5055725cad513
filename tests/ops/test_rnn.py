"""LSTM, GRU and RNN kernels against onnxruntime (ORT has no batch-major RNNs: layout=1 is checked
against ORT run on the time-major transposes)."""
from __future__ import annotations

import numpy as np
import pytest

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.context import StandaloneContext
from gpuinfer.ops.registry import lookup
from tests.node_helpers import check_against_onnxruntime, run_kernel, run_onnxruntime, single_node_model

TOL = dict(rtol=1e-4, atol=1e-5)
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
N_OUT = {"LSTM": 3, "GRU": 2, "RNN": 2}
DIRECTIONS = ["forward", "reverse", "bidirectional"]


def make_inputs(op, seq=4, batch=3, in_size=5, hidden=6, n_dir=1, bias=True, lens=None,
                init=False, peep=False, layout=0, seed=0, dtype=np.float32):
    """Positional inputs (X, W, R, B, sequence_lens, initial_h[, initial_c, P]), trailing Nones cut."""
    rng = np.random.default_rng(seed)
    g = GATES[op]

    def rand(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    state = (batch, n_dir, hidden) if layout else (n_dir, batch, hidden)
    inputs = [rand(batch, seq, in_size) if layout else rand(seq, batch, in_size),
              rand(n_dir, g * hidden, in_size, scale=0.5), rand(n_dir, g * hidden, hidden, scale=0.5),
              rand(n_dir, 2 * g * hidden, scale=0.5) if bias else None,
              None if lens is None else np.array(lens, dtype=np.int32),
              rand(*state) if init else None]
    if op == "LSTM":
        inputs += [rand(*state) if init else None, rand(n_dir, 3 * hidden, scale=0.5) if peep else None]
    while inputs[-1] is None:
        inputs.pop()
    return inputs


def check(op, inputs, n_outputs=None, opset=14, tol=TOL, **attrs):
    attrs.setdefault("hidden_size", inputs[2].shape[-1])
    return check_against_onnxruntime(op, inputs, n_outputs=n_outputs or N_OUT[op], opset=opset, **tol, **attrs)


def n_dirs(direction):
    return 2 if direction == "bidirectional" else 1


# ---------------------------------------------------------------- directions, optional inputs

@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("bias,init", [(False, False), (True, False), (False, True), (True, True)])
def test_directions_and_optional_inputs(op, direction, bias, init):
    inputs = make_inputs(op, n_dir=n_dirs(direction), bias=bias, init=init)
    check(op, inputs, direction=direction)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_ragged_sequence_lens(op, direction):
    # a full row, a partial row and an empty row: Y is zero past each row's end, Y_h its last state
    inputs = make_inputs(op, seq=5, batch=4, n_dir=n_dirs(direction), lens=[5, 2, 0, 4], init=True)
    got = check(op, inputs, direction=direction)
    assert not got[0][2:, :, 1].any() and not got[0][:, :, 2].any()


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_full_sequence_lens_equals_none(op):
    with_lens = make_inputs(op, seq=3, batch=2, lens=[3, 3], init=True)
    check(op, with_lens)
    without = list(with_lens)
    without[4] = None
    a = run_kernel(op, with_lens, N_OUT[op], 14, hidden_size=6)
    b = run_kernel(op, without, N_OUT[op], 14, hidden_size=6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------- LSTM specifics

@pytest.mark.parametrize("direction", DIRECTIONS)
def test_lstm_peepholes(direction):
    check("LSTM", make_inputs("LSTM", n_dir=n_dirs(direction), init=True, peep=True), direction=direction)


def test_lstm_peepholes_without_other_optional_inputs():
    inputs = make_inputs("LSTM", bias=False, peep=True)  # B, lens and states given as empty names
    assert inputs[3] is None and inputs[5] is None
    check("LSTM", inputs)


def test_lstm_peepholes_clip_ragged_bidirectional():
    inputs = make_inputs("LSTM", seq=4, batch=3, n_dir=2, lens=[1, 4, 3], init=True, peep=True, seed=3)
    check("LSTM", inputs, direction="bidirectional", clip=0.7)


@pytest.mark.parametrize("peep", [False, True])
def test_lstm_input_forget(peep):
    check("LSTM", make_inputs("LSTM", init=True, peep=peep, seed=4), input_forget=1)


def test_lstm_silero_vad_shape_is_exact():
    # Silero VAD's LSTM: hidden 128, batch 1, one step, forward, weights as constants
    inputs = make_inputs("LSTM", seq=1, batch=1, in_size=128, hidden=128, init=True, seed=5)
    inputs[1] *= 0.2
    inputs[2] *= 0.2
    got = check("LSTM", inputs, constant_inputs=[1, 2, 3], tol=dict(rtol=1e-5, atol=1e-6))
    x, w, r, b, _, h0, c0 = [None if a is None else a.astype(np.float64) for a in inputs]
    gates = x[0] @ w[0].T + h0[0] @ r[0].T + b[0, :512] + b[0, 512:]
    i, o, f, c = np.split(gates, 4, axis=-1)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    cell = sig(f) * c0[0] + sig(i) * np.tanh(c)
    hidden = sig(o) * np.tanh(cell)
    np.testing.assert_allclose(got[1][0], hidden, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[2][0], cell, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got[0][0, 0], got[1][0])


# ---------------------------------------------------------------- GRU specifics

@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("bias", [False, True])
def test_gru_linear_before_reset(lbr, direction, bias):
    inputs = make_inputs("GRU", n_dir=n_dirs(direction), bias=bias, init=True, lens=[4, 1, 3], seed=6)
    check("GRU", inputs, direction=direction, linear_before_reset=lbr)


# ---------------------------------------------------------------- clip, activations

@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_clip(op, direction):
    got = check(op, make_inputs(op, n_dir=n_dirs(direction), init=True, seed=7), direction=direction, clip=0.25)
    unclipped = run_kernel(op, make_inputs(op, n_dir=n_dirs(direction), init=True, seed=7), N_OUT[op], 14,
                           direction=direction, hidden_size=6)
    assert not np.allclose(got[0], unclipped[0])  # the clip really bit


ALL_ACTIVATIONS = ["Sigmoid", "Tanh", "Relu", "Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh",
                   "HardSigmoid", "Elu", "Softsign", "Softplus"]


@pytest.mark.parametrize("name", ALL_ACTIVATIONS)
def test_rnn_each_activation_with_alpha_beta(name):
    check("RNN", make_inputs("RNN", init=True, seed=8), activations=[name],
          activation_alpha=[0.6], activation_beta=[0.3])


@pytest.mark.parametrize("name", ["Sigmoid", "Relu", "LeakyRelu", "HardSigmoid", "Elu", "Softsign", "Softplus"])
def test_rnn_activation_defaults_agreeing_with_onnxruntime(name):
    check("RNN", make_inputs("RNN", init=True, seed=9), activations=[name])


@pytest.mark.parametrize("name,formula", [
    ("ThresholdedRelu", lambda v: np.where(v > 1.0, v, 0.0)),  # alpha 1, as the ThresholdedRelu op
    ("Affine", lambda v: v),                                   # alpha 1, beta 0
    ("ScaledTanh", np.tanh),                                   # alpha 1, beta 1
])
def test_rnn_activation_defaults_follow_onnx_operators(name, formula):
    # onnxruntime defaults these to alpha = beta = 0; the spec says "same as the ONNX operators".
    # One step from a zero state: Y = f(X W^T + Wb + Rb), checked against that formula.
    x, w, r, b = make_inputs("RNN", seq=1, seed=10)
    x *= 3
    y, y_h = run_kernel("RNN", [x, w, r, b], 2, 14, activations=[name], hidden_size=6)
    pre = x[0].astype(np.float64) @ w[0].T + b[0, :6] + b[0, 6:]
    np.testing.assert_allclose(y[0, 0], formula(pre), rtol=1e-5, atol=1e-6)
    assert y.dtype == np.float32


def test_lstm_activations_take_alphas_in_order():
    # alphas/betas go, in order, only to the functions that use one (HardSigmoid then Elu, ...)
    check("LSTM", make_inputs("LSTM", init=True, seed=11),
          activations=["HardSigmoid", "Elu", "ScaledTanh"], activation_alpha=[0.3, 0.8, 1.5],
          activation_beta=[0.4, 0.7])


def test_lstm_bidirectional_activations_differ_per_direction():
    check("LSTM", make_inputs("LSTM", n_dir=2, init=True, peep=True, seed=12), direction="bidirectional",
          activations=["Sigmoid", "Tanh", "Tanh", "HardSigmoid", "Softsign", "LeakyRelu"],
          activation_alpha=[0.25, 0.05], activation_beta=[0.45])


@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_activations_and_clip(lbr):
    check("GRU", make_inputs("GRU", n_dir=2, init=True, seed=13), direction="bidirectional", clip=0.9,
          linear_before_reset=lbr, activations=["HardSigmoid", "Softsign", "Sigmoid", "Relu"],
          activation_alpha=[0.3], activation_beta=[0.6])


def test_rnn_bidirectional_activations():
    check("RNN", make_inputs("RNN", n_dir=2, init=True, seed=14), direction="bidirectional",
          activations=["Relu", "LeakyRelu"], activation_alpha=[0.2])


# ---------------------------------------------------------------- layout = 1

def check_batch_major(op, inputs, n_outputs, **attrs):
    """Run gpuinfer with layout=1 and ORT on the time-major transposes of the same data."""
    time_major = list(inputs)
    time_major[0] = np.ascontiguousarray(inputs[0].swapaxes(0, 1))
    for i in (5, 6):  # initial_h, initial_c
        if i < len(inputs) and inputs[i] is not None:
            time_major[i] = np.ascontiguousarray(inputs[i].swapaxes(0, 1))
    attrs.setdefault("hidden_size", inputs[2].shape[-1])
    model = single_node_model(op, time_major, n_outputs, 14, **attrs)
    expected = run_onnxruntime(model, {f"in{i}": a for i, a in enumerate(time_major) if a is not None})
    got = run_kernel(op, inputs, n_outputs, 14, layout=1, **attrs)
    expected = [expected[0].transpose(2, 0, 1, 3)] + [e.swapaxes(0, 1) for e in expected[1:]]
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(g, e, **TOL)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_layout_batch_major(op, direction):
    inputs = make_inputs(op, seq=4, batch=3, n_dir=n_dirs(direction), lens=[4, 2, 3], init=True,
                         peep=op == "LSTM", layout=1, seed=15)
    check_batch_major(op, inputs, N_OUT[op], direction=direction)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_layout_batch_major_without_states(op):
    check_batch_major(op, make_inputs(op, n_dir=2, layout=1, seed=16), N_OUT[op], direction="bidirectional")


def test_layout_ignored_before_opset_14():
    # opset 7 has no layout attribute: a stray one must not flip the axes
    inputs = make_inputs("GRU", init=True, seed=17)
    got = run_kernel("GRU", inputs, 2, 7, hidden_size=6, layout=1)
    ref = run_kernel("GRU", inputs, 2, 7, hidden_size=6)
    np.testing.assert_array_equal(got[0], ref[0])


# ---------------------------------------------------------------- omitted outputs, opsets, dtypes

@pytest.mark.parametrize("op,n_outputs,direction", [("LSTM", 1, "forward"), ("LSTM", 2, "reverse"),
                                                    ("GRU", 1, "bidirectional"), ("RNN", 1, "forward")])
def test_trailing_outputs_omitted(op, n_outputs, direction):
    inputs = make_inputs(op, n_dir=n_dirs(direction), init=True, lens=[4, 2, 3], seed=18)
    assert len(check(op, inputs, n_outputs=n_outputs, direction=direction)) == n_outputs


class OutputsByName(StandaloneContext):
    """A context for a node whose output names may be empty (omitted), as the executor sees them."""

    def __init__(self, names, **kw):
        super().__init__(n_outputs=len(names), **kw)
        self.names = names

    def wants(self, i):
        return i < len(self.names) and self.names[i] != ""


@pytest.mark.parametrize("op,names", [("LSTM", ["", "h", "c"]), ("LSTM", ["", "", "c"]),
                                      ("LSTM", ["y", "", "c"]), ("GRU", ["", "h"]), ("RNN", ["", "h"])])
@pytest.mark.parametrize("ragged", [False, True])
def test_omitted_outputs_in_the_middle(op, names, ragged):
    inputs = make_inputs(op, n_dir=2, init=True, lens=[4, 0, 2] if ragged else None, seed=19)
    attrs = dict(hidden_size=6, direction="bidirectional")
    model = single_node_model(op, inputs, len(names), 14, **attrs)
    node = model.graph.node[0]
    kept = [o for o, n in zip(model.graph.output, names) if n]
    for i, n in enumerate(names):
        if not n:
            node.output[i] = ""
    del model.graph.output[:]
    model.graph.output.extend(kept)
    expected = run_onnxruntime(model, {f"in{i}": a for i, a in enumerate(inputs) if a is not None})
    ctx = OutputsByName(names, attrs=attrs, opset=14, op_type=op)
    got = lookup(op, 14).kernel(ctx, *inputs)
    assert len(got) == len(names)
    assert [g is None for g in got] == [not n for n in names]
    for g, e in zip([g for g in got if g is not None], expected):
        np.testing.assert_allclose(g, e, **TOL)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("opset", [7, 14, 22])
def test_opsets(op, opset):
    check(op, make_inputs(op, n_dir=2, init=True, lens=[4, 3, 1], seed=20), opset=opset,
          direction="bidirectional")


@pytest.mark.parametrize("op,opset", [("LSTM", 1), ("GRU", 1), ("GRU", 3), ("RNN", 1)])
def test_old_opsets_behave_as_opset_7(op, opset):
    # ORT implements nothing before opset 7; the maths did not change, so compare with ORT at 7
    inputs = make_inputs(op, init=True, seed=21)
    attrs = dict(hidden_size=6, direction="reverse")
    if op == "GRU" and opset == 3:
        attrs["linear_before_reset"] = 1
    expected = run_onnxruntime(single_node_model(op, inputs, N_OUT[op], 7, **attrs),
                               {f"in{i}": a for i, a in enumerate(inputs) if a is not None})
    got = run_kernel(op, inputs, N_OUT[op], opset, **attrs)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, **TOL)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_float64_stays_float64(op):
    # ORT's CPU RNNs take float32 only: compare a float64 run with the float32 ORT result
    inputs32 = make_inputs(op, n_dir=2, init=True, lens=[4, 2, 3], seed=22)
    expected = check(op, inputs32, direction="bidirectional")
    inputs64 = [None if a is None or a.dtype != np.float32 else a.astype(np.float64) for a in inputs32]
    inputs64[4] = inputs32[4]
    got = run_kernel(op, inputs64, N_OUT[op], 14, hidden_size=6, direction="bidirectional")
    for g, e in zip(got, expected):
        assert g.dtype == np.float64
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def test_longer_sequence_bigger_batch():
    inputs = make_inputs("LSTM", seq=16, batch=7, in_size=9, hidden=11, n_dir=2, init=True, peep=True,
                         lens=[16, 3, 9, 1, 16, 12, 0], seed=23)
    check("LSTM", inputs, direction="bidirectional")


def test_hidden_size_attribute_optional():
    inputs = make_inputs("LSTM", n_dir=2, init=True, seed=24)
    a = run_kernel("LSTM", inputs, 3, 14, direction="bidirectional")
    b = check("LSTM", inputs, direction="bidirectional")
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_empty_batch():
    inputs = make_inputs("GRU", batch=0)
    got = run_kernel("GRU", inputs, 2, 14, hidden_size=6)
    assert got[0].shape == (4, 1, 0, 6) and got[1].shape == (1, 0, 6)


# ---------------------------------------------------------------- scratch and errors

class RecordingContext(StandaloneContext):
    """Records every scratch request, to hold the kernel to its declared ``scratch=`` list."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.requests = []

    def scratch(self, shape, dtype):
        self.requests.append((tuple(int(d) for d in shape), np.dtype(dtype)))
        return super().scratch(shape, dtype)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("lens,layout,opset", [(None, 0, 14), ([4, 1, 0], 0, 14), ([4, 1, 0], 1, 14),
                                              (None, 1, 14), ([4, 4, 4], 0, 7)])
def test_scratch_declaration_matches_requests(op, lens, layout, opset):
    inputs = make_inputs(op, n_dir=2, lens=lens, init=True, layout=layout)
    attrs = dict(hidden_size=6, direction="bidirectional", layout=layout)
    if opset < 14:
        del attrs["layout"]
    spec = lookup(op, opset)
    padded = inputs + [None] * (8 - len(inputs))
    declared = spec.scratch(attrs, [None if a is None else a.shape for a in padded],
                            [None if a is None else a.dtype for a in padded])
    ctx = RecordingContext(attrs=attrs, opset=opset, n_outputs=N_OUT[op], op_type=op)
    spec.kernel(ctx, *inputs)
    assert ctx.requests == [(tuple(s), np.dtype(d)) for s, d in declared]
    assert ctx.requests[0][0] == (2, 4 * 3, GATES[op] * 6)  # the whole-sequence projection


@pytest.mark.parametrize("change,message", [
    (dict(direction="sideways"), "direction"),
    (dict(direction="bidirectional"), "W.shape"),
    (dict(hidden_size=7), "hidden_size"),
    (dict(activations=["Tanh", "Tanh"]), "activations"),
    (dict(activations=["Swish"]), "Swish"),
])
def test_bad_attributes_raise(change, message):
    attrs = {"hidden_size": 6, **change}
    with pytest.raises(NodeExecutionError, match=message):
        run_kernel("RNN", make_inputs("RNN"), 2, 14, **attrs)


def test_bad_inputs_raise():
    x, w, r, b = make_inputs("LSTM")
    with pytest.raises(NodeExecutionError, match="B"):
        run_kernel("LSTM", [x, w, r, b[:, :-1]], 3, 14)
    with pytest.raises(NodeExecutionError, match="sequence_lens"):
        run_kernel("LSTM", [x, w, r, b, np.array([5, 1, 1], np.int32)], 3, 14)
    with pytest.raises(NodeExecutionError, match="P"):
        run_kernel("LSTM", [x, w, r, b, None, None, None, np.zeros((1, 5), np.float32)], 3, 14)
    with pytest.raises(NodeExecutionError, match="3-D"):
        run_kernel("GRU", [x[0], w[:, :18], r[:, :18]], 2, 14)
