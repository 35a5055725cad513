"""Every CUDA kernel in gpuinfer/backends/cuda/kernels builds with NVRTC (no GPU needed) and has a
numpy twin taking the same parameters; the CUDA op variants that launch them (run on the strict
stand-in, which runs the twins) give onnxruntime's results in the launches the variants promise.
"""
from __future__ import annotations

import inspect

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import gpuinfer
from gpuinfer.backends.cuda.kernel_library import compile_ptx, kernel_names, kernel_signature, sources
from gpuinfer.backends.cuda.twins import TWINS
from gpuinfer.backends.strict import STRICT
from tests.node_helpers import run_onnxruntime

KERNELS = [(file, name) for file, text in sources().items() for name in kernel_names(text)]


def _nvrtc_available() -> bool:
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception:  # noqa: BLE001 (no wheel, or no library: then the compile test says so)
        return False
    return True


@pytest.mark.skipif(not _nvrtc_available(), reason="NVRTC (nvidia-cuda-nvrtc-cu12 with cupy) is not installed")
@pytest.mark.parametrize("file", sorted(sources()))
def test_kernel_source_compiles_with_nvrtc(file):
    ptx = compile_ptx(sources()[file])
    for name in kernel_names(sources()[file]):
        assert f".entry {name}(".encode() in ptx, name


@pytest.mark.parametrize("file, name", KERNELS)
def test_every_kernel_has_a_twin_with_its_parameters(file, name):
    assert name in TWINS, f"{name} in {file} has no numpy twin"
    assert len(inspect.signature(TWINS[name]).parameters) == len(kernel_signature(sources()[file], name))


def _conv_model(x_shape, w, b, act=None, **attrs) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(b, "b")] if b is not None else [])
    nodes = [helper.make_node("Conv", ["x", "w"] + (["b"] if b is not None else []), ["c" if act else "y"], **attrs)]
    if act is not None:
        op_type, act_attrs = act
        nodes.append(helper.make_node(op_type, ["c"], ["y"], **act_attrs))
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * len(x_shape))],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _steady_run(model: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, int]:
    """(output, launches) of the second run on the stand-in, the feed already on the device."""
    sess = gpuinfer.InferenceSession(model.SerializeToString(), device="strict")
    device_x = STRICT.asarray(x)
    sess.run(None, {"x": device_x}, output_device="cuda")
    before = STRICT.counters.snapshot()
    got = sess.run(None, {"x": device_x}, output_device="cuda")[0]
    return STRICT.asnumpy(got), STRICT.counters.delta(before, STRICT.counters.snapshot())["launches"]


