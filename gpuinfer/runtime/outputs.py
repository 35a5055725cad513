"""What goes into a run and what comes out: feeds up to the device, the names asked for checked
against what the mode keeps, and results handed to the caller as arrays it owns."""
from __future__ import annotations

from typing import Any

from gpuinfer.errors import DataRemovedError, GpuinferError, InputError
from gpuinfer.graph.ir import Graph
from gpuinfer.graph.passes import removed_value_advice
from gpuinfer.plan import MemoryMode
from gpuinfer.values import OptionalValue, TensorSequence


def held_names(graph: Graph, names: list[str], mode: MemoryMode, keep: frozenset, optimizations: list) -> frozenset:
    """Intermediates to hold past their last use; raises for ones this mode frees."""
    hold = set()
    for name in names:
        if name in graph.outputs or name in keep:
            continue
        if name in graph.values or name in graph.constants:
            if mode.hands_out_intermediates or name in graph.constants:
                hold.add(name)
                continue
            raise DataRemovedError(
                f"{name!r} is an intermediate value, freed after its last use in "
                f"memory_mode={mode.name!r}; list it in InferenceSession(..., keep=[{name!r}]) "
                f"or use memory_mode='per_tensor' to read it")
        removed = removed_value_advice(graph, name, optimizations)
        raise InputError(removed or f"unknown output name {name!r}; the model's outputs are {graph.outputs}")
    return frozenset(hold)


def to_device(backend: Any, value: Any) -> Any:
    """One upload per feed tensor (sequence and optional feeds element by element)."""
    if isinstance(value, TensorSequence):
        return TensorSequence(to_device(backend, v) for v in value)
    if isinstance(value, OptionalValue):
        return OptionalValue(None if value.value is None else to_device(backend, value.value))
    return value if backend.is_array(value) else backend.to_device(value)


def to_host(backend: Any, value: Any) -> Any:
    """A run result as the caller gets it: numpy arrays, lists for sequences, None for empty optionals."""
    if isinstance(value, OptionalValue):
        return None if value.value is None else to_host(backend, value.value)
    if isinstance(value, TensorSequence):
        return [backend.to_host(v) for v in value]
    return backend.to_host(value)


def handed_out(value: Any, fresh: bool) -> Any:
    """The caller's copy of a result: the array itself if the run made it fresh, else a copy (arena
    views and kept buffers are overwritten by the next run; inputs and constants are not the caller's)."""
    if fresh or not hasattr(value, "copy") or isinstance(value, TensorSequence):
        return value
    return value.copy()


def check_keep(graph: Graph, keep: frozenset, optimizations: list) -> None:
    """Raise for ``keep=`` names the graph cannot hold: a graph pass removed them (and how to keep
    them), or the model never had them."""
    unknown = sorted(k for k in keep if k not in graph.values and k not in graph.constants)
    if not unknown:
        return
    lines = [removed_value_advice(graph, name, optimizations) for name in unknown if name in graph.removed_by]
    missing = [name for name in unknown if name not in graph.removed_by]
    raise GpuinferError("; ".join(lines + ([f"keep= names values the model does not have: {missing}"] if missing else [])))
