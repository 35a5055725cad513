"""Check what the caller feeds ``run`` against the model's inputs, naming the input on any mismatch."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from gpuinfer.errors import InputError
from gpuinfer.graph.ir import Graph
from gpuinfer.values import OptionalValue, TensorSequence

ONNX_TYPE_NAMES = {
    "float32": "float", "float64": "double", "float16": "float16", "int8": "int8", "int16": "int16",
    "int32": "int32", "int64": "int64", "uint8": "uint8", "uint16": "uint16", "uint32": "uint32",
    "uint64": "uint64", "bool": "bool", "complex64": "complex64", "complex128": "complex128",
}


def type_string(dtype: Optional[np.dtype]) -> str:
    """onnxruntime's spelling of a tensor type, e.g. ``tensor(float)``."""
    if dtype is None:
        return "tensor(undefined)"
    if dtype.kind in "OUS":
        return "tensor(string)"
    return f"tensor({ONNX_TYPE_NAMES.get(dtype.name, dtype.name)})"


@dataclass(frozen=True)
class NodeArg:
    """An input or output as onnxruntime describes it: name, shape (ints, names or None), type."""

    name: str
    shape: list
    type: str


def check_feeds(graph: Graph, feed: Any, is_array) -> dict[str, Any]:
    """Validated feeds: every input present, none unknown, dtype and fixed dims as declared.

    Array-likes are turned into arrays; non-contiguous arrays are made contiguous (copied).
    """
    if not isinstance(feed, dict):
        raise InputError(f"input_feed must be a dict of input name -> array, got {type(feed).__name__}")
    unknown = [name for name in feed if name not in graph.input_dims]
    if unknown:
        raise InputError(f"unknown input name(s) {unknown}; the model's inputs are {list(graph.inputs)}")
    missing = [name for name in graph.inputs if name not in feed]
    if missing:
        raise InputError(f"missing input(s) {missing}; the model needs {list(graph.inputs)}: "
                         + ", ".join(_declared(graph, name) for name in missing))
    checked = {}
    for name in graph.inputs:
        kind = graph.input_kinds.get(name, "tensor")
        if kind == "sequence":
            checked[name] = _as_sequence(name, feed[name])
        elif kind == "optional":
            value = feed[name]
            checked[name] = OptionalValue(None if value is None else
                                          _as_sequence(name, value) if isinstance(value, list) else np.asarray(value))
        else:
            checked[name] = _check_one(name, feed[name], graph.input_dims.get(name), graph.input_dtypes.get(name),
                                       is_array)
    return checked


def _as_sequence(name: str, value: Any) -> TensorSequence:
    if not isinstance(value, (list, tuple)):
        raise InputError(f"input {name!r} is a sequence: give a list of arrays, got {type(value).__name__}")
    return TensorSequence(np.asarray(v) for v in value)


def _check_one(name: str, value: Any, dims: Optional[tuple], dtype: Optional[np.dtype], is_array) -> Any:
    if not is_array(value):
        if value is None:  # np.asarray(None, float32) would quietly be NaN
            raise InputError(f"input {name!r} is None; give an array"
                             + (f" of {dtype.name}" if dtype is not None else ""))
        if not isinstance(value, np.ndarray):
            try:
                value = np.asarray(value, dtype=dtype if (dtype is not None and not isinstance(value, np.generic))
                                   else None)
            except (TypeError, ValueError, OverflowError) as exc:
                raise InputError(f"input {name!r}: a {type(value).__name__} cannot be made an array"
                                 + (f" of {dtype.name}" if dtype is not None else "") + f" ({exc})") from None
    if dtype is not None and value.dtype != dtype:
        if dtype.kind in "OUS" and value.dtype.kind in "OUS":
            pass
        else:
            hint = (f"; it can be cast safely: x.astype(np.{dtype.name})"
                    if np.can_cast(value.dtype, dtype, "safe") else "")
            raise InputError(f"input {name!r}: expected dtype {dtype.name} ({type_string(dtype)}), "
                             f"got {value.dtype.name}{hint}")
    if dims is not None:
        if value.ndim != len(dims):
            raise InputError(f"input {name!r}: expected rank {len(dims)} (shape {_dims_text(dims)}), "
                             f"got rank {value.ndim} (shape {list(value.shape)})")
        for axis, (want, got) in enumerate(zip(dims, value.shape)):
            if isinstance(want, int) and want != got:
                raise InputError(f"input {name!r}: dimension {axis} must be {want} "
                                 f"(shape {_dims_text(dims)}), got {got} (shape {list(value.shape)})")
    if not value.flags.c_contiguous:
        value = value.copy() if not isinstance(value, np.ndarray) else np.ascontiguousarray(value)
    return value


def _declared(graph: Graph, name: str) -> str:
    """What to feed, as the model declares it: ``'state': shape [2, ?, 128] float32 (? and named ...)``."""
    kind = graph.input_kinds.get(name, "tensor")
    if kind != "tensor":
        return f"{name!r}: a {kind}"
    dims, dtype = graph.input_dims.get(name), graph.input_dtypes.get(name)
    shape = "shape unknown" if dims is None else f"shape {_dims_text(dims)}"
    sized = all(isinstance(d, int) for d in dims or ())
    note = "" if sized else " (? and named dims: any size the model accepts)"
    return f"{name!r}: {shape} {dtype.name if dtype is not None else 'of any dtype'}{note}"


def _dims_text(dims: tuple) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
