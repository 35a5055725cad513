"""The values a run passes around, and the keys the planner and the pool know tensors by.

This module imports nothing of gpuinfer, so the graph, the planner, the ops and the runtime can
all use it without an import cycle.

A tensor's key is a ``TensorKey``, never a string: a model's own value names may contain any
character (exporters write ``/``, ``:``, ``@``, ``#``), so no meaning may be read out of a name.
Where a tensor lives (the top level or a subgraph), and whether it is a graph value or a
kernel's scratch, are fields of the key.
"""
from __future__ import annotations

from typing import NamedTuple

VALUE = "value"  # a graph value (a node's output), known by its name
SCRATCH = "scratch"  # the index-th scratch buffer a kernel asked for at a step
UNUSED = "unused"  # an output the model omits but the kernel still writes
TRACE = "trace"  # the block a control-flow step holds its subgraph tensors in (plan/trace.py)


class TensorKey(NamedTuple):
    """Which tensor a lifetime, placement or pool buffer is.

    ``name``: the value's name (``""`` for the other kinds); ``scope``: the subgraphs it lives
    in, outermost first (one id per If/Loop/Scan body entered), empty at the top level;
    ``kind``: one of ``VALUE``, ``SCRATCH``, ``UNUSED``, ``TRACE``; ``step``, ``index``: the
    step that owns a scratch, unused-output or trace key, and which one of that step's it is.
    A NamedTuple so that hashing (every pool lookup) stays in C.
    """

    name: str = ""
    scope: tuple = ()
    kind: str = VALUE
    step: int = -1
    index: int = 0

    def __str__(self) -> str:  # for messages only: nothing parses this back
        where = "".join(f"{s}/" for s in self.scope)
        if self.kind == VALUE:
            return f"{where}{self.name}"
        return f"{where}step {self.step} {self.kind} {self.index}"


def value_key(name: str, scope: tuple = ()) -> TensorKey:
    return TensorKey(name, scope)


def scratch_key(step: int, index: int, scope: tuple = ()) -> TensorKey:
    return TensorKey("", scope, SCRATCH, step, index)


def unused_key(step: int, index: int, scope: tuple = ()) -> TensorKey:
    return TensorKey("", scope, UNUSED, step, index)


def trace_block_key(step: int) -> TensorKey:
    """The key of a control-flow step's block for its subgraph tensors (plan/trace.py)."""
    return TensorKey("", (), TRACE, step)


class TensorSequence(list):
    """A value of ONNX sequence type: a list of tensors.  Lives outside the pool (its tensors are
    copies the sequence owns) and passes through the executor untouched."""


class OptionalValue:
    """A value of ONNX optional type: a tensor or sequence, or nothing (``value is None``)."""

    __slots__ = ("value",)

    def __init__(self, value=None):
        self.value = value

    def __repr__(self) -> str:
        return f"OptionalValue({self.value!r})"
