"""Lifetime records: what the planners place.  ``{key, first step, last step, bytes}`` per tensor.

Keys are value names, or ``"<step>#scratch<i>"`` for an op's i-th scratch buffer at a step.
Graph outputs (and values the caller keeps) are ``output`` lifetimes: counted in the lower bound
but never placed, because they are handed to the caller and must outlive the run.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Optional

import numpy as np

from gpuinfer.graph.ir import Graph


@dataclass(frozen=True)
class Lifetime:
    """One tensor to place: alive from step ``first`` to step ``last``, both included."""

    key: str
    first: int
    last: int
    nbytes: int
    kind: str = "value"  # "value" | "scratch" | "output"
    shape: tuple = ()
    dtype: Optional[str] = None

    def overlaps(self, other: "Lifetime") -> bool:
        return self.first <= other.last and other.first <= self.last


def scratch_key(step: int, index: int) -> str:
    return f"{step}#scratch{index}"


def trace_block_key(step: int) -> str:
    """The key of a control-flow step's block for its subgraph tensors (plan/trace.py)."""
    return f"{step}#trace"


def graph_lifetimes(graph: Graph, types: dict[str, tuple], keep: frozenset = frozenset(),
                    seen_scratch: Optional[dict[int, list]] = None,
                    trace_blocks: Optional[dict[int, int]] = None) -> tuple[list[Lifetime], list[str]]:
    """Lifetimes of every node output with a known shape, plus op scratch; and the names left dynamic.

    ``types`` maps value names to (static shape, dtype) for this signature.  ``seen_scratch``
    (step -> [(shape, dtype), ...]) holds the scratch a run really asked for; where given it wins
    over what the op's scratch function predicts.  ``trace_blocks`` (step -> bytes) are the blocks
    control-flow steps hold their subgraph tensors in, as earlier runs traced them.
    """
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
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            if value.is_graph_output or name in keep:
                records.append(Lifetime(name, node.step, end, nbytes, "output", shape, str(dtype)))
            else:
                records.append(Lifetime(name, node.step, value.last_use, nbytes, "value", shape, str(dtype)))
        if seen_scratch is not None:
            records.extend(_scratch_records(node.step, seen_scratch.get(node.step, ())))
        else:
            records.extend(_scratch_records(node.step, _predicted_scratch(graph, node, types)))
        if trace_blocks and node.step in trace_blocks:
            records.append(Lifetime(trace_block_key(node.step), node.step, node.step, trace_blocks[node.step],
                                    "scratch", (trace_blocks[node.step],), "uint8"))
    return records, dynamic


def _predicted_scratch(graph: Graph, node, types: dict) -> list:
    """What the op's scratch function says this node will ask for, or [] if it cannot say."""
    if node.spec is None or node.spec.scratch is None:
        return []
    shapes, dtypes = [], []
    for name in node.inputs:
        shape, dtype = _known(graph, name, types)
        shapes.append(shape)
        dtypes.append(dtype)
    scratch = node.spec.scratch
    try:
        if _wants_output_shapes(scratch):  # e.g. Resize: its scratch follows the output shape
            outputs = [_known(graph, name, types)[0] for name in node.outputs]
            return list(scratch(node.attrs, shapes, dtypes, output_shapes=outputs) or ())
        return list(scratch(node.attrs, shapes, dtypes) or ())
    except Exception:
        return []  # the kernel will then ask at run time and be served dynamically


@functools.lru_cache(maxsize=None)
def _wants_output_shapes(scratch) -> bool:
    """Whether a scratch function takes ``output_shapes=`` (the output shapes the plan knows)."""
    try:
        return "output_shapes" in inspect.signature(scratch).parameters
    except (TypeError, ValueError):
        return False


def _scratch_records(step: int, wanted) -> list[Lifetime]:
    records = []
    for i, (shape, dtype) in enumerate(wanted):
        shape = tuple(int(d) for d in shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
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
    if not lifetimes:
        return 0
    delta = np.zeros(max(steps, max(l.last for l in lifetimes) + 1) + 1, dtype=np.int64)
    for l in lifetimes:
        delta[l.first] += l.nbytes
        delta[l.last + 1] -= l.nbytes
    return int(np.cumsum(delta).max())
