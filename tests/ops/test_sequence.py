"""Sequence and optional ops: kernels on their own, and small models run by gpuinfer and onnxruntime."""
import numpy as np
import pytest
from onnx import TensorProto, helper

import gpuinfer.ops  # noqa: F401  (registers the kernels)
from gpuinfer.errors import NodeExecutionError
from gpuinfer.values import OptionalValue, TensorSequence
from gpuinfer.runtime.session import InferenceSession
from tests.node_helpers import run_kernel, run_onnxruntime

rng = np.random.default_rng(0)
A = rng.standard_normal((2, 3)).astype(np.float32)
B = rng.standard_normal((2, 3)).astype(np.float32)
C = rng.standard_normal((1, 3)).astype(np.float32)
OPSET = 18


def one(result):
    """The single value a kernel returned (sequence kernels wrap theirs in a tuple)."""
    return result[0] if isinstance(result, list) and len(result) == 1 else result


def i64(v):
    return np.array(v, np.int64)


def test_construct_copies_and_length_at():
    seq = one(run_kernel("SequenceConstruct", [A, B, C], opset=OPSET))
    assert isinstance(seq, TensorSequence) and len(seq) == 3
    assert seq[0] is not A and np.shares_memory(seq[0], A) is False
    np.testing.assert_array_equal(seq[2], C)
    assert run_kernel("SequenceLength", [seq], opset=OPSET)[0] == 3
    assert run_kernel("SequenceLength", [seq], opset=OPSET)[0].dtype == np.int64
    np.testing.assert_array_equal(run_kernel("SequenceAt", [seq, i64(-1)], opset=OPSET)[0], C)
    np.testing.assert_array_equal(run_kernel("SequenceAt", [seq, np.array(1, np.int32)], opset=OPSET)[0], B)
    with pytest.raises(NodeExecutionError, match="SequenceAt"):
        run_kernel("SequenceAt", [seq, i64(3)], opset=OPSET)
    empty = one(run_kernel("SequenceEmpty", [], opset=OPSET, dtype=TensorProto.FLOAT))
    assert isinstance(empty, TensorSequence) and len(empty) == 0


def test_insert_and_erase_leave_the_input_sequence_alone():
    seq = TensorSequence([A, B])
    back = one(run_kernel("SequenceInsert", [seq, C], opset=OPSET))
    front = one(run_kernel("SequenceInsert", [seq, C, i64(0)], opset=OPSET))
    middle = one(run_kernel("SequenceInsert", [seq, C, i64(-1)], opset=OPSET))
    assert len(seq) == 2
    assert [x.shape for x in back] == [(2, 3), (2, 3), (1, 3)]
    np.testing.assert_array_equal(front[0], C)
    np.testing.assert_array_equal(middle[1], C)
    erased = one(run_kernel("SequenceErase", [back], opset=OPSET))
    assert len(erased) == 2 and len(back) == 3
    erased0 = one(run_kernel("SequenceErase", [back, i64(-3)], opset=OPSET))
    np.testing.assert_array_equal(erased0[0], B)
    with pytest.raises(NodeExecutionError, match="SequenceInsert"):
        run_kernel("SequenceInsert", [seq, C, i64(3)], opset=OPSET)
    with pytest.raises(NodeExecutionError, match="SequenceErase"):
        run_kernel("SequenceErase", [TensorSequence()], opset=OPSET)


def test_optional_kernels():
    some = one(run_kernel("Optional", [A], opset=OPSET))
    none = one(run_kernel("Optional", [], opset=OPSET))
    assert isinstance(some, OptionalValue) and isinstance(none, OptionalValue) and none.value is None
    assert bool(run_kernel("OptionalHasElement", [some], opset=OPSET)[0]) is True
    assert bool(run_kernel("OptionalHasElement", [none], opset=OPSET)[0]) is False
    assert bool(run_kernel("OptionalHasElement", [None], opset=OPSET)[0]) is False
    assert bool(run_kernel("OptionalHasElement", [A], opset=OPSET)[0]) is True
    np.testing.assert_array_equal(run_kernel("OptionalGetElement", [some], opset=OPSET)[0], A)
    np.testing.assert_array_equal(run_kernel("OptionalGetElement", [B], opset=OPSET)[0], B)
    seq = one(run_kernel("OptionalGetElement", [OptionalValue(TensorSequence([A]))], opset=OPSET))
    assert isinstance(seq, TensorSequence) and len(seq) == 1
    with pytest.raises(NodeExecutionError, match="OptionalGetElement"):
        run_kernel("OptionalGetElement", [none], opset=OPSET)


