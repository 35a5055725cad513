"""Control flow: If, Loop, Scan.  Bodies are compiled subgraphs run through ``ctx.run_graph``.

Results are copied into the buffers the pool gives this node, so a body's own tensors die with
the body and only the node's outputs outlive it.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.context import OptionalValue, TensorSequence
from gpuinfer.ops.registry import op


def _emit(ctx, values: Sequence[Any]) -> tuple:
    """Copy body results into this node's output buffers."""
    xp = ctx.xp
    outs = []
    for i, value in enumerate(values):
        if isinstance(value, (TensorSequence, OptionalValue)):
            outs.append(value)
            continue
        value = xp.asarray(value)
        if not ctx.wants(i):
            outs.append(value)
            continue
        buf = ctx.out(i, value.shape, value.dtype)
        xp.copyto(buf, value)
        outs.append(buf)
    return tuple(outs)


def _own(xp, value: Any) -> Any:
    """A copy the loop owns of a body result (sequences and optionals copied as containers)."""
    if isinstance(value, TensorSequence):
        return TensorSequence(value)
    if isinstance(value, OptionalValue):
        return value
    return xp.array(value, copy=True)


@op("If", since=1)
def if_(ctx, cond):
    """Run the branch the (host-read) boolean condition picks."""
    flag = ctx.host(cond)
    if flag.size != 1:
        raise NodeExecutionError(f"If: condition must hold one element, got shape {list(flag.shape)}")
    branch = ctx.attr("then_branch") if bool(flag.reshape(-1)[0]) else ctx.attr("else_branch")
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
    scans: list[list[Any]] = []
    i = 0
    while keep_going and (trips is None or i < trips):
        results = ctx.run_graph(body, [xp.asarray(np.array(i, dtype=np.int64)), xp.asarray(np.array(keep_going)),
                                       *carried])
        keep_going = bool(ctx.host(results[0]).reshape(-1)[0])
        carried = [_own(xp, r) for r in results[1:1 + n_carried]]
        step_scans = results[1 + n_carried:]
        if not scans:
            scans = [[] for _ in step_scans]
        for store, value in zip(scans, step_scans):
            store.append(xp.array(value, copy=True))
        i += 1
    n_scan = len(body.outputs) - 1 - n_carried
    stacked = [xp.stack(s) if s else xp.zeros((0,), dtype=np.float32) for s in (scans or [[]] * n_scan)]
    return _emit(ctx, carried + stacked)


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
        n = lengths[b]
        for t in range(n):
            slices = [x[b, n - 1 - t] if d else x[b, t] for x, d in zip(scan_inputs, dirs)]
            results = ctx.run_graph(body, [*states, *slices])
            states = [_own(xp, r) for r in results[:n_state]]
            for store, value in zip(steps, results[n_state:]):
                store.append(xp.array(value, copy=True))
        final_states.append(states)
        outputs.append(steps)
    stacked_states = [xp.stack([fs[i] for fs in final_states]) if batch else inputs[i] for i in range(n_state)]
    stacked_outs = []
    for j in range(n_scan_out):
        sample = next((steps[j][0] for steps in outputs if steps[j]), None)
        if sample is None:
            stacked_outs.append(xp.zeros((batch, max_len), dtype=np.float32))
            continue
        full = xp.zeros((batch, max_len, *sample.shape), dtype=sample.dtype)  # steps past a length stay zero
        for b, steps in enumerate(outputs):
            if steps[j]:
                full[b, :len(steps[j])] = xp.stack(steps[j])
        stacked_outs.append(full)
    return _emit(ctx, stacked_states + stacked_outs)


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
    out_axes = ctx.attr("scan_output_axes", [0] * n_scan_out)
    out_dirs = ctx.attr("scan_output_directions", [0] * n_scan_out)
    moved = [xp.moveaxis(x, a % x.ndim, 0) for x, a in zip(scan_inputs, in_axes)]
    length = moved[0].shape[0] if moved else 0
    collected: list[list[Any]] = [[] for _ in range(n_scan_out)]
    for t in range(length):
        slices = [m[length - 1 - t] if d else m[t] for m, d in zip(moved, in_dirs)]
        results = ctx.run_graph(body, [*states, *slices])
        states = [_own(xp, r) for r in results[:n_state]]
        for store, value in zip(collected, results[n_state:]):
            store.append(xp.array(value, copy=True))
    outs = []
    for store, axis, direction in zip(collected, out_axes, out_dirs):
        if direction:
            store = store[::-1]
        stacked = xp.stack(store)
        outs.append(xp.moveaxis(stacked, 0, axis % stacked.ndim))
    return _emit(ctx, states + outs)
