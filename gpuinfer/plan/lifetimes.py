"""Lifetime records: what the planners place.  ``{key, first step, last step, bytes}`` per tensor.

Keys are ``TensorKey``s (gpuinfer/values.py): a value's name, or an op's i-th scratch buffer at
a step, or a control-flow step's traced block.
Graph outputs (and values the caller keeps) are ``output`` lifetimes: counted in the lower bound
but never placed, because they are handed to the caller and must outlive the run.
"""
from __future__ import annotations

import functools
import inspect
import itertools
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from gpuinfer.graph.ir import Graph
from gpuinfer.values import TensorKey, scratch_key, trace_block_key, value_key


@dataclass(frozen=True)
class Lifetime:
    """One tensor to place: alive from step ``first`` to step ``last``, both included."""

    key: TensorKey
    first: int
    last: int
    nbytes: int
    kind: str = "value"  # "value" | "scratch" | "output"
    shape: tuple = ()
    dtype: Optional[str] = None

    def overlaps(self, other: "Lifetime") -> bool:
        return self.first <= other.last and other.first <= self.last


def graph_lifetimes(graph: Graph, types: dict[str, tuple], keep: frozenset = frozenset(),
                    seen_scratch: Optional[dict[int, list]] = None,
                    trace_blocks: Optional[dict[int, int]] = None,
                    device_kind: str = "cpu",
                    scratch_slack: Optional[dict[int, int]] = None) -> tuple[list[Lifetime], list[str]]:
    """Lifetimes of every node output with a known shape, plus op scratch; and the names left dynamic.

    ``types`` maps value names to (static shape, dtype) for this signature.  ``seen_scratch``
    (step -> [(shape, dtype), ...]) holds the scratch a run really asked for; where given it wins
    over what the op's scratch function predicts.  ``trace_blocks`` (step -> bytes) are the blocks
    control-flow steps hold their subgraph tensors in, as earlier runs traced them.
    ``device_kind``: whose kernels will run (a CUDA variant asks other scratch than the CPU kernel).
    ``scratch_slack`` (step -> bytes): how much more scratch than its least a step's kernel may
    take (plan/slack.py), for the scratch functions that take it.
    """
    slack = scratch_slack or {}
    end = max(len(graph.nodes) - 1, 0)
    records: list[Lifetime] = []
    dynamic: list[str] = []
    for node in graph.nodes:
        for name in node.outputs:
            if not name:
                continue
            value = graph.values[name]
            if name not in types:
                dynamic.append(name)
                continue
            shape, dtype = types[name]
            nbytes = math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize  # exact: no int64 wrap
            if value.is_graph_output or name in keep:
                records.append(Lifetime(value_key(name), node.step, end, nbytes, "output", shape, str(dtype)))
            else:
                records.append(Lifetime(value_key(name), node.step, value.last_use, nbytes, "value", shape, str(dtype)))
        if seen_scratch is not None:
            records.extend(_scratch_records(node.step, seen_scratch.get(node.step, ())))
        else:
            records.extend(_scratch_records(node.step, _predicted_scratch(graph, node, types, device_kind,
                                                                          slack.get(node.step, 0))))
        if trace_blocks and node.step in trace_blocks:
            records.append(Lifetime(trace_block_key(node.step), node.step, node.step, trace_blocks[node.step],
                                    "scratch", (trace_blocks[node.step],), "uint8"))
    return records, dynamic


def takes_slack(node, device_kind: str = "cpu") -> bool:
    """Whether ``node``'s scratch function can spend spare bytes (a ``scratch_slack`` keyword)."""
    scratch = _scratch_function(node, device_kind)
    return scratch is not None and _takes(scratch, "scratch_slack")


def _scratch_function(node, device_kind: str):
    if node.spec is None:
        return None
    return node.spec.scratch_for(device_kind) if hasattr(node.spec, "scratch_for") else node.spec.scratch


def _predicted_scratch(graph: Graph, node, types: dict, device_kind: str = "cpu", slack: int = 0) -> list:
    """What the op's scratch function (for ``device_kind``) says this node will ask for, or [] if
    it cannot say; with ``slack`` spare bytes where the function takes them."""
    scratch = _scratch_function(node, device_kind)
    if scratch is None:
        return []
    shapes, dtypes = [], []
    for name in node.inputs:
        shape, dtype = _known(graph, name, types)
        shapes.append(shape)
        dtypes.append(dtype)
    extra = {"device_kind": device_kind} if _takes(scratch, "device_kind") else {}
    if _takes(scratch, "tile_bytes"):  # tiles follow the device (ops/tiles.py)
        extra["tile_bytes"] = tile_bytes_for(device_kind)
    if slack and _takes(scratch, "scratch_slack"):
        extra["scratch_slack"] = slack
    try:
        if _takes(scratch, "output_shapes"):  # e.g. Resize: its scratch follows the output shape
            outputs = [_known(graph, name, types)[0] for name in node.outputs]
            return list(scratch(node.attrs, shapes, dtypes, output_shapes=outputs, **extra) or ())
        return list(scratch(node.attrs, shapes, dtypes, **extra) or ())
    except Exception:
        return []  # the kernel will then ask at run time and be served dynamically


def _takes(scratch, keyword: str) -> bool:
    """Whether a scratch function takes ``keyword``: ``output_shapes=`` (the output shapes the plan
    knows), ``device_kind=`` (whose kernel runs: fused steps forward it to their halves)."""
    return keyword in _keywords(scratch)


def tile_bytes_for(kind: str) -> int:
    from gpuinfer.backends import tile_bytes_for as of_kind

    return of_kind(kind)


def scratch_keywords(scratch) -> frozenset:
    """The keywords a scratch function takes (cached per function)."""
    return _keywords(scratch)


@functools.lru_cache(maxsize=1024)
def _keywords(scratch) -> frozenset:
    try:
        params = inspect.signature(scratch).parameters.values()
    except (TypeError, ValueError):
        return frozenset()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return frozenset({"output_shapes", "device_kind"})
    return frozenset(p.name for p in params)


def _scratch_records(step: int, wanted) -> list[Lifetime]:
    """Scratch lifetimes of one step; none when any predicted shape is not a known one (a scratch
    function handed unknown input shapes may pass a None through): the kernel's asks are then
    served dynamically, as when the function cannot say."""
    if not all(shape is not None and all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape)
               for shape, _ in wanted):
        return []
    records = []
    for i, (shape, dtype) in enumerate(wanted):
        shape = tuple(int(d) for d in shape)
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        records.append(Lifetime(scratch_key(step, i), step, step, nbytes, "scratch", shape, str(np.dtype(dtype))))
    return records


def _known(graph: Graph, name: str, types: dict):
    if not name:
        return None, None
    if name in graph.constants:
        c = graph.constants[name]
        return tuple(c.shape), c.dtype
    if name in types:
        return types[name]
    return None, None


def lower_bound(lifetimes: list[Lifetime], steps: int) -> int:
    """Most bytes alive at any one step: no plan without in-place sharing can do better."""
    return max(live_bytes(lifetimes, steps), default=0)


def live_bytes(lifetimes: list[Lifetime], steps: int) -> list[int]:
    """Bytes alive at each step (one more entry past the last: 0); [] without lifetimes."""
    if not lifetimes:
        return []
    delta = [0] * (max(steps, max(l.last for l in lifetimes) + 1) + 1)  # Python ints: a corrupt
    for l in lifetimes:  # shape's exabytes must reach the memory-limit check, not overflow int64
        delta[l.first] += l.nbytes
        delta[l.last + 1] -= l.nbytes
    return list(itertools.accumulate(delta))
