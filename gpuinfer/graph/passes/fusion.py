"""An activation right after a Conv/ConvTranspose/Gemm/MatMul runs inside the same step, in place.

The producer writes its output buffer, the activation rewrites that buffer where it lies: one
step, one buffer, one pass less through the executor.  Only activations whose kernels promise
in-place safety are fused, and only when the producer's output has no other reader.
"""
from __future__ import annotations

from typing import Any

from gpuinfer.graph.ir import Graph, Node
from gpuinfer.graph.passes.relink import consumers_of, producers_of
from gpuinfer.ops.context import OpContext
from gpuinfer.backends import tile_bytes_for
from gpuinfer.ops.registry import OpSpec

PRODUCERS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
ACTIVATIONS = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu",
               "Softplus", "PRelu"}


def fuse_activations(graph: Graph) -> int:
    readers = consumers_of(graph)
    producer = producers_of(graph)
    replaced: dict[int, Node] = {}
    drop: set[int] = set()
    for act in graph.nodes:
        if act.op_type not in ACTIVATIONS or act.domain or act.spec is None or not act.spec.inplace:
            continue
        first = producer.get(act.inputs[0])
        if (first is None or first.op_type.split("+")[0] not in PRODUCERS or first.domain or id(first) in replaced
                or len(readers.get(first.outputs[0], [])) != 1 or first.outputs[0] in graph.outputs
                or any(name and name not in graph.constants for name in act.inputs[1:])):
            continue
        replaced[id(first)] = _fused(first, act)
        drop.add(id(act))
    graph.nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in drop]
    return len(drop)


def _fused(first: Node, act: Node) -> Node:
    spec = OpSpec("", f"{first.op_type}+{act.op_type}", 1, _chain(first, act), False, _chain_scratch(first, act))
    return Node(first.step, f"{first.name}+{act.name}", spec.op_type, "", first.opset,
                first.inputs + act.inputs[1:], act.outputs[:1], first.attrs, spec, fused_proto(first, act.outputs[0]))


def fused_proto(first: Node, output: str):
    """The producer's NodeProto writing ``output``: shape inference sees the producer, whose output
    shape and type the fused step keeps."""
    proto = type(first.proto)()
    proto.CopyFrom(first.proto)
    del proto.output[:]
    proto.output.append(output)
    return proto


def _chain_scratch(first: Node, act: Node):
    """The fused step's scratch: the producer's buffers, then the activation's (PRelu wants one),
    in the order the two halves ask for them; the activation's input is the producer's output.
    ``device_kind`` picks each half's scratch function as ``OpSpec.scratch_for`` does."""
    n_first = len(first.inputs)

    def scratch(attrs, shapes, dtypes, output_shapes=None, device_kind="cpu"):
        head, tail = first.spec.scratch_for(device_kind), act.spec.scratch_for(device_kind)
        wanted = list(_call_scratch(head, first.attrs, shapes[:n_first], dtypes[:n_first], device_kind)) \
            if head is not None else []
        made = output_shapes[0] if output_shapes else None
        if tail is None or made is None:
            return wanted  # (no shape: the activation's buffer is served, and learnt, at the first run)
        return wanted + list(_call_scratch(tail, act.attrs, [made, *shapes[n_first:]], [dtypes[0], *dtypes[n_first:]],
                                           device_kind))

    return scratch


def _call_scratch(fn, attrs, shapes, dtypes, device_kind):
    """A half's scratch, with the device's tile size where its function takes one."""
    from gpuinfer.plan.lifetimes import scratch_keywords

    extra = {"tile_bytes": tile_bytes_for(device_kind)} if "tile_bytes" in scratch_keywords(fn) else {}
    return fn(attrs, shapes, dtypes, **extra) or ()


def _chain(first: Node, act: Node):
    n_first = len(first.inputs)

    def kernel(ctx: OpContext, *args: Any):
        kind = ctx.device.kind
        head = PartContext(ctx, first)
        head.then = act  # a device kernel may apply the activation itself (ops/gpu/conv.py)
        y = first.spec.kernel_for(kind)(head, *args[:n_first])
        if head.absorbed:
            return y
        return act.spec.kernel_for(kind)(PartContext(ctx, act, y), y, *args[n_first:])

    kernel.__doc__ = f"{first.op_type} then {act.op_type} in place on its output"
    return kernel


class PartContext(OpContext):
    """The context one half of a fused node sees: its own attributes, the node's buffers."""

    def __init__(self, ctx: OpContext, node: Node, out0: Any = None):
        self._ctx = ctx
        self._out0 = out0
        self.then = None  # the node whose work follows in this fused step (set for the first half)
        self.absorbed = False  # set by a kernel that did ``then``'s work too
        self.device = ctx.device  # the halves ask the same device's capabilities
        self.xp = ctx.xp
        self.attrs = node.attrs
        self.opset = node.opset
        self.op_type = node.op_type
        self.node_name = node.name
        self.n_outputs = 1
        whole = getattr(ctx, "_memo", None)  # each half its own memo, inside the fused step's
        self._memo = None if whole is None else whole.setdefault(("part", node.name), {})

    def wants(self, i: int) -> bool:
        return i == 0

    def out(self, i, shape, dtype):
        o = self._out0
        if o is not None and i == 0 and tuple(o.shape) == tuple(shape) and o.dtype == dtype:
            return o
        return self._ctx.out(i, shape, dtype)

    def scratch(self, shape, dtype):
        return self._ctx.scratch(shape, dtype)

    def host(self, x):
        return self._ctx.host(x)
