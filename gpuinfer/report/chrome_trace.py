"""A session's runs as a Chrome trace: the JSON that chrome://tracing and ui.perfetto.dev open.

Format (the Trace Event Format): ``{"traceEvents": [...], "displayTimeUnit": "ms"}`` where every
event has ``name``, ``ph`` (phase), ``ts`` (microseconds), ``pid`` and ``tid``.  Written here:

- one ``"X"`` (complete) event per run, category ``"run"``, spanning the whole run;
- one ``"X"`` event per top-level node run, named after the node, its op type as the category
  and in ``args`` (with the step and the bytes the pool held at the step's busiest moment);
- a ``"C"`` (counter) track ``"live bytes"``: the pool's counted bytes, one sample per step (that
  step's peak), one at the start of each run (what earlier runs left held) and one at its end;
  its largest sample is the run's counted ``peak_bytes`` on the CPU;
- ``"M"`` (metadata) events naming the process and the thread.

Times come from ``time.perf_counter`` and count from the recorder's creation; the device is
synchronised before each step's end is read, so on CUDA a span is the op's real time.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Optional

PID = 1  # one process track per file: the session
RUN_TID = 1  # the run loop's thread track
COUNTER = "live bytes"


class TraceRecorder:
    """Collects a session's runs as trace events; ``write`` saves them all (again) to ``path``."""

    def __init__(self, path: str, label: str = "gpuinfer"):
        self.path = os.fspath(path)
        self.origin = time.perf_counter()
        self.runs = 0
        self.events: list[dict] = [
            {"name": "process_name", "ph": "M", "ts": 0, "pid": PID, "tid": RUN_TID, "args": {"name": label}},
            {"name": "thread_name", "ph": "M", "ts": 0, "pid": PID, "tid": RUN_TID, "args": {"name": "run loop"}},
        ]

    def _us(self, seconds: float) -> float:
        return round((seconds - self.origin) * 1e6, 3)

    def add_run(self, started: float, ended: float, steps: list, stamps: list, held_before: int,
                held_after: int, args: Optional[dict] = None) -> None:
        """One run: ``steps`` are the executor's (node, live bytes) records, ``stamps`` its
        (start, end) ``perf_counter`` pairs, one per step; ``held_*`` the pool's bytes around it."""
        self.runs += 1
        run_args = {"run": self.runs, **(args or {})}
        events = self.events
        events.append({"name": f"run {self.runs}", "cat": "run", "ph": "X", "ts": self._us(started),
                       "dur": _dur(started, ended), "pid": PID, "tid": RUN_TID, "args": run_args})
        events.append(_counter(self._us(started), held_before))
        for (node, live), (began, done) in zip(steps, stamps):
            ts = self._us(began)
            events.append({"name": node.name, "cat": node.op_type, "ph": "X", "ts": ts,
                           "dur": _dur(began, done), "pid": PID, "tid": RUN_TID,
                           "args": {"op_type": node.op_type, "step": node.step, "live_bytes": live}})
            events.append(_counter(ts, live))
        events.append(_counter(self._us(ended), held_after))

    def document(self) -> dict[str, Any]:
        return {"traceEvents": self.events, "displayTimeUnit": "ms",
                "otherData": {"producer": "gpuinfer", "runs": self.runs}}

    def write(self) -> str:
        """Write every run recorded so far to ``path`` (replacing it); returns the path."""
        with open(self.path, "w") as f:
            json.dump(self.document(), f, separators=(",", ":"))
            f.write("\n")
        return self.path


def _dur(began: float, done: float) -> float:
    return round(max(done - began, 0.0) * 1e6, 3)


def _counter(ts: float, nbytes: int) -> dict:
    return {"name": COUNTER, "ph": "C", "ts": ts, "pid": PID, "tid": RUN_TID, "args": {"bytes": int(nbytes)}}
