"""ai.onnx.preview.training optimizers (not in onnxruntime): checked against the spec's formulas
written out in float64 numpy, for one and several tensors, through the kernel and a session."""
import numpy as np
import pytest
from onnx import TensorProto, helper

import gpuinfer.ops  # noqa: F401  (registers the kernels)
from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.context import StandaloneContext
from gpuinfer.ops.registry import lookup
from gpuinfer.runtime.session import InferenceSession
from tests.node_helpers import run_kernel

DOMAIN = "ai.onnx.preview.training"
rng = np.random.default_rng(0)
SHAPES = [(3, 4), (5,), (2, 1, 3)]


def tensors(n, dtype=np.float32):
    return [rng.standard_normal(SHAPES[i]).astype(dtype) for i in range(n)]


def run(op_type, inputs, n_outputs, **attrs):
    return run_kernel(op_type, inputs, n_outputs=n_outputs, opset=1, domain=DOMAIN, **attrs)


def scalars(r, t, dtype=np.float32):
    return np.array(r, dtype), np.array(t, np.int64)


def close(got, want, dtype):
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for g, w in zip(got, want):
        assert g.dtype == dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("t", [0, 5])
def test_adagrad(n, dtype, t):
    xs, gs = tensors(n, dtype), tensors(n, dtype)
    hs = [np.abs(h) for h in tensors(n, dtype)]
    attrs = dict(decay_factor=0.1, epsilon=1e-5, norm_coefficient=0.01)
    got = run("Adagrad", [*scalars(0.3, t, dtype), *xs, *gs, *hs], 2 * n, **attrs)
    lr = 0.3 / (1 + t * 0.1)
    want_x, want_h = [], []
    for x, g, h in zip(xs, gs, hs):
        x, g, h = (a.astype(np.float64) for a in (x, g, h))
        greg = 0.01 * x + g
        h2 = h + greg ** 2
        want_x.append(x - lr * greg / (np.sqrt(h2) + 1e-5))
        want_h.append(h2)
    close(got, want_x + want_h, dtype)


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("t", [0, 3])
@pytest.mark.parametrize("post", [0.0, 0.05])
def test_adam(n, t, post):
    xs, gs, vs = tensors(n), tensors(n), tensors(n)
    hs = [np.abs(h) for h in tensors(n)]
    attrs = dict(alpha=0.8, beta=0.95, epsilon=1e-6, norm_coefficient=0.02, norm_coefficient_post=post)
    got = run("Adam", [*scalars(0.1, t), *xs, *gs, *vs, *hs], 3 * n, **attrs)
    lr = 0.1 * np.sqrt(1 - 0.95 ** t) / (1 - 0.8 ** t) if t > 0 else 0.1
    want = [[], [], []]
    for x, g, v, h in zip(xs, gs, vs, hs):
        x, g, v, h = (a.astype(np.float64) for a in (x, g, v, h))
        greg = 0.02 * x + g
        v2 = 0.8 * v + 0.2 * greg
        h2 = 0.95 * h + 0.05 * greg ** 2
        want[0].append((x - lr * v2 / (np.sqrt(h2) + 1e-6)) * (1 - post))
        want[1].append(v2)
        want[2].append(h2)
    close(got, want[0] + want[1] + want[2], np.float32)


def test_adam_default_attributes():
    x, g, v, h = tensors(1)[0], tensors(1)[0], tensors(1)[0], np.abs(tensors(1)[0])
    got = run("Adam", [*scalars(0.01, 1), x, g, v, h], 3)
    v2 = 0.9 * v + 0.1 * g
    h2 = 0.999 * h + 0.001 * g.astype(np.float64) ** 2
    lr = 0.01 * np.sqrt(1 - 0.999) / (1 - 0.9)
    close(got, [x - lr * v2 / (np.sqrt(h2) + 1e-6), v2, h2], np.float32)


