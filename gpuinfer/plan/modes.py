"""What a memory mode is: one object, in one file, that plans and says how its plan is run.

A mode is a ``MemoryMode``: its planner (``place``: lifetimes in, blocks and placements out) and the
few facts the planner and the session ask of it instead of testing its name:

- ``places_outputs``: graph outputs get a place in the blocks too (copied out after the run), so
  a run never needs the blocks plus the outputs beside them (``arena``);
- ``shares_bytes``: in-place writes and Concat inputs inside their output are offered to the
  planner (only a planner that places by offset can use them);
- ``shares_blocks``: one block set serves every input-shape signature of a session (and every
  session of a ``Workspace``), grown to the largest plan, instead of blocks per plan;
- ``plans_ahead``: subgraph traces and shapes seen in a first run are placed by a new plan
  (``reduce`` places nothing, so it neither traces nor replans);
- ``hands_out_intermediates``: every intermediate stays readable after a run, so ``run`` may name
  one as an output without ``keep=`` (``per_tensor``);
- ``spends_slack``: kernels may widen their scratch into the room below the plan's busiest step
  (``slack.py``; ``arena``, and ``reduce``, whose peak is that step);
- ``shares_scratch``: every step's scratch shares one block, and a step may widen its scratch into
  the room the busiest step's scratch leaves it there (``per_tensor``, ``reuse``; ``slack.py``);
- ``speed_rank``: the order ``memory_mode="auto"`` tries modes in, fastest first.

A new mode is one file: define the planner, build a ``MemoryMode`` and pass it to
``register_mode`` at import (the built-in ones are imported by ``gpuinfer.plan``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from gpuinfer.errors import GpuinferError

Planner = Callable[[list, object], tuple]  # (lifetimes, Sharing) -> (blocks, placements, inplace, concat)


@dataclass(frozen=True)
class MemoryMode:
    name: str
    place: Planner
    speed_rank: int
    places_outputs: bool = False
    shares_bytes: bool = False
    shares_blocks: bool = False
    plans_ahead: bool = True
    hands_out_intermediates: bool = False
    # every planned buffer keeps its address from run to run, so a captured CUDA graph can replay on it
    fixed_addresses: bool = False
    # steps' kernels may widen their scratch into the room the plan has below its busiest step
    # (plan/slack.py): only a mode that packs tensors by lifetime (arena) or frees them at their
    # last use (reduce) keeps that room free; per_tensor and reuse keep their tensors' buffers
    spends_slack: bool = False
    # steps' scratch shares one block sized to the most one step asks, and the others may widen
    # theirs into it (plan/shared_scratch.py, plan/slack.py): slack that costs no byte in a mode that keeps
    # its tensors' buffers
    shares_scratch: bool = False

    def __call__(self, lifetimes: list, sharing: object) -> tuple:
        """The planner itself (``MODES[name](lifetimes, sharing)``)."""
        return self.place(lifetimes, sharing)


MODES: dict[str, MemoryMode] = {}  # registration order: per_tensor, reduce, reuse, arena, then added ones


def register_mode(mode: MemoryMode) -> MemoryMode:
    """Make ``mode`` available as ``memory_mode=mode.name``; a name already taken is an error."""
    if mode.name in MODES or mode.name == "auto":
        raise GpuinferError(f"memory mode {mode.name!r} is already registered")
    MODES[mode.name] = mode
    return mode


def unregister_mode(name: str) -> None:
    """Remove an added mode (tests add toy modes and take them away again)."""
    MODES.pop(name, None)


def get_mode(name: str) -> MemoryMode:
    """The registered mode called ``name``; an unknown name lists the choices."""
    mode = MODES.get(name)
    if mode is None:
        raise GpuinferError(f"unknown memory_mode {name!r}; choose one of {sorted(MODES)} or 'auto'")
    return mode


def by_speed() -> list[MemoryMode]:
    """Registered modes, fastest first (``memory_mode="auto"``'s order)."""
    return sorted(MODES.values(), key=lambda m: m.speed_rank)
