"""CUDA graph replay: capture one run per input-shape signature, then replay it with one launch.

A Python runtime spends more host time dispatching a few hundred launches than a GPU spends on a
small model.  A CUDA graph records the launches of one run with their pointers; replaying it is
one launch.  It needs every buffer at the same address on every run, which the ``arena`` and
``per_tensor`` plans give (kept blocks, fixed offsets), and nothing in the run may sync, upload or
``cudaMalloc``.

Per signature (``GraphRunner.run``, called by the session under its lock and device scope):

1. run 1 is a plain eager warm-up (kernels compile, host-made values go up once, the plan settles);
2. run 2 is eager through a sizing allocator that measures the graph's private pool
   (``backends/cuda/graph_pool.py``);
3. run 3 copies the feeds into fixed input buffers, captures the run on a non-default stream with
   its allocations from the private pool, and launches the graph;
4. later runs copy the feeds in, launch, and copy the outputs out.  With ``output_device="cuda"``
   the outputs are the graph's own buffers: valid until the session's next run, which overwrites
   them (copy them to keep them).

Input buffers and private pools are allocated through the session's counting allocator (they are
held between runs) and reported as ``graph_pool_bytes``.  A graph leaves with its plan (plan-cache
eviction, a plan refined by a run) and when the arena block it captured was replaced.

Where a run cannot be captured it runs eagerly, and the reason is logged once and shown in the
report's ``cuda_graph`` field: a CPU device, ``reduce``/``reuse`` modes, control flow, host steps,
data-dependent shapes, sequence or optional values, or a capture that failed (the node named).

The session internals used here: ``_plan_for``, ``_run_locked``, ``_output``, ``_host``,
``_executor.run`` / ``.places``, ``_allocator``, ``_device_hook``, ``_sampler``, ``_last_run``.
"""
from __future__ import annotations

import logging
import time
import weakref
from typing import Any, Optional, Sequence

import numpy as np

from gpuinfer.backends.cuda.graph_pool import ALIGN, GraphPoolExhausted
from gpuinfer.errors import GpuinferError
from gpuinfer.graph.ir import Graph
from gpuinfer.graph.specialize import signature_of
from gpuinfer.plan.modes import MODES
from gpuinfer.runtime.deferred import verify_deferred
from gpuinfer.runtime.pool import RunPool, nbytes_of
from gpuinfer.values import OptionalValue, TensorSequence, value_key

log = logging.getLogger("gpuinfer")

POOL_TRIES = 3  # captures of one signature before a short private pool means: run eagerly
TRUE_TEXTS = ("1", "true", "yes", "on")


def provider_asks_for_graphs(providers: Optional[Sequence]) -> bool:
    """onnxruntime's spelling: ``("CUDAExecutionProvider", {"enable_cuda_graph": "1"})``."""
    for provider in providers or ():
        if isinstance(provider, (tuple, list)) and len(provider) > 1 and provider[0] == "CUDAExecutionProvider":
            options = provider[1] or {}
            if str(options.get("enable_cuda_graph", "0")).strip().lower() in TRUE_TEXTS:
                return True
    return False


def make_graph_runner(session: Any, cuda_graph: bool, providers: Optional[Sequence]) -> Optional["GraphRunner"]:
    """The session's runner, or None when graphs are off.  ``cuda_graph=True`` on a CPU session is
    an error (as ``output_device='cuda'`` is); the provider option there is ignored with a log line,
    as onnxruntime ignores a provider option it cannot use."""
    from_provider = provider_asks_for_graphs(providers)
    if not (cuda_graph or from_provider):
        return None
    if session._backend.kind != "cuda":
        if cuda_graph:
            raise GpuinferError(f"cuda_graph=True needs a CUDA session (device='cuda'); this session runs "
                                f"on {session.device!r}, which has no CUDA graphs")
        log.info("gpuinfer: enable_cuda_graph ignored: the session runs on %s", session.device)
        return None
    return GraphRunner(session)


