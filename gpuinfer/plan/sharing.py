"""How tensors may share bytes beyond disjoint lifetimes: in-place writes and zero-copy concats.

``Sharing`` is what the arena planner is told may overlap; ``Groups`` is the union-find with
offsets it uses to turn those promises into one placement per group of tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from gpuinfer.values import TensorKey


@dataclass
class Sharing:
    """``inplace``: (output, input) — the output may take over the input's buffer as it dies.
    ``concat``: (input, concat output, offset) — the input may live inside the output at offset."""

    inplace: list[tuple[TensorKey, TensorKey]] = field(default_factory=list)
    concat: list[tuple[TensorKey, TensorKey, int]] = field(default_factory=list)


class Groups:
    """Union-find where each tensor sits at a byte offset from its group's root."""

    def __init__(self) -> None:
        self._parent: dict[TensorKey, tuple[TensorKey, int]] = {}

    def find(self, key: TensorKey) -> tuple[TensorKey, int]:
        offset = 0
        while key in self._parent:
            key, step = self._parent[key]
            offset += step
        return key, offset

    def join(self, key: TensorKey, host: TensorKey, rel: int) -> bool:
        """Ask that place(key) == place(host) + rel; False if they are already grouped."""
        root_k, off_k = self.find(key)
        root_h, off_h = self.find(host)
        if root_k == root_h:
            return False
        self._parent[root_k] = (root_h, off_h + rel - off_k)
        return True
