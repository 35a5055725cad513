"""Spare scratch (plan/slack.py): steps below the plan's busiest one widen their Conv bands and
depthwise channel blocks into the room there, and the arena does not grow.

The model: a wide 3x3 conv on a 64x64 image, pooled 2x down (the busiest step), squeezed by a 1x1
conv, then a 3x3 conv with Relu and a 3x3 depthwise conv with PRelu on the 32x32 maps: small steps
with room to spare, whose least scratch is a few rows or channels at a time.  The depthwise conv is
held to its "strided" layout (channel blocks of window views; the "nhwc" one keeps its blocks, see
conv_depthwise.py)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import gpuinfer
import gpuinfer.ops.conv_depthwise as conv_depthwise
import gpuinfer.plan.slack as slack_module
from gpuinfer.ops.conv import conv_geometry
from gpuinfer.plan import make_plan
from gpuinfer.values import SCRATCH

ort = pytest.importorskip("onnxruntime")


def _model() -> bytes:
    rng = np.random.default_rng(3)

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)

    inits = [weight("w1", 64, 8, 3, 3), weight("w0", 16, 64, 1, 1), weight("w2", 32, 16, 3, 3),
             weight("w3", 32, 1, 3, 3), weight("b3", 32),
             numpy_helper.from_array(np.full((32, 1, 1), 0.1, np.float32), "slope")]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], name="wide"),
        helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Conv", ["p", "w0"], ["q"], name="squeeze"),
        helper.make_node("Conv", ["q", "w2"], ["c"], pads=[1, 1, 1, 1], name="small"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w3", "b3"], ["d"], pads=[1, 1, 1, 1], group=32, name="depthwise"),
        helper.make_node("PRelu", ["d", "slope"], ["y"], name="prelu"),
    ]
    graph = helper.make_graph(nodes, "slack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 64, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 32, 32])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.fixture(autouse=True)
def strided_depthwise(monkeypatch):
    monkeypatch.setattr(conv_depthwise, "NHWC_MAX_ELEMENTS", 0)


FEEDS = {"x": np.random.default_rng(4).standard_normal((1, 8, 64, 64)).astype(np.float32)}


def _scratch_bytes(plan, step: int) -> int:
    return sum(life.nbytes for key, life in plan.lifetimes.items() if key.kind == SCRATCH and key.step == step)


def _steps(sess) -> dict[str, int]:
    """Step of each model node by name (a fused step is named after its nodes: "small+relu")."""
    return {part: node.step for node in sess.graph.nodes for part in node.name.split("+")}


def test_small_steps_widen_their_scratch_and_the_arena_does_not_grow():
    sess = gpuinfer.InferenceSession(_model(), device="cpu", memory_mode="arena")
    wide = sess.plan_for(FEEDS)
    least = make_plan(sess.graph, wide.value_types, "arena", device_kind="cpu", scratch_slack={})
    steps = _steps(sess)
    assert least.scratch_slack == {}
    assert steps["small"] != steps["depthwise"]
    assert set(wide.scratch_slack) >= {steps["small"], steps["depthwise"]}
    for step, spare in wide.scratch_slack.items():  # the room below the busiest step, no more
        live = sum(life.nbytes for life in least.lifetimes.values() if life.first <= step <= life.last)
        assert live + spare == least.lower_bound_bytes
    for name in ("small", "depthwise"):
        step = steps[name]
        assert _scratch_bytes(wide, step) > _scratch_bytes(least, step)
        assert _scratch_bytes(wide, step) <= _scratch_bytes(least, step) + wide.scratch_slack[step]
    assert wide.planned_bytes <= least.planned_bytes
    assert wide.lower_bound_bytes == least.lower_bound_bytes


def test_wider_runs_match_onnxruntime_and_ask_exactly_what_was_planned():
    data = _model()
    sess = gpuinfer.InferenceSession(data, device="cpu", memory_mode="arena")
    expected = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, FEEDS)[0]
    for _ in range(2):
        got = sess.run(None, FEEDS)[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    report = sess.memory_report()
    assert report.dynamic_bytes == 0  # every scratch ask matched its planned slot
    assert report.peak_bytes == sess.plan_for(FEEDS).planned_bytes


def test_arena_gives_the_same_bits_as_the_modes_without_slack():
    """Wider bands copy more columns at once but multiply them in the narrow bands' products."""
    data = _model()
    outputs = {mode: gpuinfer.InferenceSession(data, device="cpu", memory_mode=mode).run(None, FEEDS)[0]
               for mode in ("arena", "per_tensor", "reduce")}
    assert gpuinfer.InferenceSession(data, device="cpu", memory_mode="arena").plan_for(FEEDS).scratch_slack
    assert np.array_equal(outputs["arena"], outputs["per_tensor"])
    assert np.array_equal(outputs["arena"], outputs["reduce"])


