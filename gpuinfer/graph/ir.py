"""The in-memory graph the planner and executor work on: nodes in run order and value records.

Built once per model by ``gpuinfer.graph.build``; immutable afterwards, so it can be shared by
concurrent runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np


# A dimension is an int when known, a str (symbolic name) or None when not.
Dim = Any


@dataclass
class Node:
    """One op to run; ``step`` is its position in the run order."""

    step: int
    name: str
    op_type: str
    domain: str
    opset: int
    inputs: list[str]  # "" marks an omitted optional input
    outputs: list[str]  # "" marks an omitted optional output
    attrs: dict
    spec: Any  # the registry's OpSpec (gpuinfer/ops/registry.py), bound at load; None for an unknown op
    proto: Any  # the NodeProto, kept for shape inference of specialised graphs
    outer_reads: list[str] = field(default_factory=list)  # enclosing-scope values its subgraphs read

    def describe(self) -> str:
        return f"node {self.name!r} ({self.op_type}, opset {self.opset})"


@dataclass
class Value:
    """A tensor flowing between nodes, with where it comes from and when it dies."""

    name: str
    shape: Optional[tuple]  # declared/inferred shape; None when the rank is unknown
    dtype: Optional[np.dtype]
    producer: Optional[int] = None  # step, or None for graph inputs
    consumers: list[int] = field(default_factory=list)
    is_graph_output: bool = False

    @property
    def last_use(self) -> Optional[int]:
        """Step after which the value is dead (graph outputs live to the end of the run)."""
        if self.consumers:
            return max(self.consumers)
        return self.producer


@dataclass
class Graph:
    """A loaded (sub)graph: constants folded, nodes topologically ordered, lifetimes recorded."""

    name: str
    nodes: list[Node]
    inputs: list[str]  # graph inputs that must be fed (initializers excluded)
    outputs: list[str]
    constants: dict[str, np.ndarray]  # initializers and everything folded at load
    values: dict[str, Value]  # node outputs and graph inputs (not constants)
    opsets: dict[str, int]
    outer_reads: list[str] = field(default_factory=list)  # names it reads from enclosing scopes
    input_dims: dict[str, Optional[tuple]] = field(default_factory=dict)  # declared input shapes
    input_dtypes: dict[str, Optional[np.dtype]] = field(default_factory=dict)
    input_kinds: dict[str, str] = field(default_factory=dict)  # "tensor", "sequence", "optional"
    removed_by: dict[str, str] = field(default_factory=dict)  # value name -> the graph pass that removed it
    host_only: set = field(default_factory=set)  # values of dtypes only the host has (graph/types.py)

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {len(self.nodes)} nodes, {len(self.constants)} constants>"


def link(graph: Graph, type_of) -> None:
    """Make steps, ``graph.values`` and ``graph.constants`` agree with ``graph.nodes``.

    ``type_of(name) -> (shape, dtype)`` gives what is known of each node output.  Run after
    building a graph and after every pass that edits its node list.
    """
    graph.values = {}
    for name in graph.inputs:
        graph.values[name] = Value(name, graph.input_dims.get(name), graph.input_dtypes.get(name))
    for step, node in enumerate(graph.nodes):
        node.step = step
        for name in node.outputs:
            if name:
                shape, dtype = type_of(name)
                graph.values[name] = Value(name, shape, dtype, producer=step)
    used = set(graph.outputs)
    for node in graph.nodes:
        reads = set(node.inputs) | set(node.outer_reads)
        used |= reads
        for name in reads:
            if name in graph.values:
                graph.values[name].consumers.append(node.step)
    for name in graph.outputs:
        if name in graph.values:
            graph.values[name].is_graph_output = True
    graph.constants = {k: v for k, v in graph.constants.items() if k in used}
