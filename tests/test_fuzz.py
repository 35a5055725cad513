"""Robustness, measured: mutated models and wrong feeds may only raise ``GpuinferError``.

Seeds are small models built here (``tests/fuzz_harness.py``: a conv net, twenty-odd common ops,
If/Loop, run-time shape arithmetic) plus ``mtcnn_pnet.onnx`` and ``silero_vad.onnx`` from the
shared folder when present.  Three fuzzers:

* bytes: flip, set, insert, delete bytes of the serialized model, or cut it short;
* fields: parse, then change dims, dtypes, attribute values and types, input/output names, op
  types, domains, opset and IR versions, initializers, node order, graph inputs and outputs;
* feeds: valid models fed wrong names, ranks, dims, dtypes, NaN, empty and non-array values.

Each case loads the model (``InferenceSession(...)``) and runs it twice; anything but a
``GpuinferError`` escaping, a hang (over ``CASE_SECONDS``) or a crash fails the test with the case.
Memory is bounded: the session's ``memory_limit_bytes``, a lower load-time folding cap, and an
address-space cap a few GiB above the process's size.

CI mode (the default) runs a fixed, derandomized set of cases in this process, in well under a
minute.  Long mode: ``GPUINFER_FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz.py`` runs that
many random cases per fuzzer, each in a worker subprocess (so a segfault is reported, not fatal);
``GPUINFER_FUZZ_INPROCESS=1`` keeps them in this process.
"""
from __future__ import annotations

import os

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpuinfer
from gpuinfer.ops.registry import registered_ops
from tests.fuzz_harness import (SHARED_SIZES, SHARED_VALUES, FeedRecipe, SubprocessRunner, crashing_worker,
                                run_case, run_in_thread, seed_models, sleeping_worker)

LONG = int(os.environ.get("GPUINFER_FUZZ_EXAMPLES", "0") or 0)
IN_PROCESS = not LONG or os.environ.get("GPUINFER_FUZZ_INPROCESS") == "1"
SEEDS = seed_models()
SEED_NAMES = sorted(SEEDS)
OP_TYPES = sorted({op for domain, op, _ in registered_ops() if domain == ""}) + ["Bogus"]


def _settings(ci_examples: int):
    if LONG:
        return settings(max_examples=LONG, deadline=None, derandomize=False, database=None,
                        suppress_health_check=list(HealthCheck))
    return settings(max_examples=ci_examples, deadline=None, suppress_health_check=list(HealthCheck))


_RUNNER = None


def _run(model: bytes, recipe: FeedRecipe, mode: str):
    global _RUNNER
    if IN_PROCESS:
        return run_in_thread(model, recipe, mode)
    if _RUNNER is None:
        _RUNNER = SubprocessRunner()
    return _RUNNER.run(model, recipe, mode)


def _check(outcome, what: str) -> None:
    kind, name, detail = outcome
    assert kind != "escape", f"{name} escaped for {what}:\n{detail}"


def _base_recipe(seed: str, size: int = 2) -> FeedRecipe:
    return FeedRecipe(size=size, sizes=SHARED_SIZES.get(seed, {}), values=SHARED_VALUES.get(seed, {}))


# --- bytes -----------------------------------------------------------------------------------------

BYTE_EDIT = st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
                      st.integers(0, 2**31), st.integers(0, 255))


