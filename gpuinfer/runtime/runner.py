"""Straight-line runners: one graph's run loop, written out once as a Python function.

Small models spend most of a run between kernels: reading each step's record, binding the shared
context, testing flags that are the same on every run.  For a given (graph, scope, held values)
all of that is known before the first run, so ``build_runner`` writes the loop out as source —
one block of plain statements per node, with the node's kernel, its own bound context, its input
names, output names and the values it frees inlined as constants — compiles it once, and the
executor calls the result on every run.  No per-node dictionary of records, no ``bind``, no
branch on the node's kind is left: what differs between nodes was decided while writing.

What the runner keeps of the general loop (``Executor._run``), statement for statement:

* errors: each kernel call sits in its own ``try`` (free until something raises, Python 3.11+);
  a failure becomes ``NodeExecutionError`` naming the node, its op and its inputs' shapes;
* the step's peak bytes, the memory timeline and subgraph peaks at the top level;
* scratch and unused-output buffers handed back after the step, values freed after their last
  reader (``reduce`` gives their bytes back there);
* device steps (``runtime/host_steps.py``): host steps, steering and lifted inputs, in the same
  calls the loop makes; deferred checks go through the step's own context as before;
* control flow: If/Loop/Scan get the run's ``run_subgraph`` and the nested-tensor bookkeeping;
  their bodies get runners of their own.

At the top level each step's context also holds its planned output and scratch views, bound
once per (plan, blocks) (``runtime/bound_views.py``): steady-state runs do no pool lookup for them.

Profiling and Chrome traces need per-node timing and take the general loop instead.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from gpuinfer.errors import GpuinferError, NodeExecutionError
from gpuinfer.runtime.bound_views import ViewBinding, forget_unrequested
from gpuinfer.runtime.context import RunContext
from gpuinfer.runtime.host_steps import device_args, run_on_host
from gpuinfer.runtime.store_outputs import store_outputs
from gpuinfer.runtime.timeline import unrun_steps

Runner = Callable[[dict, Any, Callable, Callable, Optional[list]], dict]


def describe_args(args: list) -> str:
    """Shapes and dtypes of a failing node's inputs, for its error message."""
    parts = []
    for a in args:
        if a is None:
            parts.append("(omitted)")
        else:
            parts.append(f"{tuple(getattr(a, 'shape', ()))} {getattr(a, 'dtype', type(a).__name__)}")
    return "[" + ", ".join(parts) + "]"


def node_error(node: Any, exc: BaseException, args: list) -> BaseException:
    """What a kernel's exception becomes: ``NodeExecutionError`` naming ``node`` (other gpuinfer
    errors, which name what was wrong already, pass as they are)."""
    if isinstance(exc, NodeExecutionError):
        new = NodeExecutionError(f"{node.describe()}: {exc}")
    elif isinstance(exc, GpuinferError):
        return exc
    else:
        new = NodeExecutionError(f"{node.describe()} failed on inputs {describe_args(args)}: "
                                 f"{type(exc).__name__}: {exc}")
    new.__cause__ = exc
    return new


def read_args(env: dict, get: Callable, inputs: tuple) -> list:
    """A failed step's inputs as far as they can be read (for its message only)."""
    args = []
    for name in inputs:
        try:
            args.append(env[name] if name in env or not name else get(name))
        except Exception:  # noqa: BLE001 - a missing input is described as omitted
            args.append(None)
    return args