def test_without_slack_the_peak_is_the_same(monkeypatch):
    data = _model()
    with_slack = gpuinfer.InferenceSession(data, device="cpu", memory_mode="arena")
    with_slack.run(None, FEEDS)
    monkeypatch.setattr(slack_module, "MIN_SLACK_BYTES", 1 << 60)
    without = gpuinfer.InferenceSession(data, device="cpu", memory_mode="arena")
    without.run(None, FEEDS)
    assert without.plan_for(FEEDS).scratch_slack == {}
    assert with_slack.plan_for(FEEDS).scratch_slack
    assert with_slack.memory_report().peak_bytes <= without.memory_report().peak_bytes


@pytest.mark.parametrize("mode", ["per_tensor", "reuse"])
def test_steps_widen_into_the_shared_scratch_block_and_it_does_not_grow(mode):
    """per_tensor and reuse keep their tensors' buffers, so the room below the busiest step is not
    free; but every step's scratch shares one block, and the steps whose scratch is less than the
    most widen into the difference (an alignment's worth a buffer held back)."""
    from gpuinfer.plan.shared_scratch import scratch_span, step_scratch
    from gpuinfer.plan.plan import ALIGNMENT

    sess = gpuinfer.InferenceSession(_model(), device="cpu", memory_mode=mode)
    sess.run(None, FEEDS)
    wide = sess.plan_for(FEEDS)
    least = make_plan(sess.graph, wide.value_types, mode, device_kind="cpu", scratch_slack={})
    steps = _steps(sess)
    per_step = step_scratch(list(least.lifetimes.values()))
    most = max(scratch_span(lives) for lives in per_step.values())
    # the small conv's columns are the most scratch a step takes: the others have room, it has none
    assert scratch_span(per_step[steps["small"]]) == most
    assert set(wide.scratch_slack) >= {steps["wide"], steps["depthwise"]}
    assert steps["small"] not in wide.scratch_slack
    for step, spare in wide.scratch_slack.items():
        lives = per_step.get(step, [])
        assert spare == most - scratch_span(lives) - ALIGNMENT * (len(lives) + 1)
    assert _scratch_bytes(wide, steps["depthwise"]) > _scratch_bytes(least, steps["depthwise"])
    blocks = {wide.placements[key].block for key in wide.lifetimes if key.kind == SCRATCH}
    assert len(blocks) == 1
    assert wide.planned_bytes == least.planned_bytes  # the shared block is the busiest step's scratch
    scratch = sum(life.nbytes for life in least.lifetimes.values() if life.kind == "scratch")
    assert max(scratch_span(lives) for lives in per_step.values()) < scratch  # less than a block each
    # every scratch ask matched its planned slot: only the output (neither mode places outputs) is not planned
    assert sess.memory_report().dynamic_bytes == 32 * 32 * 32 * 4  # y, (1, 32, 32, 32) float32


def test_reduce_spends_the_room_below_its_busiest_step():
    sess = gpuinfer.InferenceSession(_model(), device="cpu", memory_mode="reduce")
    sess.run(None, FEEDS)
    assert sess.plan_for(FEEDS).scratch_slack
    # reduce's peak is the busiest step's bytes, as without
    assert sess.memory_report().peak_bytes == sess.plan_for(FEEDS).lower_bound_bytes


def _geometry_bytes(g) -> int:
    return sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in g.scratch)


@settings(max_examples=60, deadline=None)
@given(c=st.integers(1, 48), m=st.integers(1, 48), size=st.integers(3, 70), k=st.sampled_from([1, 3, 5]),
       stride=st.sampled_from([1, 2]), depthwise=st.booleans(), slack=st.integers(0, 1 << 21))
