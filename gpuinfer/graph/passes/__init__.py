"""Graph optimisations run once at load, each a small pass over the built graph with its own switch.

``optimize(graph, enabled)`` runs the enabled passes in a fixed order and re-derives steps,
producers, consumers and lifetimes afterwards.  Every pass keeps value names the caller can see
(graph inputs and outputs) and leaves outputs within float rounding of the unoptimised graph.
"""
from __future__ import annotations

from typing import Callable, Iterable, Union

from gpuinfer.errors import GpuinferError
from gpuinfer.graph.ir import Graph
from gpuinfer.graph.passes.batchnorm import fold_batchnorm
from gpuinfer.graph.passes.channel_affine import fold_channel_affine
from gpuinfer.graph.passes.dead import remove_dead_nodes
from gpuinfer.graph.passes.duplicate_filters import share_duplicate_filters
from gpuinfer.graph.passes.fusion import fuse_activations
from gpuinfer.graph.passes.hardswish import fuse_hard_swish
from gpuinfer.graph.passes.identity import remove_identities
from gpuinfer.graph.passes.residual import fuse_residual_adds
from gpuinfer.graph.passes.silu import fuse_silu
from gpuinfer.graph.passes.relink import relink

Pass = Callable[[Graph], int]  # returns how many nodes it changed

PASSES: dict[str, Pass] = {
    "remove_identities": remove_identities,
    "fold_batchnorm": fold_batchnorm,
    "fold_channel_affine": fold_channel_affine,
    "share_duplicate_filters": share_duplicate_filters,
    "fuse_residual_adds": fuse_residual_adds,
    # the two chains become one step each before fuse_activations, which then puts them into their Conv
    "fuse_silu": fuse_silu,
    "fuse_hard_swish": fuse_hard_swish,
    "fuse_activations": fuse_activations,
    "remove_dead_nodes": remove_dead_nodes,
}


def resolve(optimizations: Union[bool, Iterable[str]]) -> list[str]:
    """``True`` -> every pass, ``False`` -> none, or the names given (checked)."""
    if optimizations is True:
        return list(PASSES)
    if optimizations is False or optimizations is None:
        return []
    names = list(optimizations)
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise GpuinferError(f"unknown optimization(s) {unknown}; available: {list(PASSES)}")
    return [n for n in PASSES if n in names]


def optimize(graph: Graph, names: list[str]) -> dict[str, int]:
    """Run the named passes on the top-level graph; returns nodes changed per pass.

    Values a pass removes (an Identity's output, a Conv output folded into its BatchNorm or fused
    with its activation) are recorded in ``graph.removed_by`` with the pass's name, so asking for
    one (``keep=``, an output name) can say which pass to turn off.
    """
    changed = {}
    for name in names:
        before = set(graph.values) | set(graph.constants)
        changed[name] = PASSES[name](graph)
        relink(graph)
        for value in before.difference(graph.values, graph.constants):
            graph.removed_by.setdefault(value, name)
    return changed


def removed_value_advice(graph: Graph, name: str, enabled: list[str]) -> str:
    """Why ``name`` is not in the optimised graph and how to keep it ('' if no pass removed it)."""
    removed = graph.removed_by.get(name)
    if removed is None:
        return ""
    others = [n for n in enabled if n != removed]
    return (f"{name!r} was removed by the graph pass {removed!r}; to keep it, load the model with "
            f"optimizations={others!r} (every enabled pass but that one) or optimizations=False")


__all__ = ["PASSES", "optimize", "removed_value_advice", "resolve"]
