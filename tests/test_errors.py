"""Bad models and bad inputs: a clear GpuinferError naming what was wrong, at the earliest point."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import gpuinfer
from tests.tiny_models import conv_net, conv_net_feeds


def _model(nodes, inputs, outputs, inits=(), opset=17, domains=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 8
    return model


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])


def test_missing_file(tmp_path):
    with pytest.raises(gpuinfer.ModelLoadError, match="not found"):
        gpuinfer.InferenceSession(str(tmp_path / "nope.onnx"))


def test_directory(tmp_path):
    with pytest.raises(gpuinfer.ModelLoadError, match="directory"):
        gpuinfer.InferenceSession(str(tmp_path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(gpuinfer.ModelLoadError, match="empty"):
        gpuinfer.InferenceSession(str(path))


@pytest.mark.parametrize("data", [b"\x00\x01garbage" * 10, b"this is plainly a text file\n"])
def test_not_onnx(tmp_path, data):
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    with pytest.raises(gpuinfer.ModelLoadError, match="not an ONNX model"):
        gpuinfer.InferenceSession(str(path))


def test_truncated(tmp_path):
    data = conv_net().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(gpuinfer.ModelLoadError):
        gpuinfer.InferenceSession(str(path))


def test_unsupported_ops_listed_all_at_once():
    nodes = [helper.make_node("FrobnicateA", ["x"], ["a"], name="n1", domain="acme"),
             helper.make_node("FrobnicateB", ["a"], ["y"], name="n2", domain="acme")]
    with pytest.raises(gpuinfer.UnsupportedOpError) as info:
        gpuinfer.InferenceSession(_model(nodes, [X], [Y], domains=["acme"]))
    text = str(info.value)
    assert "FrobnicateA" in text and "FrobnicateB" in text and "'n1'" in text and "'n2'" in text
    assert "opset 1" in text


def test_checker_failure_is_reported():
    node = helper.make_node("Relu", ["x"], ["y"])
    model = _model([node], [X], [Y])
    model.graph.node[0].op_type = "Relu"
    model.opset_import[0].version = 10_000
    with pytest.raises(gpuinfer.InvalidModelError):
        gpuinfer.InferenceSession(model)


def test_dangling_input_named():
    node = helper.make_node("Add", ["x", "ghost"], ["y"], name="adder")
    model = _model([node], [X], [Y])
    with pytest.raises(gpuinfer.InvalidModelError, match="ghost"):
        gpuinfer.InferenceSession(model.SerializeToString())


def test_cycle_named():
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="first"),
             helper.make_node("Relu", ["a"], ["b"], name="second"),
             helper.make_node("Identity", ["a"], ["y"], name="third")]
    graph = helper.make_graph(nodes, "g", [X], [Y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(gpuinfer.InvalidModelError, match="cycle|produces"):
        gpuinfer.InferenceSession(model)


def test_unknown_memory_mode_and_device():
    with pytest.raises(gpuinfer.GpuinferError, match="memory_mode"):
        gpuinfer.InferenceSession(conv_net(), memory_mode="fast")
    with pytest.raises(gpuinfer.GpuinferError, match="device"):
        gpuinfer.InferenceSession(conv_net(), device="tpu")


def test_cuda_absent_is_clear():
    from gpuinfer.backends import cuda_unavailable_reason

    if cuda_unavailable_reason() is None:
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(gpuinfer.DeviceUnavailableError, match="cuda"):
        gpuinfer.InferenceSession(conv_net(), device="cuda")
    assert gpuinfer.InferenceSession(conv_net(), device="auto").device == "cpu"


@pytest.fixture(scope="module")
def sess():
    return gpuinfer.InferenceSession(conv_net(), device="cpu")


def test_missing_input(sess):
    with pytest.raises(gpuinfer.InputError, match=r"missing input\(s\) \['x'\]"):
        sess.run(None, {})


def test_missing_input_says_what_to_feed(sess):
    with pytest.raises(gpuinfer.InputError, match=r"'x': shape \[N, 3, H, W\] float32 \(\? and named dims: any size"):
        sess.run(None, {})


def test_unknown_input(sess):
    with pytest.raises(gpuinfer.InputError, match="unknown input name.*'z'"):
        sess.run(None, {**conv_net_feeds(), "z": np.zeros(1)})


def test_wrong_dtype_names_both_and_offers_cast(sess):
    with pytest.raises(gpuinfer.InputError, match="'x'.*float32.*got float16.*astype"):
        sess.run(None, {"x": conv_net_feeds()["x"].astype(np.float16)})
    with pytest.raises(gpuinfer.InputError, match="'x'.*float32.*got float64") as info:
        sess.run(None, {"x": conv_net_feeds()["x"].astype(np.float64)})
    assert "astype" not in str(info.value)  # float64 -> float32 is not a safe cast


def test_wrong_rank_and_dim(sess):
    with pytest.raises(gpuinfer.InputError, match="'x'.*rank 4.*got rank 3"):
        sess.run(None, {"x": np.zeros((3, 16, 16), np.float32)})
    with pytest.raises(gpuinfer.InputError, match="'x'.*dimension 1 must be 3.*got 4"):
        sess.run(None, {"x": np.zeros((1, 4, 16, 16), np.float32)})


def test_non_contiguous_and_read_only_inputs_are_accepted(sess):
    x = conv_net_feeds(1, 16, 16)["x"]
    expected = sess.run(None, {"x": x})[0]
    strided = np.asfortranarray(x)
    readonly = x.copy()
    readonly.setflags(write=False)
    np.testing.assert_array_equal(sess.run(None, {"x": strided})[0], expected)
    np.testing.assert_array_equal(sess.run(None, {"x": readonly})[0], expected)


def test_node_failure_names_the_node():
    # Reshape to a shape that does not fit: only discoverable at run time
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"], name="bad_reshape")]
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [2])
    model = _model(nodes, [X, s], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model.graph.output[0].type.tensor_type.shape.dim.add()
    sess = gpuinfer.InferenceSession(model, device="cpu")
    with pytest.raises(gpuinfer.NodeExecutionError, match="bad_reshape.*Reshape"):
        sess.run(None, {"x": np.zeros((2, 3), np.float32), "s": np.array([4, 4], np.int64)})
