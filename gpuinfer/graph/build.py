"""Load an ONNX model into a ``Graph``: check, infer shapes, order, fold constants, record lifetimes.

Everything here runs once per session; nothing it folds is ever recomputed per run or counted
as an intermediate.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
from onnx import numpy_helper

from gpuinfer.errors import GpuinferError, InvalidModelError, UnsupportedOpError
from gpuinfer.graph.attributes import attribute_value, outer_scope_reads, subgraph_attributes
from gpuinfer.graph.ir import Graph, Node, link
from gpuinfer.graph.read import ModelSource, read_model
from gpuinfer.graph.toposort import topological_order
from gpuinfer.graph.types import collect_value_types, is_static, type_shape, value_kind
from gpuinfer.ops.context import OptionalValue, StandaloneContext, TensorSequence
from gpuinfer.ops.registry import lookup

# Ops whose result must not be computed once at load even when their inputs are constant.
# No single constant made at load may exceed this: a corrupt shape must fail fast, not swap.
MAX_FOLDED_BYTES = 4 << 30

NOT_FOLDABLE = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                "Multinomial", "Bernoulli", "If", "Loop", "Scan"}


def load_graph(source: ModelSource, optimizations: list[str] = ()) -> tuple[Graph, onnx.ModelProto]:
    """Read, check, build and optimise a model; returns the graph and the checked ModelProto.

    ``optimizations`` names the graph passes to run (see ``gpuinfer.graph.passes``).
    """
    model = read_model(source)
    opsets = model_opsets(model)
    missing = unsupported_ops(model.graph, opsets)
    if missing:
        _refuse_unknown_ops(missing)
        raise UnsupportedOpError(missing)
    types = collect_value_types(infer_shapes(model).graph)
    graph = build_graph(model.graph, opsets, types, {}, set())
    if optimizations:
        from gpuinfer.graph.passes import optimize

        optimize(graph, list(optimizations))
    return graph, model


def model_opsets(model: onnx.ModelProto) -> dict[str, int]:
    """domain -> opset version; refuses opsets newer than the installed onnx defines."""
    opsets: dict[str, int] = {}
    for imp in model.opset_import:
        domain = "" if imp.domain in ("", "ai.onnx") else imp.domain
        opsets[domain] = int(imp.version)
    newest = onnx.defs.onnx_opset_version()
    if opsets.get("", 0) > newest:
        raise InvalidModelError(f"model uses opset {opsets['']} of the default domain; "
                                f"gpuinfer supports opsets up to {newest}")
    if "" not in opsets and model.ir_version < 3:
        opsets[""] = 1
    return opsets


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX shape inference with shape-data propagation; the raw model if inference fails."""
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        return model


def unsupported_ops(graph: onnx.GraphProto, opsets: dict[str, int]) -> list[tuple[str, str, str, int]]:
    """Every node (subgraphs included) with no kernel at the model's opset, as (domain, op, node, opset)."""
    missing = []
    for i, node in enumerate(graph.node):
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        opset = opsets.get(domain, 0)
        if lookup(node.op_type, opset, domain) is None:
            missing.append((domain, node.op_type, node.name or f"#{i}", opset))
        for sub in subgraph_attributes(node):
            missing.extend(unsupported_ops(sub, opsets))
    return missing


ONNX_DOMAINS = ("", "ai.onnx.ml", "ai.onnx.preview", "ai.onnx.preview.training")


def _refuse_unknown_ops(missing: list[tuple[str, str, str, int]]) -> None:
    """Ops in ONNX's own domains that ONNX does not define at the model's opset make an invalid
    model (``InvalidModelError``), not merely one gpuinfer cannot run yet (``UnsupportedOpError``)."""
    unknown = [(domain, op, node, opset) for domain, op, node, opset in missing
               if domain in ONNX_DOMAINS and not onnx.defs.has(op, opset, domain)]
    if not unknown:
        return
    listed = "; ".join(f"{f'{d}::' if d else ''}{op} (node {node!r}, "
                       + (f"opset {opset})" if opset else f"domain {d or 'ai.onnx'!r} not in opset_import)")
                       for d, op, node, opset in unknown[:8])
    more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
    raise InvalidModelError(f"the model uses op types ONNX does not define at its opset: {listed}{more}")


