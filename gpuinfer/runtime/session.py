"""``InferenceSession``: onnxruntime's API over gpuinfer's planner, pools and executor
(``InferenceSession("model.onnx", memory_mode="arena").run(None, {"input": x})``).

The session composes a graph (``graph/``), a device (``backends/``), a memory mode (``plan/modes.py``)
with its plan cache (``plan_cache.py``), a ceiling (``memory_ceiling.py``), observers (sampler and
trace, ``observers.py``) and a report.  Runs are serialised by a lock (kept buffers belong to the
session or its ``Workspace``); outputs are arrays the caller owns.  Options: README, "Python API".
"""
from __future__ import annotations

import threading
from typing import Any, Iterable, Optional, Sequence, Union

from gpuinfer.backends import make_backend, resolve_device
from gpuinfer.errors import GpuinferError
from gpuinfer.graph.build import load_graph
from gpuinfer.graph.passes import resolve as resolve_optimizations
from gpuinfer.graph.read import ModelSource
from gpuinfer.plan import MemoryPlan, get_mode
from gpuinfer.report.memory_report import MemoryReport
from gpuinfer.report.plan_report import PlanReport, plan_report
from gpuinfer.runtime.allocator import CountingAllocator
from gpuinfer.runtime.auto_mode import choose_mode
from gpuinfer.runtime.cuda_graph import make_graph_runner
from gpuinfer.runtime.describe import input_args, output_args
from gpuinfer.runtime.eager_run import eager_run, run_report
from gpuinfer.runtime.executor import Executor
from gpuinfer.runtime.feeds import NodeArg, check_feeds
from gpuinfer.runtime.memory_ceiling import MemoryCeiling
from gpuinfer.runtime.observers import RunObservers
from gpuinfer.runtime.outputs import check_keep, handed_out, held_names, to_host
from gpuinfer.runtime.plan_cache import PlanCache, shape_feeds
from gpuinfer.runtime.pool import BlockSet
from gpuinfer.runtime.run_threads import RunThreads

DEFAULT_PLAN_CACHE = 8  # input-shape signatures whose plans (and kept buffers) stay cached


