"""im2col columns read as flat runs of the unpadded input (ops/conv_flat_columns.py): the columns
equal the padded copy's, tap by tap, for any band; whole convolutions equal onnxruntime's and the
padded path's bytes; the geometry takes the path only where the width is kept, and asks for no
padded scratch there."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpuinfer.ops.conv as conv_module
from gpuinfer.ops.conv import conv_geometry
from gpuinfer.ops.conv_flat_columns import fill_flat_columns
from tests.node_helpers import check_against_onnxruntime, requested_scratch, run_kernel


def padded_columns(x, kernel, dilations, begin, end, r0, rows):
    """The reference: columns (C, taps, rows * W) of output rows r0.. from a zero-padded copy."""
    c, h, w = x.shape
    p = np.pad(x, ((0, 0), (begin[0], end[0]), (begin[1], end[1])))
    cols = np.empty((c, kernel[0] * kernel[1], rows, w), x.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            top, left = r0 + i * dilations[0], j * dilations[1]
            cols[:, i * kernel[1] + j] = p[:, top:top + rows, left:left + w]
    return cols.reshape(c, -1, rows * w)


@st.composite
def width_keeping_bands(draw):
    """A 2-D window that keeps the width (left + right pads = the window's reach), any rows' pads,
    and one band of its output rows."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    reach_w = (kw - 1) * dw
    left = draw(st.integers(0, reach_w))
    top, bottom = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    c, w = draw(st.integers(1, 3)), draw(st.integers(1, 7))
    least = max(1, (kh - 1) * dh + 1 - top - bottom)  # one output row at least
    h = draw(st.integers(least, least + 6))
    out_h = h + top + bottom - (kh - 1) * dh
    r0 = draw(st.integers(0, out_h - 1))
    rows = draw(st.integers(1, out_h - r0))
    return (c, h, w), (kh, kw), (dh, dw), (top, left), (bottom, reach_w - left), r0, rows


@settings(max_examples=300, deadline=None)
@given(width_keeping_bands(), st.integers(0, 2 ** 32 - 1))
def test_flat_columns_equal_the_padded_copys(case, seed):
    shape, kernel, dilations, begin, end, r0, rows = case
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    cols = np.full((shape[0], kernel[0] * kernel[1], rows * shape[2]), np.nan, np.float32)  # no stale zeros
    fill_flat_columns(cols, x, kernel, dilations, begin, r0, rows)
    np.testing.assert_array_equal(cols, padded_columns(x, kernel, dilations, begin, end, r0, rows))


CASES = [  # (x shape, w shape, attrs): each keeps the width, stride 1
    ((2, 4, 11, 9), (6, 4, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((1, 3, 9, 10), (5, 3, 3, 3), {"pads": [2, 2, 2, 2], "dilations": [2, 2]}),  # u2net's dilated RSU convs
    ((1, 3, 7, 8), (4, 3, 5, 3), {"pads": [4, 0, 0, 2]}),  # asymmetric: rows added above, the width's at the right
    ((1, 2, 5, 6), (3, 2, 3, 3), {"pads": [3, 1, 3, 1]}),  # bands wholly in the padding
    ((1, 6, 9, 9), (6, 3, 3, 3), {"pads": [1, 1, 1, 1], "group": 2}),
    ((1, 4, 8, 7), (5, 4, 3, 1), {}),  # a column kernel: no padding at all, width kept
    ((1, 3, 6, 1), (2, 3, 3, 3), {"pads": [1, 1, 1, 1]}),  # one column: every side tap reads padding
]


@pytest.fixture
def im2col_only(monkeypatch):
    monkeypatch.setattr(conv_module, "use_kn2row", lambda *args: False)


@pytest.mark.parametrize("tile_bytes", [1, 700, 1 << 20])
@pytest.mark.parametrize("x_shape, w_shape, attrs", CASES)
def test_flat_columns_match_onnxruntime(monkeypatch, im2col_only, x_shape, w_shape, attrs, tile_bytes):
    monkeypatch.setattr(conv_module, "COLUMN_TILE_BYTES", tile_bytes)
    g = conv_geometry(attrs, x_shape, w_shape, np.float32)
    assert g.path == "im2col" and g.flat and g.padded_shape is None
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    check_against_onnxruntime("Conv", [x, w, b], constant_inputs=(1, 2), rtol=1e-4, atol=1e-5, **attrs)


@pytest.mark.parametrize("x_shape, w_shape, attrs", CASES)
def test_flat_columns_give_the_padded_paths_bytes(monkeypatch, im2col_only, x_shape, w_shape, attrs):
    """The same columns, so the same products: a model's bytes do not depend on which path read them."""
    monkeypatch.setattr(conv_module, "COLUMN_TILE_BYTES", 700)  # several bands
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)
    flat = run_kernel("Conv", [x, w], **attrs)[0]
    monkeypatch.setattr(conv_module, "flat_columns_fit", lambda *args: False)
    assert not conv_geometry(attrs, x_shape, w_shape, np.float32).flat
    padded = run_kernel("Conv", [x, w], **attrs)[0]
    np.testing.assert_array_equal(flat, padded)


@pytest.mark.parametrize("x_shape, w_shape, attrs", [
    ((1, 3, 9, 9), (4, 3, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),  # strided: padded, phased
    ((1, 3, 9, 9), (4, 3, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 1]}),  # strided rows
    ((1, 3, 9, 9), (4, 3, 3, 3), {}),  # valid: the width shrinks
    ((1, 3, 9, 9), (4, 3, 3, 3), {"pads": [1, 2, 1, 2]}),  # the width grows
    ((1, 3, 9), (4, 3, 3), {"pads": [1, 1]}),  # 1-D
])
def test_flat_columns_only_where_the_width_is_kept(im2col_only, x_shape, w_shape, attrs):
    g = conv_geometry(attrs, x_shape, w_shape, np.float32)
    assert g.path == "im2col" and not g.flat


def test_no_padded_scratch_asked_for(im2col_only):
    """VGG-19's 224x224x64 layers: columns only, the band's padded rows (0.23 MB) gone; and the
    kernel asks for exactly what the planner was told."""
    g = conv_geometry({"pads": [1, 1, 1, 1]}, (1, 64, 224, 224), (64, 64, 3, 3), np.float32)
    assert g.flat and g.padded_shape is None
    assert g.scratch == [((64 * 9, g.tile * 224), np.dtype(np.float32))]
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((1, 4, 12, 10)).astype(np.float32), rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    predicted, requested = requested_scratch("Conv", [x, w], 17, pads=[1, 1, 1, 1])
    assert predicted == requested and len(requested) == 1
