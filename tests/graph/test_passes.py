"""Each graph pass: what it removes or merges, and that outputs stay within rtol 1e-4 of the unoptimised graph."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import gpuinfer
from gpuinfer.graph.passes import PASSES
from tests.model_zoo import model_case, reference_outputs


def _bn_net():
    rng = np.random.default_rng(0)
    c = 6
    inits = [numpy_helper.from_array(rng.standard_normal((c, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "b"),
             numpy_helper.from_array(rng.uniform(0.5, 2, c).astype(np.float32), "scale"),
             numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "beta"),
             numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "mean"),
             numpy_helper.from_array(rng.uniform(0.5, 2, c).astype(np.float32), "var")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("BatchNormalization", ["c", "scale", "beta", "mean", "var"], ["n"], name="bn"),
             helper.make_node("Identity", ["n"], ["i"], name="ident"),
             helper.make_node("Relu", ["i"], ["r"], name="relu"),
             helper.make_node("Dropout", ["r"], ["d"], name="drop"),
             helper.make_node("Sigmoid", ["x"], ["unused"], name="dead"),
             helper.make_node("MaxPool", ["d"], ["y"], kernel_shape=[2, 2], strides=[2, 2], name="pool")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 4, 4])
    model = helper.make_model(helper.make_graph(nodes, "bn", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    return model, {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}


def _ops(sess):
    return [n.op_type for n in sess.graph.nodes]


def test_each_pass_alone():
    model, feeds = _bn_net()
    plain = gpuinfer.InferenceSession(model, device="cpu", optimizations=False)
    assert _ops(plain) == ["Conv", "BatchNormalization", "Identity", "Relu", "Dropout", "Sigmoid", "MaxPool"]
    expected = plain.run(None, feeds)[0]
    after = {
        "remove_identities": ["Conv", "BatchNormalization", "Relu", "Sigmoid", "MaxPool"],
        "fold_batchnorm": ["Conv", "Identity", "Relu", "Dropout", "Sigmoid", "MaxPool"],
        "fold_channel_affine": ["Conv", "BatchNormalization", "Identity", "Relu", "Dropout", "Sigmoid", "MaxPool"],
        "fuse_activations": ["Conv", "BatchNormalization", "Identity", "Relu", "Dropout", "Sigmoid", "MaxPool"],
        "remove_dead_nodes": ["Conv", "BatchNormalization", "Identity", "Relu", "Dropout", "MaxPool"],
        "share_duplicate_filters": ["Conv", "BatchNormalization", "Identity", "Relu", "Dropout", "Sigmoid",
                                    "MaxPool"],
        "fuse_residual_adds": ["Conv", "BatchNormalization", "Identity", "Relu", "Dropout", "Sigmoid", "MaxPool"],
        "fuse_hard_swish": ["Conv", "BatchNormalization", "Identity", "Relu", "Dropout", "Sigmoid", "MaxPool"],
        "fuse_silu": ["Conv", "BatchNormalization", "Identity", "Relu", "Dropout", "Sigmoid", "MaxPool"],
    }
    for name in PASSES:
        sess = gpuinfer.InferenceSession(model, device="cpu", optimizations=[name])
        assert _ops(sess) == after[name], name
        np.testing.assert_allclose(sess.run(None, feeds)[0], expected, rtol=1e-4, atol=1e-5, err_msg=name)


def test_folded_batchnorm_leaves_one_copy_of_the_weights():
    model, _ = _bn_net()
    sess = gpuinfer.InferenceSession(model, device="cpu", optimizations=["fold_batchnorm"])
    assert not {"w", "b", "scale", "beta", "mean", "var"} & set(sess.graph.constants)


def _affine_net(mul_shape=(6, 1, 1), add_shape=(1, 6, 1, 1), sub_first=False, conv_read_twice=False):
    """Conv -> Mul(constant) -> Add or Sub(constant) -> Relu, as exporters write a BatchNorm."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.uniform(0.5, 2, mul_shape).astype(np.float32), "a"),
             numpy_helper.from_array(rng.standard_normal(add_shape).astype(np.float32), "c")]
    shift = helper.make_node("Sub", ["c", "m"], ["s"], name="shift") if sub_first else \
        helper.make_node("Add", ["m", "c"], ["s"], name="shift")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y0"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Mul", ["a", "y0"], ["m"], name="scale"), shift,
             helper.make_node("Relu", ["s"], ["y"], name="relu")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 8, 8])]
    if conv_read_twice:
        nodes.append(helper.make_node("Sigmoid", ["y0"], ["z"], name="other"))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 6, 8, 8]))
    graph = helper.make_graph(nodes, "affine", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              outputs, initializer=inits)
    return (helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
            {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)})


@pytest.mark.parametrize("case, ops", [
    ({}, ["Conv", "Relu"]),  # per-channel Mul and Add folded (the Relu fuses when that pass runs too)
    ({"mul_shape": ()}, ["Conv", "Mul", "Add", "Relu"]),  # a scalar scale stays (see channel_affine.py)
    ({"mul_shape": (1, 1, 8, 8)}, ["Conv", "Mul", "Add", "Relu"]),  # varies over space: stays
    ({"sub_first": True}, ["Conv", "Sub", "Relu"]),  # c - conv(x): the Mul folds, the Sub stays
    ({"conv_read_twice": True}, ["Conv", "Mul", "Add", "Relu", "Sigmoid"]),  # the conv's output is read elsewhere
])
def test_channel_affine_folds_only_what_it_can(case, ops):
    model, feeds = _affine_net(**case)
    folded = gpuinfer.InferenceSession(model, device="cpu", optimizations=["fold_channel_affine"])
    assert _ops(folded) == ops
    expected = reference_outputs(model.SerializeToString(), feeds)
    for got, want in zip(folded.run(None, feeds), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    fused = gpuinfer.InferenceSession(model, device="cpu")
    if ops == ["Conv", "Relu"]:
        assert _ops(fused) == ["Conv+Relu"] and "w" not in fused.graph.constants
    for got, want in zip(fused.run(None, feeds), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_all_passes_together():
    model, feeds = _bn_net()
    sess = gpuinfer.InferenceSession(model, device="cpu")
    assert _ops(sess) == ["Conv+Relu", "MaxPool"]
    expected = gpuinfer.InferenceSession(model, device="cpu", optimizations=False).run(None, feeds)[0]
    for mode in gpuinfer.MEMORY_MODES:
        got = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode).run(None, feeds)[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, err_msg=mode)


def test_unknown_pass_name():
    model, _ = _bn_net()
    with pytest.raises(gpuinfer.GpuinferError, match="unknown optimization"):
        gpuinfer.InferenceSession(model, optimizations=["turbo"])


@pytest.mark.parametrize("model_id", ["shared/ch_ppocr_mobile_v2.0_cls_infer.onnx", "light/resnet50",
                                      "light/densenet121", "shared/u2netp.onnx"])
def test_optimised_real_models_agree(model_id):
    source, feeds = model_case(model_id)
    plain = gpuinfer.InferenceSession(source, device="cpu", optimizations=False)
    fast = gpuinfer.InferenceSession(source, device="cpu", memory_mode="arena")
    assert len(fast.graph.nodes) < len(plain.graph.nodes)
    for a, b in zip(fast.run(None, feeds), plain.run(None, feeds)):
        scale = float(np.max(np.abs(b))) or 1.0
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * scale, err_msg=model_id)