class InferenceSession:
    """Load a model once; run it many times in the memory mode chosen here (``"auto"``: the
    fastest whose plan fits ``memory_limit_bytes``, runtime/auto_mode.py).  ``workspace``: a
    ``gpuinfer.Workspace`` whose device, count, arena block and lock this session shares."""

    def __init__(self, model: ModelSource, device: str = "auto", memory_mode: str = "per_tensor",
                 providers: Optional[Sequence] = None, sess_options: Any = None, *,
                 keep: Iterable[str] = (), sample_memory: bool = False,
                 memory_limit_bytes: Optional[int] = None, plan_cache_size: int = DEFAULT_PLAN_CACHE,
                 profile: bool = False, optimizations: Union[bool, Iterable[str]] = True,
                 intra_op_threads: Optional[int] = None, device_allocator: str = "pool",
                 trace: Optional[str] = None, cuda_graph: bool = False, workspace: Any = None) -> None:
        self._mode = None if memory_mode == "auto" else get_mode(memory_mode)
        if plan_cache_size < 1:
            raise GpuinferError("plan_cache_size must be at least 1")
        self.device = resolve_device(device, providers) if workspace is None else workspace.device
        if workspace is not None and device not in ("auto", workspace.device):
            raise GpuinferError(f"device={device!r}, but the workspace runs on {workspace.device!r}")
        self._backend = make_backend(self.device, device_allocator) if workspace is None else workspace.backend
        self._backend.mode = memory_mode  # named in device errors
        self._optimizations = resolve_optimizations(optimizations)
        self._graph, self._model = load_graph(model, self._optimizations)
        self._keep = frozenset(keep)
        check_keep(self._graph, self._keep, self._optimizations)
        self._executor = Executor(self._graph, self._backend)
        self._executor.profile = {} if profile else None
        self._workspace = workspace
        self._allocator = CountingAllocator(self._backend) if workspace is None else workspace.allocator
        self._memory_limit = memory_limit_bytes
        self._allocator.limit = memory_limit_bytes  # no run's allocations may pass it
        self._ceiling = MemoryCeiling(self._graph, self._backend, self._allocator, memory_limit_bytes, self._keep)
        self._plan_cache_size, self.auto_choice = plan_cache_size, ""
        self._graphs = make_graph_runner(self, cuda_graph, providers)  # CUDA graph replay, or None
        self._plans: Optional[PlanCache] = None if self._mode is None else self._new_cache(self._mode)
        self._lock = threading.Lock() if workspace is None else workspace.lock
        self._report: Optional[MemoryReport] = None
        self._last_run: Optional[tuple] = None  # what memory_report() needs, kept cheap per run
        self._device_hook = getattr(self._backend, "hook", None)  # on CUDA: sees every device byte
        self._observers = RunObservers(self, self._backend, sample_memory, trace, sess_options, model)
        self._threads = RunThreads(intra_op_threads, sess_options)  # BLAS and row-block threads per run
        if self._backend.kind == "cpu":
            self._threads.fit_to_graph(self._graph)  # calls BLAS?  may BLAS's count follow the load?
        if workspace is not None:
            workspace.join(self, model)

    @property
    def memory_mode(self) -> str:
        return self._mode.name if self._mode is not None else "auto"

    def get_inputs(self) -> list[NodeArg]:
        return input_args(self._graph)

    def get_outputs(self) -> list[NodeArg]:
        return output_args(self._graph)

    def get_providers(self) -> list[str]:
        return ["CUDAExecutionProvider"] if self._backend.kind == "cuda" else ["CPUExecutionProvider"]

    @property
    def graph(self):
        """The loaded graph (nodes in run order, folded constants, lifetimes)."""
        return self._graph

    def run(self, output_names: Optional[Sequence[str]], input_feed: dict, run_options: Any = None,
            output_device: str = "cpu") -> list:
        """Outputs named in ``output_names`` (all graph outputs when None): host numpy arrays, or on
        CUDA with ``output_device="cuda"`` CuPy arrays (never arena views: the next run keeps them)."""
        names = list(output_names) if output_names else list(self._graph.outputs)
        if output_device not in ("cpu", "cuda"):
            raise GpuinferError(f"output_device={output_device!r}: choose 'cpu' or 'cuda'")
        if output_device == "cuda" and self._backend.kind != "cuda":
            raise GpuinferError("output_device='cuda' needs a CUDA session (device='cuda'); this "
                                f"session runs on {self.device!r}, whose outputs are host arrays")
        feeds = check_feeds(self._graph, input_feed, self._backend.is_array)
        hold = self._check_output_names(names)
        with self._lock, self._threads(), self._backend.allocation_scope():
            replayed = self._graphs.run(feeds, names, hold, output_device) if self._graphs else None
            if replayed is not None:  # a CUDA graph ran it (runtime/cuda_graph.py)
                return replayed
            env, owned = self._run_locked(feeds, hold)
            outputs = [self._output(name, env, owned) for name in names]
        return outputs if output_device == "cuda" else [self._host(o) for o in outputs]

    def _check_output_names(self, names: list[str]) -> frozenset:
        """Intermediates to hold; "auto" before its first plan hands out none (as reduce)."""
        return held_names(self._graph, names, self._mode or get_mode("reduce"), self._keep, self._optimizations)

    def _host(self, value: Any) -> Any:
        return to_host(self._backend, value)

    def _output(self, name: str, env: dict, owned: set) -> Any:
        if name in env:
            return handed_out(env[name], name in owned)
        return self._executor.constants[id(self._graph)][name].copy()

    def _run_locked(self, feeds: dict, hold: frozenset):  # runtime/cuda_graph.py calls it too
        return eager_run(self, feeds, hold)

    def _plan_for(self, feeds: dict) -> tuple[MemoryPlan, BlockSet]:
        if self._plans is None:  # memory_mode="auto": the first signature picks the mode
            self._mode, self.auto_choice = choose_mode(self._graph, feeds, self._keep, self._backend.kind, self._ceiling)
            self._backend.mode, self._plans = self._mode.name, self._new_cache(self._mode)
        return self._plans.for_feeds(feeds)

    def _new_cache(self, mode) -> PlanCache:
        cache = PlanCache(self._graph, mode, self._keep, self._allocator, self._backend.kind, self._plan_cache_size,
                          self._workspace.blocks if self._workspace is not None else None)
        if self._graphs is not None:  # graphs leave with their plans
            cache.on_drop.append(self._graphs.forget)
        return cache

    def memory_report(self) -> MemoryReport:
        """The memory report of the last run (raises if nothing has run yet)."""
        if self._report is None:
            if self._last_run is None:
                raise GpuinferError("no run yet: call run() before memory_report()")
            self._report = run_report(self._graph, self._last_run, self._graphs.report_fields() if self._graphs else {})
        return self._report

    def plan_memory(self, input_shapes: dict, input_dtypes: Optional[dict] = None) -> PlanReport:
        """The plan's memory report for these input shapes, nothing run (the plan is cached: a run of
        this signature uses it and reports the same ``planned_bytes``; report/plan_report.py)."""
        feeds = shape_feeds(self._graph, input_shapes, input_dtypes)
        with self._lock:
            plan = self._plan_for(feeds)[0]
        return plan_report(self._graph, plan, {n: list(f.shape) for n, f in feeds.items()},
                           self._ceiling.partial(plan), self.auto_choice)

    def plan_for(self, input_feed: dict) -> MemoryPlan:
        """The memory plan this session uses for inputs shaped like ``input_feed``."""
        feeds = check_feeds(self._graph, input_feed, self._backend.is_array)
        with self._lock:
            return self._plan_for(feeds)[0]

    @property
    def largest_plan_bytes(self) -> int:
        """The planned bytes of this session's largest cached plan (a Workspace sums these)."""
        return max((plan.planned_bytes for plan, _ in self._plans.values()), default=0) if self._plans else 0

    def profile(self) -> dict[str, tuple[int, float]]:
        """Per op type: (calls, seconds) summed over runs so far (needs ``profile=True``)."""
        if self._executor.profile is None:
            raise GpuinferError("profiling is off: create the session with profile=True")
        return {k: (v[0], v[1]) for k, v in self._executor.profile.items()}

    def end_profiling(self) -> str:
        """Write the Chrome trace of the runs so far (``trace=``), stop tracing; its path, or "" (off)."""
        with self._lock:
            return self._observers.end_trace()

    def close(self) -> None:
        """Stop this session's sampler now and write its trace, if any (both also happen at collection)."""
        with self._lock:
            self._observers.close()

    @property
    def _sampler(self) -> Any:  # read by runtime/cuda_graph.py
        return self._observers.sampler

    @property
    def held_bytes(self) -> int:
        """Bytes the pool keeps between runs (kept buffers of the cached plans)."""
        return self._allocator.in_use
