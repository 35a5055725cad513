"""Build one-node ONNX models and run them through onnxruntime and through a gpuinfer kernel.

Used by the op tests: onnxruntime is the reference, never a mock.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import onnx
from onnx import helper

from gpuinfer.ops.context import StandaloneContext
from gpuinfer.ops.registry import lookup


def np_to_onnx_type(dtype: Any) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def single_node_model(op_type: str, inputs: Sequence[Optional[np.ndarray]], n_outputs: int = 1,
                      opset: int = 17, domain: str = "", constant_inputs: Sequence[int] = (),
                      **attrs: Any) -> onnx.ModelProto:
    """A model holding one ``op_type`` node; inputs listed in ``constant_inputs`` become initializers.

    ``None`` in ``inputs`` is an omitted optional input (empty name).
    """
    in_names, graph_inputs, inits = [], [], []
    for i, x in enumerate(inputs):
        if x is None:
            in_names.append("")
            continue
        name = f"in{i}"
        in_names.append(name)
        if i in constant_inputs:
            inits.append(onnx.numpy_helper.from_array(np.asarray(x), name))
        else:
            graph_inputs.append(helper.make_tensor_value_info(name, np_to_onnx_type(x.dtype), x.shape))
    out_names = [f"out{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, in_names, out_names, domain=domain, **attrs)
    outputs = [onnx.ValueInfoProto(name=n) for n in out_names]
    graph = helper.make_graph([node], "single", graph_inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, opset)])
    model.ir_version = 8
    # onnxruntime wants typed graph outputs: take them from ONNX shape inference.
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for out in model.graph.output:
        if out.name in known and known[out.name].type.HasField("tensor_type"):
            out.type.CopyFrom(known[out.name].type)
            out.type.tensor_type.ClearField("shape")
    return model


def run_onnxruntime(model: onnx.ModelProto, feeds: dict) -> list:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def run_kernel(op_type: str, inputs: Sequence[Optional[np.ndarray]], n_outputs: int = 1,
               opset: int = 17, domain: str = "", **attrs: Any) -> list:
    """Call gpuinfer's kernel for ``op_type`` directly, with attributes as Python values."""
    spec = lookup(op_type, opset, domain)
    assert spec is not None, f"{op_type} opset {opset} not registered"
    ctx = StandaloneContext(attrs=attrs, opset=opset, n_outputs=n_outputs, op_type=op_type)
    with np.errstate(all="ignore"):  # as the executor runs kernels
        result = spec.kernel(ctx, *inputs)
    return list(result) if isinstance(result, (tuple, list)) else [result]


def check_against_onnxruntime(op_type: str, inputs: Sequence[Optional[np.ndarray]], n_outputs: int = 1,
                              opset: int = 17, constant_inputs: Sequence[int] = (),
                              rtol: float = 1e-5, atol: float = 1e-6, **attrs: Any) -> list:
    """Run the node both ways and assert every output matches (dtype and shape exactly)."""
    model = single_node_model(op_type, inputs, n_outputs, opset, constant_inputs=constant_inputs, **attrs)
    feeds = {f"in{i}": x for i, x in enumerate(inputs) if x is not None and i not in constant_inputs}
    expected = run_onnxruntime(model, feeds)
    got = run_kernel(op_type, inputs, n_outputs, opset, **attrs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        g = np.asarray(g)
        assert g.dtype == e.dtype, f"{op_type}: dtype {g.dtype} != {e.dtype}"
        assert g.shape == e.shape, f"{op_type}: shape {g.shape} != {e.shape}"
        if np.issubdtype(e.dtype, np.floating):
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)
        else:
            np.testing.assert_array_equal(g, e)
    return got


def requested_scratch(op_type: str, inputs: Sequence[Optional[np.ndarray]], opset: int, **attrs: Any):
    """(predicted, requested) scratch lists of one kernel call: the planner's promise, checked."""
    spec = lookup(op_type, opset)
    requested = []

    class Recording(StandaloneContext):
        def scratch(self, shape, dtype):
            requested.append((tuple(int(d) for d in shape), np.dtype(dtype)))
            return super().scratch(shape, dtype)

    spec.kernel(Recording(attrs=attrs, opset=opset), *inputs)
    predicted = spec.scratch(attrs, [None if x is None else x.shape for x in inputs],
                             [None if x is None else x.dtype for x in inputs])
    return [(tuple(s), np.dtype(d)) for s, d in predicted], requested