class BoundContext(RunContext):
    """A context bound to one step for good: its fields are set once, not on every run.

    At the top level it also holds the step's planned views (``runtime/bound_views.py``): an
    output or scratch whose request matches its bound view is handed out with no pool lookup."""

    pool = None  # the run's pool: set on a class made per runner, once per run, for all its steps
    seen = None  # that pool's ``seen`` (what ``RunPool.buffer`` records for each buffer handed out)
    binding = None  # the runner's ``ViewBinding`` (top level only)
    bound: tuple = ()  # per output: (buffer, shape, dtype, key, (shape, dtype), view) or None (bound_views._entry)
    bound_scratch: tuple = ()  # per scratch index: the same, or None

    def out(self, i: int, shape: Any, dtype: Any) -> Any:
        """``RunContext.out`` for the common cases: a bound view, else an output the model uses."""
        try:
            b = self.bound[i]  # as long as the outputs: no length test on the common path
        except IndexError:
            b = None
        if b is not None:
            if type(shape) is not tuple:  # Split, Concat and others pass lists
                shape = tuple(shape)
            if shape == b[1] and (dtype is b[2] or dtype == b[2]):
                view = self.handed[i] = b[0]  # ``seen`` has its entry from the run's start
                return view
        keys = self.keys
        key = keys[i] if i < len(keys) else None
        if key is None:
            return RunContext.out(self, i, shape, dtype)
        buf = self.handed[i] = self.pool.buffer(key, shape, dtype)
        if b is not None:
            self._missed(b)
        return buf

    def scratch(self, shape: Any, dtype: Any) -> Any:
        """``RunContext.scratch``, from the bound view of its index when the request matches it."""
        temporaries = self.temporaries
        j = len(temporaries)
        bound = self.bound_scratch
        b = bound[j] if j < len(bound) else None
        if b is not None:
            if type(shape) is not tuple:
                shape = tuple(shape)
            if shape == b[1] and (dtype is b[2] or dtype == b[2]):
                temporaries.append(b[3])
                self.seen[b[3]] = b[4]
                return b[0]
        buf = RunContext.scratch(self, shape, dtype)  # watches a dynamic buffer's memory (``_gone``)
        if b is not None:
            self._missed(b)
        return buf

    def _missed(self, b: tuple) -> None:
        """A request that did not match its bound view: bind again if the pool's view changed."""
        if self.pool.views.get(b[3]) is not b[5]:
            self.binding.stale()


def _bound_contexts(steps: list, device: Any, scope: Any) -> tuple[type, list, Optional[ViewBinding]]:
    """One context per step with that step's fields set for good (no ``bind`` per run).

    The run's pool (and binding) are class attributes of a class made for this runner: one
    assignment per run points every step's context at them.  A class is always in a reference
    cycle (its ``__mro__`` names it), so it holds them only while a run is on: at rest it would
    keep the bound views, and so the session's arena, alive after the session is gone, until the
    garbage collector happened to run."""
    cls = type("RunnerContext", (BoundContext,), {})
    contexts = []
    for step in steps:
        ctx = cls.__new__(cls)
        ctx.device = device
        ctx.xp = device.xp
        ctx.scope = scope
        ctx._run_subgraph = None
        ctx.handed = {}
        ctx.temporaries = []
        ctx.watched = []  # weak references to the step's dynamic scratch memory (``_gone``)
        ctx.__dict__.update(step.fields)
        ctx.bound = (None,) * len(ctx.keys)
        contexts.append(ctx)
    # subgraph tensors live in traced blocks or on the dynamic path: nothing to bind
    binding = ViewBinding(contexts, scope) if not scope else None
    return cls, contexts, binding


