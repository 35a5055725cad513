"""What the fuzzers (tests/test_fuzz.py) found, one test each: a clear GpuinferError now, not a crash.

"Escaped" below means a non-GpuinferError left ``InferenceSession(...)`` or ``run(...)``;
"unclear" means a GpuinferError that only wrapped a bare TypeError/IndexError from deep inside.
"""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import gpuinfer
from gpuinfer.plan.lifetimes import Lifetime, _scratch_records, lower_bound
from tests.fuzz_harness import control_model, mixed_model
from tests.tiny_models import conv_net, conv_net_feeds

pytestmark = pytest.mark.filterwarnings("ignore::gpuinfer.ModelCheckWarning")


def _model(nodes, inputs, outputs, inits=(), opset=17, sparse=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits), sparse_initializer=list(sparse))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _vi(name, elem=TensorProto.FLOAT, shape=(2, 3)):
    return helper.make_tensor_value_info(name, elem, list(shape) if shape is not None else None)


# --- feeds (escaped: ValueError / TypeError from np.asarray; None silently became NaN) -------------

@pytest.fixture(scope="module")
def sess():
    return gpuinfer.InferenceSession(conv_net(), device="cpu")


@pytest.mark.parametrize("value, words", [
    ("text", "a str cannot be made an array of float32"),
    (b"bytes", "a bytes cannot be made an array of float32"),
    ({"a": 1}, "a dict cannot be made an array of float32"),
    ([[1.0, 2.0], [3.0]], "a list cannot be made an array of float32"),
    (None, "'x' is None; give an array of float32"),
])
def test_feed_that_is_not_an_array_is_an_input_error(sess, value, words):
    with pytest.raises(gpuinfer.InputError, match=words):
        sess.run(None, {"x": value})


# --- names that are not UTF-8 (escaped: TypeError in onnx.defs, UnicodeDecodeError re-serialising) ---

@pytest.mark.parametrize("good, bad, words", [
    (b"Relu", b"Rel\xff", r"op type is not valid UTF-8 text: b'Rel\\xff'"),
    (b"gname", b"gnam\xf2", "graph name is not valid UTF-8"),
    (b"Hdim", b"Hdi\xfe", "dim name of graph input 'x' is not valid UTF-8"),
])
def test_text_that_is_not_utf8_is_an_invalid_model(good, bad, words):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "Hdim"])
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [x], [_vi("y", shape=None)])
    model.graph.name = "gname"
    data = model.SerializeToString()
    assert data.count(good) == 1
    with pytest.raises(gpuinfer.InvalidModelError, match=words):
        gpuinfer.InferenceSession(data.replace(good, bad), device="cpu")


# --- planner ------------------------------------------------------------------------------------

def test_scratch_prediction_with_an_unknown_shape_is_left_to_the_run():
    """Escaped: TypeError: DynamicQuantizeLinear's scratch function passed an unknown input shape
    (None) through and the planner iterated it."""
    assert _scratch_records(0, [(None, np.float32)]) == []
    assert _scratch_records(0, [((2, -1), np.float32)]) == []
    assert [r.nbytes for r in _scratch_records(3, [((2, 3), np.float32)])] == [24]
    nodes = [helper.make_node("NonZero", ["x"], ["nz"]),  # data-dependent: the planner cannot know it
             helper.make_node("Cast", ["nz"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("DynamicQuantizeLinear", ["f"], ["q", "scale", "zero"])]
    model = _model(nodes, [_vi("x")], [_vi("q", TensorProto.UINT8, None)])
    x = np.array([[1, 0, 2], [0, 3, 0]], np.float32)
    for mode in gpuinfer.MEMORY_MODES:
        out = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode).run(None, {"x": x})[0]
        assert out.shape == (2, 3) and out.dtype == np.uint8


def test_corrupt_dims_reach_the_memory_limit_instead_of_overflowing():
    """Escaped: OverflowError in lower_bound (int64) for pads of 2**40; sizes are exact ints now."""
    assert lower_bound([Lifetime("a", 0, 1, 2**70), Lifetime("b", 1, 1, 5)], 2) == 2**70 + 5
    model = conv_net()
    pads = next(a for a in model.graph.node[0].attribute if a.name == "pads")
    pads.ints[:] = [2**40] * 4
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode="arena", memory_limit_bytes=1 << 28)
    with pytest.raises(gpuinfer.MemoryLimitError, match="memory_limit_bytes"):
        sess.run(None, conv_net_feeds())


