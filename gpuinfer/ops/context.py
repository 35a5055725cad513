"""What a kernel sees of the runtime: the array module, attributes, and where to write.

Kernels never allocate large arrays themselves.  They ask ``ctx.out(i, shape, dtype)`` for the
buffer of output ``i`` (the memory plan decides where it lives) and ``ctx.scratch(shape, dtype)``
for temporaries that live for this one step; both are counted by the pool.  ``StandaloneContext``
serves the same calls from plain ``xp.empty`` so kernels can be called and tested on their own.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from gpuinfer.backends.numpy_backend import NumpyBackend

MEMO_ENTRIES = 64  # per node: distinct input shapes remembered by OpContext.memo


class OpContext:
    """Base of the contexts kernels receive; subclasses decide where buffers come from."""

    xp: Any = np
    device: Any = NumpyBackend()  # what kernels ask about the hardware (``device.caps``), never which module xp is
    attrs: dict
    opset: int = 1
    node_name: str = ""
    op_type: str = ""
    n_outputs: int = 1
    # Bytes of scratch this step may take beyond what its scratch function asks by default: room
    # the plan has at this step below its busiest one (plan/slack.py), so spending it costs no
    # memory.  Kernels with a speed/size trade in their scratch (Conv's bands) read it; 0 outside
    # a planned run.
    scratch_slack: int = 0

    def lent_room(self, per_element: int, buffers: int) -> int:
        """Elements per buffer that ``buffers`` scratch buffers taking ``per_element`` bytes per
        element together could have for free beyond the step's own scratch: bytes another half of
        a fused step has finished with (``ops/fused.py``).  0 here: a kernel alone has none."""
        return 0

    def attr(self, name: str, default: Any = None) -> Any:
        """Attribute ``name`` as a Python value (int, float, str, list, np.ndarray, Graph)."""
        return self.attrs.get(name, default)

    def memo(self, key: Any, make: Any) -> Any:
        """``make()``, remembered for this node under ``key`` (e.g. the input shapes): what a kernel
        derives from attributes and shapes alone is the same on every run.  The run loop keeps one
        memo per node (``executor.Step``), so it dies with the session; a standalone call keeps
        none.  Entries must not be mutated by their users."""
        memo = getattr(self, "_memo", None)
        if memo is None:
            return make()
        value = memo.get(key)
        if value is None:
            if len(memo) >= MEMO_ENTRIES:  # shapes that keep changing: start over, stay bounded
                memo.clear()
            value = memo[key] = make()
        return value

    def wants(self, i: int) -> bool:
        """Whether output ``i`` exists and is used (optional outputs may be omitted)."""
        return i < self.n_outputs

    @property
    def caps(self) -> Any:
        """The device's declared capabilities (``backends.base.Capabilities``)."""
        return self.device.caps

    def host(self, x: Any) -> Optional[np.ndarray]:
        """``x`` as a numpy array on the host (for shape arguments, axes, pads, sizes, ...).

        Free for host values (steering inputs are kept on the host); a device value costs a
        device-to-host sync, which the strict device counts."""
        if x is None or isinstance(x, np.ndarray):
            return x
        if hasattr(x, "get"):
            return x.get()
        return np.asarray(x)

    def out(self, i: int, shape: Sequence[int], dtype: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def same_memory(a: Any, b: Any) -> bool:
        """Whether two arrays are the very same bytes (a planner may have put an input in place)."""
        if a.shape != b.shape:
            return False
        if any(sa != sb for sa, sb, d in zip(a.strides, b.strides, a.shape) if d > 1):
            return False
        return data_pointer(a) == data_pointer(b)

    def scratch(self, shape: Sequence[int], dtype: Any) -> Any:
        raise NotImplementedError

    def run_graph(self, graph: Any, inputs: Sequence[Any]) -> list:
        """Run a subgraph attribute (If/Loop/Scan body) with its formal inputs bound positionally.

        Values of the enclosing scopes are visible to the subgraph as ONNX requires.
        """
        raise NotImplementedError


def data_pointer(x: Any) -> int:
    """Address of an array's first element, for numpy and cupy alike."""
    if isinstance(x, np.ndarray):
        return x.__array_interface__["data"][0]
    return int(x.data.ptr)


class StandaloneContext(OpContext):
    """A context with no pool and no plan: every buffer is a fresh ``xp.empty``.

    Used for constant folding at load time and for testing kernels on their own.
    """

    def __init__(self, attrs: Optional[dict] = None, opset: int = 21, xp: Any = None,
                 n_outputs: int = 1, op_type: str = "", node_name: str = "", runner: Any = None,
                 max_bytes: Optional[int] = None, device: Any = None):
        self.attrs = attrs or {}
        self.opset = opset
        if device is not None:
            self.device = device
        self.xp = self.device.xp if xp is None else xp
        self.n_outputs = n_outputs
        self.op_type = op_type
        self.node_name = node_name
        self._runner = runner
        self.max_bytes = max_bytes  # refuse any single buffer above this (load-time folding guard)

    def _empty(self, shape: Sequence[int], dtype: Any) -> Any:
        shape = tuple(int(d) for d in shape)
        if self.max_bytes is not None:
            nbytes = np.dtype(dtype).itemsize * int(np.prod(shape, dtype=np.float64))
            if nbytes > self.max_bytes or any(d < 0 for d in shape):
                raise MemoryError(f"{self.op_type} would make a {nbytes:.0f}-byte tensor of shape {list(shape)}, "
                                  f"over the {self.max_bytes}-byte limit")
        return self.xp.empty(shape, dtype=dtype)

    def out(self, i: int, shape: Sequence[int], dtype: Any) -> Any:
        return self._empty(shape, dtype)

    def scratch(self, shape: Sequence[int], dtype: Any) -> Any:
        return self._empty(shape, dtype)

    def run_graph(self, graph: Any, inputs: Sequence[Any]) -> list:
        if self._runner is None:
            raise NotImplementedError("this context cannot run subgraphs")
        return self._runner(graph, inputs)