NARROW = [  # (x shape, w shape, group, attrs, activation): all at most 16 output channels a group
    ((1, 8, 9, 11), (16, 8, 3, 3), 1, {"pads": [1, 1, 1, 1]}, ("Relu", {})),
    ((2, 5, 12, 10), (1, 5, 3, 3), 1, {"pads": [2, 2, 2, 2], "dilations": [2, 2]}, ("Sigmoid", {})),
    ((1, 6, 13, 13), (6, 1, 3, 3), 6, {"strides": [2, 2], "pads": [1, 0, 1, 2]}, ("HardSigmoid", {"alpha": 0.3})),
    ((1, 12, 7, 7), (8, 3, 1, 1), 4, {}, ("LeakyRelu", {"alpha": 0.2})),
    ((1, 4, 20), (3, 4, 5), 1, {"pads": [2, 2]}, None),
    ((1, 16, 6, 6), (16, 16, 1, 1), 1, {}, ("HardSwish", {})),
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("x_shape, w_shape, group, attrs, act", NARROW)
def test_narrow_conv_is_one_direct_launch_with_onnxruntime_results(x_shape, w_shape, group, attrs, act, bias):
    rng = np.random.default_rng(7)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if bias else None
    model = _conv_model(x_shape, w, b, act, group=group, **attrs)
    x = rng.standard_normal(x_shape).astype(np.float32)
    expected = run_onnxruntime(model, {"x": x})[0]
    got, launches = _steady_run(model, x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    fused = act is None or act[0] in ("Relu", "Sigmoid", "HardSigmoid", "LeakyRelu", "HardSwish")
    assert launches == (1 if fused else 2)


@pytest.mark.parametrize("op_type, attrs", [("Sigmoid", {}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
                                            ("LeakyRelu", {"alpha": 0.05}), ("HardSwish", {}), ("Erf", {})])
def test_activation_is_one_launch_with_onnxruntime_results(op_type, attrs):
    x = (np.random.default_rng(3).standard_normal((2, 3, 17, 5)) * 6).astype(np.float32)
    node = helper.make_node(op_type, ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "act", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * x.ndim)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    expected = run_onnxruntime(model, {"x": x})[0]
    got, launches = _steady_run(model, x)
    assert launches == 1
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _with_silu(model: onnx.ModelProto, mul_order=("c", "s")) -> onnx.ModelProto:
    """``model``'s output ``y`` renamed ``c`` and followed by Mul(c, Sigmoid(c)) -> y (a SiLU)."""
    graph = model.graph
    graph.node[-1].output[0] = "c"
    graph.node.extend([helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", list(mul_order), ["y"])])
    return model


@pytest.mark.parametrize("chain", ["silu", "silu_swapped", "hard_swish"])
def test_fused_chain_is_one_launch_with_onnxruntime_results(chain):
    """SiLU (either operand order of its Mul) and the hard-swish chain, each one step: one launch."""
    x = (np.random.default_rng(4).standard_normal((2, 3, 17, 5)) * 8).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], chain,
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * x.ndim)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if chain == "hard_swish":
        model = _with_hard_swish(model)
    else:
        model = _with_silu(model, ("s", "c") if chain == "silu_swapped" else ("c", "s"))
    expected = run_onnxruntime(model, {"x": x})[0]
    got, launches = _steady_run(model, x)
    assert launches == 2  # the Relu, then the fused step
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# (x shape, w shape, launches): narrow -> conv2d_direct with the SiLU or hard-swish applied on the way
# out; wide (32 output channels, one image) -> im2col + matmul + bias_act applying it
CONV_SILU = [((1, 3, 12, 16), (10, 3, 3, 3), 1), ((1, 16, 9, 9), (32, 16, 3, 3), 3)]


def _with_hard_swish(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``'s output ``y`` renamed ``c`` and followed by c * Clip(c + 3, 0, 6) / 6 -> y."""
    graph = model.graph
    graph.node[-1].output[0] = "c"
    graph.initializer.extend([numpy_helper.from_array(np.array(v, np.float32), n)
                              for n, v in (("three", 3.0), ("lo", 0.0), ("hi", 6.0))])
    graph.node.extend([helper.make_node("Add", ["c", "three"], ["a"]),
                       helper.make_node("Clip", ["a", "lo", "hi"], ["k"]),
                       helper.make_node("Mul", ["c", "k"], ["m"]), helper.make_node("Div", ["m", "hi"], ["y"])])
    return model


@pytest.mark.parametrize("chain", ["silu", "hard_swish"])
@pytest.mark.parametrize("x_shape, w_shape, launches", CONV_SILU)
def test_conv_chain_is_the_conv_epilogue_with_onnxruntime_results(chain, x_shape, w_shape, launches):
    """SiLU and hard-swish as exporters spell them (two and four nodes) after a Conv: its epilogue."""
    rng = np.random.default_rng(12)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    model = (_with_silu if chain == "silu" else _with_hard_swish)(_conv_model(x_shape, w, b, pads=[1, 1, 1, 1]))
    x = rng.standard_normal(x_shape).astype(np.float32)
    expected = run_onnxruntime(model, {"x": x})[0]
    got, n = _steady_run(model, x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert n == launches


def _with_prelu(model: onnx.ModelProto, slope: np.ndarray) -> onnx.ModelProto:
    """``model``'s output ``y`` renamed ``c`` and followed by PRelu(c, slope) -> y."""
    graph = model.graph
    graph.node[-1].output[0] = "c"
    graph.node.append(helper.make_node("PRelu", ["c", "s"], ["y"]))
    graph.initializer.append(numpy_helper.from_array(slope, "s"))
    return model


# (x shape, w shape, slope shape, launches): narrow -> conv2d_direct alone; wide (32 output channels)
# -> im2col + matmul per image (2 images) + one bias_act, PRelu in the epilogue either way (mtcnn: every Conv)
CONV_PRELU = [((1, 3, 12, 16), (10, 3, 3, 3), (10, 1, 1), 1), ((2, 16, 9, 9), (32, 16, 3, 3), (1, 32, 1, 1), 5)]


@pytest.mark.parametrize("x_shape, w_shape, slope_shape, launches", CONV_PRELU)
def test_conv_prelu_is_the_conv_epilogue_with_onnxruntime_results(x_shape, w_shape, slope_shape, launches):
    rng = np.random.default_rng(11)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    slope = rng.uniform(-0.5, 1.5, slope_shape).astype(np.float32)
    model = _with_prelu(_conv_model(x_shape, w, b), slope)
    x = rng.standard_normal(x_shape).astype(np.float32)
    expected = run_onnxruntime(model, {"x": x})[0]
    got, n = _steady_run(model, x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert n == launches


@pytest.mark.parametrize("slope_shape, launches", [((3, 1, 1), 1), ((1, 3, 1, 1), 1), ((5,), None)])
def test_prelu_per_channel_is_one_launch_with_onnxruntime_results(slope_shape, launches):
    x = (np.random.default_rng(5).standard_normal((2, 3, 4, 5)) * 3).astype(np.float32)
    slope = np.random.default_rng(6).uniform(-1, 1, slope_shape).astype(np.float32)
    graph = helper.make_graph([helper.make_node("PRelu", ["x", "s"], ["y"])], "prelu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * x.ndim)],
                              initializer=[numpy_helper.from_array(slope, "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    expected = run_onnxruntime(model, {"x": x})[0]
    got, n = _steady_run(model, x)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)
    if launches is not None:
        assert n == launches
    else:  # a slope along the last axis: the shared kernel's CuPy ufuncs, not the channel kernel
        assert n > 1
