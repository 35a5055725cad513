"""An independent check of device memory: NVML polled from a thread while a CUDA run goes on.

NVML keeps no high-water mark, so a thread samples this process's used device memory (or the
device's, where per-process figures are unavailable, as in some containers) about every
millisecond; the peak over the baseline taken when the session was ready is the run's sampled
peak.  Degrades to "unavailable: <reason>" where NVML is not.
"""
from __future__ import annotations

import os
import threading
from typing import Optional


class NvmlSampler:
    name = "nvml"

    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self.reason: Optional[str] = None
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._peak = 0
        try:
            import cupy
            import pynvml

            pynvml.nvmlInit()
            bus_id = cupy.cuda.Device().pci_bus_id
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByPciBusId(bus_id.encode() if isinstance(bus_id, str) else bus_id)
            self.baseline = self._read()
        except Exception as exc:  # no nvidia-ml-py, no driver, no permission
            self.reason = f"unavailable: {type(exc).__name__}: {exc}"
            self.name = "nvml " + self.reason
            self.baseline = 0

    def _read(self) -> int:
        nvml = self._nvml
        try:
            for proc in nvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
                if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                    return int(proc.usedGpuMemory)
        except nvml.NVMLError:
            pass
        return int(nvml.nvmlDeviceGetMemoryInfo(self._handle).used)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._read())
            self._stop.wait(self.interval_s)

    def begin_run(self) -> None:
        if self.reason:
            return
        self._peak = self._read()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="gpuinfer-nvml", daemon=True)
        self._thread.start()

    def end_run(self) -> Optional[int]:
        if self.reason or self._thread is None:
            return None
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._peak = max(self._peak, self._read())
        return max(0, self._peak - self.baseline)

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
