"""What the strict stand-in counts: the costs a real GPU run pays that a CPU run hides.

Every figure is per process and cumulative; take a ``snapshot()`` before and after the span you
measure and subtract (``delta``).  ``capturing`` is set while a CUDA-graph capture is emulated:
then a sync, an upload or an allocation outside the capture pool raises, as CUDA's capture does.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from typing import Optional


@dataclass
class StrictCounters:
    launches: int = 0  # calls that launch device work (kernels, device-to-device copies, graphs)
    graph_launches: int = 0  # of those, CUDA graph replays (each one launch, however many kernels)
    syncs: int = 0  # device->host reads: get(), item(), bool(), int(), float(), tolist(), asnumpy
    uploads: int = 0  # host->device copies: asarray(host), array(host), set(host), host indices
    upload_bytes: int = 0
    waits: int = 0  # stream/device synchronisations (no data read, but the host waits)
    hook_allocations: int = 0  # allocations served by an allocator installed with using_allocator
    hook_bytes: int = 0
    outside_allocations: int = 0  # allocations made with no hook installed (CuPy's default pool)
    outside_bytes: int = 0
    sync_sites: list = field(default_factory=list)  # why the latest syncs happened
    syncs_by_op: dict = field(default_factory=dict)  # op type -> syncs it caused
    by_op: Optional[dict] = None  # op type -> launches, when set to a dict (costs a frame walk a launch)
    upload_sites: list = field(default_factory=list)

    SITES = 32

    def snapshot(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not isinstance(v, (list, dict, type(None)))}

    @staticmethod
    def delta(before: dict, after: dict) -> dict:
        return {k: after[k] - before[k] for k in after}

    def note_sync(self, why: str) -> None:
        self.syncs += 1
        op = running_op()
        self.syncs_by_op[op] = self.syncs_by_op.get(op, 0) + 1
        self.sync_sites.append(f"{op}: {why}")
        del self.sync_sites[:-self.SITES]  # the latest few

    def note_upload(self, nbytes: int, why: str) -> None:
        self.uploads += 1
        self.upload_bytes += int(nbytes)
        self.upload_sites.append(f"{running_op()}: {why}")
        del self.upload_sites[:-self.SITES]


def running_op() -> str:
    """The op type of the innermost node the run loop is executing ("-" outside a run).

    Read from the caller's frames (the executor's ``node`` local), only when a sync or an upload
    happens, so the counting costs nothing on the common path."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "verify_deferred":
            return "deferred checks"  # the one read after a run of the flags ops computed on the device
        node = frame.f_locals.get("node") if frame.f_code.co_name == "_run" else None
        if node is not None and hasattr(node, "op_type"):
            return node.op_type
        frame = frame.f_back
    return "-"


class CaptureViolation(RuntimeError):
    """What CUDA's stream capture would fail with (cudaErrorStreamCaptureUnsupported and kin)."""


class CaptureState:
    """The capture being emulated, if any: its stream, its pool and the operations it recorded.

    As CUDA's global capture mode: while active, a sync, an upload, a host read, a ``cudaMalloc``,
    an allocation from any allocator but the one installed when the capture began (the graph's
    private pool), or device work issued on another stream raises ``CaptureViolation``, and the
    capture is invalidated (``end_capture`` then fails, as ``cudaErrorStreamCaptureInvalidated``).
    """

    def __init__(self) -> None:
        self.active = False
        self.recorded: list = []  # the device operations of the capture, replayed by launch()
        self.stream: object = None  # the capturing stream
        self.pool: object = None  # the allocator current at begin_capture: the only one allowed
        self.invalidated: Optional[str] = None  # the first violation's text
        self.current_stream = lambda: None  # set by the stand-in's cuda module

    def begin(self, stream: object, pool: object) -> None:
        self.active, self.recorded, self.stream, self.pool, self.invalidated = True, [], stream, pool, None

    def end(self) -> list:
        """Stop capturing; the recorded operations (raises if the capture was invalidated)."""
        recorded, invalid = self.recorded, self.invalidated
        self.active, self.recorded, self.stream, self.pool, self.invalidated = False, [], None, None, None
        if invalid is not None:
            raise CaptureViolation(f"the capture was invalidated by {invalid} "
                                   f"(cudaErrorStreamCaptureInvalidated)")
        return recorded

    def forbid(self, what: str) -> None:
        if self.active:
            self._violate(f"{what} during CUDA graph capture (CUDA forbids it: "
                          f"cudaErrorStreamCaptureUnsupported)")

    def check_allocation(self, allocator: object, nbytes: int) -> None:
        """During a capture only the graph's pool (current at ``begin_capture``) may hand out memory."""
        if self.active and allocator != self.pool:
            self._violate(f"an allocation of {nbytes} bytes outside the capture's pool during CUDA graph "
                          f"capture (its memory would not belong to the graph)")

    def note(self, fn: object) -> None:
        """A device operation: recorded when issued on the capturing stream; elsewhere it breaks the
        capture (cudaErrorStreamCaptureImplicit: the legacy stream joins every capture)."""
        if not self.active:
            return
        if self.current_stream() is not self.stream:
            self._violate("device work issued on a stream other than the capturing one "
                          "(cudaErrorStreamCaptureImplicit)")
        self.recorded.append(fn)

    def _violate(self, text: str) -> None:
        if self.invalidated is None:
            self.invalidated = text
        raise CaptureViolation(text)