# --- what the ONNX checker used to refuse, now that its complaints only warn ("unclear") -----------

def test_wrong_number_of_inputs():
    """Was: NodeExecutionError wrapping "dynamic_quantize_linear() takes 2 positional arguments"."""
    model = _model([helper.make_node("Relu", ["x", "x"], ["y"], name="r")], [_vi("x")], [_vi("y")])
    with pytest.raises(gpuinfer.InvalidModelError, match=r"'r' \(Relu, opset 17\) takes 1 input\(s\), got 2"):
        gpuinfer.InferenceSession(model, device="cpu")


def test_required_input_left_out():
    """Was: AttributeError: 'NoneType' object has no attribute 'shape' inside Mul."""
    model = _model([helper.make_node("Mul", ["x", ""], ["y"], name="m")], [_vi("x")], [_vi("y")])
    with pytest.raises(gpuinfer.InvalidModelError, match=r"input 1 \(B\) is required"):
        gpuinfer.InferenceSession(model, device="cpu")


def test_attribute_of_the_wrong_type():
    """Was: TypeError: 'float' object is not iterable (Transpose perm), unhashable type: 'Graph' (pool)."""
    model = conv_net()
    pool = model.graph.node[-1]
    kernel = next(a for a in pool.attribute if a.name == "kernel_shape")
    kernel.type = onnx.AttributeProto.FLOAT
    with pytest.raises(gpuinfer.InvalidModelError, match="attribute 'kernel_shape' must be INTS, got FLOAT"):
        gpuinfer.InferenceSession(model, device="cpu")


def test_required_attribute_missing():
    """Was: AttributeError: 'NoneType' object has no attribute 'inputs' when the If ran."""
    model = control_model()
    if_node = next(n for n in model.graph.node if n.op_type == "If")
    kept = [a for a in if_node.attribute if a.name != "else_branch"]
    del if_node.attribute[:]
    if_node.attribute.extend(kept)
    with pytest.raises(gpuinfer.InvalidModelError,
                       match=r"'if' \(If, opset 13\): required attribute\(s\) \['else_branch'\]"):
        gpuinfer.InferenceSession(model, device="cpu")


def test_input_of_a_type_the_op_does_not_take():
    """Was: UFuncTypeError "Cannot cast ufunc 'matmul' output from float64 to int64" inside Conv."""
    model = conv_net()
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    with pytest.raises(gpuinfer.InvalidModelError,
                       match=r"'conv1' \(Conv, opset 17\): input 0 \(X\) 'x' is tensor\(int64\)"):
        gpuinfer.InferenceSession(model, device="cpu")


def test_inputs_that_must_share_a_type_do_not():
    """Was: UFuncTypeError: ufunc 'add' did not contain a loop for (float32, <U1)."""
    one = numpy_helper.from_array(np.array(1, np.int64), "one")
    model = _model([helper.make_node("Add", ["x", "one"], ["y"], name="a")], [_vi("x")], [_vi("y")], [one])
    with pytest.raises(gpuinfer.InvalidModelError,
                       match=r"inputs 'x' \(tensor\(float\)\) and 'one' \(tensor\(int64\)\) must have the same type"):
        gpuinfer.InferenceSession(model, device="cpu")


def test_valid_models_pass_the_schema_checks_untouched():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for model in (conv_net(), mixed_model(), control_model()):
            gpuinfer.InferenceSession(model, device="cpu")


# --- sparse initializers (found reading the loader the fuzzer led to: raw IndexError/ValueError) ----

@pytest.mark.parametrize("dims, indices, words", [
    ([2, 3], [1, 9], "do not fit"),
    ([2, 3], [1], "do not fit"),
    ([2, 3], [[0, 1], [5, 2]], "do not fit"),
    ([2, -3], [1, 2], "negative"),
    ([2**40, 2**40], [1, 2], "over the"),
])
def test_bad_sparse_initializer(dims, indices, words):
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "w"),
                                       numpy_helper.from_array(np.array(indices, np.int64), "i"), dims)
    model = _model([helper.make_node("Add", ["x", "w"], ["y"])], [_vi("x")], [_vi("y")], sparse=[sparse])
    with pytest.raises(gpuinfer.InvalidModelError, match=f"sparse initializer 'w'.*{words}"):
        gpuinfer.InferenceSession(model, device="cpu")


