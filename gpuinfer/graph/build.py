"""Load an ONNX model into a ``Graph``: check, infer shapes, order, fold constants, record lifetimes.

Everything here runs once per session; nothing it folds is ever recomputed per run or counted
as an intermediate.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

from gpuinfer.errors import GpuinferError, InvalidModelError, UnsupportedOpError
from gpuinfer.graph.attributes import attribute_value, outer_scope_reads, subgraph_attributes
from gpuinfer.graph.ir import Graph, Node, link
from gpuinfer.graph.kernels import kernels
from gpuinfer.graph.read import ModelSource, read_model
from gpuinfer.graph.toposort import topological_order
from gpuinfer.graph.types import collect_value_types, host_only_values, is_static, type_shape, value_kind
from gpuinfer.graph.weightless import weightless_copy
from gpuinfer.values import OptionalValue, TensorSequence

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
    inferred = infer_shapes(model).graph
    types = collect_value_types(inferred)
    graph = build_graph(model.graph, opsets, types, {}, set())
    graph.host_only = host_only_values(inferred)
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
    """ONNX shape inference with shape-data propagation, run on the model without its weights'
    data (graph/weightless.py); the raw model if inference fails.  Only the inferred types are
    read from the result: its large initializers are graph inputs there, and are taken out again."""
    light, added = weightless_copy(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(light, data_prop=True)
    except Exception:
        return model
    if added:
        inputs = [i for i in inferred.graph.input if i.name not in added]
        del inferred.graph.input[:]
        inferred.graph.input.extend(inputs)
    return inferred


def unsupported_ops(graph: onnx.GraphProto, opsets: dict[str, int]) -> list[tuple[str, str, str, int]]:
    """Every node (subgraphs included) with no kernel at the model's opset, as (domain, op, node, opset)."""
    missing = []
    for i, node in enumerate(graph.node):
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        opset = opsets.get(domain, 0)
        if kernels().lookup(node.op_type, opset, domain) is None:
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
        spec = kernels().lookup(proto_node.op_type, opset, domain)
        check_against_schema(proto_node, names[idx], opset, domain,
                             lambda v: _dtype_of(v, constants, visible_constants, types))
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


def check_against_schema(node: onnx.NodeProto, name: str, opset: int, domain: str, dtype_of) -> None:
    """Refuse a node its ONNX schema rules out: wrong number of inputs (or too many outputs), an
    attribute of the wrong type, a required attribute missing, an input of a type the op does not
    take, or inputs that must share a type and do not.  ``dtype_of(name)`` is a value's numpy dtype
    when known (declared, inferred or constant), else None: unknown types are not checked.

    The ONNX checker would say most of this, but its complaints only warn (``read.check_model``);
    a kernel would fail on such a node with a bare TypeError, or compute nonsense."""
    if domain not in ONNX_DOMAINS:
        return
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, domain)
    except onnx.defs.SchemaError:
        return  # an op ONNX does not define is refused by name before this
    where = f"node {name!r} ({node.op_type}, opset {opset})"
    given, made = len(node.input), len(node.output)
    if not schema.min_input <= given <= schema.max_input:
        wanted = (f"{schema.min_input}" if schema.min_input == schema.max_input else
                  f"at least {schema.min_input}" if schema.max_input > 1000 else
                  f"{schema.min_input} to {schema.max_input}")
        raise InvalidModelError(f"{where} takes {wanted} input(s), got {given}: {list(node.input)}")
    if made > schema.max_output:
        raise InvalidModelError(f"{where} makes at most {schema.max_output} output(s), "
                                f"got {made} output name(s): {list(node.output)}")
    present = set()
    for attr in node.attribute:
        present.add(attr.name)
        declared = schema.attributes.get(attr.name)
        if declared is not None and int(declared.type) != int(attr.type):
            raise InvalidModelError(
                f"{where}: attribute {attr.name!r} must be {_attr_type_name(int(declared.type))}, "
                f"got {_attr_type_name(int(attr.type))}")
    missing = sorted(a for a, spec in schema.attributes.items() if spec.required and a not in present)
    if missing:
        raise InvalidModelError(f"{where}: required attribute(s) {missing} missing")
    _check_input_types(node, schema, where, dtype_of)


