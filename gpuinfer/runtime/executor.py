"""The run loop: inputs -> kernel -> outputs -> release what died at this step.  No op-specific code.

Errors from a kernel are re-raised as ``NodeExecutionError`` naming the node, its op and the
shapes and dtypes of its inputs.

Small models spend most of a run in this loop, not in kernels, so everything that is the same
on every run (input names, output keys, what to free after each step) is worked out once per
(graph, scope) into ``Step`` records, and the loop only reads them.  Runs that are not profiled
or traced go further: ``runtime/runner.py`` writes each (graph, scope)'s steps out once as a
straight-line function, and that is what runs (this loop stays for profiling and traces).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

from gpuinfer.backends.base import Backend
from gpuinfer.errors import GpuinferError, NodeExecutionError
from gpuinfer.graph.ir import Graph, Node
from gpuinfer.runtime.context import RunContext
from gpuinfer.runtime.host_steps import HostPlan, device_args, run_on_host
from gpuinfer.runtime.pool import RunPool
from gpuinfer.runtime.runner import Runner, build_runner, describe_args
from gpuinfer.runtime.store_outputs import store_outputs
from gpuinfer.runtime.timeline import Timeline
from gpuinfer.values import TensorKey

Stamps = list  # (start, end) perf_counter seconds per top-level step, appended only when tracing
UFUNC_BUFFER_ELEMENTS = 1024  # numpy's ufunc buffer size during a run (Executor.run)
MAX_RUNNERS = 64  # runners kept per executor: one per (graph, scope, held values)


def subgraphs_of(graph: Graph):
    """Every subgraph below ``graph`` (If branches, Loop/Scan bodies), depth first."""
    for node in graph.nodes:
        for value in node.attrs.values():
            for sub in (value if isinstance(value, list) else [value]):
                if isinstance(sub, Graph):
                    yield sub
                    yield from subgraphs_of(sub)


class Step:
    """What the loop needs of one node in one scope, computed once instead of on every run.

    ``fields`` are the per-node attributes a ``RunContext`` shows kernels (set in one call);
    ``keys`` the pool keys of the outputs (None where an output is omitted); ``named`` the
    (index, name) pairs of the outputs that exist; ``frees`` (name, pool key) of the values
    whose last reader is this step; ``single`` the output's name when the node has exactly one;
    ``nested`` whether it runs subgraphs.
    """

    __slots__ = ("node", "kernel", "inputs", "named", "frees", "fields", "nested", "single", "on_host",
                 "keep_host", "special", "steer", "lift", "lifted")

    def __init__(self, node: Node, scope: tuple, frees: list[str], places: Optional[HostPlan] = None):
        self.node = node
        self.kernel = node.spec.kernel if places is None else node.spec.kernel_for(places.kind)
        self.inputs = tuple(node.inputs)  # "" (omitted) reads as None: env[""] is None
        self.named = tuple((i, name) for i, name in enumerate(node.outputs) if name)
        self.single = node.outputs[0] if len(node.outputs) == 1 and node.outputs[0] else None
        self.frees = tuple((name, TensorKey(name, scope)) for name in frees)
        keys = tuple(TensorKey(name, scope) if name else None for name in node.outputs)
        self.fields = dict(node=node, attrs=node.attrs, opset=node.opset, op_type=node.op_type,
                           node_name=node.name, n_outputs=len(node.outputs), keys=keys, _memo={})
        self.nested = any(isinstance(sub, Graph) for value in node.attrs.values()
                          for sub in (value if isinstance(value, list) else [value]))
        # On a GPU device (runtime/host_steps.py): run on numpy for a dtype the device lacks, or to
        # compute steering values (kept on the host); host copies / uploads for some inputs.
        step = node.step
        self.keep_host = places is not None and step in places.chain and not self.nested
        self.on_host = places is not None and (step in places.dtype_host or self.keep_host) and not self.nested
        self.steer = places.steer.get(step, ()) if places is not None else ()
        self.lift = places.lift.get(step, ()) if places is not None else ()
        self.special = bool(self.steer or self.lift)
        self.lifted: dict = {}  # input position -> (host value, its device copy), see device_args


class Executor:
    """Runs a loaded graph on a backend; holds the device copies of its constants."""

    def __init__(self, graph: Graph, backend: Backend):
        self.graph = graph
        self.backend = backend
        self.constants: dict[int, dict[str, Any]] = {}
        self.frees: dict[int, list[list[str]]] = {}
        self.places: dict[int, HostPlan] = {}
        host_only = frozenset(graph.host_only)
        graphs = [graph, *subgraphs_of(graph)]
        wanted = {}
        for g in graphs:
            places = self.places[id(g)] = HostPlan(g, backend, host_only)
            # on a GPU only constants read as data go up (once, every graph's in one block);
            # steering ones stay on the host
            wanted.update({(id(g), k): v for k, v in g.constants.items() if k in places.upload})
            self.frees[id(g)] = self._free_lists(g)
        uploaded = backend.upload_constants(wanted)
        for g in graphs:
            self.constants[id(g)] = {k: uploaded.get((id(g), k), v) for k, v in g.constants.items()}
        self.profile: Optional[dict[str, list]] = None  # op type -> [calls, seconds] when profiling
        self._nested_seconds = 0.0  # profiled time so far, for charging control flow its own share
        self._steps: dict[tuple[int, tuple], list[Step]] = {}  # (id(graph), scope) -> its steps
        self._runners: dict[tuple, Runner] = {}  # (id(graph), scope, hold) -> its runner

    @staticmethod
    def _free_lists(graph: Graph) -> list[list[str]]:
        """For each step, the values whose last reader is that step (graph outputs never)."""
        frees: list[list[str]] = [[] for _ in graph.nodes]
        for value in graph.values.values():
            last = value.last_use
            if value.is_graph_output or last is None:
                continue
            frees[last].append(value.name)
        return frees

    def steps_of(self, graph: Graph, scope: tuple) -> list[Step]:
        """The ``Step`` records of ``graph`` run under ``scope``, made on first use and kept."""
        steps = self._steps.get((id(graph), scope))
        if steps is None:
            frees = self.frees[id(graph)]
            places = self.places[id(graph)] if self.backend.kind != "cpu" else None
            steps = [Step(node, scope, frees[node.step], places) for node in graph.nodes]
            self._steps[(id(graph), scope)] = steps
        return steps

    def runner_of(self, graph: Graph, scope: tuple, hold: frozenset) -> Runner:
        """The straight-line runner of ``graph`` under ``scope`` (runtime/runner.py), written on
        first use and kept; values in ``hold`` stay in the environment past their last reader."""
        key = (id(graph), scope, hold)
        runner = self._runners.get(key)
        if runner is None:
            if len(self._runners) >= MAX_RUNNERS:  # output names that keep changing: start over
                self._runners.clear()
            runner = self._runners[key] = build_runner(self, graph, scope, self.steps_of(graph, scope),
                                                       hold, top=not scope)
        return runner

    def run(self, feeds: dict[str, Any], pool: RunPool, hold: frozenset = frozenset(),
            timeline: Optional[Timeline] = None, stamps: Optional[Stamps] = None) -> dict[str, Any]:
        """Run the top-level graph; returns the environment left (outputs and held values).

        ``stamps`` (tracing only): each top-level step appends its (start, end) ``perf_counter``
        times, the device synchronised before the end is read; the untraced loop pays one test.

        Floating-point warnings are off for the whole run, once, rather than per kernel (entering
        ``np.errstate`` costs about a microsecond, a tenth of a small node's time): ONNX wants IEEE
        results, inf and NaN included, and kernels count on not being interrupted by warnings.

        numpy's ufunc buffers are held to ``UFUNC_BUFFER_ELEMENTS`` for the run (numpy restores its
        own size when ``errstate`` exits): numpy 2 allocates them for every operand of a ufunc
        that broadcasts or strides (a bias add, a pooling tap over shifted views), 8192 elements
        each by default: 32-100 KB per call that no pool can count, a third of PP-OCR cls's whole
        arena.  At 1024 elements that is at most 4-8 KB per operand, at no measured cost in time."""
        with np.errstate(all="ignore"):
            np.setbufsize(UFUNC_BUFFER_ELEMENTS)
            return self._run(self.graph, feeds, pool, None, (), hold, timeline, stamps)

    def _run(self, graph: Graph, feeds: dict[str, Any], pool: RunPool, outer: Optional[Callable],
             scope: tuple, hold: frozenset, timeline: Optional[Timeline],
             stamps: Optional[Stamps] = None) -> dict[str, Any]:
        # Constants first, feeds over them: one dict lookup finds either, as the old chain did.
        env: dict[str, Any] = dict(self.constants[id(graph)])
        env.update(feeds)
        env[""] = None  # an omitted optional input

        def get(name: str) -> Any:
            if name in env:
                return env[name]
            if outer is not None:
                return outer(name)
            raise NodeExecutionError(f"value {name!r} is not available (freed too early or never made)")

        def run_subgraph(sub: Graph, inputs: Sequence[Any]) -> list:
            sub_scope = (*scope, id(sub))
            sub_feeds = {name: x for name, x in zip(sub.inputs, inputs) if x is not None}
            sub_env = self._run(sub, sub_feeds, pool, get, sub_scope, frozenset(), None)
            results = [sub_env[name] if name in sub_env else get(name) for name in sub.outputs]
            for name in sub.outputs:
                pool.hand_over(TensorKey(name, sub_scope))
            return results

        if self.profile is None and stamps is None and all(name in env for name in graph.inputs):
            return self.runner_of(graph, scope, hold)(env, pool, get, run_subgraph, timeline)
        # the general loop: profiling and traces time each node; a subgraph fed fewer inputs than
        # it declares reads the rest from enclosing scopes
        ctx = RunContext(pool, self.backend, scope, run_subgraph)
        allocator = pool.allocator
        nested = pool.nested
        profile = self.profile
        top = not scope  # steps, timelines and subgraph peaks are counted at the top level only
        for step in self.steps_of(graph, scope):
            node = step.node
            try:
                args = [env[name] for name in step.inputs]
            except KeyError:  # read from an enclosing scope (or missing: get raises)
                args = [get(name) for name in step.inputs]
            ctx.bind(step)
            if top:
                allocator.step_peak = allocator.in_use  # the step's peak counts from here
                pool.inner_peak = pool.inner_in_use
                if step.nested:
                    pool.begin_nested(node.step)
            if profile is not None:
                started, nested_before = time.perf_counter(), self._nested_seconds
            if stamps is not None:
                began = time.perf_counter()
            try:
                if step.special:
                    args = device_args(step, args, graph.constants, self.backend)
                result = (run_on_host(step, args, ctx, self.backend) if step.on_host
                          else step.kernel(ctx, *args))
            except NodeExecutionError as exc:
                raise NodeExecutionError(f"{node.describe()}: {exc}") from exc
            except GpuinferError:
                raise
            except Exception as exc:
                raise NodeExecutionError(f"{node.describe()} failed on inputs {describe_args(args)}: "
                                         f"{type(exc).__name__}: {exc}") from exc
            if step.single and result is ctx.handed.get(0) and result is not None:
                env[step.single] = result  # the common case of store_outputs: one output, in its own buffer
            else:
                store_outputs(self.backend, ctx, step, result, env)
            if ctx.temporaries:
                for key in ctx.temporaries:
                    pool.release(key)
                if ctx.watched:
                    ctx.watched = []  # a key a loop's next turn takes again must not be released by this one's reference
            if nested is not None and nested.handed:
                nested.settle_handed()
            if profile is not None:
                self._record(profile, node, started, nested_before)
            if top:
                if step.nested:
                    pool.end_nested()
                if pool.inner_peak:
                    pool.inner_peaks[node.step] = pool.inner_peak
                if timeline is not None:
                    timeline.append((node, allocator.step_peak))
                if stamps is not None:
                    self.backend.synchronize()
                    stamps.append((began, time.perf_counter()))
            for name, key in step.frees:
                if name not in hold:
                    env.pop(name, None)
                    pool.release(key)
        return env

    def _record(self, profile: dict, node: Node, started: float, nested_before: float) -> None:
        """Add one call of ``node`` to the per-op-type profile (waits for the device first).

        Time is exclusive: an If, Loop or Scan is charged for its own work only, its body's nodes
        under their own op types, so the table's rows add up to the run."""
        self.backend.synchronize()
        elapsed = time.perf_counter() - started
        inside = self._nested_seconds - nested_before  # recorded by nodes run within this one
        self._nested_seconds = nested_before + elapsed
        entry = profile.setdefault(node.op_type, [0, 0.0])
        entry[0] += 1
        entry[1] += elapsed - inside

