"""Intra-op threads (backends/numpy_threads.py, runtime/run_threads.py): big passes split into row
blocks give the single-threaded bytes exactly, add no buffer (the counted peak is the same), and
actually split (the pool's ``run`` is called); the session's thread count follows its options."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from onnx import TensorProto, helper

import gpuinfer
from gpuinfer.backends import numpy_threads
from gpuinfer.runtime import run_threads

F = TensorProto.FLOAT


def _model(op, attrs=None, extra_inputs=(), initializers=()):
    node = helper.make_node(op, ["x", *[name for name, _ in extra_inputs]], ["y"], **(attrs or {}))
    graph = helper.make_graph([node], op, [helper.make_tensor_value_info("x", F, None)],
                              [helper.make_tensor_value_info("y", F, None)], initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    return model


def _depthwise(c):
    w = np.random.default_rng(1).standard_normal((c, 1, 3, 3)).astype(np.float32)
    return _model("Conv", {"group": c, "pads": [1, 1, 1, 1], "kernel_shape": [3, 3]},
                  [("w", None)], [helper.make_tensor("w", F, w.shape, w.reshape(-1))])


def _resize(mode, scale):
    scales = np.array([1, 1, scale, scale], np.float32)
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode=mode)
    graph = helper.make_graph([node], "resize", [helper.make_tensor_value_info("x", F, None)],
                              [helper.make_tensor_value_info("y", F, None)],
                              initializer=[helper.make_tensor("scales", F, [4], scales)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    return model


OPS = {
    "Tanh": lambda c: _model("Tanh"),
    "Relu": lambda c: _model("Relu"),
    "Sigmoid": lambda c: _model("Sigmoid"),
    "HardSigmoid": lambda c: _model("HardSigmoid"),
    "LeakyRelu": lambda c: _model("LeakyRelu", {"alpha": 0.1}),  # chunked, scratch shared out
    "Mish": lambda c: _model("Mish"),  # two chunk scratch buffers
    "MaxPool": lambda c: _model("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2]}),
    "AveragePool": lambda c: _model("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "DepthwiseConv": _depthwise,
    "ResizeLinear": lambda c: _resize("linear", 2.0),
    "ResizeNearest": lambda c: _resize("nearest", 2.0),
}


def _run(model, x, threads, mode):
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode, intra_op_threads=threads)
    sess.run(None, {"x": x})
    y = sess.run(None, {"x": x})[0]
    return y, sess.memory_report().peak_bytes


@pytest.mark.parametrize("op", sorted(OPS))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(c=st.integers(3, 12), h=st.integers(90, 200), w=st.integers(90, 200), mode=st.sampled_from(["reduce", "arena"]),
       data=st.data())
def test_threaded_ops_equal_one_thread_bit_for_bit_with_the_same_peak(op, c, h, w, mode, data, monkeypatch):
    x = np.random.default_rng(data.draw(st.integers(0, 99))).standard_normal((1, c, h, w)).astype(np.float32) * 4
    model = OPS[op](c)
    splits = []
    real_run = numpy_threads.RowThreads.run
    monkeypatch.setattr(numpy_threads.RowThreads, "run",
                        lambda self, blocks, body: (splits.append(len(blocks)), real_run(self, blocks, body)))
    one, peak_one = _run(model, x, 1, mode)
    assert not splits  # one thread: nothing handed out
    many, peak_many = _run(model, x, 3, mode)
    np.testing.assert_array_equal(many, one)
    assert peak_many == peak_one  # threads add no buffer
    if x.nbytes >= 2 * numpy_threads.SPLIT_MIN_BYTES and _may_split(op, x):
        assert splits and min(splits) >= 2  # the pass did go in blocks
    if not _may_split(op, x):
        assert not splits


def _may_split(op, x) -> bool:
    """False where the kernel keeps a big pass on one thread by design: a chunked op whose thread
    shares would be too short to pay, a 2x2 average pool (its separable sum is worked in one
    piece: the order of a sum changes its last bit), a depthwise conv in its "nhwc" layout, in
    "strided" or "flat" blocks of one channel or "rows" blocks of one channel, a linear resize
    whose channel blocks are small."""
    if op in CHUNKED:
        return _chunk_splits(x)
    if op == "AveragePool":
        from gpuinfer.ops.pool import _key, _plan

        return _plan(_key({"kernel_shape": [2, 2], "strides": [2, 2]}), tuple(x.shape))[2] != "separable"
    if op == "ResizeLinear":  # a block of channels at a time (ops/resize.py): split where a block is big
        from gpuinfer.ops.resize import channel_block

        n, c, h, w = x.shape
        block = channel_block(x.shape, (n, c, 2 * h, 2 * w), [2, 3], 4, True)
        return block >= 2 and block * 4 * h * w * 4 >= numpy_threads.SPLIT_MIN_BYTES
    if op == "DepthwiseConv":  # "nhwc": one einsum per band, on one thread; "strided": blocks of channels
        from gpuinfer.ops.conv import conv_geometry

        c = x.shape[1]
        g = conv_geometry({"group": c, "pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}, x.shape, (c, 1, 3, 3), x.dtype)
        if g.layout == "rows":  # blocks of channels (ops/conv_depthwise_rows.py), split where a block has two
            from gpuinfer.ops.conv_depthwise_rows import rows_plan

            _, blocks = rows_plan(g, 1, g.tile * x.shape[2] * x.shape[3])
            return any(b1 - b0 >= 2 for b0, b1, _ in blocks)
        return g.layout in ("strided", "flat") and g.tile >= 2
    return True


CHUNKED = {"LeakyRelu", "Mish"}  # worked chunk by chunk (ops/elementwise.py ``chunked``)


def _chunk_splits(x) -> bool:
    """Whether a chunked op on ``x`` may go over threads: two shares of MIN_THREAD_CHUNK at least."""
    from gpuinfer.ops.elementwise import MIN_THREAD_CHUNK, chunk_for

    return chunk_for(x.size) // MIN_THREAD_CHUNK >= 2


@pytest.mark.parametrize("op", sorted(CHUNKED))
def test_big_chunked_ops_split_in_long_shares(op, monkeypatch):
    """A chunked op big enough for shares of MIN_THREAD_CHUNK goes over the threads, each block
    working chunks no shorter than that, and gives the one-thread bytes; PP-OCRv4 rec's map
    (1x240x12x80) stays on one thread."""
    from gpuinfer.ops import elementwise

    sizes = []
    real_run = elementwise.run_blocks
    monkeypatch.setattr(elementwise, "run_blocks", lambda blocks, body: (sizes.append(len(blocks)),
                                                                        real_run(blocks, body)))
    bodies = []
    real_chunked = elementwise.chunked

    def spy(ctx, x, kinds, body):
        return real_chunked(ctx, x, kinds, lambda xc, *rest: (bodies.append(xc.size), body(xc, *rest))[1])

    monkeypatch.setattr(elementwise, "chunked", spy)
    rng = np.random.default_rng(3)
    big = rng.standard_normal((1, 8, 320, 320)).astype(np.float32)
    one, _ = _run(OPS[op](8), big, 1, "arena")
    bodies.clear()
    many, _ = _run(OPS[op](8), big, 2, "arena")
    np.testing.assert_array_equal(many, one)
    assert sizes and max(sizes) >= 2
    runs = 2  # _run runs the session twice; each block has one short tail at most
    assert len(bodies) <= runs * (big.size // elementwise.MIN_THREAD_CHUNK + max(sizes))
    sizes.clear()
    _run(OPS[op](240), rng.standard_normal((1, 240, 12, 80)).astype(np.float32), 2, "arena")
    assert not sizes  # one thread: shares of its 14,400-element chunk would be too short


def test_row_blocks_cover_every_row_once_and_failures_come_out():
    pool = numpy_threads.RowThreads(3)
    ctx = gpuinfer.ops.context.StandaloneContext()
    seen = np.zeros(100_000, np.int64)
    with numpy_threads.running_with(pool):
        numpy_threads.split_rows(ctx, seen.size, 64, lambda s, e: np.add(seen[s:e], 1, out=seen[s:e]))
        assert (seen == 1).all()

        def fails(s, e):
            if s > 0:
                raise ValueError("block failed")

        with pytest.raises(ValueError, match="block failed"):
            numpy_threads.split_rows(ctx, seen.size, 64, fails)
    numpy_threads.split_rows(ctx, seen.size, 64, lambda s, e: seen.__setitem__(slice(s, e), 7))
    assert (seen == 7).all()  # outside a run: one call


def test_a_cancelled_block_keeps_no_array_alive():
    """The caller took every block while the worker was busy: the worker's queued item is
    cancelled, and it sits in the executor's queue until the worker wakes.  It must not keep the
    op's arrays alive (in reduce mode the pool has given their bytes back: tracemalloc saw
    light/shufflenet 1.2-2.6 MB over the count now and then at 2 threads)."""
    import threading
    import weakref

    pool = numpy_threads.RowThreads(2)
    busy, release = threading.Event(), threading.Event()
    pool._workers.submit(lambda: (busy.set(), release.wait(10)))
    assert busy.wait(10)
    try:
        data = np.zeros(1000)
        alive = weakref.ref(data)
        pool.run([(0, 500), (500, 1000)], lambda i, s, e, d=data: d[s:e].fill(i + 1))
        assert data[0] == 1 and data[-1] == 2  # both blocks ran, on the caller
        del data
        assert alive() is None, "a cancelled worker item still holds the blocks' arrays"
    finally:
        release.set()


def test_thread_count_follows_the_options(monkeypatch):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 3
    assert run_threads.RunThreads(None, opts).count() == 3
    assert run_threads.RunThreads(2, opts).count() == 2  # the explicit argument first
    opts.intra_op_num_threads = 0  # onnxruntime's "default"
    monkeypatch.setattr(run_threads, "busy_elsewhere", lambda: 0)
    default = run_threads.RunThreads(None, opts)
    assert default.count(blas=1) == numpy_threads.default_threads()
    monkeypatch.setattr(run_threads, "busy_elsewhere", lambda: 64)  # a busy machine: one thread
    assert default.count(blas=1) == 1
    with pytest.raises(gpuinfer.GpuinferError, match="intra_op_threads"):
        run_threads.RunThreads(0)


def test_row_threads_leave_blas_spinning_workers_their_cores(monkeypatch):
    """OpenBLAS's workers busy-wait after a product: a graph that calls BLAS gets the free cores
    less BLAS's workers, one that does not gets them all; other processes' work counts too."""
    from tests.tiny_models import conv_net

    threads = run_threads.RunThreads()
    threads.cores = 4
    monkeypatch.setattr(run_threads, "busy_elsewhere", lambda: 0)
    threads.fit_to_graph(gpuinfer.InferenceSession(conv_net(), device="cpu").graph)
    assert threads.calls_blas
    assert [threads.count(blas=b) for b in (1, 2, 4)] == [4, 3, 1]
    monkeypatch.setattr(run_threads, "_blas_threads_now", lambda: 3)
    assert threads.count() == 2  # BLAS left as it is: its own count now
    monkeypatch.setattr(run_threads, "busy_elsewhere", lambda: 1)
    assert threads.count(blas=2) == 2
    elementwise = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])]))
    threads.fit_to_graph(gpuinfer.InferenceSession(elementwise.SerializeToString(), device="cpu").graph)
    assert not threads.calls_blas
    assert threads.count(blas=4) == 3  # only the other process's core is taken


def test_blas_is_set_only_to_a_given_count():
    assert run_threads.RunThreads(None).blas == []
    assert run_threads.RunThreads(2).blas == run_threads.blas_controllers(True)


def test_results_do_not_follow_the_load(monkeypatch):
    """The row-block count follows the load; BLAS's does not (its products change bits with it):
    runs at any load give the same bytes."""
    from tests.tiny_models import conv_net, conv_net_feeds

    feeds = conv_net_feeds(2, 64, 64)
    sess = gpuinfer.InferenceSession(conv_net(), device="cpu", memory_mode="arena")
    digests = set()
    for busy in (0, 64, 0, 64):
        monkeypatch.setattr(run_threads, "busy_elsewhere", lambda busy=busy: busy)
        digests.add(sess.run(None, feeds)[0].tobytes())
    assert len(digests) == 1


def test_blas_threads_are_put_back_after_a_run():
    from threadpoolctl import threadpool_info

    def blas():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas()
    sess = gpuinfer.InferenceSession(OPS["Tanh"](3), device="cpu", intra_op_threads=1)
    sess.run(None, {"x": np.ones((1, 3, 4, 4), np.float32)})
    assert blas() == before


def test_workers_run_with_the_callers_numpy_error_state_and_buffer_size():
    """numpy keeps its error state and ufunc buffer size per context: a worker's own default one
    warned of IEEE overflow the run ignores and buffered 8192 elements where the run holds 1024."""
    import threading
    import time

    pool = numpy_threads.RowThreads(3)
    ctx = gpuinfer.ops.context.StandaloneContext()
    seen = []

    def block(start, stop):
        time.sleep(0.005)  # lets the workers take blocks of their own
        seen.append((threading.get_ident(), np.geterr()["over"], np.getbufsize()))

    with numpy_threads.running_with(pool), np.errstate(all="ignore"):
        before = np.setbufsize(1024)
        try:
            numpy_threads.split_rows(ctx, 100_000, 64, block)
        finally:
            np.setbufsize(before)
    assert len({thread for thread, _, _ in seen}) >= 2, seen
    assert {(over, size) for _, over, size in seen} == {("ignore", 1024)}, seen


def test_an_overflow_in_threaded_blocks_warns_no_more_than_on_one_thread(monkeypatch):
    import warnings

    splits = []
    real_run = numpy_threads.RowThreads.run
    monkeypatch.setattr(numpy_threads.RowThreads, "run",
                        lambda self, blocks, body: (splits.append(len(blocks)), real_run(self, blocks, body)))
    x = np.full((1, 4, 256, 256), 100.0, np.float32)  # exp(100) overflows float32
    node = helper.make_node("Exp", ["x"], ["y"])
    graph = helper.make_graph([node], "exp", [helper.make_tensor_value_info("x", F, None)],
                              [helper.make_tensor_value_info("y", F, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    sess = gpuinfer.InferenceSession(model.SerializeToString(), device="cpu", intra_op_threads=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = sess.run(None, {"x": x})[0]
    assert splits, "the pass was not split"
    assert np.isinf(y).all()
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
