"""A pre-activation BatchNormalization (DenseNet-121's ``Concat -> BatchNormalization -> Mul -> Add
-> Relu``, Caffe's Scale after it) takes the per-channel Mul and Add into its scale and shift
(``fold_channel_affine``) and the Relu after it into its step, in place on its input
(``fuse_activations``): one pass through the executor where there were four, one buffer where
there were up to four."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import gpuinfer
from tests.node_helpers import run_onnxruntime


def _net(mul_shape=(8, 1, 1), add_shape=(8, 1, 1), bn_read_twice=False, rank_known=True, sub=False):
    """x, y -> Concat -> BatchNormalization -> Mul(a) -> Add(c) (or Sub) -> Relu -> Conv 1x1."""
    rng = np.random.default_rng(12)
    f32 = np.float32
    inits = [numpy_helper.from_array(rng.uniform(0.5, 2, 8).astype(f32), "scale"),
             numpy_helper.from_array(rng.standard_normal(8).astype(f32), "beta"),
             numpy_helper.from_array(rng.standard_normal(8).astype(f32), "mean"),
             numpy_helper.from_array(rng.uniform(0.5, 2, 8).astype(f32), "var"),
             numpy_helper.from_array(rng.uniform(0.5, 2, mul_shape).astype(f32), "a"),
             numpy_helper.from_array(rng.standard_normal(add_shape).astype(f32), "c"),
             numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(f32), "w")]
    nodes = [helper.make_node("Concat", ["x0", "x1"], ["cat"], axis=1),
             helper.make_node("BatchNormalization", ["cat", "scale", "beta", "mean", "var"], ["n"]),
             helper.make_node("Mul", ["n", "a"], ["m"]),
             helper.make_node("Sub" if sub else "Add", ["m", "c"], ["s"]),
             helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("Conv", ["r", "w"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 10, 10])]
    if bn_read_twice:
        nodes.append(helper.make_node("Sigmoid", ["n"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8, 10, 10]))
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4, 10, 10]) if rank_known
              else helper.make_value_info(name, helper.make_tensor_type_proto(TensorProto.FLOAT, None))
              for name in ("x0", "x1")]
    model = helper.make_model(helper.make_graph(nodes, "bn_affine", inputs, outputs, initializer=inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    feeds = {name: rng.standard_normal((1, 4, 10, 10)).astype(f32) for name in ("x0", "x1")}
    return model, feeds


def _ops(sess):
    return [n.op_type for n in sess.graph.nodes]


@pytest.mark.parametrize("case", [{}, {"sub": True}, {"mul_shape": (1, 8, 1, 1), "add_shape": (8, 1, 1)}])
def test_scale_and_shift_fold_into_the_batchnorm_and_relu_fuses(case):
    model, feeds = _net(**case)
    sess = gpuinfer.InferenceSession(model, device="cpu")
    assert _ops(sess) == ["Concat", "BatchNormalization+Relu", "Conv"]
    assert not {"scale", "beta", "a", "c"} & set(sess.graph.constants)  # one copy of the parameters
    want = run_onnxruntime(model, feeds)[0]
    outputs = {}
    for mode in gpuinfer.MEMORY_MODES:
        outputs[mode] = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode).run(None, feeds)[0]
        np.testing.assert_allclose(outputs[mode], want, rtol=1e-5, atol=1e-5, err_msg=mode)
    assert all(np.array_equal(got, outputs["arena"]) for got in outputs.values())


@pytest.mark.parametrize("case, ops", [
    ({"mul_shape": ()}, ["Concat", "BatchNormalization", "Mul", "Add", "Relu", "Conv"]),  # a scalar: stays
    ({"mul_shape": (1, 1, 10, 10)}, ["Concat", "BatchNormalization", "Mul", "Add", "Relu", "Conv"]),  # over space
    ({"bn_read_twice": True}, ["Concat", "BatchNormalization", "Mul", "Add", "Relu", "Conv", "Sigmoid"]),
    ({"rank_known": False}, ["Concat", "BatchNormalization", "Mul", "Add", "Relu", "Conv"]),  # (8,1,1): per channel?
])
@pytest.mark.filterwarnings("ignore::gpuinfer.ModelCheckWarning")  # the input of unknown rank
def test_what_is_not_one_value_per_channel_stays(case, ops):
    model, feeds = _net(**case)
    sess = gpuinfer.InferenceSession(model, device="cpu", optimizations=["fold_channel_affine"])
    assert _ops(sess) == ops
    for got, want in zip(sess.run(None, feeds), run_onnxruntime(model, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_batchnorm_relu_runs_in_place_on_its_input():
    """The fused step rewrites the Concat's buffer, as BatchNormalization and Relu each did: the
    arena holds the Concat's output and the Conv's, never a third image."""
    model, feeds = _net()
    fused = gpuinfer.InferenceSession(model, device="cpu", memory_mode="arena")
    unfused = gpuinfer.InferenceSession(model, device="cpu", memory_mode="arena",
                                        optimizations=["fold_channel_affine"])
    fused.run(None, feeds)
    unfused.run(None, feeds)
    assert fused.memory_report().peak_bytes <= unfused.memory_report().peak_bytes
    assert fused.memory_report().peak_bytes <= (8 + 4) * 100 * 4 + 1024
