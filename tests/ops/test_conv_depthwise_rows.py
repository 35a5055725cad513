"""Depthwise convolution as one BLAS product per kernel row (ops/conv_depthwise_rows.py): onnxruntime's
values on every width-keeping padding and dilation; the same bytes whatever the block plan (the
output's free channels or the declared scratch, wide or narrow blocks), so every memory mode agrees;
blocks that never write over a channel before it is built; the declared scratch."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import gpuinfer
import gpuinfer.ops  # noqa: F401  (registers the kernels)
import gpuinfer.ops.conv_depthwise as dw_module
from gpuinfer.ops.conv import conv_geometry
from gpuinfer.ops.conv_depthwise_rows import depthwise_rows, rows_band, rows_blocks, rows_elements
from tests.node_helpers import check_against_onnxruntime, requested_scratch, run_kernel

rng = np.random.default_rng(7)
TOL = dict(rtol=1e-4, atol=1e-5)

# paddings and dilations that keep the width at stride 1, per kernel
WIDTH_KEPT = {
    (3, 3): [
        dict(pads=[1, 1, 1, 1]),
        dict(pads=[0, 2, 1, 0], dilations=[2, 1]),
        dict(auto_pad="SAME_UPPER"),
        dict(auto_pad="SAME_LOWER"),
        dict(pads=[2, 0, 0, 2]),  # all the width's padding on one side
        dict(pads=[3, 1, 3, 1]),  # output rows that see no input at all: zeros
        dict(pads=[0, 4, 2, 0], dilations=[3, 2]),  # rows past both edges, dilated columns
    ],
    (5, 5): [
        dict(pads=[2, 2, 2, 2]),
        dict(pads=[0, 4, 4, 0]),
        dict(auto_pad="SAME_LOWER"),
        dict(pads=[4, 2, 4, 2], dilations=[2, 1]),
        dict(pads=[5, 2, 5, 2]),  # output rows that see no input at all
    ],
    (2, 3): [dict(pads=[1, 1, 0, 1]), dict(pads=[0, 0, 1, 2]), dict(auto_pad="SAME_UPPER")],
    (1, 3): [dict(pads=[0, 1, 0, 1]), dict(pads=[2, 2, 1, 0])],
}
CASES = [(kernel, attrs) for kernel, all_attrs in WIDTH_KEPT.items() for attrs in all_attrs]


def r(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def _force_rows(monkeypatch):
    monkeypatch.setattr(dw_module, "depthwise_layout", lambda *args: "rows")


@pytest.mark.parametrize("kernel,attrs", CASES)
def test_rows_layout_against_onnxruntime(monkeypatch, kernel, attrs):
    """"rows", forced, batch of 2 with a bias: onnxruntime's values; the scratch it asks for is the
    scratch it declared."""
    _force_rows(monkeypatch)
    c = 6
    inputs = [r(2, c, 7, 9), r(c, 1, *kernel), r(c)]
    g = conv_geometry(dict(group=c, **attrs), inputs[0].shape, inputs[1].shape, np.float32)
    assert g.layout == "rows" and g.padded_shape is None
    check_against_onnxruntime("Conv", inputs, opset=11, group=c, **TOL, **attrs)
    predicted, requested = requested_scratch("Conv", inputs[:2], 11, group=c, **attrs)
    assert requested == predicted


def _conv_rows(x, w, attrs, tile, lend_output, band_rows=None):
    """depthwise_rows on one thread with a scratch of ``tile`` output channels (NaN to begin with),
    in bands of ``band_rows`` output rows (the geometry's where None)."""
    with pytest.MonkeyPatch.context() as m:
        _force_rows(m)
        g = conv_geometry(dict(group=x.shape[1], **attrs), x.shape, w.shape, x.dtype)
    g.tile = tile
    g.band_rows = band_rows or g.band_rows
    ctx = SimpleNamespace(xp=np, scratch=lambda shape, dtype: np.full(shape, np.nan, dtype))
    out = np.full(g.out_shape, np.nan, x.dtype)
    depthwise_rows(ctx, x, w, g, out, lend_output)
    return out


@pytest.mark.parametrize("attrs,kernel", [(dict(pads=[1, 1, 1, 1]), (3, 3)), (dict(pads=[2, 2, 2, 2]), (5, 5)),
                                          (dict(pads=[0, 4, 2, 0], dilations=[3, 2]), (3, 3))])
def test_rows_bytes_do_not_depend_on_the_blocks(attrs, kernel):
    """Wide or narrow scratch blocks, with or without the output's free channels: every channel is the
    same products, so the same bytes (and no NaN the scratch started with leaks through)."""
    x, w = r(2, 40, 16, 11), r(40, 1, *kernel)
    out_sp = conv_geometry(dict(group=40, **attrs), x.shape, w.shape, x.dtype).out_shape[2:]
    per = rows_elements(kernel, attrs.get("dilations", [1, 1]), out_sp)
    least = -(-per // (2 * out_sp[0] * out_sp[1]))
    results = []
    for tile in (least, 3 * least, 40):
        for lend_output in (True, False):
            results.append(_conv_rows(x, w, attrs, tile, lend_output))
    for res in results[1:]:
        np.testing.assert_array_equal(results[0], res)
    assert not np.isnan(results[0]).any()


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 300), st.integers(1, 500), st.integers(1, 5000), st.integers(1, 40), st.booleans())
def test_rows_blocks_cover_the_channels_and_keep_off_unbuilt_ones(c, out_size, per, scratch_channels, in_out):
    """Blocks tile [0, c) in order; one lent the output's free channels fits in the channels after
    it; the others fit the scratch."""
    blocks = rows_blocks(c, out_size, per, scratch_channels, in_out)
    assert blocks[0][0] == 0 and blocks[-1][1] == c
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    for b0, b1, lent in blocks:
        assert b1 > b0
        if lent:
            assert in_out and (c - b1) * out_size >= (b1 - b0) * per
        else:
            assert b1 - b0 <= scratch_channels


