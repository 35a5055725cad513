"""The memory timeline of one run: (node, most bytes in use during its step) per top-level step.

Stored flat, not as a list of tuples: a (node, bytes) tuple and its int per step were ~100 bytes
of Python objects per node made during the run and alive to its end (PP-OCR cls, 144 steps:
~14 KB, 4% of its 0.34 MiB arena, on top of the previous run's list still held by its report).
A straight-line runner (runtime/runner.py) hands over its fixed tuple of nodes once per run
(``start``) and writes each step's bytes into a preallocated array (8 bytes a step, no object);
the general loop appends as it goes.  Read back as (node, bytes) pairs, steps that ran only.
"""
from __future__ import annotations

from array import array
from typing import Any, Iterator, Sequence

NOT_RUN = -1  # a step the run never reached (it failed before)


class Timeline:
    """(node, step peak bytes) per top-level step, in order (see the module docstring)."""

    __slots__ = ("nodes", "peaks")

    def __init__(self) -> None:
        self.nodes: Sequence[Any] = []
        self.peaks = array("q")

    def start(self, nodes: tuple, unrun: array) -> array:
        """A runner's run begins: its ``nodes``, and a fresh copy of ``unrun`` (``NOT_RUN`` per
        step) that it fills in step by step (returned)."""
        self.nodes = nodes
        self.peaks = array("q", unrun)
        return self.peaks

    def append(self, record: tuple) -> None:
        """One step of the general loop: (node, bytes) (a timeline the loop fills, never a runner)."""
        self.nodes.append(record[0])
        self.peaks.append(record[1])

    def __len__(self) -> int:
        peaks = self.peaks
        return peaks.index(NOT_RUN) if NOT_RUN in peaks else len(peaks)

    def __iter__(self) -> Iterator[tuple]:
        return zip(self.nodes, self.peaks[:len(self)])


def unrun_steps(n: int) -> array:
    """The array a runner of ``n`` top-level steps copies at the start of each run."""
    return array("q", [NOT_RUN]) * n