def build_runner(executor: Any, graph: Any, scope: Any, steps: list, hold: frozenset, top: bool) -> Runner:
    """The straight-line runner of ``graph``'s ``steps`` under ``scope``.

    ``run(env, pool, get, run_subgraph, timeline) -> env``: ``env`` holds the constants and feeds
    (and receives every value made), ``get`` reads values of enclosing scopes, ``timeline``
    (top level, ``runtime/timeline.py``) receives each step's peak bytes, with no object per step."""
    device = executor.backend
    cls, contexts, binding = _bound_contexts(steps, device, scope)
    own = set(graph.inputs) | set(graph.constants) | {name for node in graph.nodes for name in node.outputs}
    names: dict[str, Any] = {"Ctx": cls, "BINDING": binding, "store": store_outputs, "node_error": node_error,
                             "read_locals": read_locals, "forget_unrequested": forget_unrequested, "device_args": device_args, "run_on_host": run_on_host,
                             "device": device,
                             "host_constants": graph.constants}
    with_nested = any(step.nested for step in steps)  # else nothing alive is a subgraph's at the top
    # Without control flow nothing reads this graph's values by name while it runs (subgraphs do,
    # through ``get``), so they live in local variables: no dictionary store, read or pop per node.
    slots = {} if with_nested else _local_slots(graph, steps)
    names["SLOTS"] = slots
    # named as the general loop, with its ``node`` local: the strict stand-in attributes syncs and
    # uploads to the op running by looking for them in the caller's frames (strict/counters.py)
    lines = ["    Ctx.pool = pool",
             "    Ctx.seen = pool.seen"]
    if binding is not None:
        lines += ["    Ctx.binding = BINDING", "    BINDING.start(pool)"]
    lines += [
             "    release = pool.release",
             "    allocator = pool.allocator",
             "    nested = pool.nested",
             "    dynamic = pool.dynamic",
             "    peaks = timeline.start(NODES, UNRUN) if timeline is not None else None"]
    names["NODES"], names["UNRUN"] = tuple(step.node for step in steps), unrun_steps(len(steps))
    made = {name for step in steps for name in step.node.outputs if name}
    preloaded = frozenset(name for name in slots if name not in made)  # feeds and constants
    lines += [f"    {slots[name]} = env[{name!r}]" for name in preloaded]
    freed = set()
    for i, (step, ctx) in enumerate(zip(steps, contexts)):
        names[f"K{i}"], names[f"S{i}"], names[f"C{i}"], names[f"N{i}"] = step.kernel, step, ctx, step.node
        lines += _step_lines(i, step, own, hold, top, with_nested, names, slots, preloaded)
        freed.update(name for name, _ in step.frees if name not in hold)
    # what is never freed (outputs, held values) is what the caller reads from env
    lines += [f"    env[{name!r}] = {slots[name]}" for name in slots if name in made and name not in freed]
    lines.append("    return env")
    # a finished (or failed) run's pool is not kept alive by its runner
    source = "\n".join(["def _run(env, pool, get, run_subgraph, timeline):", "  try:"]
                       + [f"  {line}" for line in lines]
                       + ["  finally:", "    Ctx.pool = Ctx.seen = Ctx.binding = None"])
    code = compile(source, f"<gpuinfer runner {getattr(graph, 'name', '')!s:.40}>", "exec")
    exec(code, names)  # noqa: S102 - the source is ours, built from names passed as repr() literals
    # taken out of its globals: a function in its own globals is a cycle (freed only by the gc)
    return names.pop("_run")


def _local_slots(graph: Any, steps: list) -> dict[str, str]:
    """A local variable name for every value the steps read or make (valid identifiers whatever
    the model's names are)."""
    slots: dict[str, str] = {}
    own = set(graph.inputs) | set(graph.constants)
    for step in steps:
        for name in step.inputs:
            if name and name in own and name not in slots:
                slots[name] = f"v{len(slots)}"
        for name in step.node.outputs:
            if name and name not in slots:
                slots[name] = f"v{len(slots)}"
                own.add(name)
    return slots


def read_locals(values: dict, slots: dict, env: dict, get: Callable, inputs: tuple) -> list:
    """``read_args`` for a runner keeping values in locals (``values``: its ``locals()``)."""
    return [values.get(slots[name]) if name in slots else None for name in inputs] if slots else \
        read_args(env, get, inputs)