def mutate_bytes(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for kind, where, value in edits:
        pos = where % max(len(out), 1)
        if kind == "flip" and out:
            out[pos] ^= 1 << (value % 8)
        elif kind == "set" and out:
            out[pos] = value
        elif kind == "insert":
            out[pos:pos] = bytes([value]) * (1 + value % 5)
        elif kind == "delete":
            del out[pos:pos + 1 + value % 9]
        elif kind == "truncate":
            del out[pos:]
    return bytes(out)


@_settings(400)
@given(st.sampled_from(SEED_NAMES), st.lists(BYTE_EDIT, min_size=1, max_size=6),
       st.sampled_from(gpuinfer.MEMORY_MODES))
def test_mutated_bytes_only_raise_gpuinfer_errors(seed, edits, mode):
    model = mutate_bytes(SEEDS[seed], edits)
    _check(_run(model, _base_recipe(seed), mode), f"{seed} with byte edits {edits} in {mode}")


# --- fields ----------------------------------------------------------------------------------------

INTS = st.sampled_from([-(2**31), -3, -2, -1, 0, 1, 2, 3, 5, 64, 2**31 - 1, 2**40])
FLOATS = st.sampled_from([float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 0.5, 1e30, -1e-30])
NAMES = st.sampled_from(["", "ghost", "x", "y", "a", "s", "t4", "picked", "input", "state", "sr", "Identity_0"])
ATTR_NAMES = ["axis", "axes", "perm", "to", "mode", "k", "pads", "kernel_shape", "strides", "group", "dilations",
              "keepdims", "epsilon", "alpha", "beta", "transB", "value", "then_branch", "body", "direction",
              "hidden_size", "auto_pad", "ceil_mode", "coordinate_transformation_mode"]


def _graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _pick(data, items, label: str):
    items = list(items)
    return items[data.draw(st.integers(0, len(items) - 1), label=label)] if items else None


def mutate_fields(data, model: onnx.ModelProto) -> list[str]:
    """Apply one field mutation to ``model`` (in place); returns what was done, for the report."""
    graphs = list(_graphs(model.graph))
    graph = _pick(data, graphs, "graph")
    nodes = [(g, n) for g in graphs for n in g.node]
    kind = data.draw(st.sampled_from([
        "dim", "elem_type", "shape_drop", "init_dims", "init_dtype", "init_data", "attr_value", "attr_type",
        "attr_drop", "attr_add", "input_name", "input_drop", "input_add", "output_name", "output_drop",
        "op_type", "domain", "opset", "ir_version", "node_drop", "node_dup", "node_swap", "graph_output",
        "graph_input"]), label="kind")
    values = [v for g in graphs for v in (*g.input, *g.output, *g.value_info)]
    if kind in ("dim", "elem_type", "shape_drop"):
        value = _pick(data, values, "value")
        if value is None:
            return [kind + ": nothing"]
        tensor = value.type.tensor_type
        if kind == "elem_type":
            tensor.elem_type = data.draw(st.integers(0, 25))
        elif kind == "shape_drop":
            tensor.ClearField("shape")
        elif tensor.shape.dim:
            dim = _pick(data, tensor.shape.dim, "dim")
            how = data.draw(st.sampled_from(["value", "param", "clear", "add", "remove"]))
            if how == "value":
                dim.dim_value = data.draw(INTS)
            elif how == "param":
                dim.dim_param = data.draw(st.sampled_from(["N", "Z", ""]))
            elif how == "clear":
                dim.Clear()
            elif how == "add":
                tensor.shape.dim.add().dim_value = data.draw(st.integers(0, 9))
            else:
                del tensor.shape.dim[-1]
        return [f"{kind} of {value.name!r}"]
    inits = [t for g in graphs for t in g.initializer]
    if kind.startswith("init_"):
        init = _pick(data, inits, "initializer")
        if init is None:
            return [kind + ": nothing"]
        if kind == "init_dims":
            if init.dims and data.draw(st.booleans()):
                init.dims[data.draw(st.integers(0, len(init.dims) - 1))] = data.draw(INTS)
            else:
                init.dims.append(data.draw(st.integers(0, 4)))
        elif kind == "init_dtype":
            init.data_type = data.draw(st.integers(0, 25))
        else:
            init.raw_data = init.raw_data[: data.draw(st.integers(0, 16))]
        return [f"{kind} of {init.name!r}"]
    if kind == "opset":
        if model.opset_import and data.draw(st.booleans()):
            model.opset_import[0].version = data.draw(st.sampled_from([0, 1, 5, 6, 7, 9, 10, 11, 13, 17, 21, 22, 99]))
        else:
            del model.opset_import[:]
        return ["opset"]
    if kind == "ir_version":
        model.ir_version = data.draw(st.sampled_from([0, 1, 2, 3, 4, 6, 7, 10, 99]))
        return ["ir_version"]
    if kind == "graph_output":
        how = data.draw(st.sampled_from(["drop", "rename", "dup"]))
        if graph.output:
            if how == "drop":
                del graph.output[data.draw(st.integers(0, len(graph.output) - 1))]
            elif how == "rename":
                graph.output[0].name = data.draw(NAMES)
            else:
                graph.output.add().CopyFrom(graph.output[0])
        return [f"graph_output {how}"]
    if kind == "graph_input":
        how = data.draw(st.sampled_from(["drop", "rename", "dup", "add_init"]))
        if how == "add_init" and inits:
            graph.input.add().name = inits[0].name
        elif graph.input:
            if how == "drop":
                del graph.input[0]
            elif how == "rename":
                graph.input[0].name = data.draw(NAMES)
            else:
                graph.input.add().CopyFrom(graph.input[0])
        return [f"graph_input {how}"]
    picked = _pick(data, nodes, "node")
    if picked is None:
        return [kind + ": no node"]
    owner, node = picked
    where = f"{kind} on {node.name or node.op_type!r}"
    if kind == "attr_value" and node.attribute:
        attr = _pick(data, node.attribute, "attribute")
        if attr.type == onnx.AttributeProto.INT:
            attr.i = data.draw(INTS)
        elif attr.type == onnx.AttributeProto.INTS:
            del attr.ints[:]
            attr.ints.extend(data.draw(st.lists(INTS, max_size=6)))
        elif attr.type == onnx.AttributeProto.FLOAT:
            attr.f = data.draw(FLOATS)
        elif attr.type == onnx.AttributeProto.FLOATS:
            del attr.floats[:]
            attr.floats.extend(data.draw(st.lists(FLOATS, max_size=4)))
        elif attr.type == onnx.AttributeProto.STRING:
            attr.s = data.draw(st.sampled_from([b"", b"bogus", b"\xff\xfe", b"constant", b"reflect", b"linear"]))
        elif attr.type == onnx.AttributeProto.TENSOR:
            attr.t.data_type = data.draw(st.integers(0, 16))
            attr.t.dims.append(data.draw(st.integers(0, 3)))
        return [where + f" {attr.name}"]
    if kind == "attr_type" and node.attribute:
        attr = _pick(data, node.attribute, "attribute")
        attr.type = data.draw(st.integers(0, 14))
        return [where + f" {attr.name}"]
    if kind == "attr_drop" and node.attribute:
        del node.attribute[data.draw(st.integers(0, len(node.attribute) - 1))]
        return [where]
    if kind == "attr_add":
        name = data.draw(st.sampled_from(ATTR_NAMES))
        value = data.draw(st.one_of(INTS, st.lists(INTS, min_size=1, max_size=5), FLOATS,
                                    st.sampled_from(["nearest", "x"])))
        kept = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend(kept + [onnx.helper.make_attribute(name, value)])
        return [where + f" {name}={value!r}"]
    if kind == "input_name" and node.input:
        node.input[data.draw(st.integers(0, len(node.input) - 1))] = data.draw(
            st.one_of(NAMES, st.sampled_from(list(node.output) or [""])))
    elif kind == "input_drop" and node.input:
        del node.input[-1]
    elif kind == "input_add":
        node.input.append(data.draw(NAMES))
    elif kind == "output_name" and node.output:
        node.output[data.draw(st.integers(0, len(node.output) - 1))] = data.draw(NAMES)
    elif kind == "output_drop" and node.output:
        del node.output[-1]
    elif kind == "op_type":
        node.op_type = data.draw(st.sampled_from(OP_TYPES))
    elif kind == "domain":
        node.domain = data.draw(st.sampled_from(["ai.onnx.ml", "com.microsoft", "x", "ai.onnx"]))
    elif kind == "node_drop":
        owner.node.remove(node)
    elif kind == "node_dup":
        owner.node.add().CopyFrom(node)
    elif kind == "node_swap" and len(owner.node) > 1:
        other = owner.node[data.draw(st.integers(0, len(owner.node) - 1))]
        tmp = onnx.NodeProto()
        tmp.CopyFrom(node)
        node.CopyFrom(other)
        other.CopyFrom(tmp)
    return [where]


@_settings(1000)
@given(st.sampled_from(SEED_NAMES), st.integers(1, 3), st.sampled_from(gpuinfer.MEMORY_MODES), st.data())
def test_mutated_fields_only_raise_gpuinfer_errors(seed, count, mode, data):
    model = onnx.ModelProto()
    model.ParseFromString(SEEDS[seed])
    done = []
    for _ in range(count):
        done += mutate_fields(data, model)
    _check(_run(model.SerializeToString(), _base_recipe(seed), mode), f"{seed} after {done} in {mode}")


# --- feeds -----------------------------------------------------------------------------------------

FEED_EDIT = st.tuples(st.integers(0, 5), st.sampled_from(
    ["drop", "extra", "rank_up", "rank_down", "dim", "empty", "dtype", "nan", "noncontiguous", "python"]),
    st.integers(0, 64))


@_settings(400)
@given(st.sampled_from(SEED_NAMES), st.integers(0, 4),
       st.sampled_from(["normal", "zeros", "nan", "inf", "huge", "ints"]), st.lists(FEED_EDIT, max_size=3),
       st.booleans(), st.sampled_from(gpuinfer.MEMORY_MODES))
def test_wrong_feeds_only_raise_gpuinfer_errors(seed, size, fill, edits, shared_sizes, mode):
    base = _base_recipe(seed)
    recipe = FeedRecipe(size=size, fill=fill, edits=tuple(edits), sizes=base.sizes if shared_sizes else {},
                        values=base.values if shared_sizes else {})
    _check(_run(SEEDS[seed], recipe, mode), f"{seed} fed {recipe} in {mode}")


def teardown_module(module):
    if _RUNNER is not None:
        _RUNNER.close()


@pytest.mark.parametrize("seed", SEED_NAMES)
def test_every_seed_runs_unmutated(seed):
    """The fuzzers start from models that load and run: a mutation's failure is the mutation's."""
    kind, name, detail = run_in_thread(SEEDS[seed], _base_recipe(seed), "arena")
    assert kind == "ok", (name, detail)


# --- the harness itself: what it must catch -------------------------------------------------------

def test_an_escape_is_told_apart_from_a_refusal(monkeypatch):
    model = SEEDS["conv_net"]
    assert run_case(model, _base_recipe("conv_net"), "arena")[0] == "ok"
    assert run_case(model, FeedRecipe(edits=((0, "drop", 0),)), "arena")[:2] == ("refused", "InputError")

    def broken(self, *args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(gpuinfer.InferenceSession, "run", broken)
    kind, name, detail = run_case(model, _base_recipe("conv_net"), "arena")
    assert (kind, name) == ("escape", "KeyError") and "a bug" in detail


def test_a_hang_is_reported(monkeypatch):
    import time

    monkeypatch.setattr(gpuinfer.InferenceSession, "run", lambda self, *a, **k: time.sleep(2))
    assert run_in_thread(SEEDS["conv_net"], _base_recipe("conv_net"), "arena", timeout=0.2)[:2] == ("escape", "Hang")


def test_the_subprocess_runner_reports_a_crash_and_a_hang():
    crashing = SubprocessRunner(target=crashing_worker)
    try:
        kind, name, detail = crashing.run(SEEDS["conv_net"], FeedRecipe(), "arena")
    finally:
        crashing.close()
    assert (kind, name) == ("escape", "Crash") and "signal" in detail
    sleeping = SubprocessRunner(timeout=0.5, target=sleeping_worker)
    try:
        assert sleeping.run(SEEDS["conv_net"], FeedRecipe(), "arena")[:2] == ("escape", "Hang")
    finally:
        sleeping.close()


def test_the_subprocess_runner_runs_cases():
    runner = SubprocessRunner()
    try:
        assert runner.run(SEEDS["conv_net"], _base_recipe("conv_net"), "arena")[0] == "ok"
        assert runner.run(b"not a model", FeedRecipe(), "arena")[:2] == ("refused", "ModelLoadError")
    finally:
        runner.close()
