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

import contextlib
import threading
import weakref
import time
from collections import OrderedDict
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from gpuinfer.backends import make_backend, resolve_device
from gpuinfer.errors import DataRemovedError, GpuinferError, InputError, MemoryLimitError
from gpuinfer.graph.build import load_graph
from gpuinfer.graph.passes import resolve as resolve_optimizations
from gpuinfer.graph.read import ModelSource
from gpuinfer.graph.specialize import signature_of, static_value_types
from gpuinfer.ops.context import OptionalValue, TensorSequence
from gpuinfer.plan import MODES, MemoryPlan, make_plan
from gpuinfer.report.memory_report import MemoryReport, StepRecord
from gpuinfer.runtime.actual_bound import run_lower_bound
from gpuinfer.runtime.allocator import CountingAllocator
from gpuinfer.runtime.executor import Executor
from gpuinfer.runtime.feeds import NodeArg, check_feeds, type_string
from gpuinfer.runtime.pool import BlockSet, RunPool, nbytes_of

DEFAULT_PLAN_CACHE = 8  # input-shape signatures whose plans (and kept buffers) stay cached


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
    ``intra_op_threads`` caps the BLAS threads used during ``run`` (needs ``threadpoolctl``); the
    default leaves BLAS at its own default, one thread per core.  ``device_allocator`` (CUDA only)
    is the backing store of the run's CuPy allocator hook: ``"pool"`` (CuPy's MemoryPool),
    ``"async"`` (stream-ordered, returns memory) or ``"cuda_malloc"`` (plain cudaMalloc/cudaFree).
    """

    def __init__(self, model: ModelSource, device: str = "auto", memory_mode: str = "per_tensor",
                 providers: Optional[Sequence] = None, sess_options: Any = None, *,
                 keep: Iterable[str] = (), sample_memory: bool = False,
                 memory_limit_bytes: Optional[int] = None, plan_cache_size: int = DEFAULT_PLAN_CACHE,
                 profile: bool = False, optimizations: Union[bool, Iterable[str]] = True,
                 intra_op_threads: Optional[int] = None, device_allocator: str = "pool") -> None:
        if memory_mode not in MODES:
            raise GpuinferError(f"unknown memory_mode {memory_mode!r}; choose one of {sorted(MODES)}")
        if plan_cache_size < 1:
            raise GpuinferError("plan_cache_size must be at least 1")
        self.memory_mode = memory_mode
        self.device = resolve_device(device, providers)
        self._backend = make_backend(self.device, device_allocator)
        self._backend.mode = memory_mode  # named in device errors
        self._graph, self._model = load_graph(model, resolve_optimizations(optimizations))
        self._keep = frozenset(keep)
        unknown = sorted(k for k in self._keep if k not in self._graph.values)
        if unknown:
            raise GpuinferError(f"keep= names values the model does not have: {unknown}")
        self._executor = Executor(self._graph, self._backend)
        if profile:
            self._executor.profile = {}
        self._allocator = CountingAllocator(self._backend)
        self._plans: OrderedDict[tuple, tuple[MemoryPlan, BlockSet]] = OrderedDict()
        self._plan_cache_size = plan_cache_size
        self._shared_blocks = BlockSet(self._allocator, []) if memory_mode == "arena" else None
        self._memory_limit = memory_limit_bytes
        self._lock = threading.Lock()
        self._report: Optional[MemoryReport] = None
        self._last_run: Optional[tuple] = None  # what memory_report() needs, kept cheap per run
        self._device_hook = getattr(self._backend, "hook", None)  # on CUDA: sees every device byte
        self._sampler: Any = self._backend.make_sampler() if sample_memory else None
        if self._sampler is not None:
            weakref.finalize(self, self._sampler.close)
        self._threads = _thread_limiter(intra_op_threads)

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
        self._check_limit(plan)
        # reduce allocates every tensor on first need, subgraph ones included: no trace plans there
        pool = RunPool(self._allocator, plan, blocks, None if self.memory_mode == "reduce" else plan.traces)
        steps: list[tuple] = []  # (node, live bytes); turned into a timeline only when asked for

        if self._sampler:
            self._sampler.begin_run()
        self._allocator.start_run()
        if self._device_hook is not None:
            self._device_hook.start_run()
        started = time.perf_counter()
        try:
            # feeds go up inside the hook's scope, so the run's peak counts them
            feeds = {k: self._to_device(v) for k, v in feeds.items()}
            env = self._executor.run(feeds, pool, hold | self._keep, steps)
            self._backend.synchronize()
        finally:
            seconds = time.perf_counter() - started
            sampled = self._sampler.end_run() if self._sampler else None  # the thread always stops
        returned = set(self._graph.outputs) | self._keep | hold
        owned = {name for name in returned if name in pool.dynamic}  # fresh arrays, not plan views
        for name in returned:
            pool.hand_over(name)
        traced = pool.nested is not None and pool.nested.changed  # a body's block to place (or drop)
        if ((pool.unforeseen and not plan.from_run) or traced) and self.memory_mode != "reduce":
            self._replan_from_run(feeds, plan, pool)
        counter = self._device_hook or self._allocator  # on CUDA the hook sees every device allocation
        fields = dict(
            mode=self.memory_mode, device=self.device, peak_bytes=counter.peak,
            planned_bytes=plan.planned_bytes, sampled_peak_bytes=sampled,
            sampler=self._sampler.name if self._sampler else "off (sample_memory=False)",
            allocations=counter.allocations, alloc_seconds=counter.alloc_seconds,
            dynamic_bytes=pool.dynamic_bytes, held_bytes_after_run=self._allocator.in_use,
            run_seconds=seconds, inplace_count=len(plan.inplace))
        self._last_run = (fields, plan, pool.seen, pool.inner_peaks, steps)
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
        self._plans[signature] = self._blocks_for(make_plan(self._graph, types, self.memory_mode, self._keep))
        while len(self._plans) > self._plan_cache_size:
            _, (old_plan, old_blocks) = self._plans.popitem(last=False)
            self._drop(old_plan, old_blocks)
        return self._plans[signature]

    def _replan_from_run(self, feeds: dict, plan: MemoryPlan, pool: RunPool) -> None:
        """Plan again with the shapes this run revealed, so later runs of this signature place them.

        Shape inference cannot see through every data-dependent shape computation; a first run
        can.  Tensors whose size still changes from run to run keep taking the reduce path.  The
        blocks of traced control-flow steps (runtime/nested.py) are placed as their steps' scratch.
        """
        types = dict(plan.value_types)
        scratch: dict[int, list] = {}
        for key, (shape, dtype) in pool.seen.items():
            if key in self._graph.values:
                types[key] = (shape, dtype)
            elif "#scratch" in key:
                step, index = key.split("#scratch")
                scratch.setdefault(int(step), []).append((int(index), shape, dtype))
        seen_scratch = {step: [(s, d) for _, s, d in sorted(items, key=lambda t: t[0])]
                        for step, items in scratch.items()}
        signature = signature_of(feeds, self._graph)
        self._drop(*self._plans.pop(signature))
        self._plans[signature] = self._blocks_for(
            make_plan(self._graph, types, self.memory_mode, self._keep, seen_scratch, plan.traces))

    def _drop(self, plan: MemoryPlan, blocks: BlockSet) -> None:
        """A plan leaves the cache: its own blocks go back; shared arena blocks stay."""
        blocks.forget(plan)
        if blocks is not self._shared_blocks:
            blocks.release_all()

    def _blocks_for(self, plan: MemoryPlan) -> tuple[MemoryPlan, BlockSet]:
        if self._shared_blocks is not None:
            self._shared_blocks.grow(plan.blocks)
            return plan, self._shared_blocks
        return plan, BlockSet(self._allocator, plan.blocks)

    def _check_limit(self, plan: MemoryPlan) -> None:
        """Refuse, before allocating anything, a run that cannot fit the limit (or the machine)."""
        limit, what = self._memory_limit, "memory_limit_bytes"
        if limit is None:
            limit, what = self._backend.total_memory(), f"the {self.device} memory of this machine"
        if limit is None:
            return
        need = plan.need_bytes
        if need > limit:
            fits = "arena" if plan.lower_bound_bytes <= limit else None
            advice = (f"memory_mode='arena' needs about {plan.lower_bound_bytes} bytes here and would fit"
                      if fits and self.memory_mode != "arena" else
                      f"no mode fits: the least any needs is about {plan.lower_bound_bytes} bytes")
            raise MemoryLimitError(f"a run in memory_mode={self.memory_mode!r} needs about {need} bytes, "
                                   f"over {what} ({limit} bytes); {advice}")

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
            raise InputError(f"unknown output name {name!r}; the model's outputs are {self._graph.outputs}")
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
        if isinstance(value, (TensorSequence, OptionalValue)) or self._backend.is_array(value):
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
                **fields, lower_bound_bytes=run_lower_bound(self._graph, plan, sizes, inner_peaks),
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

    def close(self) -> None:
        """Stop this session's sampler now (it also stops when the session is collected)."""
        if self._sampler is not None:
            self._sampler.close()

    @property
    def held_bytes(self) -> int:
        """Bytes the pool keeps between runs (kept buffers of the cached plans)."""
        return self._allocator.in_use


def _thread_limiter(threads: Optional[int]):
    """A context-manager factory capping BLAS threads during a run (a no-op when ``threads`` is None)."""
    if threads is None:
        return contextlib.nullcontext
    if int(threads) < 1:
        raise GpuinferError(f"intra_op_threads must be at least 1, got {threads}")
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        raise GpuinferError("intra_op_threads needs the threadpoolctl package: pip install threadpoolctl") from None
    controller = ThreadpoolController()
    return lambda: controller.limit(limits=int(threads), user_api="blas")


def _shape_list(shape: Optional[tuple]) -> list:
    return [] if shape is None else list(shape)