@pytest.mark.parametrize("mode", ["standard", "nesterov"])
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("t", [0, 2])
def test_momentum(mode, n, t):
    xs, gs, vs = tensors(n), tensors(n), tensors(n)
    attrs = dict(alpha=0.9, beta=0.5, norm_coefficient=0.03, mode=mode)
    got = run("Momentum", [*scalars(0.2, t), *xs, *gs, *vs], 2 * n, **attrs)
    beta = 0.5 if t > 0 else 1.0
    want_x, want_v = [], []
    for x, g, v in zip(xs, gs, vs):
        x, g, v = (a.astype(np.float64) for a in (x, g, v))
        greg = 0.03 * x + g
        v2 = 0.9 * v + beta * greg
        step = greg + 0.9 * v2 if mode == "nesterov" else v2
        want_x.append(x - 0.2 * step)
        want_v.append(v2)
    close(got, want_x + want_v, np.float32)


def test_broadcast_gradient_and_scratch_promise():
    x, v = tensors(1)[0], tensors(1)[0]
    g = rng.standard_normal((1, 4)).astype(np.float32)  # broadcasts over X's rows
    got = run("Momentum", [*scalars(0.5, 1), x, g, v], 2, alpha=0.5, beta=1.0, norm_coefficient=0.0)
    close(got, [x - 0.5 * (0.5 * v + g), 0.5 * v + g], np.float32)
    spec = lookup("Adam", 1, DOMAIN)
    requested = []

    class Recording(StandaloneContext):
        def scratch(self, shape, dtype):
            requested.append((tuple(shape), np.dtype(dtype)))
            return super().scratch(shape, dtype)

    inputs = [*scalars(0.1, 1), *tensors(2), *tensors(2), *tensors(2), *(np.abs(h) for h in tensors(2))]
    spec.kernel(Recording(attrs={}, opset=1, n_outputs=6), *inputs)
    predicted = spec.scratch({}, [a.shape for a in inputs], [a.dtype for a in inputs])
    assert [(tuple(s), np.dtype(d)) for s, d in predicted] == requested


def test_rejects_bad_inputs():
    x, g, v = tensors(1)[0], tensors(1)[0], tensors(1)[0]
    r, t = scalars(0.1, 0)
    with pytest.raises(NodeExecutionError, match="groups"):
        run("Momentum", [r, t, x, g], 1, alpha=0.9, beta=0.1, norm_coefficient=0.0, mode="standard")
    with pytest.raises(NodeExecutionError, match="scalars"):
        run("Adagrad", [np.ones(2, np.float32), t, x, g, v], 2)
    with pytest.raises(NodeExecutionError, match="broadcast"):
        run("Adagrad", [r, t, x, g[:, :2], v], 2)
    with pytest.raises(NodeExecutionError, match="mode"):
        run("Momentum", [r, t, x, g, v], 2, alpha=0.9, beta=0.1, norm_coefficient=0.0, mode="heavy")
    with pytest.raises(NodeExecutionError, match="alpha"):
        run("Momentum", [r, t, x, g, v], 2, beta=0.1, norm_coefficient=0.0, mode="standard")


@pytest.mark.parametrize("memory_mode", ["per_tensor", "arena"])
def test_adagrad_in_a_session(memory_mode):
    """Two tensors through a whole model: the domain loads and every output comes back."""
    names = ["R", "T", "X1", "X2", "G1", "G2", "H1", "H2"]
    types = [TensorProto.FLOAT, TensorProto.INT64] + [TensorProto.FLOAT] * 6
    shapes = [[], [], [3, 4], [5], [3, 4], [5], [3, 4], [5]]
    node = helper.make_node("Adagrad", names, ["X1n", "X2n", "H1n", "H2n"], domain=DOMAIN, epsilon=1e-6)
    graph = helper.make_graph([node], "adagrad",
                              [helper.make_tensor_value_info(n, t, s) for n, t, s in zip(names, types, shapes)],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                               for n, s in zip(["X1n", "X2n", "H1n", "H2n"], [[3, 4], [5], [3, 4], [5]])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(DOMAIN, 1), helper.make_opsetid("", 17)])
    model.ir_version = 8
    xs, gs = tensors(2), tensors(2)
    hs = [np.abs(h) for h in tensors(2)]
    feeds = dict(zip(names, [*scalars(0.5, 0), *xs, *gs, *hs]))
    got = InferenceSession(model, device="cpu", memory_mode=memory_mode).run(None, feeds)
    want = run("Adagrad", list(feeds.values()), 4, epsilon=1e-6)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
