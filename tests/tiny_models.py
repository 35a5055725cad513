"""Small ONNX models built in code, for API, error and leak tests that must run in milliseconds."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_net(channels: int = 8, opset: int = 17, dynamic: bool = True) -> onnx.ModelProto:
    """x[N,3,H,W] -> Conv -> Relu -> Conv -> Add(skip) -> Sigmoid -> MaxPool -> y, with a long skip."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32) * 0.3, "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((channels, channels, 3, 3)).astype(np.float32) * 0.1, "w2")
    b2 = numpy_helper.from_array(rng.standard_normal((channels,)).astype(np.float32), "b2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", ["c2", "c1"], ["s"], name="skip"),
        helper.make_node("Sigmoid", ["s"], ["g"], name="gate"),
        helper.make_node("MaxPool", ["g"], ["y"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
    ]
    dims = ["N", 3, "H", "W"] if dynamic else [1, 3, 16, 16]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None if dynamic else [1, channels, 8, 8])
    if dynamic:
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels, "H2", "W2"])
    graph = helper.make_graph(nodes, "conv_net", [x], [y], initializer=[w1, w2, b2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def conv_net_feeds(n: int = 1, h: int = 16, w: int = 16, seed: int = 0) -> dict:
    return {"x": np.random.default_rng(seed).standard_normal((n, 3, h, w)).astype(np.float32)}
