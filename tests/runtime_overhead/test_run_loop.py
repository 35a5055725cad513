"""The per-run shortcuts of the executor and pool: precomputed steps, the view-cache hit path,
the subgraph (dynamic) path, and the broadcast-shape cache.  Each shortcut must change no result
and no byte of the accounting."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import gpuinfer
from gpuinfer.backends.numpy_backend import ALIGN_MIN_BYTES, NumpyBackend
from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops import binary, shape as shape_ops
from gpuinfer.ops.context import StandaloneContext
from gpuinfer.plan.plan import MemoryPlan
from gpuinfer.runtime.allocator import CountingAllocator
from gpuinfer.runtime.pool import BlockSet, RunPool
from gpuinfer.values import TensorKey


def _if_model():
    """y = If(sum(x) > 0, then: x * 2 + 1, else: x - 3), the branches reading x from outside."""
    def branch(name, nodes, out):
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                                 initializer=[helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
                                              helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
                                              helper.make_tensor("three", TensorProto.FLOAT, [], [3.0])])
    then = branch("then", [helper.make_node("Mul", ["x", "two"], ["t1"]),
                           helper.make_node("Add", ["t1", "one"], ["t2"])], "t2")
    other = branch("else", [helper.make_node("Sub", ["x", "three"], ["e1"])], "e1")
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["r"], then_branch=then, else_branch=other),
             helper.make_node("Relu", ["r"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                              initializer=[helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("mode", ["per_tensor", "reduce", "reuse", "arena"])
def test_subgraph_runs_match_numpy_and_hold_nothing(mode):
    sess = gpuinfer.InferenceSession(_if_model(), device="cpu", memory_mode=mode)
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.standard_normal((2, 3)).astype(np.float32)
        want = np.maximum(x * np.float32(2) + np.float32(1) if x.sum() > 0 else x - np.float32(3), 0)
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], want)
    held = sess.held_bytes
    sess.run(None, {"x": x})
    assert sess.held_bytes == held  # nothing grows, subgraph buffers all went back


def test_steps_are_made_once_per_graph_and_scope():
    sess = gpuinfer.InferenceSession(_if_model(), device="cpu", memory_mode="arena")
    x = np.ones((2, 3), np.float32)
    sess.run(None, {"x": x})
    executor = sess._executor
    made = dict(executor._steps)
    sess.run(None, {"x": x})
    assert executor._steps.keys() == made.keys()
    assert all(executor._steps[k] is made[k] for k in made)
    top = executor.steps_of(sess.graph, ())
    assert [s.node for s in top] == sess.graph.nodes


def _pool():
    allocator = CountingAllocator(NumpyBackend())
    plan = MemoryPlan("reduce", 1, {})
    return allocator, RunPool(allocator, plan, BlockSet(allocator, []))


def test_remade_subgraph_value_counts_once():
    """A Loop body's value made again frees the old one first: in use and inner peak stay one copy."""
    allocator, pool = _pool()
    a = pool.buffer(TensorKey("v", (1,)), (4, 8), np.float32)
    b = pool.buffer(TensorKey("v", (1,)), [np.int64(4), 8], "float32")
    assert a.shape == b.shape == (4, 8) and b.dtype == np.float32
    assert allocator.in_use == 128 and pool.inner_in_use == 128 and pool.inner_peak == 128
    assert allocator.peak == 128 and allocator.allocations == 2
    pool.release(TensorKey("v", (1,)))
    assert allocator.in_use == 0 and pool.inner_in_use == 0


def test_dynamic_buffers_are_aligned_and_exact():
    allocator, pool = _pool()
    sizes = (0, 1, 3, 17, 1000, 8192, 20000)  # the last two are 64 KiB and over: cache-line aligned
    for n in sizes:
        buf = pool.buffer(TensorKey(f"b{n}", (1,)), (n,), np.float64)
        assert buf.shape == (n,) and buf.dtype == np.float64 and buf.flags.writeable
        align = 64 if 8 * n >= ALIGN_MIN_BYTES else 16  # small ones: numpy's own alignment, no uncounted padding
        assert n == 0 or buf.__array_interface__["data"][0] % align == 0
    assert allocator.in_use == 8 * sum(sizes)


@pytest.mark.parametrize("mode", ["per_tensor", "reduce", "reuse", "arena"])
def test_steady_runs_count_the_same_bytes(mode):
    """Once plans settle, every run of the same input reports the same peak and allocations."""
    sess = gpuinfer.InferenceSession(_if_model(), device="cpu", memory_mode=mode)
    x = np.ones((2, 3), np.float32)
    for _ in range(3):
        sess.run(None, {"x": x})
    reports = []
    for _ in range(3):
        sess.run(None, {"x": x})
        r = sess.memory_report()
        reports.append((r.peak_bytes, r.allocations, r.dynamic_bytes, r.held_bytes_after_run, r.lower_bound_bytes))
    assert reports[0] == reports[1] == reports[2]
    assert reports[0][0] >= reports[0][4]  # never under the lower bound


@pytest.mark.parametrize("shapes", [[(2, 3), (2, 3)], [(2, 3), (3,)], [(1, 3), (2, 1)], [(), (4,)],
                                    [(0, 3), (1, 3)], [(2, 1, 3), (4, 1), (1,)]])
def test_out_shape_matches_numpy(shapes):
    arrays = [np.zeros(s, np.float32) for s in shapes]
    got = binary._out_shape("Add", *arrays)
    assert got == tuple(np.broadcast_shapes(*shapes))
    assert all(type(d) is int for d in got)


def test_out_shape_error_names_op_and_shapes():
    with pytest.raises(NodeExecutionError, match=r"Add: inputs do not broadcast: \(2, 3\), \(4,\)"):
        binary._out_shape("Add", np.zeros((2, 3)), np.zeros(4))


@pytest.mark.parametrize("values", [np.array([1, -1, 0], np.int64), np.array([2.0, 3.7], np.float32),
                                    np.array([True, False]), [np.int64(3), 4], np.array(5, np.int32)])
def test_ints_are_python_ints(values):
    got = shape_ops._ints(StandaloneContext(), values)
    assert got == [int(v) for v in np.asarray(values).reshape(-1)]
    assert all(type(v) is int for v in got)
