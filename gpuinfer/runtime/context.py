"""The ``OpContext`` kernels get during a run: buffers come from the run's pool."""
from __future__ import annotations

import weakref
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np

from gpuinfer.graph.ir import Node
from gpuinfer.ops.context import OpContext
from gpuinfer.runtime.pool import RunPool
from gpuinfer.values import TensorKey, scratch_key, unused_key


class RunContext(OpContext):
    """Bound to one node at a time by the executor; remembers which buffers it handed out."""

    def __init__(self, pool: RunPool, device: Any, scope: tuple,
                 run_subgraph: Callable[[Any, Sequence[Any]], list]):
        self.pool = pool
        self.device = device
        self.xp = device.xp
        self.scope = scope  # () at the top level; the subgraphs entered inside them (TensorKey.scope)
        self._run_subgraph = run_subgraph
        self.node: Node
        self.keys: tuple = ()  # pool key of each output, None where omitted
        self.handed: dict[int, Any] = {}
        self.temporaries: list[TensorKey] = []
        self.watched: list = []  # weak references to the step's dynamic scratch memory (``_gone``)

    @property
    def scratch_slack(self) -> int:  # type: ignore[override]
        """The plan's spare scratch bytes for this step (``OpContext.scratch_slack``); subgraph
        steps have none (their tensors are traced, not planned ahead)."""
        return 0 if self.scope else self.pool.plan.scratch_slack.get(self.node.step, 0)

    def bind(self, step: Any) -> None:
        """Point at ``step``'s node; its attributes come precomputed (``executor.Step.fields``)."""
        self.__dict__.update(step.fields)
        self.handed = {}
        if self.temporaries:
            self.temporaries = []

    def wants(self, i: int) -> bool:
        return i < len(self.keys) and self.keys[i] is not None

    def key_of(self, i: int) -> TensorKey:
        key = self.keys[i] if i < len(self.keys) else None
        if key is not None:
            return key
        key = unused_key(self.node.step, i, self.scope)
        self.temporaries.append(key)
        return key

    def out(self, i: int, shape: Sequence[int], dtype: Any) -> Any:
        key = self.keys[i] if i < len(self.keys) else None
        buf = self.pool.buffer(self.key_of(i) if key is None else key, shape, dtype)
        self.handed[i] = buf
        return buf

    def scratch(self, shape: Sequence[int], dtype: Any) -> Any:
        key = scratch_key(self.node.step, len(self.temporaries), self.scope)
        self.temporaries.append(key)
        buf = self.pool.buffer(key, shape, dtype)
        if key in self.pool.dynamic and self.device.caps.host_arrays:  # its own numpy allocation (reduce): counted until its memory goes
            self.watched.append(weakref.ref(_memory_owner(buf), partial(_gone, self.pool, key)))
        return buf

    def run_graph(self, graph: Any, inputs: Sequence[Any]) -> list:
        return self._run_subgraph(graph, inputs)

    def defer_check(self, flag: Any, message: str) -> None:
        """A device-side check of this step (``flag``: a 0-d device bool, true = failed), read with
        every other one of the run in a single transfer after it (``runtime/deferred.py``): reading
        it now would stall the host until the device caught up."""
        self.pool.deferred.append((flag, f"{self.node.describe()}: {message}"))


def _memory_owner(array: Any) -> Any:
    """The array that owns ``array``'s memory (numpy frees it when that object dies)."""
    while isinstance(getattr(array, "base", None), np.ndarray):
        array = array.base
    return array


def _gone(pool: RunPool, key: Any, _ref: Any) -> None:
    """A dynamic scratch buffer's memory was freed before its step ended: so is its count.

    A kernel that takes two scratch buffers one after the other, dropping the first (im2col
    columns, then PRelu's band on mtcnn pnet), holds one at a time; counted to the step's end,
    both were (pnet ``reduce``: the count 21 KB over what numpy held, 0.979).  Idempotent with the
    release at the step's end; the references die with the step, so a buffer a kernel keeps past
    its step is released there as before.  The general loop and the runner both watch (their
    timelines must agree)."""
    pool.release(key)
