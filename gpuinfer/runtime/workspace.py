"""``Workspace``: several sessions that run one after another share one arena block.

A pipeline (PP-OCR's detector, then its direction classifier, then its recogniser; U^2-Net, then a
classifier) runs its models in turn, never two at once.  Separate sessions each keep an arena for
their largest plan, so the pipeline holds the sum of them; TensorRT users ask for shared context
memory across engines for this reason, and onnxruntime gives each session its own arena.  Sessions
of one workspace share one device, one counting allocator and one block set: a mode that shares
blocks (``arena``) places every session's plans in the same block, grown to the largest of them.
Runs through one workspace are serialised by one lock shared by its sessions, so no two runs use
the block at once.  Other modes keep their own blocks but share the lock and the count.

    ws = gpuinfer.Workspace(device="cpu")
    det = ws.session("det.onnx")          # memory_mode="arena" by default here
    cls = ws.session("cls.onnx")
    print(ws.memory_report().text())
"""
from __future__ import annotations

import dataclasses
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from gpuinfer.backends import make_backend, resolve_device
from gpuinfer.runtime.allocator import CountingAllocator
from gpuinfer.runtime.pool import BlockSet
from gpuinfer.runtime.session import InferenceSession


@dataclass
class WorkspaceReport:
    """The shared block against what separate sessions would hold.  Sizes in bytes.

    ``block_bytes``: the shared arena block now; ``largest_plan_bytes``: the largest single plan
    of any member; ``separate_bytes``: the sum over members of each one's largest plan (what
    separate arenas would hold); ``saving_bytes``: ``separate_bytes - block_bytes``;
    ``peak_bytes``: the most the workspace's count reached during any run so far (on CUDA the count
    includes the run's feeds, uploaded inside it, as a lone session's peak does);
    ``sessions``: member label -> its largest plan's bytes.
    """

    device: str
    block_bytes: int
    largest_plan_bytes: int
    separate_bytes: int
    saving_bytes: int
    peak_bytes: int
    held_bytes: int
    sessions: dict

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def text(self) -> str:
        mib = 1024 * 1024
        rows = [f"workspace on {self.device}: {len(self.sessions)} session(s), one shared arena block"]
        rows += [f"  {label:<36} largest plan {nbytes / mib:9.2f} MiB" for label, nbytes in self.sessions.items()]
        saved = self.saving_bytes / self.separate_bytes if self.separate_bytes else 0.0
        rows += [f"  shared block      {self.block_bytes / mib:9.2f} MiB (largest plan {self.largest_plan_bytes / mib:.2f} MiB)",
                 f"  separate arenas   {self.separate_bytes / mib:9.2f} MiB (sum of the plans)",
                 f"  saving            {self.saving_bytes / mib:9.2f} MiB ({saved:.0%} of separate arenas)",
                 f"  peak counted      {self.peak_bytes / mib:9.2f} MiB over the runs so far"]
        return "\n".join(rows)


class Workspace:
    """One device, one allocator, one arena block and one run lock for several sessions."""

    def __init__(self, device: str = "auto", providers: Any = None, device_allocator: str = "pool") -> None:
        self.device = resolve_device(device, providers)
        self.backend = make_backend(self.device, device_allocator)
        self.allocator = CountingAllocator(self.backend)
        self.blocks = BlockSet(self.allocator, [])
        self.lock = threading.Lock()
        self.peak_bytes = 0
        self._members: list[tuple[str, Any]] = []  # (label, weak reference to the session)

    def session(self, model: Any, memory_mode: str = "arena", **options: Any) -> InferenceSession:
        """An ``InferenceSession`` of ``model`` in this workspace (options as ``InferenceSession``'s)."""
        return InferenceSession(model, device=self.device, memory_mode=memory_mode, workspace=self, **options)

    def join(self, session: Any, model: Any) -> None:
        """Called by a session made with ``workspace=self``."""
        label = os.path.basename(os.fspath(model)) if isinstance(model, (str, os.PathLike)) else type(model).__name__
        self._members.append((label, weakref.ref(session)))

    def ran(self, peak: int) -> None:
        """A member's run ended with this counted peak (the lock is held)."""
        self.peak_bytes = max(self.peak_bytes, peak)

    def memory_report(self) -> WorkspaceReport:
        """The shared block, each member's largest plan, and the saving against separate arenas."""
        sessions = {}
        for i, (label, ref) in enumerate(self._members):
            session = ref()
            if session is not None:
                sessions[label if label not in sessions else f"{label} #{i}"] = session.largest_plan_bytes
        largest = max(sessions.values(), default=0)
        separate = sum(sessions.values())
        block = sum(self.blocks.sizes)
        return WorkspaceReport(self.device, block, largest, separate, separate - block, self.peak_bytes,
                               self.allocator.in_use, sessions)