def test_geometry_spends_no_more_than_its_slack(c, m, size, k, stride, depthwise, slack):
    if depthwise:
        m = c
    w_shape = (m, 1 if depthwise else c, k, k)
    attrs = {"pads": [k // 2] * 4, "strides": [stride, stride], "group": c if depthwise else 1}
    least = conv_geometry(attrs, (1, c, size, size), w_shape, np.float32)
    wider = conv_geometry(attrs, (1, c, size, size), w_shape, np.float32, slack=slack)
    assert wider.path == least.path and wider.layout == least.layout
    assert wider.tile >= least.tile
    assert _geometry_bytes(least) <= _geometry_bytes(wider) <= _geometry_bytes(least) + slack


@pytest.mark.parametrize("channels, size, kernel, stride, dilation", [
    (120, 6, 5, 1, 1),  # 17-channel blocks once left a 1-channel block, whose taps einsum summed in another order
    (7, 12, 3, 1, 1), (16, 25, 5, 2, 1), (240, 12, 5, 1, 1), (3, 20, 3, 1, 2), (32, 40, 3, 1, 1)])
@pytest.mark.parametrize("layout_limit", [0, 1 << 19])  # "strided" always, or the usual choice ("nhwc" here)
def test_wider_depthwise_blocks_give_the_same_bits(monkeypatch, channels, size, kernel, stride, dilation,
                                                  layout_limit):
    from gpuinfer.ops.context import StandaloneContext
    from gpuinfer.ops.conv import conv_into

    monkeypatch.setattr(conv_depthwise, "NHWC_MAX_ELEMENTS", layout_limit)
    rng = np.random.default_rng(channels + size)
    x = rng.standard_normal((1, channels, size, size + 7)).astype(np.float32)
    w = rng.standard_normal((channels, 1, kernel, kernel)).astype(np.float32)
    attrs = {"pads": [dilation * (kernel // 2)] * 4, "strides": [stride] * 2, "dilations": [dilation] * 2,
             "group": channels}
    outs, blocks = [], []
    for slack in (0, 1 << 13, 1 << 16, 1 << 22):
        g = conv_geometry(attrs, x.shape, w.shape, np.float32, slack=slack)
        out = np.empty(g.out_shape, np.float32)
        conv_into(StandaloneContext(), x, w, g, out)
        outs.append(out)
        blocks.append(g.padded_shape[-1] if g.layout == "nhwc" else g.tile)
    assert blocks[-1] > blocks[0] or blocks[0] >= channels - 1  # the slack widened blocks not already whole
    for out in outs[1:]:
        assert np.array_equal(out, outs[0])


def test_channel_blocks_are_even_and_never_one_channel_alone():
    for c in range(1, 130):
        for most in range(1, 40):
            bounds = conv_depthwise.channel_blocks(c, conv_depthwise.block_count(c, most))
            sizes = [stop - start for start, stop in bounds]
            assert bounds[0][0] == 0 and bounds[-1][1] == c and sum(sizes) == c
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            assert max(sizes) - min(sizes) <= 1
            assert c == 1 or min(sizes) >= 2
            assert max(sizes) <= max(most, 3)  # over ``most`` only to keep a channel from being alone


@pytest.mark.parametrize("op_type, attrs", [
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),  # Inception-v2's branch pools
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 0, 1, 1]}),
])
def test_wider_pool_tiles_give_the_same_bits(op_type, attrs):
    from gpuinfer.ops import pool as pool_module
    from gpuinfer.ops.context import StandaloneContext
    from gpuinfer.ops.registry import lookup

    x = np.random.default_rng(7).standard_normal((1, 256, 28, 28)).astype(np.float32)
    outs, tiles = [], []
    for slack in (0, 1 << 16, 1 << 22):
        tile = pool_module._pool_scratch(attrs, [x.shape], [x.dtype], scratch_slack=slack)[0][0]
        least = pool_module._pool_scratch(attrs, [x.shape], [x.dtype])[0][0]
        assert (np.prod(tile) - np.prod(least)) * x.itemsize <= slack
        tiles.append(tile[0])
        ctx = StandaloneContext(attrs=attrs, opset=17)
        ctx.scratch_slack = slack  # what a planned run's context reads from its plan
        outs.append(lookup(op_type, 17).kernel(ctx, x))
    assert tiles[0] < tiles[-1] == 256  # the widest takes every channel in one tile
    for out in outs[1:]:
        assert np.array_equal(out, outs[0])


@pytest.mark.parametrize("op_type, attrs", [
    ("LeakyRelu", {"alpha": 0.1}),  # one scratch chunk
    ("Erf", {}),  # two, of the polynomial's terms
    ("Mish", {}),
])
def test_wider_chunks_give_the_same_bits(op_type, attrs):
    """Chunked elementwise ops (ops/elementwise.py) widen their chunk into spare scratch, up to the
    in-cache chunk size, declaring exactly what they then ask for, with the same bytes."""
    from gpuinfer.ops import elementwise
    from gpuinfer.ops.context import StandaloneContext
    from gpuinfer.ops.registry import lookup

    spec = lookup(op_type, 18)
    x = (np.random.default_rng(8).standard_normal((1, 96, 24, 80)) * 3).astype(np.float32)  # rec's maps
    outs, chunks = [], []
    least = spec.scratch(attrs, [x.shape], [x.dtype])
    for slack in (0, 1 << 15, 1 << 22):
        declared = spec.scratch(attrs, [x.shape], [x.dtype], scratch_slack=slack)
        assert sum(np.prod(s) * np.dtype(d).itemsize for s, d in declared) \
            - sum(np.prod(s) * np.dtype(d).itemsize for s, d in least) <= slack
        asked = []

        class Ctx(StandaloneContext):
            def scratch(self, shape, dtype):
                asked.append((tuple(shape), np.dtype(dtype)))
                return super().scratch(shape, dtype)

        ctx = Ctx(attrs=attrs, opset=18)
        ctx.scratch_slack = slack
        outs.append(spec.kernel(ctx, x))
        assert asked == [(tuple(s), np.dtype(d)) for s, d in declared]
        chunks.append(declared[0][0][0])
    assert chunks[0] < chunks[1] < chunks[2] == elementwise.chunk_elements()  # widest: the in-cache chunk
    for out in outs[1:]:
        assert np.array_equal(out, outs[0])
