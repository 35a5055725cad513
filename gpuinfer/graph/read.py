"""Turn what the user passed (path, bytes, ModelProto) into a checked ``onnx.ModelProto``.

Every way this can fail ends in a ``ModelLoadError`` or ``InvalidModelError`` that says what
was wrong, never in a raw protobuf or OS error.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Optional, Union

import onnx

from gpuinfer.errors import InvalidModelError, ModelCheckWarning, ModelLoadError
from gpuinfer.graph.weightless import weightless_copy

ModelSource = Union[str, os.PathLike, bytes, onnx.ModelProto]


def read_model(source: ModelSource) -> onnx.ModelProto:
    """Read and check a model; external data is loaded from beside the file."""
    if isinstance(source, onnx.ModelProto):
        model = source
        where = "the ModelProto given"
    elif isinstance(source, (bytes, bytearray, memoryview)):
        model = _parse(bytes(source), "the bytes given")
        where = "the bytes given"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = str(path)
        if not path.exists():
            raise ModelLoadError(f"model file not found: {path}")
        if path.is_dir():
            raise ModelLoadError(f"model path is a directory, not an ONNX file: {path}")
        data = path.read_bytes()
        if not data:
            raise ModelLoadError(f"model file is empty: {path}")
        model = _parse(data, str(path))
        _load_external(model, path)
    else:
        raise ModelLoadError(f"cannot load a model from {type(source).__name__}; "
                             "give a path, bytes or an onnx.ModelProto")
    _check_text(model, where)
    return check_model(model, where)


def _parse(data: bytes, where: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning-ish errors, ...
        raise ModelLoadError(f"{where} is not an ONNX model (protobuf parse failed: {exc})") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise ModelLoadError(f"{where} is not an ONNX model (no graph in it)")
    return model


def _check_text(model: onnx.ModelProto, where: str) -> None:
    """Refuse names and op types that are not UTF-8 text (the parser hands those over as bytes)."""
    for imp in model.opset_import:
        if isinstance(imp.domain, bytes):
            raise InvalidModelError(f"{where}: an opset_import domain is not valid UTF-8 text: {imp.domain!r}")
    _check_graph_text(model.graph, where)


def _check_graph_text(graph: onnx.GraphProto, where: str) -> None:
    if isinstance(graph.name, bytes):
        raise InvalidModelError(f"{where}: a graph name is not valid UTF-8 text: {graph.name!r}")
    values = [("graph input", v) for v in graph.input] + [("graph output", v) for v in graph.output]
    values += [("value_info", v) for v in graph.value_info]
    named = [(f"{what} name", v.name) for what, v in values] + [("initializer name", t.name) for t in graph.initializer]
    named += [(f"dim name of {what} {v.name!r}", d.dim_param) for what, v in values
              if v.type.HasField("tensor_type") for d in v.type.tensor_type.shape.dim]
    for what, name in named:
        if isinstance(name, bytes):
            raise InvalidModelError(f"{where}: a {what} is not valid UTF-8 text: {name!r}")
    for i, node in enumerate(graph.node):
        texts = [("op type", node.op_type), ("domain", node.domain), ("name", node.name)]
        texts += [("input", n) for n in node.input] + [("output", n) for n in node.output]
        texts += [("attribute name", a.name) for a in node.attribute]
        for what, text in texts:
            if isinstance(text, bytes):
                raise InvalidModelError(f"{where}: node #{i} of graph {graph.name!r}: its {what} is not "
                                        f"valid UTF-8 text: {text!r}")
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _check_graph_text(attr.g, where)
            for sub in attr.graphs:
                _check_graph_text(sub, where)


def _load_external(model: onnx.ModelProto, path: Path) -> None:
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    tensors = [t for t in model.graph.initializer if uses_external_data(t)]
    if not tensors:
        return
    try:
        load_external_data_for_model(model, str(path.parent))
    except (FileNotFoundError, OSError, onnx.checker.ValidationError) as exc:
        raise ModelLoadError(f"external data of {path} could not be read: {exc}") from None


def check_model(model: onnx.ModelProto, where: str = "model") -> onnx.ModelProto:
    """Run the ONNX checker; what it rejects is warned about, not refused.

    The checker is stricter than execution needs (onnxruntime runs an IR-3 model whose
    initializers are not listed as graph inputs, for one), so its complaint becomes a
    ``ModelCheckWarning`` (a Python warning, pointing at the caller's line) carrying its reason, and loading
    goes on: what really cannot run (a dangling input, a cycle, an unknown op, an unreadable
    tensor) is refused later, by the graph builder, with an ``InvalidModelError`` naming it.
    The checker also insists on stored topological order, which onnxruntime does not: a graph that
    is only out of order is sorted here (in a copy, returned); a real cycle is named.
    """
    reason = _check_reason(model)
    if reason is None:
        return model
    if "topologically sorted" in reason:
        sorted_model = onnx.ModelProto()
        sorted_model.CopyFrom(model)
        sort_nodes(sorted_model.graph)
        model, reason = sorted_model, _check_reason(sorted_model)
        if reason is None:
            return model
    message = f"{where} fails the ONNX checker ({reason}); loading it anyway, as onnxruntime would"
    warnings.warn(message, ModelCheckWarning, stacklevel=_outside_level())
    return model


def _outside_level() -> int:
    """``stacklevel`` of the first caller outside the gpuinfer package, seen from our caller."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _check_reason(model: onnx.ModelProto) -> Optional[str]:
    """The checker's complaint in one line, or None when it has none."""
    try:
        _checker(model)
    except Exception as exc:  # ValidationError, and C++ errors surfacing as other types
        return _summary(exc)
    return None


def _checker(model: onnx.ModelProto) -> None:
    """The checker, on the model without its weights' data: serialising them for it was most of
    a big model's load (graph/weightless.py); the builder reads and checks every tensor itself."""
    light = weightless_copy(model)[0]
    if light.ByteSize() < 2**31 - 1:
        onnx.checker.check_model(light)


def _summary(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return " ".join(lines[:3])[:400] if lines else type(exc).__name__


def sort_nodes(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` topologically (raises ``InvalidModelError`` naming a cycle)."""
    from gpuinfer.graph.attributes import outer_scope_reads, subgraph_attributes
    from gpuinfer.graph.toposort import topological_order

    nodes = list(graph.node)
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    inputs = [list(n.input) + sorted(set().union(*[outer_scope_reads(g) for g in subgraph_attributes(n)]))
              for n in nodes]
    outer = {name for ins in inputs for name in ins} - available - {o for n in nodes for o in n.output}
    order = topological_order(inputs, [list(n.output) for n in nodes], available | outer,
                              [n.name or f"{n.op_type}#{i}" for i, n in enumerate(nodes)])
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)
