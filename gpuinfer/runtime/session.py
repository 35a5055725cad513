"""``InferenceSession``: onnxruntime's API over gpuinfer's planner, pools and executor.

Switching from onnxruntime is a one-line change::

    sess = gpuinfer.InferenceSession("model.onnx", memory_mode="arena")
    outputs = sess.run(None, {"input": x})
    print(sess.memory_report().peak_bytes)

Concurrency: a session may be shared by threads.  Plans (per input-shape signature) and the
kept buffers of ``per_tensor``, ``reuse`` and ``arena`` belong to the session, so runs are
serialised by a lock: two runs never write the same buffer at once.  Outputs are fresh arrays
owned by the caller.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import weakref
import time
from collections import OrderedDict
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from gpuinfer.backends import make_backend, resolve_device
from gpuinfer.errors import DataRemovedError, GpuinferError, InputError, MemoryLimitError
from gpuinfer.graph.build import load_graph
from gpuinfer.graph.passes import removed_value_advice, resolve as resolve_optimizations
from gpuinfer.graph.read import ModelSource
from gpuinfer.graph.specialize import signature_of, static_value_types
from gpuinfer.plan import MODES, MemoryPlan, make_plan
from gpuinfer.report.chrome_trace import TraceRecorder
from gpuinfer.report.memory_report import MemoryReport, StepRecord
from gpuinfer.runtime.actual_bound import run_lower_bound
from gpuinfer.runtime.allocator import CountingAllocator
from gpuinfer.runtime.cuda_graph import make_graph_runner
from gpuinfer.runtime.deferred import verify_deferred
from gpuinfer.runtime.executor import Executor, subgraphs_of
from gpuinfer.runtime.feeds import NodeArg, check_feeds, type_string
from gpuinfer.runtime.pool import BlockSet, RunPool, nbytes_of
from gpuinfer.runtime.run_threads import RunThreads
from gpuinfer.values import SCRATCH, VALUE, OptionalValue, TensorSequence, value_key

DEFAULT_PLAN_CACHE = 8  # input-shape signatures whose plans (and kept buffers) stay cached
# Reading the device's available memory costs microseconds (/proc/meminfo: ~7 us, a tenth of a small
# model's run), so a reading is reused this long unless the run would take half of it.
AVAILABLE_MAX_AGE_S = 0.5


class InferenceSession:
    """Load a model once; run it many times with the memory mode chosen here.

    ``memory_mode``: ``per_tensor`` (default; each tensor its own kept buffer), ``reduce`` (allocate
    on production, free after last use), ``reuse`` (same-shape tensors share buffers), ``arena`` (one
    planned block).  ``keep`` names intermediates that must stay readable after a run in modes that
    free them.  ``sample_memory`` turns on the independent peak sampler (tracemalloc on the CPU),
    which slows Python down; ``memory_limit_bytes`` makes a run that would need more fail before
    it starts.  ``plan_cache_size`` bounds how many input-shape signatures keep a plan.
    ``optimizations``: ``True`` runs every graph pass at load (identity removal, BatchNorm folding,
    activation fusion, dead-node removal), ``False`` none, or a list of pass names.
    ``intra_op_threads`` (or onnxruntime's ``SessionOptions.intra_op_num_threads``) is the threads a
    run uses: BLAS's, and gpuinfer's own for the big passes BLAS does not cover (elementwise,
    pooling, depthwise, Resize: row blocks, no memory added).  By default gpuinfer's own follow the
    load (one per core free when a run starts: a busy machine does not stall a run on threads
    waiting for a core) and BLAS keeps its own count, as results must not change with the load
    (``runtime/run_threads.py``).
    ``device_allocator`` (CUDA only) is the backing store of the run's CuPy allocator hook:
    ``"pool"`` (CuPy's MemoryPool),
    ``"async"`` (stream-ordered, returns memory) or ``"cuda_malloc"`` (plain cudaMalloc/cudaFree).

    Memory ceiling: a run is refused (``MemoryLimitError``, naming the modes that would fit and
    their planned figures) when the counted peak it will reach is over ``memory_limit_bytes``, or,
    without a limit, when what it must add is over what the device can give now (available host
    memory, free device memory).  Under a limit the pool also refuses any allocation past it, so
    tensors a plan could not foresee cannot take a run over it, and identical runs get the same
    answer.

    ``trace="run.json"`` records every run as a Chrome trace (chrome://tracing, ui.perfetto.dev):
    one span per node, a counter of the pool's live bytes per step.  The file is written by
    ``end_profiling()`` (which returns its path, as onnxruntime's does), ``close()``, or when the
    session is collected.  onnxruntime's ``SessionOptions.enable_profiling`` (passed as
    ``sess_options``) turns it on too, named from ``profile_file_prefix``.

    ``cuda_graph=True`` (or onnxruntime's ``("CUDAExecutionProvider", {"enable_cuda_graph": "1"})``)
    captures a run per input shape into a CUDA graph and replays it (``arena``/``per_tensor``; see
    runtime/cuda_graph.py for what falls back to eager runs and why).
    """

    def __init__(self, model: ModelSource, device: str = "auto", memory_mode: str = "per_tensor",
                 providers: Optional[Sequence] = None, sess_options: Any = None, *,
                 keep: Iterable[str] = (), sample_memory: bool = False,
                 memory_limit_bytes: Optional[int] = None, plan_cache_size: int = DEFAULT_PLAN_CACHE,
                 profile: bool = False, optimizations: Union[bool, Iterable[str]] = True,
                 intra_op_threads: Optional[int] = None, device_allocator: str = "pool",
                 trace: Optional[str] = None, cuda_graph: bool = False) -> None:
        if memory_mode not in MODES:
            raise GpuinferError(f"unknown memory_mode {memory_mode!r}; choose one of {sorted(MODES)}")
        if plan_cache_size < 1:
            raise GpuinferError("plan_cache_size must be at least 1")
        self.memory_mode = memory_mode
        self.device = resolve_device(device, providers)
        self._backend = make_backend(self.device, device_allocator)
        self._backend.mode = memory_mode  # named in device errors
        self._optimizations = resolve_optimizations(optimizations)
        self._graph, self._model = load_graph(model, self._optimizations)
        self._keep = frozenset(keep)
        unknown = sorted(k for k in self._keep if k not in self._graph.values and k not in self._graph.constants)
        if unknown:
            raise GpuinferError(_unknown_keep(self._graph, unknown, self._optimizations))
        self._executor = Executor(self._graph, self._backend)
        if profile:
            self._executor.profile = {}
        self._allocator = CountingAllocator(self._backend)
        self._plans: OrderedDict[tuple, tuple[MemoryPlan, BlockSet]] = OrderedDict()
        self._plan_cache_size = plan_cache_size
        self._shared_blocks = BlockSet(self._allocator, []) if memory_mode == "arena" else None
        self._memory_limit = memory_limit_bytes
        self._allocator.limit = memory_limit_bytes  # no run's allocations may pass it
        self._available_cache: Optional[tuple] = None  # (available bytes, when read)
        self._lock = threading.Lock()
        self._report: Optional[MemoryReport] = None
        self._last_run: Optional[tuple] = None  # what memory_report() needs, kept cheap per run
        self._device_hook = getattr(self._backend, "hook", None)  # on CUDA: sees every device byte
        self._sampler: Any = self._backend.make_sampler() if sample_memory else None
        if self._sampler is not None:
            weakref.finalize(self, self._sampler.close)
        self._threads = RunThreads(intra_op_threads, sess_options)  # BLAS and row-block threads per run
        self._trace = _trace_recorder(trace, sess_options, model)
        self._trace_finalizer = weakref.finalize(self, self._trace.write) if self._trace is not None else None
        self._graphs = make_graph_runner(self, cuda_graph, providers)  # CUDA graph replay, or None

    # --- onnxruntime-shaped description -------------------------------------------------------
    def get_inputs(self) -> list[NodeArg]:
        g = self._graph
        return [NodeArg(n, _shape_list(g.input_dims.get(n)), type_string(g.input_dtypes.get(n)))
                for n in g.inputs]

    def get_outputs(self) -> list[NodeArg]:
        outs = []
        for name in self._graph.outputs:
            value = self._graph.values.get(name)
            shape = value.shape if value else None
            dtype = value.dtype if value else self._graph.constants[name].dtype
            outs.append(NodeArg(name, _shape_list(shape), type_string(dtype)))
        return outs

    def get_providers(self) -> list[str]:
        return ["CUDAExecutionProvider"] if self._backend.kind == "cuda" else ["CPUExecutionProvider"]

    @property
    def graph(self):
        """The loaded graph (nodes in run order, folded constants, lifetimes)."""
        return self._graph

    # --- running --------------------------------------------------------------------------------
    def run(self, output_names: Optional[Sequence[str]], input_feed: dict, run_options: Any = None,
            output_device: str = "cpu") -> list:
        """Outputs named in ``output_names`` (all graph outputs when None).

        Host numpy arrays by default; on CUDA ``output_device="cuda"`` returns CuPy arrays with no
        copy to the host (outputs are never arena views, so the next run cannot overwrite them).
        """
        names = list(output_names) if output_names else list(self._graph.outputs)
        hold = self._check_output_names(names)
        if output_device not in ("cpu", "cuda"):
            raise GpuinferError(f"output_device={output_device!r}: choose 'cpu' or 'cuda'")
        if output_device == "cuda" and self._backend.kind != "cuda":
            raise GpuinferError("output_device='cuda' needs a CUDA session (device='cuda'); this "
                                f"session runs on {self.device!r}, whose outputs are host arrays")
        feeds = check_feeds(self._graph, input_feed, self._backend.is_array)
        with self._lock, self._threads(), self._device_scope():
            replayed = self._graphs.run(feeds, names, hold, output_device) if self._graphs else None
            if replayed is not None:  # a CUDA graph ran it (runtime/cuda_graph.py)
                return replayed
            env, owned = self._run_locked(feeds, hold)
            outputs = [self._output(name, env, owned) for name in names]
        if output_device == "cuda":
            return outputs
        return [self._host(o) for o in outputs]

    def _device_scope(self):
        """On CUDA: the run's allocations go through the counting hook; device failures (out of
        memory, CUDA errors) become ``DeviceMemoryError`` / ``DeviceError``."""
        return self._backend.allocation_scope()

    def _host(self, value: Any) -> Any:
        """A run result as the caller gets it: numpy arrays, lists for sequences, None for empty optionals."""
        if isinstance(value, OptionalValue):
            return None if value.value is None else self._host(value.value)
        if isinstance(value, TensorSequence):
            return [self._backend.to_host(v) for v in value]
        return self._backend.to_host(value)

    def _run_locked(self, feeds: dict, hold: frozenset):
        plan, blocks = self._plan_for(feeds)
        ceiling = self._check_limit(plan, blocks)
        # reduce allocates every tensor on first need, subgraph ones included: no trace plans there
        pool = RunPool(self._allocator, plan, blocks, None if self.memory_mode == "reduce" else plan.traces)
        steps: list[tuple] = []  # (node, live bytes); turned into a timeline only when asked for
        stamps: Optional[list] = [] if self._trace is not None else None  # step times, when tracing

        if self._sampler:
            self._sampler.begin_run()
        self._allocator.start_run()
        held_before = self._allocator.in_use
        if self._device_hook is not None:
            self._device_hook.start_run()
        started = time.perf_counter()
        try:
            # feeds go up inside the hook's scope, so the run's peak counts them
            feeds = {k: self._to_device(v) for k, v in feeds.items()}
            env = self._execute(feeds, pool, hold | self._keep, steps, stamps)
            verify_deferred(pool.deferred, self._backend)  # device-side index checks: one read
            self._backend.synchronize()
        finally:
            seconds = time.perf_counter() - started
            sampled = self._sampler.end_run() if self._sampler else None  # the thread always stops
        returned = set(self._graph.outputs) | self._keep | hold
        owned = {name for name in returned if value_key(name) in pool.dynamic}  # fresh arrays, not plan views
        for name in returned:
            pool.hand_over(value_key(name))
        traced = pool.nested is not None and pool.nested.changed  # a body's block to place (or drop)
        first_peak = plan.first_run_peak_bytes
        if ((pool.unforeseen and not plan.from_run) or traced) and self.memory_mode != "reduce":
            first_peak = self._replan_from_run(feeds, plan, pool)
        counter = self._device_hook or self._allocator  # on CUDA the hook sees every device allocation
        fields = dict(
            mode=self.memory_mode, device=self.device, peak_bytes=counter.peak,
            planned_bytes=plan.planned_bytes, sampled_peak_bytes=sampled,
            sampler=self._sampler.name if self._sampler else "off (sample_memory=False)",
            allocations=counter.allocations, alloc_seconds=counter.alloc_seconds,
            dynamic_bytes=pool.dynamic_bytes, held_bytes_after_run=self._allocator.in_use,
            run_seconds=seconds, inplace_count=len(plan.inplace), first_run_traced=first_peak is not None,
            first_run_peak_bytes=first_peak, memory_ceiling=ceiling[0], memory_ceiling_bytes=ceiling[1])
        self._last_run = (fields, plan, pool.seen, pool.inner_peaks, steps)
        if self._trace is not None:
            self._trace.add_run(started, started + seconds, steps, stamps, held_before, self._allocator.in_use,
                                {"mode": self.memory_mode, "device": self.device, "peak_bytes": counter.peak})
        self._report = None
        return env, owned

    def _plan_for(self, feeds: dict) -> tuple[MemoryPlan, BlockSet]:
        signature = signature_of(feeds, self._graph)
        if signature in self._plans:
            self._plans.move_to_end(signature)
            return self._plans[signature]
        tensors = [n for n in self._graph.inputs if hasattr(feeds[n], "shape")]
        shapes = {n: tuple(feeds[n].shape) for n in tensors}
        dtypes = {n: feeds[n].dtype for n in tensors}
        types = static_value_types(self._graph, shapes, dtypes)
        self._plans[signature] = self._blocks_for(make_plan(self._graph, types, self.memory_mode, self._keep,
                                                               device_kind=self._backend.kind))
        while len(self._plans) > self._plan_cache_size:
            _, (old_plan, old_blocks) = self._plans.popitem(last=False)
            self._drop(old_plan, old_blocks)
        return self._plans[signature]

    def _replan_from_run(self, feeds: dict, plan: MemoryPlan, pool: RunPool) -> int:
        """Plan again with the shapes this run revealed, so later runs of this signature place them.

        Shape inference cannot see through every data-dependent shape computation; a first run
        can.  Tensors whose size still changes from run to run keep taking the reduce path.  The
        blocks of traced control-flow steps (runtime/nested.py) are placed as their steps' scratch.
        Returns the counted peak of the first run of this signature (the report's first-run figure).
        """
        types = dict(plan.value_types)
        scratch: dict[int, list] = {}
        for key, (shape, dtype) in pool.seen.items():
            if key.kind == VALUE and key.name in self._graph.values:
                types[key.name] = (shape, dtype)
            elif key.kind == SCRATCH:
                scratch.setdefault(key.step, []).append((key.index, shape, dtype))
        seen_scratch = {step: [(s, d) for _, s, d in sorted(items, key=lambda t: t[0])]
                        for step, items in scratch.items()}
        new = make_plan(self._graph, types, self.memory_mode, self._keep, seen_scratch, plan.traces,
                        device_kind=self._backend.kind)
        first = plan.first_run_peak_bytes
        if first is None:
            first = (self._device_hook or self._allocator).peak
        new.first_run_peak_bytes = first
        signature = signature_of(feeds, self._graph)
        old_plan, old_blocks = self._plans.pop(signature)
        limit = self._memory_limit
        if limit is not None and self._run_need(new, self._shared_blocks, old_blocks) > limit:
            # The finished plan would not fit the limit this run kept to: later runs repeat this
            # one instead (the same tensors on the dynamic path, bodies untraced), so an identical
            # run under the same limit gets the same answer.
            old_blocks.forget(old_plan)
            self._plans[signature] = (dataclasses.replace(old_plan, from_run=True, traces=dict.fromkeys(plan.traces),
                                                          first_run_peak_bytes=first), old_blocks)
            return first
        self._drop(old_plan, old_blocks)
        self._plans[signature] = self._blocks_for(new)
        return first

    def _drop(self, plan: MemoryPlan, blocks: BlockSet) -> None:
        """A plan leaves the cache: its own blocks go back; shared arena blocks stay."""
        blocks.forget(plan)
        if self._graphs is not None:
            self._graphs.forget(plan)
        if blocks is not self._shared_blocks:
            blocks.release_all()

    def _blocks_for(self, plan: MemoryPlan) -> tuple[MemoryPlan, BlockSet]:
        if self._shared_blocks is not None:
            self._shared_blocks.grow(plan.blocks)
            return plan, self._shared_blocks
        return plan, BlockSet(self._allocator, plan.blocks)

    def _check_limit(self, plan: MemoryPlan, blocks: BlockSet) -> tuple[str, Optional[int]]:
        """Refuse, before allocating anything, a run that cannot fit; returns (ceiling, its bytes).

        The figure checked is the counted peak the run will reach (``_run_need``: the same figure
        ``peak_bytes`` reports once it has run).  With ``memory_limit_bytes`` that is the ceiling;
        without, the device's available memory now (MemAvailable on the host, free memory on CUDA)
        plus what this session already holds."""
        need = self._run_need(plan, blocks)
        limit = self._memory_limit
        if limit is not None:
            if need > limit:
                raise MemoryLimitError(
                    f"a run in memory_mode={self.memory_mode!r} needs {need} bytes (its counted peak; "
                    f"{plan.planned_bytes} of them planned), over memory_limit_bytes ({limit} bytes); "
                    f"{self._limit_advice(plan, limit)}")
            return "memory_limit_bytes", limit
        held = self._allocator.in_use
        available = self._available(need - held)
        if available is None:
            return "none", None
        on_device = self._device_hook is not None
        what = "available device memory" if on_device else "available host memory"
        # the CUDA device counts what its hook holds (this session's buffers) as available to it;
        # the host's MemAvailable does not: add back what the session holds
        ceiling = available if on_device else available + held
        if need > ceiling:
            raise MemoryLimitError(
                f"a run in memory_mode={self.memory_mode!r} needs {need} bytes ({max(need - held, 0)} more "
                f"than this session holds), over the {what} ({available} bytes now); "
                f"{self._limit_advice(plan, ceiling)}")
        return what, ceiling

    def _run_need(self, plan: MemoryPlan, blocks: Optional[BlockSet], replacing: Optional[BlockSet] = None) -> int:
        """The counted peak a run of ``plan`` reaches: what the pool keeps for other signatures'
        plans, ``plan``'s blocks at the sizes they will have (the arena's shared block may be kept
        larger for another signature), and the busiest step of what the plan leaves unplaced
        (outputs outside the arena, tensors it could not foresee).  ``blocks``: the plan's blocks
        (None: fresh ones); ``replacing``: blocks released when ``plan`` takes over."""
        others = self._allocator.in_use
        sizes: list[int] = []
        if blocks is not None:
            others -= blocks.held_bytes
            sizes = blocks.sizes
        if replacing is not None and replacing is not blocks:
            others -= replacing.held_bytes
        if blocks is not self._shared_blocks or blocks is None:  # the plan's own blocks, at its sizes
            return others + plan.need_bytes
        own = 0
        for i in range(max(len(sizes), len(plan.blocks))):
            mine = plan.blocks[i] if i < len(plan.blocks) else 0
            kept = sizes[i] if i < len(sizes) else 0
            if mine or blocks.raw[i] is not None:
                own += max(mine, kept)
        return others + own + plan.need_bytes - plan.planned_bytes

    def _available(self, adds: int) -> Optional[int]:
        """The device's available memory, read again when older than ``AVAILABLE_MAX_AGE_S`` or
        when the run would add more than half of the last reading."""
        now = time.monotonic()
        cached = self._available_cache
        if (cached is None or now - cached[1] > AVAILABLE_MAX_AGE_S
                or (cached[0] is not None and 2 * adds > cached[0])):
            cached = self._available_cache = (self._backend.available_memory(), now)
        return cached[0]

    def _limit_advice(self, plan: MemoryPlan, ceiling: int) -> str:
        """Which memory modes would fit under ``ceiling`` for this signature, with their planned needs.

        Where the plans cannot see every tensor ahead (data-dependent shapes, control-flow bodies)
        their figures are lower bounds, and the advice says so."""
        needs = {}
        for mode in MODES:
            other = plan if mode == self.memory_mode else make_plan(self._graph, plan.value_types, mode, self._keep,
                                                                                     device_kind=self._backend.kind)
            needs[mode] = other.need_bytes
        listed = ", ".join(f"{mode} {need}" for need, mode in sorted((n, m) for m, n in needs.items()))
        partial = bool(plan.dynamic) or any(True for _ in subgraphs_of(self._graph))
        at_least, fit = ("at least ", "may fit") if partial else ("", "would fit")
        listed = f"each mode's plan for these shapes{' (without data-dependent tensors)' if partial else ''}: {listed}"
        # arena first where it fits (as lean as any, and fast), else the leanest that fits
        fitting = sorted((mode != "arena", need, mode) for mode, need in needs.items()
                         if need <= ceiling and mode != self.memory_mode)
        if fitting:
            _, need, mode = fitting[0]
            return f"memory_mode={mode!r} {fit}: its plan needs {at_least}{need} bytes ({listed})"
        need, mode = min((n, m) for m, n in needs.items())
        return f"no mode fits: the least any needs is {at_least}{need} bytes, memory_mode={mode!r} ({listed})"

    def _execute(self, feeds: dict, pool: RunPool, hold: frozenset, steps: list, stamps: Optional[list]) -> dict:
        """The executor's run.  One that fails gives back what it held on the dynamic path (the
        pool's count stays true for the next run); one the allocator stopped at
        ``memory_limit_bytes`` (tensors its plan could not foresee took it over) says where."""
        try:
            return self._executor.run(feeds, pool, hold, steps, stamps)
        except BaseException as exc:
            for key in list(pool.dynamic):
                pool.release(key)
            if pool.nested is not None:
                pool.nested.abandon()
            if not isinstance(exc, MemoryLimitError) or self._memory_limit is None:
                raise
            nodes = self._graph.nodes
            where = nodes[len(steps)].describe() if len(steps) < len(nodes) else "the end of the run"
            raise MemoryLimitError(
                f"a run in memory_mode={self.memory_mode!r} went over memory_limit_bytes "
                f"({self._memory_limit} bytes) at {where} ({exc}): its plan ({pool.plan.need_bytes} bytes) left "
                f"{len(pool.plan.dynamic)} value(s) of data-dependent shape to the run; "
                f"{self._limit_advice(pool.plan, self._memory_limit)}") from None

    def _check_output_names(self, names: list[str]) -> frozenset:
        """Intermediates to hold past their last use; raises for ones this mode frees."""
        hold = set()
        for name in names:
            if name in self._graph.outputs or name in self._keep:
                continue
            if name in self._graph.values or name in self._graph.constants:
                if self.memory_mode == "per_tensor" or name in self._graph.constants:
                    hold.add(name)
                    continue
                raise DataRemovedError(
                    f"{name!r} is an intermediate value, freed after its last use in "
                    f"memory_mode={self.memory_mode!r}; list it in InferenceSession(..., keep=[{name!r}]) "
                    f"or use memory_mode='per_tensor' to read it")
            removed = removed_value_advice(self._graph, name, self._optimizations)
            raise InputError(removed or f"unknown output name {name!r}; the model's outputs are {self._graph.outputs}")
        return frozenset(hold)

    def _output(self, name: str, env: dict, owned: set) -> Any:
        """What the caller gets for ``name``: the array itself if the run made it fresh, else a copy
        (arena views and kept buffers are overwritten by the next run; inputs are the caller's)."""
        if name in env:
            value = env[name]
            if name in owned or not hasattr(value, "copy") or isinstance(value, TensorSequence):
                return value
            return value.copy()
        return self._executor.constants[id(self._graph)][name].copy()

    def _to_device(self, value: Any) -> Any:
        """One upload per feed tensor (sequence and optional feeds element by element)."""
        if isinstance(value, TensorSequence):
            return TensorSequence(self._to_device(v) for v in value)
        if isinstance(value, OptionalValue):
            return OptionalValue(None if value.value is None else self._to_device(value.value))
        if self._backend.is_array(value):
            return value
        return self._backend.to_device(value)

    # --- measurement -----------------------------------------------------------------------------
    def memory_report(self) -> MemoryReport:
        """The memory report of the last run (raises if nothing has run yet)."""
        if self._report is None:
            if self._last_run is None:
                raise GpuinferError("no run yet: call run() before memory_report()")
            fields, plan, seen, inner_peaks, steps = self._last_run
            sizes = {key: nbytes_of(shape, dtype) for key, (shape, dtype) in seen.items()}
            self._report = MemoryReport(
                **fields, **(self._graphs.report_fields() if self._graphs else {}), lower_bound_bytes=run_lower_bound(self._graph, plan, sizes, inner_peaks),
                timeline=[StepRecord(node.step, node.op_type, node.name, live) for node, live in steps])
        return self._report

    def plan_for(self, input_feed: dict) -> MemoryPlan:
        """The memory plan this session uses for inputs shaped like ``input_feed``."""
        feeds = check_feeds(self._graph, input_feed, self._backend.is_array)
        with self._lock:
            return self._plan_for(feeds)[0]

    def profile(self) -> dict[str, tuple[int, float]]:
        """Per op type: (calls, seconds) summed over runs so far (needs ``profile=True``)."""
        if self._executor.profile is None:
            raise GpuinferError("profiling is off: create the session with profile=True")
        return {k: (v[0], v[1]) for k, v in self._executor.profile.items()}

    def end_profiling(self) -> str:
        """Write the Chrome trace of every run so far (``trace=``) and stop tracing; returns the
        file's path, or "" when tracing is off (onnxruntime's ``end_profiling``)."""
        with self._lock:
            recorder, self._trace = self._trace, None
        if recorder is None:
            return ""
        self._trace_finalizer.detach()
        return recorder.write()

    def close(self) -> None:
        """Stop this session's sampler now and write its trace, if any (both also happen when the
        session is collected)."""
        if self._sampler is not None:
            self._sampler.close()
        self.end_profiling()

    @property
    def held_bytes(self) -> int:
        """Bytes the pool keeps between runs (kept buffers of the cached plans)."""
        return self._allocator.in_use


def _unknown_keep(graph, names: list[str], enabled: list[str]) -> str:
    """Why ``keep=`` cannot hold ``names``: a graph pass removed them (and how to keep it), or the
    model never had them."""
    lines = [removed_value_advice(graph, name, enabled) for name in names if name in graph.removed_by]
    missing = [name for name in names if name not in graph.removed_by]
    if missing:
        lines.append(f"keep= names values the model does not have: {missing}")
    return "; ".join(lines)


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


def _shape_list(shape: Optional[tuple]) -> list:
    return [] if shape is None else list(shape)
