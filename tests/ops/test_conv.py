"""Conv and ConvTranspose against onnxruntime: every path (pointwise, depthwise, kn2row, im2col) and attribute."""
import numpy as np
import pytest

import gpuinfer.ops  # noqa: F401  (registers the kernels)
from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.conv import conv_geometry
from gpuinfer.ops.conv_transpose import conv_transpose_geometry
from gpuinfer.ops.registry import lookup
from tests.node_helpers import check_against_onnxruntime, requested_scratch, run_kernel

rng = np.random.default_rng(0)
TOL = dict(rtol=1e-4, atol=1e-5)


def r(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


CONV_CASES = [
    ((2, 4, 9, 9), (6, 4, 3, 3), {}),
    ((2, 4, 9, 9), (6, 2, 3, 3), dict(group=2, pads=[1, 0, 2, 1], strides=[2, 1], dilations=[1, 2])),
    ((2, 4, 9, 9), (4, 1, 3, 3), dict(group=4, pads=[1, 1, 1, 1])),  # depthwise, padded
    ((2, 4, 9, 9), (4, 1, 3, 3), dict(group=4, auto_pad="SAME_UPPER", strides=[2, 2])),
    ((2, 4, 10, 10), (4, 1, 3, 3), dict(group=4, auto_pad="SAME_LOWER", strides=[2, 2])),
    ((2, 4, 10, 10), (4, 1, 3, 3), dict(group=4, dilations=[2, 2])),  # depthwise, unpadded
    ((2, 4, 10, 10), (8, 1, 3, 3), dict(group=4, pads=[1, 1, 1, 1])),  # depthwise multiplier 2 -> im2col
    ((2, 4, 9, 9), (8, 4, 1, 1), {}),  # pointwise
    ((2, 4, 9, 9), (8, 2, 1, 1), dict(group=2)),  # grouped pointwise
    ((2, 4, 9, 9), (8, 4, 1, 1), dict(strides=[2, 2])),  # 1x1 strided -> im2col
    ((2, 4, 9), (8, 2, 3), dict(group=2, pads=[2, 1])),  # 1-D
    ((1, 4, 5, 6, 7), (3, 4, 2, 3, 2), dict(pads=[1, 0, 1, 0, 1, 1], strides=[1, 2, 1])),  # 3-D
    ((1, 4, 9, 9), (3, 4, 3, 3), dict(auto_pad="VALID", strides=[2, 2])),
    ((1, 3, 8, 8), (5, 3, 3, 3), dict(kernel_shape=[3, 3], pads=[0, 2, 0, 2])),
]


@pytest.mark.parametrize("x_shape,w_shape,attrs", CONV_CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_conv(x_shape, w_shape, attrs, bias):
    inputs = [r(*x_shape), r(*w_shape)] + ([r(w_shape[0])] if bias else [])
    check_against_onnxruntime("Conv", inputs, opset=11, **TOL, **attrs)


def test_conv_constant_weights_and_float64():
    x, w = r(1, 3, 6, 6), r(2, 3, 3, 3)
    (expected,) = check_against_onnxruntime("Conv", [x, w], constant_inputs=[1], pads=[1, 1, 1, 1], **TOL)
    # onnxruntime has no float64 Conv: float64 must agree with the float32 result and stay float64
    (got,) = run_kernel("Conv", [x.astype(np.float64), w.astype(np.float64)], pads=[1, 1, 1, 1])
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_conv_opset1():
    check_against_onnxruntime("Conv", [r(1, 2, 6, 6), r(3, 2, 3, 3)], opset=1, **TOL)


def test_conv_scratch_matches_requests():
    """The scratch function predicts exactly the buffers each path asks for."""
    for x_shape, w_shape, attrs in CONV_CASES:
        spec = lookup("Conv", 11)
        x, w = r(*x_shape), r(*w_shape)
        predicted = spec.scratch(attrs, [x.shape, w.shape], [x.dtype, w.dtype])
        requested = []

        from gpuinfer.ops.context import StandaloneContext

        class Ctx(StandaloneContext):
            def scratch(self, shape, dtype):
                requested.append((tuple(shape), np.dtype(dtype)))
                return super().scratch(shape, dtype)

        spec.kernel(Ctx(attrs=attrs, opset=11), x, w)
        assert requested == [(tuple(s), np.dtype(d)) for s, d in predicted], (x_shape, attrs)


def test_conv_paths_chosen():
    assert conv_geometry({}, (1, 4, 5, 5), (8, 4, 1, 1), np.float32).path == "pointwise"
    assert conv_geometry({"group": 4}, (1, 4, 5, 5), (4, 1, 3, 3), np.float32).path == "depthwise"
    assert conv_geometry({}, (1, 4, 5, 5), (8, 4, 3, 3), np.float32).path == "im2col"


# ------------------------------------------------------------------------ depthwise layouts

def test_depthwise_layout_heuristic():
    """One BLAS product per kernel row where stride 1 keeps the width and the scratch holds a
    channel's shifted copies; else channels-last (one einsum) for 2-D maps; for other ranks and for
    big maps with small kernels (the transposes cost more than the einsum saves) flat runs where
    stride 1 keeps the width, else window views."""
    def layout(x_shape, k, strides=(1, 1, 1), **attrs):
        c = x_shape[1]
        n_sp = len(x_shape) - 2
        attrs = dict(group=c, pads=[k // 2] * 2 * n_sp, strides=list(strides)[:n_sp], **attrs)
        return conv_geometry(attrs, x_shape, (c, 1) + (k,) * n_sp, np.float32).layout

    assert layout((1, 200, 2, 96), 5) == "nhwc"
    assert layout((1, 480, 6, 80), 5, (2, 1)) == "nhwc"
    assert layout((1, 8, 24, 96), 3, (2, 1)) == "nhwc"
    assert layout((1, 112, 56, 56), 3, (2, 2)) == "nhwc"
    assert layout((1, 192, 40, 40), 5) == "rows"  # the width kept
    assert layout((1, 96, 80, 80), 3) == "rows"
    assert layout((1, 48, 160, 160), 3) == "rows"  # big map: in bands of rows
    assert layout((1, 96, 300, 300), 3, dilations=[100, 1]) == "flat"  # not one band fits the scratch
    assert layout((1, 96, 80, 80), 3, (2, 2)) == "strided"  # ... strided
    assert layout((1, 112, 56, 56), 5, (2, 2)) == "nhwc"  # 25 taps, strided
    assert layout((1, 480, 3, 80), 5) == "nhwc"  # 3 rows under 5 kernel rows: the copies mostly padding
    assert layout((1, 240, 12, 80), 5) == "nhwc"  # 12 rows: still too much padding (ROWS_MAX_RATIO)
    assert layout((1, 128, 12, 160), 3) == "rows"  # long rows, 3x3
    assert layout((1, 128, 12, 160), 3, dilations=[1, 2]) == "strided"  # ... the width not kept
    assert layout((1, 32, 24, 160), 3) == "nhwc"  # long rows, small map
    assert layout((1, 4, 9), 3) == "strided"  # 1-D
    assert layout((1, 4, 5, 5, 5), 3) == "strided"  # 3-D


DW_ATTRS = [
    dict(pads=[1, 1, 1, 1]),
    dict(pads=[0, 2, 1, 0], dilations=[2, 1]),
    dict(auto_pad="SAME_UPPER"),  # onnxruntime refuses SAME with dilations
    dict(auto_pad="SAME_LOWER"),
    dict(pads=[2, 0, 0, 1], dilations=[1, 2]),
    dict(auto_pad="VALID"),
    {},  # unpadded
]
DW_STRIDES = [[2, 1], [1, 2], [3, 2]]
DW_LAYOUTS = ["nhwc", "strided"]


def _force_layout(monkeypatch, layout):
    import gpuinfer.ops.conv_depthwise as dw_module

    monkeypatch.setattr(dw_module, "depthwise_layout", lambda *args: layout)


def _check_depthwise(x_shape, kernel, attrs, layout):
    c = x_shape[1]
    inputs = [r(*x_shape), r(c, 1, *kernel), r(c)]
    attrs = dict(group=c, **attrs)
    assert conv_geometry(attrs, x_shape, inputs[1].shape, np.float32).layout == layout
    check_against_onnxruntime("Conv", inputs, opset=11, **TOL, **attrs)
    predicted, requested = requested_scratch("Conv", inputs[:2], 11, **attrs)
    assert requested == predicted


@pytest.mark.parametrize("layout", DW_LAYOUTS)
@pytest.mark.parametrize("attrs", DW_ATTRS)
@pytest.mark.parametrize("kernel", [(3, 3), (2, 3)])
def test_depthwise_layouts_stride1(monkeypatch, layout, attrs, kernel):
    """Every layout, forced, on every padding and dilation, batch of 2: onnxruntime's values, declared scratch."""
    _force_layout(monkeypatch, layout)
    _check_depthwise((2, 5, 7, 9), kernel, attrs, layout)


# paddings and dilations that keep the width at stride 1, where the "flat" layout runs
DW_WIDTH_KEPT = [
    dict(pads=[1, 1, 1, 1]),
    dict(pads=[0, 2, 1, 0], dilations=[2, 1]),
    dict(auto_pad="SAME_UPPER"),
    dict(auto_pad="SAME_LOWER"),
    dict(pads=[2, 0, 0, 2], dilations=[1, 1]),  # all the width's padding on one side
    dict(pads=[3, 1, 3, 1]),  # output rows that see no input at all: zeros
    dict(pads=[0, 4, 2, 0], dilations=[3, 2]),  # rows past both edges, dilated columns
]


@pytest.mark.parametrize("attrs", DW_WIDTH_KEPT)
@pytest.mark.parametrize("kernel", [(3, 3), (2, 3), (1, 3)])
def test_depthwise_flat_layout(monkeypatch, attrs, kernel):
    """"flat", forced, on every padding and dilation that keeps the width, batch of 2: onnxruntime's
    values, declared scratch (no padded copy), and the "strided" layout's bytes."""
    _force_layout(monkeypatch, "flat")
    _check_depthwise((2, 5, 7, 9), kernel, attrs, "flat")
    x, w = r(2, 5, 7, 9), r(5, 1, *kernel)
    flat = run_kernel("Conv", [x, w], opset=11, group=5, **attrs)[0]
    _force_layout(monkeypatch, "strided")
    np.testing.assert_array_equal(flat, run_kernel("Conv", [x, w], opset=11, group=5, **attrs)[0])


def test_depthwise_flat_asks_for_no_padded_copy(monkeypatch):
    """PP-OCRv4 det's 48x160x160 3x3: the products buffer "strided" takes, and no padded copy."""
    attrs, x_shape, w_shape = dict(group=48, pads=[1, 1, 1, 1]), (1, 48, 160, 160), (48, 1, 3, 3)
    _force_layout(monkeypatch, "flat")
    g = conv_geometry(attrs, x_shape, w_shape, np.float32)
    assert g.layout == "flat" and g.padded_shape is None
    _force_layout(monkeypatch, "strided")
    strided = conv_geometry(attrs, x_shape, w_shape, np.float32)
    assert strided.scratch == [((1, strided.tile, 162, 162), np.dtype(np.float32))] + g.scratch


@pytest.mark.parametrize("layout", DW_LAYOUTS)
def test_depthwise_layouts_one_tap(monkeypatch, layout):
    """A padded 1x1 depthwise conv: the first tap is also the last."""
    _force_layout(monkeypatch, layout)
    _check_depthwise((2, 5, 4, 6), (1, 1), dict(pads=[1, 0, 0, 2]), layout)


@pytest.mark.parametrize("layout", DW_LAYOUTS)
@pytest.mark.parametrize("attrs", DW_ATTRS[:4])
@pytest.mark.parametrize("strides", DW_STRIDES)
def test_depthwise_layouts_strided(monkeypatch, layout, attrs, strides):
    _force_layout(monkeypatch, layout)
    _check_depthwise((2, 5, 8, 9), (3, 3), dict(strides=strides, **attrs), layout)


@pytest.mark.parametrize("x_shape,kernel,attrs,layout", [
    ((2, 96, 5, 11), (3, 3), dict(pads=[1, 1, 1, 1]), "nhwc"),
    ((2, 24, 3, 29), (5, 5), dict(pads=[2, 2, 2, 2]), "nhwc"),  # 3 rows under 5 kernel rows
    ((1, 24, 20, 21), (5, 5), dict(pads=[2, 2, 2, 2]), "rows"),  # a small map, but 5x5 and 420 pixels
    ((1, 24, 20, 19), (5, 5), dict(pads=[2, 2, 2, 2]), "nhwc"),  # ... 380 pixels
    ((1, 24, 40, 40), (3, 3), dict(pads=[1, 1, 1, 1]), "nhwc"),  # ... 3x3
    ((2, 96, 5, 11), (5, 5), dict(pads=[2, 2, 2, 2], strides=[2, 1]), "nhwc"),
    ((2, 12, 6, 7), (3, 3), dict(pads=[1, 1, 1, 1], strides=[2, 2]), "nhwc"),
    ((1, 8, 260, 260), (3, 3), dict(pads=[1, 1, 1, 1]), "rows"),  # in bands
    ((1, 4, 240, 200), (3, 3), dict(pads=[100, 1, 100, 1], dilations=[100, 1]), "flat"),  # no band fits
    ((1, 8, 260, 260), (3, 3), dict(pads=[1, 1, 1, 1], strides=[1, 2]), "strided"),
    ((1, 8, 260, 260), (4, 4), dict(pads=[1, 2, 2, 1]), "nhwc"),
])
def test_depthwise_heuristic_sides(x_shape, kernel, attrs, layout):
    """The layout the heuristic picks on both sides of its thresholds, unforced."""
    _check_depthwise(x_shape, kernel, attrs, layout)


def test_depthwise_layouts_agree_bitwise(monkeypatch):
    """Both layouts add the same products in the same order (kernel rows left out add only zeros):
    identical float32 results."""
    x, w = r(2, 6, 7, 10), r(6, 1, 3, 3)
    attrs = dict(group=6, pads=[1, 2, 0, 1], dilations=[1, 2])
    results = []
    for layout in DW_LAYOUTS:
        _force_layout(monkeypatch, layout)
        results.append(run_kernel("Conv", [x, w], opset=11, **attrs)[0])
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("x_shape,kernel,attrs", [
    ((2, 6, 2, 13), (5, 5), dict(pads=[2, 2, 2, 2])),  # PP-OCR cls tail: kernel rows 0, 4 read only padding
    ((1, 7, 1, 9), (5, 3), dict(pads=[2, 1, 2, 1])),  # one row: only the middle kernel row is summed
    ((2, 5, 3, 8), (5, 3), dict(pads=[4, 1, 0, 1])),  # asymmetric: top rows see only padding through 2 rows
    ((1, 4, 2, 6), (3, 3), dict(pads=[3, 0, 3, 0])),  # output rows that see no input at all: zeros
    ((2, 6, 3, 10), (5, 5), dict(pads=[2, 2, 2, 2], strides=[2, 1])),  # PP-OCR cls strided tail
    ((1, 5, 4, 9), (3, 3), dict(pads=[3, 1, 3, 1], dilations=[2, 1])),  # dilated rows past the edges
])
def test_depthwise_nhwc_crops_padding_rows(monkeypatch, x_shape, kernel, attrs):
    """Tiny maps under tall kernels: per band of output rows only the kernel rows that reach the input
    are summed; onnxruntime's values and bitwise the same as summing every tap."""
    from gpuinfer.ops.conv_depthwise import _row_bands

    _force_layout(monkeypatch, "nhwc")
    c = x_shape[1]
    attrs = dict(group=c, **attrs)
    g = conv_geometry(attrs, x_shape, (c, 1, *kernel), np.float32)
    assert g.layout == "nhwc"
    bands = _row_bands(g.out_shape[2], x_shape[2], g.strides[0], g.dilations[0], kernel[0], g.begin[0])
    assert sum((r1 - r0) * (i1 - i0) for r0, r1, i0, i1 in bands) < g.out_shape[2] * kernel[0]  # some cropped
    _check_depthwise(x_shape, kernel, {k: v for k, v in attrs.items() if k != "group"}, "nhwc")


def test_depthwise_row_bands():
    """Kernel rows [i0, i1) whose input rows exist, per run of output rows (2 rows under a 5-row
    kernel padded by 2: rows 1..2 for output row 0, 0..1 for output row 1 (as input rows)."""
    from gpuinfer.ops.conv_depthwise import _row_bands

    assert _row_bands(2, 2, 1, 1, 5, 2) == ((0, 1, 2, 4), (1, 2, 1, 3))
    assert _row_bands(5, 5, 1, 1, 3, 1) == ((0, 1, 1, 3), (1, 4, 0, 3), (4, 5, 0, 2))
    assert _row_bands(3, 2, 1, 1, 3, 3) == ((0, 1, 3, 3), (1, 2, 2, 3), (2, 3, 1, 3))
    assert _row_bands(3, 6, 2, 2, 3, 2) == ((0, 1, 1, 3), (1, 2, 0, 3), (2, 3, 0, 2))  # stride, dilation


@pytest.mark.parametrize("x_shape,kernel,attrs", [
    ((2, 24, 3, 29), (5, 5), dict(pads=[2, 2, 2, 2])),  # 29 wide: runs of 1-pixel blocks plus none
    ((1, 300, 3, 11), (3, 3), dict(pads=[1, 1, 1, 1])),  # many channels: one pixel per run
    ((2, 16, 4, 37), (3, 3), dict(pads=[1, 1, 1, 1])),  # prime width: blocks plus a tail run
    ((2, 16, 4, 37), (3, 3), dict(pads=[1, 1, 1, 1], strides=[2, 2])),  # strided columns: one pixel per run
])
def test_depthwise_nhwc_runs(monkeypatch, x_shape, kernel, attrs):
    """The einsum's runs of expanded weights: several pixels per run, a tail run when the width does
    not divide, one pixel per run at column stride > 1; the expanded weights never exceed one output."""
    _force_layout(monkeypatch, "nhwc")
    c = x_shape[1]
    g = conv_geometry(dict(group=c, **attrs), x_shape, (c, 1, *kernel), np.float32)
    assert g.layout == "nhwc"
    ho, wo = g.out_shape[2:]
    cb = g.padded_shape[-1]  # channels per block
    assert 1 <= cb <= c and g.scratch[1][0] == (*kernel, g.tile * cb)
    assert g.tile * cb * kernel[0] * kernel[1] <= ho * wo * cb
    if g.strides[1] > 1:
        assert g.tile == 1
    _check_depthwise(x_shape, kernel, attrs, "nhwc")


def test_depthwise_nhwc_tail_run():
    from gpuinfer.ops.conv_depthwise import nhwc_run_pixels

    assert nhwc_run_pixels(16, (4, 37), 1, 9) == 16  # 37 has no divisor near 16: 2 runs plus a 5-pixel tail
    assert nhwc_run_pixels(200, (2, 96), 1, 25) == 6  # capped by one output (7), then a divisor of 96
    assert nhwc_run_pixels(16, (4, 37), 2, 9) == 1


def test_depthwise_nhwc_tap_loop_fallback(monkeypatch):
    """Backends whose einsum cannot write into a buffer (CuPy) copy its result into place: same values."""
    import dataclasses

    from gpuinfer.backends.numpy_backend import NumpyBackend

    monkeypatch.setattr(NumpyBackend, "caps", dataclasses.replace(NumpyBackend.caps, einsum_out=False))
    _force_layout(monkeypatch, "nhwc")
    _check_depthwise((2, 6, 3, 10), (5, 5), dict(pads=[2, 2, 2, 2], strides=[2, 1]), "nhwc")
    _check_depthwise((2, 16, 4, 37), (3, 3), dict(pads=[1, 1, 1, 1]), "nhwc")
    _check_depthwise((2, 5, 8, 9), (3, 3), dict(pads=[0, 2, 1, 0], dilations=[2, 1], strides=[1, 2]), "nhwc")


def test_conv_bad_channels():
    with pytest.raises(NodeExecutionError, match="Conv"):
        run_kernel("Conv", [r(1, 4, 5, 5), r(2, 3, 3, 3)], opset=11)


TRANSPOSE_CASES = [
    {}, dict(strides=[2, 2]), dict(strides=[2, 3], pads=[1, 0, 1, 2]),
    dict(strides=[2, 2], output_padding=[1, 1]), dict(strides=[2, 2], output_shape=[10, 11]),
    dict(strides=[2, 2], auto_pad="SAME_UPPER"), dict(strides=[2, 2], auto_pad="SAME_LOWER"),
    dict(dilations=[2, 1], strides=[2, 2], pads=[1, 1, 0, 0]), dict(group=2, strides=[2, 2]),
    dict(strides=[3, 3], output_shape=[13, 14], auto_pad="SAME_UPPER"),
    dict(strides=[3, 3], output_shape=[13, 14], auto_pad="SAME_LOWER"),
    dict(kernel_shape=[3, 3], strides=[1, 1], pads=[2, 2, 2, 2]),
]


@pytest.mark.parametrize("attrs", TRANSPOSE_CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_conv_transpose(attrs, bias):
    grp = attrs.get("group", 1)
    inputs = [r(2, 4, 5, 5), r(4, 6 // grp, 3, 3)] + ([r(6)] if bias else [])
    check_against_onnxruntime("ConvTranspose", inputs, opset=11, **TOL, **attrs)


@pytest.mark.parametrize("x_shape, w_shape, attrs", [
    ((2, 4, 5, 6), (4, 3, 2, 2), dict(strides=[2, 2])),  # PP-OCRv4 det's upsampling, batch of 2
    ((1, 4, 5, 6), (4, 2, 3, 2), dict(strides=[3, 2], group=2)),
    ((1, 4, 7), (4, 3, 4), dict(strides=[4])),  # 1-D
    ((1, 2, 3, 2, 4), (2, 3, 2, 1, 2), dict(strides=[2, 1, 2])),  # 3-D
])
@pytest.mark.parametrize("bias", [False, True])
def test_conv_transpose_tiles(monkeypatch, x_shape, w_shape, attrs, bias):
    """Windows that tile the output: each tap's block written in place (bias added on the way), no
    zero fill or scatter-add; onnxruntime's values and the scatter's bytes."""
    import gpuinfer.ops.conv_transpose as ct_module

    g = conv_transpose_geometry(attrs, x_shape, w_shape, np.float32)
    assert ct_module.tiles_exactly(g, x_shape[2:])
    inputs = [r(*x_shape), r(*w_shape)] + ([r(w_shape[1] * attrs.get("group", 1))] if bias else [])
    (tiled,) = check_against_onnxruntime("ConvTranspose", inputs, opset=11, **TOL, **attrs)
    monkeypatch.setattr(ct_module, "tiles_exactly", lambda *args: False)
    (scattered,) = run_kernel("ConvTranspose", inputs, opset=11, **attrs)
    np.testing.assert_array_equal(tiled, scattered)


@pytest.mark.parametrize("attrs", [dict(strides=[2, 2], pads=[1, 0, 1, 0]), dict(strides=[2, 2], output_padding=[1, 0]),
                                   dict(strides=[2, 1]), dict(strides=[2, 2], dilations=[2, 1]), {}])
def test_conv_transpose_tiles_only_exactly(attrs):
    """Cropped, extended, overlapping or gapped windows take the scatter."""
    from gpuinfer.ops.conv_transpose import tiles_exactly

    g = conv_transpose_geometry(attrs, (1, 4, 5, 5), (4, 3, 2, 2), np.float32)
    assert not tiles_exactly(g, (5, 5))


def test_conv_transpose_1d_3d():
    check_against_onnxruntime("ConvTranspose", [r(2, 4, 5), r(4, 3, 3)], strides=[2], **TOL)
    check_against_onnxruntime("ConvTranspose", [r(1, 4, 3, 4, 5), r(4, 3, 3, 2, 2), r(3)], strides=[2, 1, 2], **TOL)


def test_conv_transpose_geometry():
    g = conv_transpose_geometry({"strides": [2, 2]}, (1, 4, 5, 5), (4, 6, 3, 3), np.float32)
    assert g.out_shape == (1, 6, 11, 11) and g.begin == [0, 0]
    g = conv_transpose_geometry({"strides": [2, 2], "pads": [1, 1, 1, 1]}, (1, 4, 5, 5), (4, 6, 3, 3), np.float32)
    assert g.out_shape == (1, 6, 9, 9) and g.begin == [1, 1]
    # only the column buffer is scratch: cropping happens during the scatter
    assert g.scratch == [((6 * 9, 25), np.dtype(np.float32))]


def test_conv_in_row_bands(monkeypatch):
    """Small column tiles: several bands per image, the last one partial."""
    import gpuinfer.ops.conv as conv_module

    monkeypatch.setattr(conv_module, "COLUMN_TILE_BYTES", 5000)
    assert conv_module.conv_geometry({}, (2, 4, 13, 11), (6, 4, 3, 3), np.float32).tile == 3
    check_against_onnxruntime("Conv", [r(2, 4, 13, 11), r(6, 2, 3, 3), r(6)], group=2, pads=[1, 0, 2, 1],
                              strides=[2, 1], dilations=[1, 2], **TOL)
    check_against_onnxruntime("Conv", [r(2, 4, 13, 11), r(6, 4, 3, 3)], pads=[1, 1, 1, 1], strides=[3, 2], **TOL)
    check_against_onnxruntime("Conv", [r(1, 4, 7, 6, 5), r(3, 4, 2, 3, 2)], pads=[1, 0, 1, 0, 1, 1],
                              strides=[2, 2, 1], **TOL)


def test_conv_transpose_output_larger_than_full_result():
    """A negative effective pad (output_shape beyond the full result) leaves zero margins."""
    x, w = r(1, 2, 3, 3), r(2, 3, 3, 3)
    (got,) = run_kernel("ConvTranspose", [x, w], opset=11, strides=[2, 2], pads=[-1, -1, -2, -2])
    (full,) = run_kernel("ConvTranspose", [x, w], opset=11, strides=[2, 2])
    assert got.shape == (1, 3, 10, 10)
    np.testing.assert_array_equal(got[:, :, 1:8, 1:8], full)
    assert not got[:, :, 0].any() and not got[:, :, 8:].any()


@pytest.mark.parametrize("attrs", [{}, dict(strides=[2, 2]), dict(pads=[1, 0, 1, 2], dilations=[2, 1]),
                                   dict(strides=[1, 2], pads=[0, 1, 0, 1])])
def test_col2im(attrs):
    img = np.array([6, 7], np.int64)
    blk = np.array([2, 3], np.int64)
    pads = attrs.get("pads", [0] * 4)
    st = attrs.get("strides", [1, 1])
    dl = attrs.get("dilations", [1, 1])
    n_blocks = [(int(i) + pads[a] + pads[a + 2] - ((int(k) - 1) * dl[a] + 1)) // st[a] + 1
                for a, (i, k) in enumerate(zip(img, blk))]
    x = r(2, 3 * 6, int(np.prod(n_blocks)))
    check_against_onnxruntime("Col2Im", [x, img, blk], opset=18, constant_inputs=[1, 2], **TOL, **attrs)


def test_conv_integer_and_qlinear_conv():
    x = rng.integers(0, 255, (1, 3, 7, 7)).astype(np.uint8)
    w = rng.integers(0, 255, (4, 3, 3, 3)).astype(np.uint8)
    check_against_onnxruntime("ConvInteger", [x, w, np.array(3, np.uint8), np.array(5, np.uint8)], opset=10,
                              pads=[1, 1, 1, 1])
    check_against_onnxruntime("ConvInteger", [x, w], opset=10, strides=[2, 2])
    ws = np.array([0.01, 0.02, 0.015, 0.03], np.float32)
    inputs = [x, np.array(0.05, np.float32), np.array(3, np.uint8), w, ws, np.array(5, np.uint8),
              np.array(0.4, np.float32), np.array(100, np.uint8), rng.integers(-500, 500, 4).astype(np.int32)]
    check_against_onnxruntime("QLinearConv", inputs, opset=10, pads=[1, 1, 1, 1])


@pytest.mark.parametrize("x_shape,w_shape,attrs", [
    ((1, 1, 640), (258, 1, 256), {"strides": [128]}),  # STFT as a Conv, as silero_vad does
    ((2, 4, 30, 27), (6, 2, 7, 7), {"strides": [2, 3], "dilations": [2, 1], "pads": [3, 2, 1, 3], "group": 2}),
    ((1, 3, 64, 64), (5, 3, 11, 11), {"strides": [4, 4]}),
])
def test_long_kernels_gather_windows_in_one_copy(x_shape, w_shape, attrs):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    check_against_onnxruntime("Conv", [x, w], rtol=1e-4, atol=1e-4, **attrs)


# ------------------------------------------------------------------------------------- kn2row

def _force_kn2row(monkeypatch, on=True):
    import gpuinfer.ops.conv as conv_module
    from gpuinfer.ops.conv_kn2row import kn2row_fits

    monkeypatch.setattr(conv_module, "use_kn2row", kn2row_fits if on else (lambda x, w, g: False))


def _check_kn2row(x_shape, w_shape, attrs, bias=True, tol=TOL):
    inputs = [r(*x_shape), r(*w_shape)] + ([r(w_shape[0])] if bias else [])
    assert conv_geometry(attrs, x_shape, w_shape, np.float32).path == "kn2row"
    (got,) = check_against_onnxruntime("Conv", inputs, opset=11, **tol, **attrs)
    predicted, requested = requested_scratch("Conv", inputs, 11, **attrs)
    assert requested == predicted
    return inputs, got


KN2ROW_CASES = [
    ((2, 6, 9, 11), (3, 6, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((2, 6, 9, 11), (3, 6, 3, 3), {}),  # unpadded
    ((1, 6, 9, 11), (3, 6, 3, 3), dict(pads=[2, 0, 0, 1])),  # asymmetric
    ((1, 6, 9, 11), (3, 6, 3, 3), dict(pads=[2, 2, 2, 2], dilations=[2, 2])),
    ((1, 6, 9, 11), (3, 6, 3, 2), dict(pads=[0, 3, 1, 0], dilations=[3, 2])),
    ((1, 6, 8, 10), (3, 6, 3, 3), dict(auto_pad="SAME_UPPER")),
    ((1, 6, 8, 10), (3, 6, 4, 4), dict(auto_pad="SAME_UPPER")),  # even kernel: uneven pads
    ((1, 6, 8, 10), (3, 6, 4, 4), dict(auto_pad="SAME_LOWER")),
    ((1, 6, 8, 10), (3, 6, 3, 3), dict(auto_pad="VALID")),
    ((2, 6, 9, 11), (3, 6, 1, 3), dict(pads=[0, 1, 0, 1])),
    ((2, 6, 9, 11), (3, 6, 3, 1), dict(pads=[1, 0, 1, 0])),
    ((1, 8, 12, 10), (2, 8, 5, 5), dict(pads=[2, 2, 2, 2])),
    ((1, 6, 5, 6), (3, 6, 3, 3), dict(pads=[4, 3, 3, 5])),  # pads beyond the kernel's reach: bias-only rows/cols
    ((1, 6, 5, 6), (3, 6, 1, 1), dict(pads=[1, 0, 2, 1])),  # padded 1x1
    ((2, 8, 7, 9), (4, 4, 3, 3), dict(group=2, pads=[1, 1, 1, 1])),  # per group
    ((1, 4, 1, 9), (2, 4, 1, 3), dict(pads=[0, 1, 0, 1])),  # one row
    ((1, 4, 3, 3), (2, 4, 3, 3), {}),  # one output position
]


KN2ROW_LAYOUTS = ["rows", "taps"]


def _force_kn2row_layout(monkeypatch, layout):
    import gpuinfer.ops.conv_kn2row as kn_module

    monkeypatch.setattr(kn_module, "kn2row_layout", lambda *args: layout)


@pytest.mark.parametrize("layout", KN2ROW_LAYOUTS)
@pytest.mark.parametrize("x_shape,w_shape,attrs", KN2ROW_CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_kn2row(monkeypatch, x_shape, w_shape, attrs, bias, layout):
    """kn2row in each layout, forced, against onnxruntime on every padding, dilation and kernel
    shape, with its declared scratch."""
    _force_kn2row(monkeypatch)
    _force_kn2row_layout(monkeypatch, layout)
    assert conv_geometry(attrs, x_shape, w_shape, np.float32).layout == layout
    _check_kn2row(x_shape, w_shape, attrs, bias)


@pytest.mark.parametrize("layout", KN2ROW_LAYOUTS)
@pytest.mark.parametrize("x_shape,w_shape,attrs", KN2ROW_CASES[:4] + KN2ROW_CASES[12:13])
def test_kn2row_in_row_bands(monkeypatch, x_shape, w_shape, attrs, layout):
    """A small band budget: several GEMM bands per image, the last one partial."""
    import gpuinfer.ops.conv_kn2row as kn_module

    _force_kn2row(monkeypatch)
    _force_kn2row_layout(monkeypatch, layout)
    grp = attrs.get("group", 1)
    m, cg, (kh, kw) = w_shape[0] // grp, x_shape[1] // grp, w_shape[2:]
    wo = conv_geometry(attrs, x_shape, w_shape, np.float32).out_shape[3]
    row = (kw * cg + kh * m) * wo if layout == "rows" else kh * kw * m * x_shape[3]
    monkeypatch.setattr(kn_module, "KN2ROW_BAND_BYTES", 2 * row * 4)  # 2 input rows
    assert conv_geometry(attrs, x_shape, w_shape, np.float32).tile == 2 and x_shape[2] % 2
    _check_kn2row(x_shape, w_shape, attrs)


def test_kn2row_layout_never_grows_a_band():
    """"rows" (shifted copies) where its band row takes no more than the per-tap result: u2net's
    C = 2M blocks; "taps" where C > 2M (PP-OCRv4 rec's 960 -> 60 1x3, det's 96 -> 24)."""
    from gpuinfer.ops.conv_kn2row import kn2row_layout

    assert kn2row_layout(128, 64, 3, 3, 320, 320) == "rows"
    assert kn2row_layout(1024, 512, 3, 3, 20, 20) == "rows"
    assert kn2row_layout(960, 60, 1, 3, 40, 40) == "taps"
    assert kn2row_layout(96, 24, 3, 3, 160, 160) == "taps"
    for cg, mg, kh, kw, wd, wo in [(128, 64, 3, 3, 320, 320), (6, 3, 4, 4, 10, 10), (8, 2, 5, 5, 10, 10)]:
        if kn2row_layout(cg, mg, kh, kw, wd, wo) == "rows":
            assert (kw * cg + kh * mg) * wo <= kh * kw * mg * wd


def test_kn2row_matches_im2col(monkeypatch):
    """Same values as the im2col path up to summation order."""
    x, w, b = r(2, 16, 13, 15), r(6, 16, 3, 3), r(6)
    attrs = dict(pads=[1, 2, 0, 1], dilations=[1, 2])
    results = []
    for on in (True, False):
        _force_kn2row(monkeypatch, on)
        assert conv_geometry(attrs, x.shape, w.shape, np.float32).path == ("kn2row" if on else "im2col")
        results.append(run_kernel("Conv", [x, w, b], opset=11, **attrs)[0])
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-5)


def test_kn2row_rule():
    """kn2row runs stride-1 2-D convs with at most half as many output as input channels and at least
    16 input channels (per group)."""
    def path(x_shape, w_shape, **attrs):
        return conv_geometry(dict(pads=[1, 1, 1, 1], **attrs), x_shape, w_shape, np.float32).path

    assert path((1, 96, 20, 20), (24, 96, 3, 3)) == "kn2row"
    assert path((1, 128, 7, 7), (64, 128, 3, 3)) == "kn2row"
    assert path((1, 64, 9, 9), (33, 64, 3, 3)) == "im2col"  # more than half
    assert path((1, 64, 9, 9), (64, 64, 3, 3)) == "im2col"
    assert path((1, 64, 9, 9), (16, 64, 3, 3), strides=[2, 2]) == "im2col"
    assert path((1, 64, 9, 9), (16, 64, 3, 3), strides=[1, 2]) == "im2col"
    assert path((1, 64, 9, 9), (16, 16, 3, 3), group=4) == "kn2row"
    assert path((1, 64, 9, 9), (36, 16, 3, 3), group=4) == "im2col"  # 9 outputs from 16 channels per group
    assert path((1, 64, 9, 9), (32, 4, 3, 3), group=16) == "im2col"  # too few channels per group
    assert path((1, 8, 9, 9), (4, 8, 3, 3)) == "im2col"
    assert conv_geometry(dict(pads=[1, 1]), (1, 64, 9), (16, 64, 3), np.float32).path == "im2col"  # 1-D
    assert conv_geometry({}, (1, 64, 9, 9), (16, 64, 1, 1), np.float32).path == "pointwise"


def test_kn2row_by_the_rule():
    """Unforced, on the benchmark models' kind of layer (densenet121's 128 -> 32, 3x3)."""
    wide = dict(rtol=1e-4, atol=2e-4)  # sums of 1152 products of size ~30: float32 rounding ~1e-5
    _check_kn2row((2, 128, 14, 14), (32, 128, 3, 3), dict(pads=[1, 1, 1, 1]), tol=wide)
    _check_kn2row((1, 32, 10, 10), (16, 32, 3, 3), dict(pads=[2, 2, 2, 2], dilations=[2, 2]), bias=False)


def test_geometry_memo_per_node_follows_shapes():
    """Conv keeps its geometry in the node's memo, one entry per input shapes: a session whose input
    shape changes between runs gets the right geometry for each, against onnxruntime."""
    from onnx import TensorProto, helper, numpy_helper

    import gpuinfer
    from tests.node_helpers import run_onnxruntime

    w = r(6, 4, 3, 3)
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], strides=[2, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, None, None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 6, None, None])],
                              initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode="reduce")
    for shape in [(1, 4, 8, 8), (2, 4, 5, 9), (1, 4, 8, 8), (3, 4, 16, 3)]:
        x = r(*shape)
        np.testing.assert_allclose(sess.run(None, {"x": x})[0], run_onnxruntime(model, {"x": x})[0], **TOL)
    memo = sess._executor.steps_of(sess.graph, ())[0].fields["_memo"]
    assert len(memo) == 3 and all(g.out_shape[0] in (1, 2, 3) for g in memo.values())


def test_memo_bounded_and_absent_standalone():
    from gpuinfer.ops.context import MEMO_ENTRIES, OpContext, StandaloneContext

    calls = []
    standalone = StandaloneContext()
    assert standalone.memo("k", lambda: calls.append(1) or 5) == 5
    assert standalone.memo("k", lambda: calls.append(1) or 5) == 5 and len(calls) == 2  # nothing kept

    ctx = OpContext()
    ctx._memo = {}
    for i in range(MEMO_ENTRIES + 5):
        assert ctx.memo(i, lambda i=i: ("value", i)) == ("value", i)
    assert len(ctx._memo) <= MEMO_ENTRIES
    first = ctx.memo("same", lambda: ["made once"])
    assert ctx.memo("same", lambda: ["made twice"]) is first


# ------------------------------------------------------------------------ column-phased padded copies
# A stride on the last axis: the padded copy stores each row's columns phase by phase so every tap
# reads a contiguous run (conv_depthwise.phase_into / tap_slices), in the depthwise "strided" layout
# and in im2col, in the same scratch buffer as the plain padded copy.

PHASED_CASES = [  # (x_shape, kernel, attrs, phased)
    ((2, 5, 9, 11), (3, 3), dict(pads=[1, 1, 1, 1], strides=[2, 2]), True),  # odd sizes, batch 2
    ((1, 5, 10, 12), (3, 3), dict(pads=[1, 1, 1, 1], strides=[2, 2]), True),  # even sizes
    ((2, 5, 9, 12), (3, 3), dict(pads=[0, 1, 2, 0], strides=[2, 2]), True),  # asymmetric, no left pad
    ((1, 5, 10, 11), (5, 5), dict(pads=[0, 0, 1, 1], strides=[2, 2]), True),  # only end pads
    ((1, 5, 9, 13), (3, 3), dict(pads=[2, 3, 2, 3], strides=[2, 2], dilations=[2, 2]), True),  # one phase read
    ((2, 5, 9, 11), (3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2]), True),
    ((1, 5, 10, 10), (3, 3), dict(auto_pad="SAME_LOWER", strides=[2, 2]), True),
    ((2, 5, 8, 13), (3, 3), dict(pads=[1, 1, 1, 1], strides=[1, 2]), True),
    ((1, 5, 8, 13), (3, 5), dict(pads=[1, 2, 1, 2], strides=[1, 3]), True),  # stride 3: phases 0..2
    ((2, 5, 9, 11), (3, 3), dict(pads=[1, 1, 1, 1], strides=[2, 1]), False),  # rows only: already contiguous
    ((1, 5, 9, 11), (3, 3), dict(pads=[1, 1, 1, 1], strides=[3, 3]), False),  # each column read once
    ((1, 5, 9, 11), (2, 2), dict(pads=[0, 0, 1, 1], strides=[2, 2]), False),
    ((1, 5, 9, 11), (3, 3), dict(strides=[2, 2]), False),  # unpadded: no copy to phase
]


@pytest.mark.parametrize("x_shape,kernel,attrs,phased", PHASED_CASES)
def test_depthwise_strided_phased(monkeypatch, x_shape, kernel, attrs, phased):
    """The depthwise "strided" layout on a column-phased copy: onnxruntime's values, declared scratch."""
    _force_layout(monkeypatch, "strided")
    c = x_shape[1]
    assert conv_geometry(dict(group=c, **attrs), x_shape, (c, 1, *kernel), np.float32).phased == phased
    _check_depthwise(x_shape, kernel, attrs, "strided")


@pytest.mark.parametrize("x_shape,kernel,attrs,phased", PHASED_CASES + [
    ((2, 3, 16), (3,), dict(pads=[1, 2], strides=[2]), True),  # 1-D: the phased axis is the band axis
    ((1, 4, 40), (10,), dict(pads=[4, 4], strides=[5]), True),
    ((1, 3, 5, 6, 9), (3, 3, 3), dict(pads=[1, 0, 1, 1, 1, 0], strides=[2, 1, 2]), True),  # 3-D
    ((1, 3, 5, 6, 9), (3, 3, 3), dict(pads=[1, 1, 1, 1, 1, 1], strides=[2, 2, 1]), False),
])
@pytest.mark.parametrize("bands", [False, True])
def test_im2col_phased(monkeypatch, x_shape, kernel, attrs, phased, bands):
    """im2col on a column-phased copy, whole image or a few output rows per band (the band's tap
    slices start part way down the phased copy): onnxruntime's values, declared scratch."""
    import gpuinfer.ops.conv as conv_module

    if bands:
        monkeypatch.setattr(conv_module, "COLUMN_TILE_BYTES", 100)
    c = x_shape[1]
    w_shape = (4, c, *kernel)
    g = conv_geometry(attrs, x_shape, w_shape, np.float32)
    assert g.path == "im2col" and g.phased == phased
    assert not bands or g.tile < g.out_shape[2]
    inputs = [r(*x_shape), r(*w_shape), r(4)]
    check_against_onnxruntime("Conv", inputs, opset=11, **TOL, **attrs)
    predicted, requested = requested_scratch("Conv", inputs[:2], 11, **attrs)
    assert requested == predicted


def test_phase_into_is_a_column_permutation():
    """Each padded row, phased: columns 0, s, 2s.. then 1, 1+s.. and so on, the same scratch shape."""
    from gpuinfer.ops.conv_depthwise import phase_into
    from gpuinfer.ops.conv_window import pad_into

    x = r(2, 3, 5, 7)
    for s, begin, end in ((2, [1, 1], [1, 1]), (2, [0, 2], [1, 0]), (3, [2, 1], [0, 3])):
        shape = (2, 3, 5 + begin[0] + end[0], 7 + begin[1] + end[1])
        padded, phased = np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)
        pad_into(padded, x, begin, 2)
        phase_into(phased, x, begin, 2, s)
        order = [col for q in range(s) for col in range(q, shape[-1], s)]
        np.testing.assert_array_equal(phased, padded[..., order])
