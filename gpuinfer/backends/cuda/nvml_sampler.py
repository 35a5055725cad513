"""An independent check of device memory: NVML polled from a thread while a CUDA run goes on.

NVML keeps no high-water mark, so a thread samples this process's used device memory about
every millisecond; the peak over the baseline taken when the session was ready is the run's
sampled peak.  Where NVML does not list this process (containers whose PIDs differ), it falls
back to the device's used memory and says so in ``name``.  Where NVML is unavailable (no
``nvidia-ml-py``, no driver, the strict stand-in), ``cudaMemGetInfo`` through the array module
is read instead: device-wide, but still independent of the pool's own count.

The thread always stops: ``end_run`` joins it, and ``close`` (also called when the session is
collected, and after a failed run) stops it and calls ``nvmlShutdown`` once.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Callable, Optional


class NvmlSampler:
    def __init__(self, cupy: Any, use_nvml: bool = True, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._peak = 0
        self._nvml: Any = None
        self._read: Callable[[], int]
        reason = None
        if use_nvml:
            try:
                import pynvml

                pynvml.nvmlInit()
                self._nvml = pynvml
                bus_id = cupy.cuda.Device().pci_bus_id
                self._handle = pynvml.nvmlDeviceGetHandleByPciBusId(
                    bus_id.encode() if isinstance(bus_id, str) else bus_id)
            except Exception as exc:  # no nvidia-ml-py, no driver, no permission
                reason = f"{type(exc).__name__}: {exc}"
                self._shutdown()
        if self._nvml is not None:
            per_process = self._process_used() is not None
            self._read = self._process_or_device_used
            self.name = "nvml (this process)" if per_process else \
                "nvml (device-wide: this process is not among NVML's, as in containers)"
        else:
            runtime = cupy.cuda.runtime
            self._read = lambda: (lambda free_total: free_total[1] - free_total[0])(runtime.memGetInfo())
            self.name = "cudaMemGetInfo (device-wide" + (f"; NVML unavailable: {reason})" if reason else ")")
        self.baseline = self._read()

    def _process_used(self) -> Optional[int]:
        nvml = self._nvml
        try:
            for proc in nvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
                if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                    return int(proc.usedGpuMemory)
        except nvml.NVMLError:
            return None
        return None

    def _process_or_device_used(self) -> int:
        used = self._process_used()
        return used if used is not None else int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._read())
            self._stop.wait(self.interval_s)

    def begin_run(self, held_bytes: int = 0) -> None:
        """``held_bytes`` is not used: device memory moves only with CUDA work, so the baseline
        taken when the session was ready holds (the tracemalloc sampler's does not, report/sampler.py)."""
        self._stop_thread()
        self._peak = self._read()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="gpuinfer-nvml", daemon=True)
        self._thread.start()

    def end_run(self) -> Optional[int]:
        if self._thread is None:
            return None
        self._stop_thread()
        self._peak = max(self._peak, self._read())
        return max(0, self._peak - self.baseline)

    def _stop_thread(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _shutdown(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None

    def close(self) -> None:
        self._stop_thread()
        self._shutdown()