def build_graph(proto: onnx.GraphProto, opsets: dict[str, int], types: dict,
                outer_constants: dict[str, np.ndarray], outer_names: set[str]) -> Graph:
    """Build one (sub)graph; ``outer_*`` describe the enclosing scopes it may read."""
    constants = _initializers(proto)
    inputs = [i.name for i in proto.input if i.name not in constants]
    raw = list(proto.node)
    names = [n.name or f"{n.op_type}#{i}" for i, n in enumerate(raw)]
    outer_reads_of = [sorted(set().union(*[outer_scope_reads(g) for g in subgraph_attributes(n)]))
                      for n in raw]
    available = set(inputs) | set(constants) | outer_names
    order = topological_order([list(n.input) + reads for n, reads in zip(raw, outer_reads_of)],
                              [list(n.output) for n in raw], available, names)
    scope_names = available | {o for n in raw for o in n.output if o}
    visible_constants = {**outer_constants}

    nodes: list[Node] = []
    for idx in order:
        proto_node = raw[idx]
        domain = "" if proto_node.domain in ("", "ai.onnx") else proto_node.domain
        opset = opsets.get(domain, 0)
        spec = lookup(proto_node.op_type, opset, domain)
        visible_constants.update(constants)

        def compile_sub(g: onnx.GraphProto) -> Graph:
            return build_graph(g, opsets, types, dict(visible_constants), scope_names)

        try:
            attrs = {a.name: attribute_value(a, compile_sub) for a in proto_node.attribute}
        except GpuinferError:
            raise
        except Exception as exc:
            raise InvalidModelError(f"node {names[idx]!r} ({proto_node.op_type}) has an unreadable "
                                    f"attribute: {exc}") from None
        node = Node(len(nodes), names[idx], proto_node.op_type, domain, opset, list(proto_node.input),
                    list(proto_node.output), attrs, spec, proto_node, outer_reads_of[idx])
        folded = _try_fold(node, {**visible_constants, **constants}, types)
        if folded is None:
            nodes.append(node)
        else:
            constants.update(folded)

    graph = Graph(proto.name, nodes, inputs, [o.name for o in proto.output], constants, {}, opsets)
    graph.outer_reads = sorted(outer_scope_reads(proto))
    for i in proto.input:
        if i.name in inputs:
            graph.input_dims[i.name], graph.input_dtypes[i.name] = type_shape(i.type)
            graph.input_kinds[i.name] = value_kind(i.type) if i.type.WhichOneof("value") else "tensor"
    _record_values(graph, types, outer_names)
    return graph


def _initializers(proto: onnx.GraphProto) -> dict[str, np.ndarray]:
    constants = {}
    for tensor in proto.initializer:
        try:
            constants[tensor.name] = numpy_helper.to_array(tensor)
        except Exception as exc:
            raise InvalidModelError(f"initializer {tensor.name!r} cannot be read: {exc}") from None
    for sparse in proto.sparse_initializer:
        values = numpy_helper.to_array(sparse.values)
        indices = numpy_helper.to_array(sparse.indices)
        dense = np.zeros(int(np.prod(sparse.dims)), dtype=values.dtype)
        flat = indices if indices.ndim == 1 else np.ravel_multi_index(indices.T, tuple(sparse.dims))
        dense[flat] = values
        constants[sparse.values.name] = dense.reshape(tuple(sparse.dims))
    return constants


def _try_fold(node: Node, constants: dict[str, np.ndarray], types: dict) -> Optional[dict]:
    """The node's outputs if it can be computed now from constants (or static shapes), else None."""
    if node.op_type in NOT_FOLDABLE or node.outer_reads or node.spec is None:
        return None
    args = []
    for name in node.inputs:
        if not name:
            args.append(None)
        elif name in constants:
            args.append(constants[name])
        elif node.spec.shape_only and is_static(types.get(name, (None, None))[0]):
            shape, dtype = types[name]
            args.append(np.broadcast_to(np.zeros((), dtype=dtype or np.float32), shape))
        else:
            return None
    ctx = StandaloneContext(attrs=node.attrs, opset=node.opset, n_outputs=len(node.outputs),
                            op_type=node.op_type, node_name=node.name, max_bytes=MAX_FOLDED_BYTES)
    try:
        with np.errstate(all="ignore"):  # as during a run (executor.run): IEEE results, no warnings
            result = node.spec.kernel(ctx, *args)
    except GpuinferError as exc:
        raise InvalidModelError(f"{node.describe()} fails on its constant inputs: {exc}") from None
    except Exception as exc:
        raise InvalidModelError(f"{node.describe()} fails on its constant inputs: "
                                f"{type(exc).__name__}: {exc}") from None
    results = result if type(result) in (tuple, list) else (result,)
    if any(isinstance(v, (TensorSequence, OptionalValue)) for v in results):
        return None  # sequences and optionals are not constants the planner can hold
    return {name: np.asarray(value) for name, value in zip(node.outputs, results) if name}


def _record_values(graph: Graph, types: dict, outer_names: set[str]) -> None:
    """Fill ``graph.values`` with producer, consumers and inferred shape of every non-constant value.

    A graph output must be made here or (in a subgraph) be a value of an enclosing scope."""
    link(graph, lambda name: types.get(name, (None, None)))
    for name in graph.outputs:
        if name not in graph.values and name not in graph.constants and name not in outer_names:
            raise InvalidModelError(f"graph output {name!r} is not produced by any node or input")
