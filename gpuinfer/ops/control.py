"""Control flow: If, Loop, Scan.  Bodies are compiled subgraphs run through ``ctx.run_graph``.

Results are copied into the buffers the pool gives this node, so a body's own tensors die with
the body and only the node's outputs outlive it.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.values import OptionalValue, TensorSequence
from gpuinfer.ops.registry import op


def _emit(ctx, values: Sequence[Any]) -> tuple:
    """Copy body results into this node's output buffers."""
    return tuple(_emit_one(ctx, i, value) for i, value in enumerate(values))


def _emit_one(ctx, i: int, value: Any) -> Any:
    """Output ``i``: ``value`` copied into its buffer (sequences, optionals and unused outputs as they are)."""
    if isinstance(value, (TensorSequence, OptionalValue)):
        return value
    value = ctx.xp.asarray(value)
    if not ctx.wants(i):
        return value
    buf = ctx.out(i, value.shape, value.dtype)
    ctx.xp.copyto(buf, value)
    return buf


class _Carried:
    """Loop/Scan state from one body run to the next.  The body's tensors die with its run, so each
    state is copied out, into two scratch buffers per slot that take turns (the body may hand back
    the buffer it was given): counted by the pool, and two per slot whatever the trip count."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.slots: dict[int, list] = {}  # slot -> [buffer, buffer, which one is next]

    def own(self, slot: int, value: Any) -> Any:
        if isinstance(value, TensorSequence):  # outside the pool: the loop keeps its own list
            return TensorSequence(value)
        if isinstance(value, OptionalValue):
            return value
        value = self.ctx.xp.asarray(value)
        entry = self.slots.get(slot)
        if entry is None or entry[0].shape != value.shape or entry[0].dtype != value.dtype:
            entry = [self.ctx.scratch(value.shape, value.dtype), self.ctx.scratch(value.shape, value.dtype), 0]
            self.slots[slot] = entry
        buf = entry[entry[2]]
        entry[2] ^= 1
        self.ctx.xp.copyto(buf, value)
        return buf


def _kept(ctx, value: Any) -> Any:
    """A pool-counted copy of one iteration's scan output, kept until the outputs are stacked."""
    if isinstance(value, (TensorSequence, OptionalValue)):
        return value
    value = ctx.xp.asarray(value)
    buf = ctx.scratch(value.shape, value.dtype)
    ctx.xp.copyto(buf, value)
    return buf


def _stacked_into(ctx, i: int, values: list) -> Any:
    """Output ``i``: ``values`` stacked along a new first axis."""
    if not values:
        return ctx.xp.zeros((0,), dtype=np.float32)
    out = ctx.out(i, (len(values), *values[0].shape), values[0].dtype)
    for t, v in enumerate(values):
        out[t] = v
    return out


@op("If", since=1)
def if_(ctx, cond):
    """Run the branch the (host-read) boolean condition picks."""
    flag = ctx.host(cond)
    if flag.size != 1:
        raise NodeExecutionError(f"If: condition must hold one element, got shape {list(flag.shape)}")
    taken = "then_branch" if bool(flag.reshape(-1)[0]) else "else_branch"
    branch = ctx.attr(taken)
    if len(branch.outputs) != ctx.n_outputs:
        raise NodeExecutionError(f"If: {taken} has {len(branch.outputs)} output(s), the node {ctx.n_outputs}")
    return _emit(ctx, ctx.run_graph(branch, []))


@op("Loop", since=1)
def loop(ctx, max_trip, cond, *initial):
    """Run the body while the trip count and condition allow; stack per-iteration scan outputs."""
    xp = ctx.xp
    body = ctx.attr("body")
    trips = None if max_trip is None else int(ctx.host(max_trip).reshape(-1)[0])
    keep_going = True if cond is None else bool(ctx.host(cond).reshape(-1)[0])
    carried = list(initial)
    n_carried = len(carried)
    n_scan = len(body.outputs) - 1 - n_carried
    if len(body.inputs) != 2 + n_carried or n_scan < 0 or ctx.n_outputs > n_carried + n_scan:
        raise NodeExecutionError(
            f"Loop: the body takes {len(body.inputs)} input(s) and makes {len(body.outputs)} output(s); with "
            f"{n_carried} carried value(s) it must take {2 + n_carried} (iteration, condition, carried) and "
            f"make at least {1 + n_carried} (condition, carried, scan outputs), and the node's "
            f"{ctx.n_outputs} output(s) at most {max(n_carried + n_scan, n_carried)}")
    scans: list[list[Any]] = [[] for _ in range(n_scan)]
    state = _Carried(ctx)
    i = 0
    while keep_going and (trips is None or i < trips):
        results = ctx.run_graph(body, [xp.asarray(np.array(i, dtype=np.int64)), xp.asarray(np.array(keep_going)),
                                       *carried])
        keep_going = bool(ctx.host(results[0]).reshape(-1)[0])
        carried = [state.own(k, r) for k, r in enumerate(results[1:1 + n_carried])]
        for store, value in zip(scans, results[1 + n_carried:]):
            store.append(_kept(ctx, value))
        del results  # the body's own results, copied: let them go before the next turn runs
        i += 1
    outs = list(_emit(ctx, carried))
    return tuple(outs + [_stacked_into(ctx, n_carried + j, s) for j, s in enumerate(scans)])