def _check_input_types(node: onnx.NodeProto, schema, where: str, dtype_of) -> None:
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    bound: dict[str, tuple[str, str]] = {}  # type parameter -> (type, the input that fixed it)
    formals = schema.inputs
    for i, value in enumerate(node.input):
        if not formals:
            return
        formal = formals[min(i, len(formals) - 1)]
        if not value:
            if formal.option == onnx.defs.OpSchema.FormalParameterOption.Single:
                raise InvalidModelError(f"{where}: input {i} ({formal.name}) is required, but the node leaves it "
                                        f"out (an empty name)")
            continue
        type_str = _tensor_type(dtype_of(value))
        if type_str is None:
            continue
        accepted = allowed.get(formal.type_str, {formal.type_str})
        if type_str not in accepted:
            tensors = sorted(t[len("tensor("):-1] for t in accepted if t.startswith("tensor("))
            raise InvalidModelError(f"{where}: input {i} ({formal.name}) {value!r} is {type_str}; "
                                    f"the op takes {', '.join(tensors) or 'no tensor'} there")
        variadic_mixed = formal.option == onnx.defs.OpSchema.FormalParameterOption.Variadic \
            and not formal.is_homogeneous
        if formal.type_str in allowed and not variadic_mixed:
            first = bound.setdefault(formal.type_str, (type_str, value))
            if first[0] != type_str:
                raise InvalidModelError(f"{where}: inputs {first[1]!r} ({first[0]}) and {value!r} ({type_str}) "
                                        f"must have the same type ({formal.type_str})")


def _tensor_type(dtype) -> Optional[str]:
    """``tensor(float)``-style name of a numpy dtype, None when unknown."""
    if dtype is None:
        return None
    dtype = np.dtype(dtype)
    if dtype.kind in "OUS":
        return "tensor(string)"
    try:
        return f"tensor({onnx.TensorProto.DataType.Name(helper.np_dtype_to_tensor_dtype(dtype)).lower()})"
    except Exception:  # a numpy dtype ONNX has no name for
        return None


def _attr_type_name(value: int) -> str:
    try:
        return onnx.AttributeProto.AttributeType.Name(value)
    except ValueError:
        return f"type {value}"


def _dtype_of(name: str, constants: dict, outer_constants: dict, types: dict):
    """A value's dtype as known at load (a constant's own, else the declared or inferred one)."""
    value = constants.get(name, outer_constants.get(name))
    if value is not None:
        return getattr(value, "dtype", None)
    return types.get(name, (None, None))[1]


def _initializers(proto: onnx.GraphProto) -> dict[str, np.ndarray]:
    constants = {}
    for tensor in proto.initializer:
        try:
            constants[tensor.name] = numpy_helper.to_array(tensor)
        except Exception as exc:
            raise InvalidModelError(f"initializer {tensor.name!r} cannot be read: {exc}") from None
    for sparse in proto.sparse_initializer:
        constants[sparse.values.name] = _densify(sparse)
    return constants


def _densify(sparse: onnx.SparseTensorProto) -> np.ndarray:
    """A sparse initializer as a dense array; bad dims, indices or data are an ``InvalidModelError``."""
    name, dims = sparse.values.name, tuple(int(d) for d in sparse.dims)
    try:
        values = numpy_helper.to_array(sparse.values)
        indices = numpy_helper.to_array(sparse.indices).astype(np.int64, copy=False)
    except Exception as exc:
        raise InvalidModelError(f"sparse initializer {name!r} cannot be read: {exc}") from None
    count = math.prod(dims)
    if any(d < 0 for d in dims) or count * values.dtype.itemsize > MAX_FOLDED_BYTES:
        raise InvalidModelError(f"sparse initializer {name!r} has dims {list(dims)}: negative, or over "
                                f"the {MAX_FOLDED_BYTES}-byte limit for one constant")
    flat = indices.reshape(-1) if indices.ndim == 1 else None
    if indices.ndim == 2 and indices.shape[1] == len(dims) and all(
            (0 <= indices[:, k]).all() and (indices[:, k] < d).all() for k, d in enumerate(dims)):
        flat = np.ravel_multi_index(tuple(indices.T), dims) if len(dims) else indices[:, :0].sum(axis=1)
    if flat is None or flat.shape != values.reshape(-1).shape or ((flat < 0) | (flat >= count)).any():
        raise InvalidModelError(f"sparse initializer {name!r}: indices of shape {list(indices.shape)} do not fit "
                                f"{values.size} value(s) in dims {list(dims)}")
    dense = np.zeros(count, dtype=values.dtype)
    dense[flat] = values.reshape(-1)
    return dense.reshape(dims)


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
    try:
        with np.errstate(all="ignore"):  # as during a run (executor.run): IEEE results, no warnings
            result = kernels().evaluate(node, args, MAX_FOLDED_BYTES)
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