class _Entry:
    """One signature's graph and what it replays on."""

    def __init__(self, plan: Any) -> None:
        self.plan = plan
        self.stage = 0  # 0: warm-up next, 1: sizing next, 2: capture next, 3: replaying
        self.reason: Optional[str] = None  # why this signature runs eagerly
        self.need = 0  # private pool bytes (measured by the sizing run)
        self.blocks_key = 0  # _key of the blocks the graph was captured on
        self.graph: Any = None
        self.stream: Any = None
        self.pool: Any = None
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        self.deferred: list = []
        self.seen: dict = {}
        self.held = 0  # bytes taken from the session's allocator (inputs + pool)


class GraphRunner:
    """Per-signature CUDA graphs of one session (see the module docstring)."""

    def __init__(self, session: Any) -> None:
        # a proxy: the session holds this runner (and its plan cache this runner's ``forget``), so a
        # strong reference back would be a cycle, and the session's device memory would outlive
        # ``del session`` until the garbage collector ran
        self._s = weakref.proxy(session)
        self._device = session._backend
        self._entries: dict[tuple, _Entry] = {}
        self._said: set[str] = set()
        self.status = "not run yet"
        self.reason = self._session_reason()
        if self.reason:
            self._say("this session", self.reason)

    # --- why not --------------------------------------------------------------------------------
    def _session_reason(self) -> Optional[str]:
        s = self._s
        mode = MODES.get(s.memory_mode)  # "auto" is no mode of its own: its choice is made per run
        if mode is None or not mode.fixed_addresses:
            capturable = " and ".join(name for name, m in MODES.items() if m.fixed_addresses)
            return (f"memory_mode={s.memory_mode!r} allocates and frees buffers as the run goes, so their "
                    f"addresses change from run to run; graphs are captured in {capturable}")
        graph = s._graph
        for node in graph.nodes:
            if node.op_type in ("If", "Loop", "Scan") or _has_subgraph(node):
                return f"{node.describe()} is control flow: which branch runs (or how often) is read from the device"
        places = s._executor.places.get(id(graph))
        if places is not None and places.dtype_host:
            node = graph.nodes[min(places.dtype_host)]
            return (f"{node.describe()} runs on the host (a dtype the device cannot hold): its inputs are "
                    f"read back in the middle of the run")
        return None

    @staticmethod
    def _plan_reason(plan: Any, feeds: dict) -> Optional[str]:
        for name, value in feeds.items():
            if isinstance(value, (TensorSequence, OptionalValue)) or not hasattr(value, "shape"):
                return f"input {name!r} is a sequence or optional value, not a tensor"
        if plan.dynamic:
            return (f"value {plan.dynamic[0]!r} has a data-dependent shape (its size is known only once "
                    f"the run made it)")
        return None

    def _say(self, where: str, reason: str) -> None:
        if reason not in self._said:
            self._said.add(reason)
            log.warning("gpuinfer: CUDA graphs off for %s, running eagerly: %s", where, reason)

    def _eager(self, entry: Optional[_Entry], reason: str) -> None:
        if entry is not None:
            entry.reason = reason
        self._say("inputs of this shape", reason)
        self.status = f"eager: {reason}"

    # --- the run ---------------------------------------------------------------------------------
    def run(self, feeds: dict, names: list[str], hold: frozenset, output_device: str) -> Optional[list]:
        """The outputs of this run when the runner ran it, else None (the session runs it eagerly)."""
        if self.reason:
            self.status = f"eager: {self.reason}"
            return None
        s = self._s
        plan, blocks = s._plan_for(feeds)
        signature = signature_of(feeds, s._graph)
        entry = self._entries.get(signature)
        if entry is not None and (entry.plan is not plan or (entry.graph is not None and entry.blocks_key != _key(blocks))):
            self._release(self._entries.pop(signature))  # a new plan, or the arena block was replaced
            entry = None
        if entry is None:
            entry = self._entries[signature] = _Entry(plan)
            why = self._plan_reason(plan, feeds)
            if why:
                self._eager(entry, why)
        if entry.reason:
            self.status = f"eager: {entry.reason}"
            return None
        if entry.stage == 0:
            entry.stage = 1
            self.status = "eager: warm-up before capture"
            return None
        if entry.stage == 1:
            return self._sizing_run(entry, feeds, names, hold, output_device)
        if entry.stage == 2 and not self._capture(entry, feeds, hold, blocks):
            return None
        if any(name not in entry.outputs for name in names):
            self.status = "eager: an output asked for was not captured"
            return None
        return self._replay(entry, feeds, names, output_device)

    def _sizing_run(self, entry: _Entry, feeds: dict, names: list[str], hold: frozenset,
                    output_device: str) -> list:
        """An eager run whose allocations are measured: the private pool a capture will need."""
        s = self._s
        sizer = self._device.sizing_allocator()
        with self._device.using(sizer.malloc):
            env, owned = s._run_locked(feeds, hold)
        entry.need = sizer.fit.high_water
        entry.stage = 2
        self.status = "eager: sizing the graph's private pool"
        outputs = [s._output(name, env, owned) for name in names]
        return outputs if output_device == "cuda" else [s._host(o) for o in outputs]

    def _capture(self, entry: _Entry, feeds: dict, hold: frozenset, blocks: Any) -> bool:
        """Capture one run of ``entry``'s plan; False (and the reason said) when it cannot be.

        The sizing run's first-fit layout is the capture's as long as both runs make the same
        requests in the same order; where they differ (the eager run's feed uploads come first),
        the pool may fall short: it is then doubled and the capture tried again, twice at most."""
        for _ in range(POOL_TRIES - 1):
            try:
                return self._capture_once(entry, feeds, hold, blocks)
            except GraphPoolExhausted:
                entry.reason = None
                entry.need = max(2 * entry.need, ALIGN)
        return self._capture_once(entry, feeds, hold, blocks, last=True)

    def _capture_once(self, entry: _Entry, feeds: dict, hold: frozenset, blocks: Any, last: bool = False) -> bool:
        s, dev, allocator = self._s, self._device, self._s._allocator
        entry.stream = dev.new_stream()
        pool = RunPool(allocator, entry.plan, blocks, entry.plan.traces)
        try:
            for name, value in feeds.items():
                nbytes = nbytes_of(value.shape, value.dtype)
                raw = allocator.alloc(nbytes)
                entry.held += nbytes
                entry.inputs[name] = dev.view(raw, 0, tuple(value.shape), value.dtype)
            raw = allocator.alloc(entry.need)
            entry.held += entry.need
            entry.pool = dev.graph_pool(raw, entry.need)
            self._copy_feeds(entry, feeds)
            with dev.capture(entry.stream, entry.pool.malloc) as made:
                env = s._executor.run(dict(entry.inputs), pool, hold | s._keep)
            entry.graph = made[0]
        except Exception as exc:  # noqa: BLE001 — any failure of a capture means: run eagerly
            for key in list(pool.dynamic):
                pool.release(key)
            self._release(entry)
            if isinstance(_cause(exc), GraphPoolExhausted) and not last:
                raise GraphPoolExhausted(str(exc)) from exc
            self._eager(entry, f"the capture failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            return False
        returned = set(s._graph.outputs) | s._keep | hold
        for name in returned:
            pool.hand_over(value_key(name))
        outputs = {name: env[name] for name in returned if name in env}
        if not all(self._device.is_array(v) for v in outputs.values()):
            self._release(entry)
            self._eager(entry, "an output is not a device tensor (a sequence, optional or host value)")
            return False
        entry.outputs, entry.deferred, entry.seen = outputs, pool.deferred, dict(pool.seen)
        entry.blocks_key = _key(blocks)
        entry.stage = 3
        return True

    def _copy_feeds(self, entry: _Entry, feeds: dict) -> None:
        """Feeds into the captured input buffers, on the graph's stream (after the caller's work)."""
        dev, xp = self._device, self._device.xp
        if any(dev.is_array(v) for v in feeds.values()):  # device feeds: wait for what made them
            entry.stream.wait_event(xp.cuda.get_current_stream().record())
        with entry.stream:
            for name, buf in entry.inputs.items():
                value = feeds[name]
                if dev.is_array(value):
                    xp.copyto(buf, value)
                else:
                    buf.set(np.ascontiguousarray(value, dtype=buf.dtype))

    def _replay(self, entry: _Entry, feeds: dict, names: list[str], output_device: str) -> list:
        s, dev = self._s, self._device
        hook = s._device_hook
        s._allocator.start_run()
        if s._sampler:
            s._sampler.begin_run(s._allocator.in_use)
        hook.start_run()
        started = time.perf_counter()
        try:
            self._copy_feeds(entry, feeds)
            dev.launch_graph(entry.graph, entry.stream)
            with entry.stream:
                verify_deferred(entry.deferred, dev)
                outputs = [entry.outputs[name] for name in names]
                if output_device == "cuda":
                    entry.stream.synchronize()  # the caller's stream may read them at once
                else:
                    outputs = [dev.to_host(o) for o in outputs]
        finally:
            seconds = time.perf_counter() - started
            sampled = s._sampler.end_run() if s._sampler else None
        plan = entry.plan
        fields = dict(
            mode=s.memory_mode, device=s.device, peak_bytes=hook.peak, planned_bytes=plan.planned_bytes,
            sampled_peak_bytes=sampled, sampler=s._sampler.name if s._sampler else "off (sample_memory=False)",
            allocations=hook.allocations, alloc_seconds=hook.alloc_seconds, dynamic_bytes=0,
            held_bytes_after_run=s._allocator.in_use, run_seconds=seconds, inplace_count=len(plan.inplace),
            first_run_traced=False, first_run_peak_bytes=None, memory_ceiling="none", memory_ceiling_bytes=None)
        s._last_run = (fields, plan, entry.seen, {}, [])
        s._report = None
        self.status = "replayed"
        return outputs

    # --- bookkeeping -----------------------------------------------------------------------------
    def forget(self, plan: Any) -> None:
        """A plan left the session's cache: its graphs go with it."""
        for signature, entry in list(self._entries.items()):
            if entry.plan is plan:
                self._release(self._entries.pop(signature))

    def _release(self, entry: _Entry) -> None:
        if entry.held:
            self._s._allocator.free(entry.held)
        entry.held = 0
        entry.graph = entry.pool = None
        entry.inputs, entry.outputs, entry.deferred = {}, {}, []

    @property
    def graph_pool_bytes(self) -> int:
        """Bytes held for graphs now: private pools and captured input buffers."""
        return sum(entry.held for entry in self._entries.values())

    @property
    def graphs(self) -> int:
        return sum(1 for entry in self._entries.values() if entry.graph is not None)

    def report_fields(self) -> dict:
        return {"cuda_graph": self.status, "graph_pool_bytes": self.graph_pool_bytes}


def _cause(exc: BaseException) -> BaseException:
    """The innermost cause (the executor wraps a kernel's error in ``NodeExecutionError``)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _key(blocks: Any) -> int:
    """Which raw blocks a plan's views point into now (the arena block is replaced when it grows).

    Not the blocks' ``id``s: a replaced block's object may be freed and its ``id`` given to the
    new one (the strict device showed it in about one run in ten), and a replay would write into
    memory the session gave back."""
    return blocks.generation


def _has_subgraph(node: Any) -> bool:
    return any(isinstance(sub, Graph) for value in node.attrs.values()
               for sub in (value if isinstance(value, list) else [value]))
