"""BLAS's thread count follows the load only for sessions whose products give the same bytes at
any count (runtime/blas_bits.py, runtime/run_threads.py): those sessions' runs agree to the byte
with one BLAS thread and with BLAS's default, and the others keep one count."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import gpuinfer
from gpuinfer.runtime import blas_bits, run_threads
from tests.tiny_models import conv_net, conv_net_feeds

OPS_DIR = Path(gpuinfer.__file__).parent / "ops"
BLAS_CALLS = ("matmul", "einsum", "linalg", ".dot(", "tensordot")
# ops registered in files that call BLAS, whose own kernels do not (checked by reading them)
BLAS_FREE = {"BatchNormalization", "LRN", "LpNormalization", "MeanVarianceNormalization", "LabelEncoder",
             "Binarizer", "ArrayFeatureExtractor", "NonMaxSuppression"}


def _conv_model(channels: int, kernel: int, group: int = 1, outputs: int = 64, size: int = 20):
    rng = np.random.default_rng(channels * 10 + kernel)
    w = rng.standard_normal((outputs, channels // group, kernel, kernel)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[kernel // 2] * 4, group=group)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                               [1, channels, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, outputs, size, size])],
                              initializer=[numpy_helper.from_array(w, "w")])
    feeds = {"x": rng.standard_normal((1, channels, size, size)).astype(np.float32)}
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), feeds


def _gemm_model(k: int, n: int, trans_b: int):
    rng = np.random.default_rng(k + n)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    node = helper.make_node("Gemm", ["a", "b"], ["y"], transB=trans_b)
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                              initializer=[numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), {
        "a": rng.standard_normal((1, k)).astype(np.float32)}


def test_product_kinds_of_convs_and_what_is_not_looked_into():
    graph = gpuinfer.InferenceSession(_conv_model(112, 3)[0], device="cpu").graph
    # im2col's K, pointwise's, kn2row's (the input rows shifted by each of 3 kernel columns)
    assert blas_bits.product_kinds(graph) == {(1008, "band"), (112, "band"), (336, "band")}
    depthwise = gpuinfer.InferenceSession(_conv_model(16, 3, group=16, outputs=16)[0], device="cpu").graph
    assert blas_bits.product_kinds(depthwise) == set()  # "nhwc": one einsum, no BLAS
    five = gpuinfer.InferenceSession(_conv_model(16, 5, group=16, outputs=16, size=24)[0], device="cpu").graph
    assert blas_bits.product_kinds(five) == {(5, "vector:576")}  # "rows": (1, 5) @ (5, 24 x 24) per kernel row
    wide = gpuinfer.InferenceSession(_conv_model(16, 3, group=16, outputs=16, size=160)[0], device="cpu").graph
    assert blas_bits.product_kinds(wide) == {(3, "vector:5120")}  # "rows" in 5 bands of 32 rows
    rnn = helper.make_graph([helper.make_node("RNN", ["x", "w", "r"], ["y"], hidden_size=4)], "rnn",
                            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1, 3])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                            initializer=[numpy_helper.from_array(np.ones((1, 4, 3), np.float32), "w"),
                                         numpy_helper.from_array(np.ones((1, 4, 4), np.float32), "r")])
    model = helper.make_model(rnn, opset_imports=[helper.make_opsetid("", 14)])
    assert blas_bits.product_kinds(gpuinfer.InferenceSession(model, device="cpu").graph) is None


CASES = [("conv", 3, 3), ("conv", 16, 3), ("conv", 112, 3), ("conv", 48, 5), ("conv", 256, 3),
         ("gemm", 1024, 0), ("gemm", 1024, 1), ("gemm", 2048, 0)]


def test_load_safe_sessions_give_the_same_bytes_with_one_blas_thread_and_two():
    """The promise the load-following count rests on, on products that differ on some BLAS builds
    (inner sizes 1008, 1200, vector products) and on ones that do not: where the session is judged
    load-safe, one thread and two give the same bytes."""
    safe = 0
    for kind, size, extra in CASES:
        model, feeds = _conv_model(size, extra) if kind == "conv" else _gemm_model(size, 1000, extra)
        outs = []
        for threads in (1, 2):
            sess = gpuinfer.InferenceSession(model, device="cpu", intra_op_threads=threads)
            outs.append(sess.run(None, feeds)[0])
        if blas_bits.load_safe_products(sess.graph, (2,)):
            safe += 1
            assert np.array_equal(outs[0], outs[1]), (kind, size, extra)
    assert safe >= 3  # small inner sizes agree on any build: the check is not vacuous


def test_blas_follows_the_load_where_it_is_safe(monkeypatch):
    """(The tests run with one BLAS thread, conftest.py: two are set here, as BLAS's default.)"""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    with threadpool_limits(2, user_api="blas"):
        before = blas()
        threads = run_threads.RunThreads()
        if threads.cores < 2:
            pytest.skip("one core: nothing to follow")
        assert threads.fit_to_graph(gpuinfer.InferenceSession(conv_net(), device="cpu").graph)
        for busy, inside in ((64, [1] * len(before)), (0, before)):
            monkeypatch.setattr(run_threads, "busy_elsewhere", lambda busy=busy: busy)
            with threads:
                assert blas() == inside
            assert blas() == before  # put back after the run
        given = run_threads.RunThreads(2)
        assert not given.fit_to_graph(gpuinfer.InferenceSession(conv_net(), device="cpu").graph)  # a count given stays
        unknown = run_threads.RunThreads()
        model, _ = _gemm_model(64, 8, 0)
        model.graph.node[0].domain = "com.example"  # another domain's kernel: not looked into
        assert blas_bits.product_kinds(_Graph([model.graph.node[0]])) is None
        assert not unknown.fit_to_graph(_Graph([model.graph.node[0]]))


class _Graph:
    """The part of a graph ``product_kinds`` reads."""

    def __init__(self, protos):
        from types import SimpleNamespace

        self.nodes = [SimpleNamespace(op_type=p.op_type, domain=p.domain, inputs=list(p.input), attrs={})
                      for p in protos]
        self.constants, self.values = {}, {}


def test_runs_agree_at_any_load(monkeypatch):
    """A load-safe session's runs, quiet and busy in turn, give the same bytes."""
    from threadpoolctl import threadpool_limits

    feeds = conv_net_feeds(2, 64, 64)
    with threadpool_limits(2, user_api="blas"):
        sess = gpuinfer.InferenceSession(conv_net(), device="cpu", memory_mode="arena")
        digests = set()
        for busy in (0, 64, 0, 64):
            monkeypatch.setattr(run_threads, "busy_elsewhere", lambda busy=busy: busy)
            digests.add(sess.run(None, feeds)[0].tobytes())
    assert len(digests) == 1
    assert sess._threads.follows_load or sess._threads.cores < 2


def test_every_op_in_a_file_that_calls_blas_is_listed():
    """A kernel file that calls matmul/einsum/linalg, or imports from one that does, registers
    only ops in ``BLAS_OPS`` (or read and found BLAS-free), so a new op there cannot slip past
    the load-safety check."""
    texts = {path: path.read_text() for path in sorted(OPS_DIR.rglob("*.py"))}
    calling = {path.stem for path, text in texts.items() if any(call in text for call in BLAS_CALLS)}
    missing = []
    for path, text in texts.items():
        tree = ast.parse(text)
        imported = {node.module.rsplit(".", 1)[-1] for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gpuinfer.ops.")}
        if path.stem not in calling and not imported & calling:
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "op" and node.args
                    and isinstance(node.args[0], ast.Constant)):
                name = node.args[0].value
                if name not in blas_bits.BLAS_OPS and name not in BLAS_FREE:
                    missing.append(f"{path.name}: {name}")
    assert not missing, missing


def test_busy_elsewhere_reads_a_window_of_cpu_time(monkeypatch):
    """The load BLAS follows is the CPU time others took since the last reading, not a glance at
    the runnable tasks: a task passing at the moment of reading does not count, two busy
    processes do; the first reading (no window yet) glances."""
    real = run_threads._cpu_ticks()
    if real is not None:  # Linux: the machine's busy ticks include this process's
        assert 0 <= real[1] <= real[0]
    clock = [100.0]
    ticks = [(0, 0)]  # (machine busy ticks, own ticks)
    glance = [5]  # runnable tasks not of this process, at a glance
    monkeypatch.setattr(run_threads.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(run_threads, "_cpu_ticks", lambda: ticks[0])
    monkeypatch.setattr(run_threads, "_running_tasks", lambda: glance[0] + 1)
    monkeypatch.setattr(run_threads, "_own_running_threads", lambda: 1)
    monkeypatch.setattr(run_threads, "_busy", [0.0, 0, None])
    hz = run_threads._TICKS_PER_S
    assert run_threads.busy_elsewhere() == 5  # no window yet: the glance
    clock[0] += 0.1
    assert run_threads.busy_elsewhere() == 5  # read at most every LOAD_MAX_AGE_S
    for own_cores, other_cores, want in ((2.0, 0.02, 0), (1.0, 1.3, 1), (0.5, 1.6, 2), (1.9, 0.3, 0)):
        clock[0] += 1.0
        busy, own = ticks[0]
        ticks[0] = (busy + int((own_cores + other_cores) * hz), own + int(own_cores * hz))
        assert run_threads.busy_elsewhere() == want, (own_cores, other_cores)
    clock[0] += run_threads.BUSY_MAX_WINDOW_S + 1  # a stale window: glance again
    glance[0] = 3
    assert run_threads.busy_elsewhere() == 3
