"""What watches a session's runs besides the pool's count: the independent peak sampler and the
Chrome-trace recorder, each started with the session and stopped (the sampler's thread ended, the
trace written) by ``close()``, ``end_profiling()`` or when the session is collected."""
from __future__ import annotations

import os
import time
import weakref
from typing import Any, Optional

from gpuinfer.errors import GpuinferError
from gpuinfer.report.chrome_trace import TraceRecorder


class RunObservers:
    """The sampler (``sample_memory=True``) and the trace recorder (``trace=``) of one session."""

    def __init__(self, owner: Any, backend: Any, sample_memory: bool, trace: Optional[str],
                 sess_options: Any, model: Any) -> None:
        self.sampler: Any = backend.make_sampler() if sample_memory else None
        if self.sampler is not None:
            weakref.finalize(owner, self.sampler.close)
        self.trace = _trace_recorder(trace, sess_options, model)
        self._finalizer = weakref.finalize(owner, self.trace.write) if self.trace is not None else None

    def end_trace(self) -> str:
        """Write the trace of every run so far and stop tracing; "" when tracing is off."""
        recorder, self.trace = self.trace, None
        if recorder is None:
            return ""
        self._finalizer.detach()
        return recorder.write()

    def close(self) -> str:
        if self.sampler is not None:
            self.sampler.close()
        return self.end_trace()


def _trace_recorder(trace: Optional[str], sess_options: Any, model: Any) -> Optional[TraceRecorder]:
    """The Chrome-trace recorder ``trace=`` (or onnxruntime's ``enable_profiling``) asks for."""
    if trace is None and getattr(sess_options, "enable_profiling", False):
        prefix = getattr(sess_options, "profile_file_prefix", "") or "onnxruntime_profile_"
        trace = f"{prefix}_{time.strftime('%Y-%m-%d_%H-%M-%S')}.json"
    if trace is None:
        return None
    folder = os.path.dirname(os.path.abspath(os.fspath(trace)))
    if not os.path.isdir(folder) or os.path.isdir(os.fspath(trace)):
        raise GpuinferError(f"trace={os.fspath(trace)!r}: give a file name in a folder that exists")
    label = f"gpuinfer {os.path.basename(os.fspath(model))}" if isinstance(model, (str, os.PathLike)) else "gpuinfer"
    return TraceRecorder(trace, label)
