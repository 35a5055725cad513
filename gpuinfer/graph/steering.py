"""Values that steer an op rather than feed its arithmetic, and the small computations on them.

A GPU runtime must not read a device value back to choose a shape, a slice or a scale: each
read stalls the host until the device has caught up.  ONNX passes such values as tensors
(Reshape's shape, Slice's starts, Resize's scales, Pad's pads, axes, k), usually computed from
``Shape`` by a chain of small integer ops.  ``host_resident`` finds them, so the executor keeps
them on the host: constants in those positions are never uploaded, and the chains that compute
them (Shape -> Gather -> Unsqueeze -> Concat ...) run on numpy, where reading them is free.
"""
from __future__ import annotations

from typing import Iterable

from gpuinfer.graph.ir import Graph

# op type -> input positions its kernel reads on the host (ctx.host): never arithmetic operands
STEERING_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "ConstantOfShape": (0,), "Range": (0, 1, 2),
    "Slice": (1, 2, 3, 4), "Unsqueeze": (1,), "Squeeze": (1,), "Pad": (1, 3), "Resize": (1, 2, 3),
    "Upsample": (1,), "TopK": (1,), "Split": (1,), "OneHot": (1,), "CumSum": (1,), "Trilu": (1,),
    "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceProd": (1,),
    "ReduceL1": (1,), "ReduceL2": (1,), "ReduceLogSum": (1,), "ReduceLogSumExp": (1,),
    "ReduceSumSquare": (1,), "NonMaxSuppression": (2, 3, 4), "If": (0,), "Loop": (0, 1),
    "RandomNormalLike": (), "CenterCropPad": (1,), "Col2Im": (1, 2),
}
# ops cheap and exact on a few host integers: a chain of these from steering values stays host
HOST_CHAIN_OPS = frozenset({
    "Shape", "Size", "Gather", "Concat", "Unsqueeze", "Squeeze", "Cast", "Slice", "Add", "Sub", "Mul",
    "Div", "Floor", "Ceil", "Reshape", "Identity", "Equal", "Less", "Greater", "Not", "And", "Or",
    "Where", "Max", "Min", "Neg", "Abs", "ReduceProd", "ReduceSum", "ReduceMax", "ReduceMin", "Range",
    "ConstantOfShape", "Sqrt", "Mod", "Expand", "Flatten", "Round",
})
SHAPE_ONLY = frozenset({"Shape", "Size"})  # read only their input's shape: any input will do
SMALL = 4096  # elements: larger constants are data, not steering


def steering_positions(op_type: str) -> tuple[int, ...]:
    return STEERING_INPUTS.get(op_type, ())


def host_resident(graph: Graph, outer: Iterable[str] = ()) -> tuple[set[int], set[str]]:
    """(steps to run on the host, values they make): every step of ``graph`` whose inputs are
    all host-known (small constants, values of enclosing host chains, outputs of such steps)
    and whose op is a ``HOST_CHAIN_OPS`` op; ``Shape``/``Size`` always qualify."""
    known = set(outer)
    for name, value in graph.constants.items():
        if getattr(value, "size", SMALL + 1) <= SMALL:
            known.add(name)
    steps: set[int] = set()
    made: set[str] = set()
    for node in graph.nodes:
        inputs = [n for n in node.inputs if n]
        if node.op_type in SHAPE_ONLY or (
                node.op_type in HOST_CHAIN_OPS and inputs and all(n in known for n in inputs)):
            steps.add(node.step)
            for out in node.outputs:
                if out:
                    known.add(out)
                    made.add(out)
    return steps, made