# --- whole models, gpuinfer vs onnxruntime --------------------------------------------------------
def _model(nodes, inputs, outputs, opset=OPSET):
    graph = helper.make_graph(nodes, "seq", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _tensor(name, dtype=TensorProto.FLOAT, rank=2):
    """A value info of known rank and unknown dims (the checker wants a shape field)."""
    return helper.make_tensor_value_info(name, dtype, [f"{name}_{i}" for i in range(rank)])


def _seq_out(name, dtype=TensorProto.FLOAT, rank=2):
    return helper.make_tensor_sequence_value_info(name, dtype, [f"{name}_{i}" for i in range(rank)])


def _compare(model, feeds, mode="per_tensor"):
    want = run_onnxruntime(model, feeds)
    got = InferenceSession(model, device="cpu", memory_mode=mode).run(None, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if isinstance(w, list):
            assert isinstance(g, list) and len(g) == len(w)
            for gi, wi in zip(g, w):
                assert gi.dtype == wi.dtype and gi.shape == wi.shape
                np.testing.assert_allclose(gi, wi, rtol=1e-6)
        else:
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-6)


@pytest.mark.parametrize("mode", ["per_tensor", "arena"])
def test_construct_insert_erase_at_concat_model(mode):
    nodes = [
        helper.make_node("SequenceConstruct", ["a", "b"], ["s1"]),
        helper.make_node("SequenceInsert", ["s1", "c", "zero"], ["s2"]),
        helper.make_node("SequenceErase", ["s2", "one"], ["s3"]),
        helper.make_node("SequenceAt", ["s3", "one"], ["at"]),
        helper.make_node("SequenceLength", ["s3"], ["n"]),
        helper.make_node("ConcatFromSequence", ["s3"], ["cat"], axis=0),
        helper.make_node("ConcatFromSequence", ["s1"], ["stack"], axis=-1, new_axis=1),
    ]
    consts = [helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("z", TensorProto.INT64, [], [0])),
              helper.make_node("Constant", [], ["one"], value=helper.make_tensor("o", TensorProto.INT64, [], [1]))]
    model = _model(consts + nodes, [_tensor("a"), _tensor("b"), _tensor("c")],
                   [_tensor("at"), _tensor("n", TensorProto.INT64, 0), _tensor("cat"), _tensor("stack", rank=3),
                    _seq_out("s3")])
    _compare(model, {"a": A, "b": B, "c": C}, mode)


@pytest.mark.parametrize("split,keepdims", [(None, 1), (None, 0), (np.array(2, np.int64), 1),
                                            (np.array([1, 4], np.int64), 1)])
def test_split_to_sequence_model(split, keepdims):
    x = rng.standard_normal((3, 5)).astype(np.float32)
    inputs = ["x"] + (["split"] if split is not None else [])
    node = helper.make_node("SplitToSequence", inputs, ["s"], axis=1, keepdims=keepdims)
    value_infos = [_tensor("x")] + ([_tensor("split", TensorProto.INT64, split.ndim)] if split is not None else [])
    model = _model([node], value_infos, [_seq_out("s", rank=2 if keepdims else 1)])
    feeds = {"x": x}
    if split is not None:
        feeds["split"] = split
    _compare(model, feeds)


def test_sequence_map_model():
    """SplitToSequence -> SequenceMap(body: y = x + t, n = Shape(x)) -> outputs."""
    body = helper.make_graph(
        [helper.make_node("Add", ["bx", "bt"], ["by"]), helper.make_node("Shape", ["bx"], ["bs"])], "body",
        [_tensor("bx"), _tensor("bt", rank=1)], [_tensor("by"), _tensor("bs", TensorProto.INT64, 1)])
    nodes = [helper.make_node("SplitToSequence", ["x", "sizes"], ["s"], axis=0),
             helper.make_node("SequenceMap", ["s", "t"], ["ys", "shapes"], body=body),
             helper.make_node("ConcatFromSequence", ["ys"], ["y"], axis=0)]
    model = _model(nodes, [_tensor("x"), _tensor("sizes", TensorProto.INT64, 1), _tensor("t", rank=1)],
                   [_tensor("y"), _seq_out("shapes", TensorProto.INT64, 1)])
    x = rng.standard_normal((6, 3)).astype(np.float32)
    _compare(model, {"x": x, "sizes": np.array([1, 2, 3], np.int64), "t": rng.standard_normal(3).astype(np.float32)})


def test_optional_model():
    nodes = [helper.make_node("Optional", ["x"], ["o"]),
             helper.make_node("OptionalHasElement", ["o"], ["has"]),
             helper.make_node("OptionalGetElement", ["o"], ["y"])]
    model = _model(nodes, [_tensor("x")], [_tensor("has", TensorProto.BOOL, 0), _tensor("y")])
    _compare(model, {"x": A})