def test_rows_inside_a_concat_in_every_mode():
    """A "rows" depthwise conv whose output arena places inside a Concat's: the output's free
    channels it borrows are its own, not its neighbour's; every mode gives the same bytes, close to
    onnxruntime's."""
    c, shape = 24, (1, 24, 20, 24)
    wv = r(c, 1, 5, 5)
    assert conv_geometry(dict(group=c, pads=[2] * 4), shape, wv.shape, np.float32).layout == "rows"
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Conv", ["a", "w"], ["d"], group=c, pads=[2, 2, 2, 2]),
             helper.make_node("Neg", ["x"], ["e"]),
             helper.make_node("Concat", ["e", "d"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2 * c, *shape[2:]])],
                              initializer=[numpy_helper.from_array(wv, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    feeds = {"x": r(*shape)}
    sessions = [gpuinfer.InferenceSession(model, memory_mode=mode) for mode in ("per_tensor", "reuse", "reduce", "arena")]
    inside = {key.name: offset for key, (_, offset) in sessions[-1].plan_for(feeds).concat.items()}
    assert inside.get("d") == c * shape[2] * shape[3] * 4  # the conv writes the Concat's second half
    results = [s.run(None, feeds)[0] for s in sessions]
    for res in results[1:]:
        np.testing.assert_array_equal(results[0], res)
    import onnxruntime as ort
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(results[0], expected, **TOL)


def test_rows_takes_the_scratch_of_the_layout_it_replaces(monkeypatch):
    """PP-OCRv4 rec's 128x12x160 3x3 takes "flat"'s products buffer; det's 192x40x40 5x5 no more than
    "nhwc"'s padded block and weights."""
    for x_shape, k, other in (((1, 128, 12, 160), 3, "flat"), ((1, 192, 40, 40), 5, "nhwc")):
        attrs = dict(group=x_shape[1], pads=[k // 2] * 4)
        w_shape = (x_shape[1], 1, k, k)
        g = conv_geometry(attrs, x_shape, w_shape, np.float32)
        assert g.layout == "rows"
        with monkeypatch.context() as m:
            m.setattr(dw_module, "depthwise_layout", lambda *args, other=other: other)
            replaced = conv_geometry(attrs, x_shape, w_shape, np.float32)
        nbytes = [sum(np.prod(s) * np.dtype(d).itemsize for s, d in geo.scratch) for geo in (g, replaced)]
        assert nbytes[0] <= nbytes[1]
        assert g.scratch[0][0][1] * x_shape[2] * x_shape[3] >= rows_elements((k, k), (1, 1), x_shape[2:])


def test_rows_equals_flat_within_rounding(monkeypatch):
    """Against the tap-by-tap "flat" layout on a PP-OCRv4-rec-like map: the same sums, another order."""
    x, w = r(1, 16, 12, 40), r(16, 1, 3, 3)
    _force_rows(monkeypatch)
    rows = run_kernel("Conv", [x, w], opset=11, group=16, pads=[1, 1, 1, 1])[0]
    monkeypatch.setattr(dw_module, "depthwise_layout", lambda *args: "flat")
    flat = run_kernel("Conv", [x, w], opset=11, group=16, pads=[1, 1, 1, 1])[0]
    np.testing.assert_allclose(rows, flat, rtol=1e-5, atol=1e-6)


def _reference(x, w, attrs):
    """The convolution in float64 from a zero-padded copy (explicit pads only)."""
    (top, left, bottom, right), (d0, d1) = attrs["pads"], attrs.get("dilations", [1, 1])
    kh, kw = w.shape[2:]
    p = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    ho, wo = p.shape[2] - (kh - 1) * d0, p.shape[3] - (kw - 1) * d1
    out = np.zeros((*x.shape[:2], ho, wo))
    for i in range(kh):
        for j in range(kw):
            out += w[None, :, 0, i, j, None, None] * p[:, :, i * d0:i * d0 + ho, j * d1:j * d1 + wo]
    return out


@pytest.mark.parametrize("attrs,kernel", [(dict(pads=[1, 1, 1, 1]), (3, 3)), (dict(pads=[2, 2, 2, 2]), (5, 5)),
                                          (dict(pads=[4, 2, 0, 0], dilations=[2, 1]), (3, 3))])
@pytest.mark.parametrize("band_rows", [1, 3, 5])
def test_rows_in_bands_of_rows(attrs, kernel, band_rows):
    """Bands of output rows (the last one shorter) sum what one whole-image band does, each band's
    copies starting above, inside or below the image; the same bytes whatever the blocks."""
    x, w = r(2, 12, 16, 9), r(12, 1, *kernel)
    least = -(-rows_elements(kernel, attrs.get("dilations", [1, 1]), (band_rows, 9)) // (2 * 16 * 9))
    results = [_conv_rows(x, w, attrs, tile, lend, band_rows) for tile in (least, 12) for lend in (True, False)]
    for res in results[1:]:
        np.testing.assert_array_equal(results[0], res)
    np.testing.assert_allclose(results[0], _reference(x, w, attrs), rtol=1e-4, atol=1e-5)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 3), st.integers(1, 200), st.integers(1, 200),
       st.integers(1, 100_000))
def test_rows_band_fits_the_scratch(kh, kw, d0, rows, width, scratch):
    """The band's copies fit the scratch; all rows where the whole image's do; bands as even as can be."""
    band = rows_band((kh, kw), (d0, 1), (rows, width), scratch)
    whole = rows_elements((kh, kw), (d0, 1), (rows, width))
    if whole <= scratch:
        assert band == rows
    elif band:
        assert 1 <= band < rows and rows_elements((kh, kw), (d0, 1), (band, width)) <= scratch
        count = -(-rows // band)
        assert rows - (count - 1) * band > 0 and band - (rows - (count - 1) * band) < count
    else:
        assert rows_elements((kh, kw), (d0, 1), (1, width)) > scratch


def test_a_non_contiguous_output_is_refused_with_a_gpuinfer_error():
    """The plan never hands "rows" a strided output; if one came, the error says what and why."""
    g = conv_geometry(dict(group=24, pads=[2] * 4), (1, 24, 20, 24), (24, 1, 5, 5), np.float32)
    ctx = SimpleNamespace(scratch=lambda shape, dtype: np.zeros(shape, dtype), xp=np)
    strided = np.zeros((1, 48, 20, 24), np.float32)[:, ::2]
    with pytest.raises(gpuinfer.GpuinferError, match="C-contiguous output"):
        depthwise_rows(ctx, r(1, 24, 20, 24), r(24, 1, 5, 5), g, strided)
