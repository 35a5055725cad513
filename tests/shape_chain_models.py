"""Small models whose tensor sizes come from shape arithmetic or from data, built in code.

- ``resize_chain``: Conv -> Relu -> Resize whose ``sizes`` come from ``Shape -> Gather ->
  (Mul | Div | Cast/Mul/Floor/Cast) -> Concat`` of the Relu's output, then Conv.  With static input
  dims the chain folds at load; with symbolic ones it is a constant only per input signature
  (ONNX's own shape inference folds the Mul chain but not the Div or float round trip).
- ``nonzero_model``: sizes that depend on the data (NonZero), which no plan can know ahead.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CHAINS = ("mul", "div", "float")


def resize_chain(chain: str = "mul", dynamic: bool = False, channels: int = 8) -> onnx.ModelProto:
    """x[N,3,H,W] -> conv/relu r -> Resize(r, sizes from r's shape) -> conv -> y."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32) * 0.3, "w1"),
        numpy_helper.from_array(rng.standard_normal((4, channels, 3, 3)).astype(np.float32) * 0.2, "w2"),
        numpy_helper.from_array(np.array([0, 1], np.int64), "nc_index"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "hw_index"),
        numpy_helper.from_array(np.array(2, np.int64), "two"),
        numpy_helper.from_array(np.array(2.5, np.float32), "factor"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r"], name="relu1"),
        helper.make_node("Shape", ["r"], ["r_shape"], name="shape"),
        helper.make_node("Gather", ["r_shape", "nc_index"], ["nc"], axis=0, name="gather_nc"),
        helper.make_node("Gather", ["r_shape", "hw_index"], ["hw"], axis=0, name="gather_hw"),
    ]
    if chain == "mul":
        nodes.append(helper.make_node("Mul", ["hw", "two"], ["hw_new"], name="scale_hw"))
    elif chain == "div":
        nodes.append(helper.make_node("Div", ["hw", "two"], ["hw_new"], name="scale_hw"))
    elif chain == "float":
        nodes += [helper.make_node("Cast", ["hw"], ["hw_f"], to=TensorProto.FLOAT, name="to_float"),
                  helper.make_node("Mul", ["hw_f", "factor"], ["hw_scaled"], name="scale_hw"),
                  helper.make_node("Floor", ["hw_scaled"], ["hw_floor"], name="floor_hw"),
                  helper.make_node("Cast", ["hw_floor"], ["hw_new"], to=TensorProto.INT64, name="to_int")]
    else:
        raise ValueError(chain)
    nodes += [
        helper.make_node("Concat", ["nc", "hw_new"], ["sizes"], axis=0, name="concat_sizes"),
        helper.make_node("Resize", ["r", "", "", "sizes"], ["up"], mode="linear", name="resize"),
        helper.make_node("Conv", ["up", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    read = {name for node in nodes for name in node.input}
    inits = [t for t in inits if t.name in read]
    dims = ["N", 3, "H", "W"] if dynamic else [1, 3, 16, 16]
    graph = helper.make_graph(nodes, f"resize_{chain}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "Ho", "Wo"])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def resize_chain_feeds(h: int = 16, w: int = 16, seed: int = 0) -> dict:
    return {"x": np.random.default_rng(seed).standard_normal((1, 3, h, w)).astype(np.float32)}


def nonzero_model() -> onnx.ModelProto:
    """x[4096] -> the positive entries (NonZero, Gather) doubled -> y: y's size depends on x's values."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("NonZero", ["r"], ["where"], name="nonzero"),
        helper.make_node("Squeeze", ["where", "axis0"], ["idx"], name="squeeze"),
        helper.make_node("Gather", ["r", "idx"], ["picked"], axis=0, name="pick"),
        helper.make_node("Mul", ["picked", "two"], ["doubled"], name="double"),
        helper.make_node("Exp", ["doubled"], ["y"], name="exp"),
    ]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "axis0"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    graph = helper.make_graph(nodes, "nonzero", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4096])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["K"])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def nonzero_feeds(seed: int = 0) -> dict:
    return {"x": np.random.default_rng(seed).standard_normal(4096).astype(np.float32)}
