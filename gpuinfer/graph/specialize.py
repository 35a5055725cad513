"""Shapes of every value for one input-shape signature, before anything runs.

The folded graph is written back out as a small ONNX graph with the inputs fixed to the
signature's shapes (large constants become typed inputs so no weight bytes are copied) and
ONNX shape inference, with shape-data propagation, fills in the rest.

Shape inference does not fold every shape computation: a Resize whose sizes come from
``Shape -> Gather -> Div -> Concat``, or from a float round trip (``Cast -> Mul -> Floor ->
Cast``), is left without an output shape.  For one signature those small tensors are constants,
so they are computed here on the host (the op's own kernel, on the shapes and small constants
it reads) and handed back to inference as initializers, round after round, until nothing new
folds.  Values still unknown after that are truly data-dependent (NonZero, TopK of data, ...):
the pools serve them on the dynamic (reduce) path and the first run's trace completes the plan.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

from gpuinfer.graph.ir import Graph, Node
from gpuinfer.graph.kernels import kernels
from gpuinfer.graph.types import collect_value_types, is_static
from gpuinfer.values import OptionalValue, TensorSequence

SMALL_CONSTANT_BYTES = 4096  # constants this small stay as data so shape arithmetic can use them
MAX_FOLD_ROUNDS = 8  # inference + host folding rounds per signature (each round unlocks the next)
# Ops never computed ahead: random ones differ per run; control flow runs subgraphs.
NOT_FOLDABLE = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                "Multinomial", "Bernoulli", "If", "Loop", "Scan"}


def static_value_types(graph: Graph, input_shapes: dict[str, tuple],
                       input_dtypes: dict[str, np.dtype]) -> dict[str, tuple[tuple, np.dtype]]:
    """name -> (static shape, dtype) for the inputs and every node output known for this signature.

    Graphs fed sequences or optionals are not inferred ahead: their tensors take the dynamic path
    on the first run and are planned from what it saw.
    """
    return specialize(graph, input_shapes, input_dtypes)[0]


def specialize(graph: Graph, input_shapes: dict[str, tuple],
               input_dtypes: dict[str, np.dtype]) -> tuple[dict, dict[str, np.ndarray]]:
    """``(types, folded)``: the static types of this signature, and the small values (shapes, sizes,
    indices) that are constants for it and were computed on the host to find those types."""
    if any(n not in input_shapes for n in graph.inputs):
        return {}, {}
    folded: dict[str, np.ndarray] = {}
    known: dict = {}
    for _ in range(MAX_FOLD_ROUNDS):
        inferred = _inferred_types(graph, input_shapes, input_dtypes, folded)
        if inferred is None:
            break
        known = inferred
        more = fold_signature_values(graph, known, folded)
        if not more:
            break
        folded.update(more)
    return known, folded


def _inferred_types(graph: Graph, input_shapes: dict, input_dtypes: dict,
                    folded: dict[str, np.ndarray]) -> Optional[dict]:
    """One round of ONNX shape inference with ``folded`` values as initializers (None if it fails)."""
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(input_dtypes[name])),
                                            list(input_shapes[name]))
              for name in graph.inputs]
    initializers = []
    for name, value in graph.constants.items():
        if value.dtype.kind in "OUS":
            continue
        if value.nbytes <= SMALL_CONSTANT_BYTES:
            initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        else:
            inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype),
                                                        list(value.shape)))
    initializers += [numpy_helper.from_array(np.ascontiguousarray(v), k) for k, v in folded.items()]
    nodes = [n.proto for n in graph.nodes if not all(o in folded for o in n.outputs if o)]
    outputs = [onnx.ValueInfoProto(name=name) for name in graph.outputs]
    proto = helper.make_graph(nodes, graph.name or "g", inputs, outputs, initializer=initializers)
    opsets = [helper.make_opsetid(d, v) for d, v in graph.opsets.items()]
    model = helper.make_model(proto, opset_imports=opsets)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        return None
    types = collect_value_types(inferred.graph)
    known = {name: (tuple(input_shapes[name]), np.dtype(input_dtypes[name])) for name in graph.inputs}
    for node in graph.nodes:
        for name in node.outputs:
            if name in folded:
                known[name] = (tuple(folded[name].shape), folded[name].dtype)
                continue
            shape, dtype = types.get(name, (None, None))
            if name and is_static(shape) and dtype is not None:
                known[name] = (tuple(shape), dtype)
    return known


def fold_signature_values(graph: Graph, types: dict, folded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Node outputs not yet in ``folded`` that are constants for this signature: small tensors
    computed from static shapes (Shape, Size), small constants and values folded before."""
    values = dict(folded)
    new: dict[str, np.ndarray] = {}
    for node in graph.nodes:
        outs = [name for name in node.outputs if name]
        if not outs or all(name in values for name in outs):
            continue
        args = _host_args(graph, node, types, values)
        if args is None:
            continue
        results = _evaluate(node, args)
        if results is None:
            continue
        for name, value in zip(node.outputs, results):
            if name:
                values[name] = new[name] = value
    return new


def _host_args(graph: Graph, node: Node, types: dict, values: dict) -> Optional[list]:
    """The node's inputs as host arrays, or None unless every one is a small known value."""
    if (node.op_type in NOT_FOLDABLE or node.outer_reads or node.spec is None
            or any(isinstance(v, Graph) for v in node.attrs.values())):
        return None
    args = []
    for name in node.inputs:
        if not name:
            args.append(None)
        elif name in values:
            args.append(values[name])
        elif name in graph.constants and graph.constants[name].nbytes <= SMALL_CONSTANT_BYTES:
            args.append(graph.constants[name])
        elif node.spec.shape_only and name in types:
            shape, dtype = types[name]
            args.append(np.broadcast_to(np.zeros((), dtype=dtype), shape))
        else:
            return None
    return args


def _evaluate(node: Node, args: list) -> Optional[list]:
    """The node's outputs computed now, or None if the kernel fails or makes anything large."""
    try:
        with np.errstate(all="ignore"):  # as during a run: IEEE results, no warnings
            result = kernels().evaluate(node, args, SMALL_CONSTANT_BYTES)
    except Exception:
        return None  # the run will meet (and report) the same failure, with the node named
    results = result if type(result) in (tuple, list) else (result,)
    out = []
    for value in results:
        if isinstance(value, (TensorSequence, OptionalValue)) or value is None:
            return None
        value = np.asarray(value)
        if value.dtype.kind in "OUSV" or value.nbytes > SMALL_CONSTANT_BYTES:
            return None
        out.append(value)
    return out


def signature_of(feeds: dict, graph: Graph) -> tuple:
    """The hashable input-shape signature plans are cached under (sequences by their elements' shapes)."""
    return tuple((name, _feed_signature(feeds[name])) for name in graph.inputs)


def _feed_signature(value) -> tuple:
    if isinstance(value, OptionalValue):
        return ("optional", _feed_signature(value.value) if value.value is not None else None)
    if isinstance(value, TensorSequence):
        return ("sequence",) + tuple(_feed_signature(v) for v in value)
    return (tuple(value.shape), value.dtype)  # a dtype hashes and compares by value: str() cost ~2 us a run
