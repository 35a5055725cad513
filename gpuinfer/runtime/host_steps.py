"""Steps a device cannot run: ops on values whose dtype has no device arrays (strings, objects,
bfloat16, float8, 4-bit types on CUDA) run on the host, explicitly.

Their device inputs come down through the device's transfer API (a counted read each), the
kernel runs on numpy, and each output the device can hold goes straight back up into the
buffer the plan gave it (``ndarray.set``: one counted upload); outputs it cannot hold stay on
the host.  On the CPU no step is ever a host step, so this costs the numpy device nothing.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from gpuinfer.backends.numpy_backend import NumpyBackend
from gpuinfer.graph.ir import Graph, Node
from gpuinfer.ops.context import StandaloneContext
from gpuinfer.values import OptionalValue, TensorSequence

HOST = NumpyBackend()


def needs_host(node: Node, graph: Graph, device: Any, host_only: frozenset = frozenset()) -> bool:
    """Whether ``node`` touches a value (input or output) of a dtype ``device`` cannot hold;
    ``host_only`` names values typed so by the model (bfloat16 and kin have no numpy dtype here)."""
    if device.kind == "cpu":
        return False
    for name in (*node.inputs, *node.outputs):
        if name in host_only:
            return True
        value = graph.values.get(name) if name else None
        dtype = value.dtype if value is not None else None
        if dtype is None and name in graph.constants:
            dtype = getattr(graph.constants[name], "dtype", None)
        if dtype is not None and not device.can_hold(dtype):
            return True
    return False


def to_host(value: Any, device: Any) -> Any:
    """A step's input as numpy sees it (sequences and optionals element by element)."""
    if isinstance(value, TensorSequence):
        return TensorSequence(to_host(v, device) for v in value)
    if isinstance(value, OptionalValue):
        return OptionalValue(to_host(value.value, device))
    if value is None or isinstance(value, np.ndarray):
        return value
    return device.to_host(value)


def run_on_host(step: Any, args: list, ctx: Any, device: Any) -> Any:
    """Run ``step``'s kernel on numpy; outputs the device holds go up into their planned buffers,
    unless the step computes steering values (``step.keep_host``): those stay on the host."""
    node = step.node
    host_ctx = StandaloneContext(attrs=node.attrs, opset=node.opset, n_outputs=len(node.outputs),
                                 op_type=node.op_type, node_name=node.name, device=HOST)
    if node.spec.shape_only:  # Shape, Size: the input's shape is on the host already
        result = step.kernel(host_ctx, *args)
    else:
        result = step.kernel(host_ctx, *[to_host(a, device) for a in args])
    if step.keep_host:
        return result
    results = list(result) if type(result) in (tuple, list) else [result]
    for i, value in enumerate(results):
        results[i] = _settle_up(ctx, i, value, device)
    return tuple(results) if len(results) > 1 or type(result) in (tuple, list) else results[0]


def _settle_up(ctx: Any, i: int, value: Any, device: Any) -> Optional[Any]:
    if not isinstance(value, np.ndarray) or not device.can_hold(value.dtype) or not ctx.wants(i):
        return value
    buf = ctx.out(i, value.shape, value.dtype)
    buf.set(value if value.flags.c_contiguous else value.copy())  # ascontiguousarray would make 0-d 1-d
    return buf


class HostPlan:
    """Where each value of one graph lives on a GPU device (made once per graph at load).

    ``chain``: steps run on numpy because they compute steering values (``graph.steering``);
    ``steer[step]``: input positions the kernel reads on the host, fed the host copy;
    ``lift[step]``: input positions of a device step fed a host-made value (one upload a run);
    ``upload``: the constants some device step reads as data (the rest never go up).
    """

    def __init__(self, graph: Graph, device: Any, host_only: frozenset) -> None:
        from gpuinfer.graph.steering import host_resident, steering_positions

        self.kind = device.kind
        self.chain, made = host_resident(graph) if device.kind != "cpu" else (set(), set())
        self.steer: dict[int, tuple[int, ...]] = {}
        self.lift: dict[int, tuple[int, ...]] = {}
        self.dtype_host = {n.step for n in graph.nodes if needs_host(n, graph, device, host_only)}
        self.upload: set[str] = set()
        for node in graph.nodes:
            if node.step in self.chain or node.step in self.dtype_host:  # host steps read host copies
                self.steer[node.step] = tuple(i for i, n in enumerate(node.inputs) if n)
                continue
            steer = steering_positions(node.op_type)
            self.steer[node.step] = tuple(i for i in steer if i < len(node.inputs) and node.inputs[i])
            data = [(i, n) for i, n in enumerate(node.inputs) if n and i not in steer]
            self.lift[node.step] = tuple(i for i, n in data if n in made)
            self.upload.update(n for _, n in data if n in graph.constants)
            self.upload.update(n for n in node.outer_reads if n not in made)  # bodies read them as data
        self.upload.update(n for n in graph.outputs if n in graph.constants)
        if device.kind == "cpu":
            self.upload = set(graph.constants)

    def special(self, step: int) -> bool:
        """Whether the loop must treat this step's inputs with care (never on the CPU)."""
        return bool(self.steer.get(step) or self.lift.get(step))


def device_args(step: Any, args: list, host_constants: dict, device: Any) -> list:
    """A device step's arguments: host copies where it steers, device copies where a host-made
    value feeds its arithmetic.  Such values come from shapes, so they repeat run after run: the
    copy made for the last value is reused while the value is the same (one upload, not one a run)."""
    for i in step.steer:
        host = host_constants.get(step.inputs[i])
        if host is not None:
            args[i] = host
    for i in step.lift:
        value = args[i]
        if isinstance(value, np.ndarray):
            cached = step.lifted.get(i)
            if cached is None or cached[0].shape != value.shape or cached[0].dtype != value.dtype \
                    or not np.array_equal(cached[0], value):
                cached = step.lifted[i] = (value.copy(), device.to_device(value))
            args[i] = cached[1]
    return args
