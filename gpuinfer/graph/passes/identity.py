"""Identity and inference-mode Dropout do nothing: their readers read the input directly."""
from __future__ import annotations

from gpuinfer.graph.ir import Graph
from gpuinfer.graph.passes.relink import consumers_of, rename_input

PASS_THROUGH = {"Identity", "Dropout"}


def remove_identities(graph: Graph) -> int:
    readers = consumers_of(graph)
    kept, removed = [], 0
    for node in graph.nodes:
        extra_outputs = [o for o in node.outputs[1:] if o and readers.get(o)]
        removable = (node.op_type in PASS_THROUGH and node.domain == "" and node.inputs and node.inputs[0]
                     and not extra_outputs and not _training_dropout(node)
                     and node.outputs[0] not in graph.outputs and node.outputs[0] not in _outer_reads(graph))
        if removable:
            rename_input(graph, node.outputs[0], node.inputs[0])
            removed += 1
        else:
            kept.append(node)
    graph.nodes = kept
    return removed


def _training_dropout(node) -> bool:
    return node.op_type == "Dropout" and len(node.inputs) > 2 and bool(node.inputs[2])


def _outer_reads(graph: Graph) -> set:
    return {name for node in graph.nodes for name in node.outer_reads}
