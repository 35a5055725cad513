"""An activation right after a Conv/ConvTranspose/Gemm/MatMul or a BatchNormalization (DenseNet's
pre-activation ``BatchNormalization -> Relu`` before each conv) runs inside the same step, in place.

The producer writes its output buffer, the activation rewrites that buffer where it lies: one
step, one buffer, one pass less through the executor.  The pass picks the pairs; the fused step's
kernel comes from the op registry (``gpuinfer/ops/fused.py``).  Only activations whose kernels promise
in-place safety are fused, and only when the producer's output has no other reader.
"""
from __future__ import annotations

from gpuinfer.graph.ir import Graph, Node
from gpuinfer.graph.kernels import kernels
from gpuinfer.graph.passes.hardswish import FUSED_TYPE as HARD_SWISH
from gpuinfer.graph.passes.relink import consumers_of, producers_of
from gpuinfer.graph.passes.silu import FUSED_TYPE as SILU

PRODUCERS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization"}
ACTIVATIONS = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu",
               "Softplus", "PRelu",
               SILU, HARD_SWISH}  # the chains silu.py and hardswish.py make one step


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
    spec = kernels().fused_activation(first, act)
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
