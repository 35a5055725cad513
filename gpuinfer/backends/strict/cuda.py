"""``cupy.cuda`` on the stand-in: memory API, runtime, streams, events and graph capture.

Capture is emulated as CUDA does it: between ``begin_capture`` and ``end_capture`` on a
non-default stream, a sync, an upload, a host read, a ``cudaMalloc``, an allocation from any
allocator but the one current when the capture began (the graph's private pool) or device work on
another stream raises ``CaptureViolation`` and invalidates the capture; the device operations run
(numpy cannot defer them) and are recorded, and ``Graph.launch`` replays them on the same buffers
as one counted launch.
"""
from __future__ import annotations

import time
import types
from typing import Any, Callable, Optional

from gpuinfer.backends.strict import memory
from gpuinfer.backends.strict.counters import CaptureViolation
from gpuinfer.backends.strict.memory import SPACE, CUDARuntimeError


class Graph:
    """A captured run: ``launch()`` replays its device operations (one launch, counted)."""

    def __init__(self, recorded: list[Callable[[], Any]]) -> None:
        self._recorded = recorded
        self.size = len(recorded)

    def launch(self, stream: Any = None) -> None:
        SPACE.capture.forbid("a graph launch")
        SPACE.counters.launches += 1
        SPACE.counters.graph_launches += 1
        for op in self._recorded:
            op()

    def upload(self, stream: Any = None) -> None:
        pass


class Stream:
    """A CUDA stream; ``with stream:`` makes it current.  Only non-default streams capture."""

    _current: list["Stream"] = []

    def __init__(self, null: bool = False, non_blocking: bool = False, ptr: int = 0, priority: int = 0):
        self.null = null
        self.non_blocking = non_blocking
        self.ptr = 0 if null else id(self)

    def __enter__(self) -> "Stream":
        Stream._current.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        Stream._current.pop()

    def synchronize(self) -> None:
        SPACE.capture.forbid("stream synchronize")
        SPACE.counters.waits += 1

    def begin_capture(self, mode: Any = None) -> None:
        if self.null:
            raise CUDARuntimeError(900, "the legacy default stream cannot be captured")
        if SPACE.capture.active:
            raise CaptureViolation("begin_capture while a capture is already active")
        SPACE.capture.begin(self, memory.get_allocator())

    def end_capture(self) -> Graph:
        if not SPACE.capture.active:
            raise CUDARuntimeError(900, "end_capture without begin_capture")
        if SPACE.capture.stream is not self:
            raise CUDARuntimeError(900, "end_capture on a stream that is not capturing")
        return Graph(SPACE.capture.end())

    def is_capturing(self) -> bool:
        return SPACE.capture.active

    def wait_event(self, event: "Event") -> None:
        """Later work on this stream waits for ``event`` (no host wait: not counted)."""

    def record(self, event: Optional["Event"] = None) -> "Event":
        event = event or Event()
        event.record(self)
        return event


Stream.null = Stream(null=True)  # type: ignore[attr-defined]


def get_current_stream() -> Stream:
    return Stream._current[-1] if Stream._current else Stream.null  # type: ignore[attr-defined]


SPACE.capture.current_stream = get_current_stream


class Event:
    def __init__(self, block: bool = False, disable_timing: bool = False, interprocess: bool = False):
        self.time = 0.0

    def record(self, stream: Any = None) -> None:
        self.time = time.perf_counter()

    def synchronize(self) -> None:
        SPACE.capture.forbid("event synchronize")
        SPACE.counters.waits += 1


def get_elapsed_time(start: Event, end: Event) -> float:
    return (end.time - start.time) * 1000.0


class Device:
    def __init__(self, device: int = 0) -> None:
        self.id = int(device)
        self.pci_bus_id = "0000:00:00.0"

    def synchronize(self) -> None:
        SPACE.capture.forbid("device synchronize")
        SPACE.counters.waits += 1

    @property
    def mem_info(self) -> tuple[int, int]:
        return memory.mem_get_info()


def _set_pool_attribute(pool: int, attr: int, value: int) -> None:
    RUNTIME.pool_attributes[(pool, attr)] = value


def _runtime() -> types.SimpleNamespace:
    return types.SimpleNamespace(
        CUDARuntimeError=CUDARuntimeError, getDeviceCount=lambda: 1,
        memGetInfo=memory.mem_get_info, deviceSynchronize=lambda: Device().synchronize(),
        runtimeGetVersion=lambda: 12090, driverGetVersion=lambda: 12090,
        deviceGetMemPool=lambda device: 1, cudaMemPoolAttrReleaseThreshold=4,
        memPoolSetAttribute=_set_pool_attribute, pool_attributes={},
        getDeviceProperties=lambda i: {"name": b"strict stand-in", "totalGlobalMem": SPACE.capacity,
                                       "multiProcessorCount": 132, "major": 9, "minor": 0})


RUNTIME = _runtime()


def namespace() -> types.SimpleNamespace:
    """The ``cupy.cuda`` attribute of the stand-in module."""
    mem_module = types.SimpleNamespace(OutOfMemoryError=memory.OutOfMemoryError, Memory=memory.Memory,
                                       MemoryPointer=memory.MemoryPointer)
    return types.SimpleNamespace(
        Memory=memory.Memory, MemoryPointer=memory.MemoryPointer, UnownedMemory=memory.UnownedMemory,
        MemoryPool=memory.MemoryPool, MemoryAsyncPool=memory.MemoryAsyncPool,
        PythonFunctionAllocator=memory.PythonFunctionAllocator, set_allocator=memory.set_allocator,
        get_allocator=memory.get_allocator, using_allocator=memory.using_allocator,
        memory=mem_module, runtime=RUNTIME, Stream=Stream, Event=Event, Device=Device, Graph=Graph,
        get_current_stream=get_current_stream, get_elapsed_time=get_elapsed_time,
        is_available=lambda: True)