def _step_lines(i: int, step: Any, own: set, hold: frozenset, top: bool, with_nested: bool,
                names: dict, slots: dict, preloaded: frozenset) -> list[str]:
    """The statements of one node (see the module docstring for what each keeps)."""
    node = step.node

    def read(name: str) -> str:
        if not name:
            return "None"
        if name in slots:
            return slots[name]
        return f"env[{name!r}]" if name in own else f"get({name!r})"

    reads = ", ".join(read(name) for name in step.inputs)
    out = [f"    c, node = C{i}, N{i}"]
    if step.nested:
        out.append("    c._run_subgraph = run_subgraph")
    if top:
        out.append("    allocator.step_peak = allocator.in_use")
        if step.nested:
            out += ["    pool.inner_peak = pool.inner_in_use", f"    pool.begin_nested({node.step})"]
    out.append("    try:")
    if step.special or step.on_host:
        out.append(f"        args = [{reads}]")
        if step.special:
            out.append(f"        args = device_args(S{i}, args, host_constants, device)")
        out.append(f"        r = run_on_host(S{i}, args, c, device)" if step.on_host else f"        r = K{i}(c, *args)")
        out.append("        args = None  # holds no input past its step")
    else:
        out.append(f"        r = K{i}(c{', ' if reads else ''}{reads})")
    out += ["    except Exception as exc:",
            "        c.handed, c.temporaries, c.watched = {}, [], []",
            f"        raise node_error(node, exc, read_locals(locals(), SLOTS, env, get, S{i}.inputs))"]
    # the general store (``runtime/store_outputs.py``) writes env; with locals each output moves out of it
    settle = [f"store(device, c, S{i}, r, env)"] + (["forget_unrequested(c)"] if top else []) + [f"{slots[name]} = env.pop({name!r})" for _, name in step.named
                                            if name in slots]
    if step.single and not step.keep_host:
        out += ["    if r is not None and r is c.handed.get(0):",
                f"        {slots.get(step.single) or f'env[{step.single!r}]'} = r",
                "    else:"] + [f"        {line}" for line in settle]
    else:
        out += [f"    {line}" for line in settle]
    # a fresh record of handed buffers for the next run: the old one would keep this step's output
    # alive past its release (reduce gives the bytes back there, and the sampler would see them)
    out += ["    c.handed = {}",
            "    if c.temporaries:",
            "        for key in c.temporaries:",
            "            release(key)",
            "        c.temporaries = []",
            "        if c.watched:",
            "            c.watched = []"]
    if step.nested:
        out.append("    c._run_subgraph = None")
    # Body results handed over to a control-flow step die once the step that read them is done:
    # that step itself, or, in a body run again by its Loop, the first step of the next turn.
    # Only those steps can find any (results are handed over only from within control flow).
    if step.nested or (i == 0 and not top):
        out += ["    if nested is not None and nested.handed:",
                "        nested.settle_handed()"]
    if top:
        if step.nested:
            out += ["    pool.end_nested()",
                    "    if pool.inner_peak:",
                    f"        pool.inner_peaks[{node.step}] = pool.inner_peak"]
        elif with_nested:  # no subgraph tensor is made here: the step's inner peak is what is alive
            out += ["    if pool.inner_in_use:",
                    f"        pool.inner_peaks[{node.step}] = pool.inner_in_use"]
        out += ["    if peaks is not None:",
                f"        peaks[{i}] = allocator.step_peak"]
    for j, (name, key) in enumerate(step.frees):
        if name in hold:
            continue
        names[f"F{i}_{j}"] = key
        if name in slots:
            out.append(f"    {slots[name]} = None")
        if name not in slots or name in preloaded:  # env holds it (a feed keeps its entry there too)
            out.append(f"    env.pop({name!r}, None)")
        # a top-level value takes back bytes only if it took the dynamic path (a planned view
        # just stops being used; an empty path needs no key hashed); inside a subgraph the pool
        # has more to settle
        if top:
            out += [f"    if dynamic and F{i}_{j} in dynamic:", f"        release(F{i}_{j})"]
        else:
            out.append(f"    release(F{i}_{j})")
    return out