def test_good_sparse_initializer_still_loads():
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "w"),
                                       numpy_helper.from_array(np.array([[0, 1], [1, 2]], np.int64), "i"), [2, 3])
    model = _model([helper.make_node("Add", ["x", "w"], ["y"])], [_vi("x")], [_vi("y")], sparse=[sparse])
    out = gpuinfer.InferenceSession(model, device="cpu").run(None, {"x": np.zeros((2, 3), np.float32)})[0]
    np.testing.assert_array_equal(out, [[0, 1, 0], [0, 0, 2]])


# --- kernels ("unclear": bare broadcast/index errors) --------------------------------------------------

@pytest.mark.parametrize("attr, value, words", [
    ("pads", [-3, -3, 0, 0], "pads must be 4 non-negative values"),
    ("pads", [1, 1, 1], "pads must be 4 non-negative values"),
    ("strides", [0, 1], "strides must be 2 positive value"),
    ("strides", [1, 1, 1], "strides must be 2 positive value"),
])
def test_conv_window_attributes_are_checked(attr, value, words):
    model = conv_net()
    conv = model.graph.node[0]
    kept = [a for a in conv.attribute if a.name != attr]
    del conv.attribute[:]
    conv.attribute.extend(kept + [helper.make_attribute(attr, value)])
    sess = gpuinfer.InferenceSession(model, device="cpu")
    with pytest.raises(gpuinfer.NodeExecutionError, match=f"'conv1' \\(Conv.*{words}"):
        sess.run(None, conv_net_feeds())


@pytest.mark.parametrize("op, extra", [("Gather", []), ("GatherElements", []), ("TopK", ["k"]),
                                       ("GatherND", []), ("ScatterElements", ["i"]), ("ScatterND", ["i"])])
def test_indexing_ops_refuse_a_scalar(op, extra):
    """Was: IndexError: tuple index out of range (an axis check that let rank 0 through)."""
    inits = [numpy_helper.from_array(np.array(0, np.int64), "i"), numpy_helper.from_array(np.array([1], np.int64), "k")]
    data = "xi" if op != "TopK" else "x"
    inputs = [data, "i"] + extra if op != "TopK" else ["x", "k"]
    x = helper.make_tensor_value_info(data, TensorProto.INT64 if op != "TopK" else TensorProto.FLOAT, [])
    outs = ["y", "idx"] if op == "TopK" else ["y"]
    model = _model([helper.make_node(op, inputs, outs, name="n")], [x], [_vi("y", shape=None)], inits, opset=13)
    sess = gpuinfer.InferenceSession(model, device="cpu")
    feed = np.array(1, np.int64) if op != "TopK" else np.array(1.0, np.float32)
    with pytest.raises(gpuinfer.NodeExecutionError, match=f"'n' \\({op}.*rank"):
        sess.run(None, {data: feed})


def test_loop_body_of_the_wrong_arity():
    """Was: UFuncTypeError casting float to bool: a body missing an input took the carried values
    one place off."""
    model = control_model()
    loop = next(n for n in model.graph.node if n.op_type == "Loop")
    del next(a.g for a in loop.attribute if a.name == "body").input[0]
    sess = gpuinfer.InferenceSession(model, device="cpu")
    with pytest.raises(gpuinfer.NodeExecutionError, match="Loop: the body takes 2 input.*must take 3"):
        sess.run(None, {"x": np.ones((2, 4), np.float32), "cond": np.array(True)})


def test_if_branch_with_the_wrong_number_of_outputs():
    model = control_model()
    if_node = next(n for n in model.graph.node if n.op_type == "If")
    then = next(a.g for a in if_node.attribute if a.name == "then_branch")
    then.output.add().CopyFrom(then.output[0])
    sess = gpuinfer.InferenceSession(model, device="cpu")
    with pytest.raises(gpuinfer.NodeExecutionError, match="If: then_branch has 2 output"):
        sess.run(None, {"x": np.ones((2, 4), np.float32), "cond": np.array(True)})