@op("Scan", since=8)
def scan_8(ctx, sequence_lens, *inputs):
    """Scan-8: batch axis 0, sequence axis 1, per-batch lengths; states and outputs batched."""
    xp = ctx.xp
    body = ctx.attr("body")
    n_scan_in = int(ctx.attr("num_scan_inputs"))
    n_state = len(inputs) - n_scan_in
    if n_scan_in < 1 or n_state < 0:
        raise NodeExecutionError(f"Scan: num_scan_inputs={n_scan_in} does not fit {len(inputs)} state/scan inputs")
    scan_inputs = inputs[n_state:]
    if any(x.ndim < 2 for x in scan_inputs):
        raise NodeExecutionError(f"Scan: scan inputs need (batch, sequence, ...) axes, got shapes "
                                 f"{[tuple(x.shape) for x in scan_inputs]}")
    batch, max_len = scan_inputs[0].shape[0], scan_inputs[0].shape[1]
    if (any(x.shape[:2] != (batch, max_len) for x in scan_inputs)
            or any(s.shape[:1] != (batch,) for s in inputs[:n_state])):
        raise NodeExecutionError("Scan: every state and scan input must share the batch size, and every scan input "
                                 f"the sequence length; got {[tuple(x.shape) for x in inputs]}")
    lengths = [max_len] * batch
    if sequence_lens is not None:
        lengths = [int(v) for v in ctx.host(sequence_lens).reshape(-1)]
        if len(lengths) != batch or any(v < 0 or v > max_len for v in lengths):
            raise NodeExecutionError(f"Scan: sequence_lens must hold {batch} values in [0, {max_len}], got {lengths}")
    dirs = ctx.attr("directions", [0] * n_scan_in)
    n_scan_out = len(body.outputs) - n_state
    final_states: list[list[Any]] = []
    outputs: list[list[list[Any]]] = []  # per batch, per scan output, per step
    for b in range(batch):
        states = [s[b] for s in inputs[:n_state]]
        steps: list[list[Any]] = [[] for _ in range(n_scan_out)]
        state = _Carried(ctx)
        n = lengths[b]
        for t in range(n):
            slices = [x[b, n - 1 - t] if d else x[b, t] for x, d in zip(scan_inputs, dirs)]
            results = ctx.run_graph(body, [*states, *slices])
            states = [state.own(k, r) for k, r in enumerate(results[:n_state])]
            for store, value in zip(steps, results[n_state:]):
                store.append(_kept(ctx, value))
            del results
        final_states.append([_kept(ctx, s) for s in states])
        outputs.append(steps)
    outs = [_stacked_into(ctx, i, [fs[i] for fs in final_states]) if batch else _emit_one(ctx, i, inputs[i])
            for i in range(n_state)]
    for j in range(n_scan_out):
        sample = next((steps[j][0] for steps in outputs if steps[j]), None)
        if sample is None:
            outs.append(xp.zeros((batch, max_len), dtype=np.float32))
            continue
        full = ctx.out(n_state + j, (batch, max_len, *sample.shape), sample.dtype)
        full[...] = 0  # steps past a sequence's length stay zero
        for b, steps in enumerate(outputs):
            for t, value in enumerate(steps[j]):
                full[b, t] = value
        outs.append(full)
    return tuple(outs)


@op("Scan", since=9)
def scan(ctx, *inputs):
    """Slice scan inputs along their axes, run the body per slice, carry state, stack outputs."""
    xp = ctx.xp
    body = ctx.attr("body")
    n_scan_in = int(ctx.attr("num_scan_inputs"))
    n_state = len(inputs) - n_scan_in
    states = list(inputs[:n_state])
    scan_inputs = inputs[n_state:]
    in_axes = ctx.attr("scan_input_axes", [0] * n_scan_in)
    in_dirs = ctx.attr("scan_input_directions", [0] * n_scan_in)
    n_scan_out = len(body.outputs) - n_state
    if not 0 <= n_state <= len(inputs) or len(body.inputs) != len(inputs) or n_scan_out < 0:
        raise NodeExecutionError(
            f"Scan: the body takes {len(body.inputs)} input(s) and makes {len(body.outputs)} output(s); the node "
            f"gives {len(inputs)} ({n_state} state, num_scan_inputs={n_scan_in}), and the body must make every "
            f"state value and then the scan outputs")
    if any(getattr(x, "ndim", 0) == 0 for x in scan_inputs):
        raise NodeExecutionError(f"Scan: scan inputs need a scan axis, got shapes "
                                 f"{[tuple(getattr(x, 'shape', ())) for x in scan_inputs]}")
    out_axes = ctx.attr("scan_output_axes", [0] * n_scan_out)
    out_dirs = ctx.attr("scan_output_directions", [0] * n_scan_out)
    moved = [xp.moveaxis(x, a % x.ndim, 0) for x, a in zip(scan_inputs, in_axes)]
    length = moved[0].shape[0] if moved else 0
    stacked: list[Any] = [None] * n_scan_out  # each output viewed with its scan axis first
    outs: list[Any] = [None] * n_scan_out
    state = _Carried(ctx)
    for t in range(length):
        slices = [m[length - 1 - t] if d else m[t] for m, d in zip(moved, in_dirs)]
        results = ctx.run_graph(body, [*states, *slices])
        states = [state.own(k, r) for k, r in enumerate(results[:n_state])]
        for j, value in enumerate(results[n_state:]):
            if stacked[j] is None:  # the first turn shows the shape: the output is made once, written in place
                value = xp.asarray(value)
                shape = (length, *value.shape)
                axis = out_axes[j] % len(shape)
                outs[j] = ctx.out(n_state + j, shape[1:axis + 1] + shape[:1] + shape[axis + 1:], value.dtype)
                stacked[j] = xp.moveaxis(outs[j], axis, 0)
            stacked[j][length - 1 - t if out_dirs[j] else t] = value
        del results
    empty = [xp.zeros((0,), dtype=np.float32)] * n_scan_out  # no turn: nothing shows the shape
    return tuple(list(_emit(ctx, states)) + (outs if length else empty))
