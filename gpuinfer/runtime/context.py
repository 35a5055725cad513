"""The ``OpContext`` kernels get during a run: buffers come from the run's pool."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from gpuinfer.graph.ir import Node
from gpuinfer.ops.context import OpContext
from gpuinfer.plan.lifetimes import scratch_key
from gpuinfer.runtime.pool import RunPool


class RunContext(OpContext):
    """Bound to one node at a time by the executor; remembers which buffers it handed out."""

    def __init__(self, pool: RunPool, device: Any, scope: str,
                 run_subgraph: Callable[[Any, Sequence[Any]], list]):
        self.pool = pool
        self.device = device
        self.xp = device.xp
        self.scope = scope  # "" at the top level; a prefix inside subgraphs
        self._run_subgraph = run_subgraph
        self.node: Node
        self.keys: tuple = ()  # pool key of each output, None where omitted
        self.handed: dict[int, Any] = {}
        self.temporaries: list[str] = []

    def bind(self, step: Any) -> None:
        """Point at ``step``'s node; its attributes come precomputed (``executor.Step.fields``)."""
        self.__dict__.update(step.fields)
        self.handed = {}
        if self.temporaries:
            self.temporaries = []

    def wants(self, i: int) -> bool:
        return i < len(self.keys) and self.keys[i] is not None

    def key_of(self, i: int) -> str:
        key = self.keys[i] if i < len(self.keys) else None
        if key is not None:
            return key
        key = f"{self.scope}{self.node.step}#unused{i}"
        self.temporaries.append(key)
        return key

    def out(self, i: int, shape: Sequence[int], dtype: Any) -> Any:
        key = self.keys[i] if i < len(self.keys) else None
        buf = self.pool.buffer(self.key_of(i) if key is None else key, shape, dtype)
        self.handed[i] = buf
        return buf

    def scratch(self, shape: Sequence[int], dtype: Any) -> Any:
        key = self.scope + scratch_key(self.node.step, len(self.temporaries))
        self.temporaries.append(key)
        return self.pool.buffer(key, shape, dtype)

    def run_graph(self, graph: Any, inputs: Sequence[Any]) -> list:
        return self._run_subgraph(graph, inputs)

    def defer_check(self, flag: Any, message: str) -> None:
        """A device-side check of this step (``flag``: a 0-d device bool, true = failed), read with
        every other one of the run in a single transfer after it (``runtime/deferred.py``): reading
        it now would stall the host until the device caught up."""
        self.pool.deferred.append((flag, f"{self.node.describe()}: {message}"))
