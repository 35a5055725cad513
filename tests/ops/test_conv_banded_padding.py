"""im2col convolutions pad one band of rows at a time (ops/conv.py ``padded_rows``): results equal
onnxruntime's for every band size, stride, dilation and pad, phased copies included, and the
padded scratch is a band's rows, not the image's."""
from __future__ import annotations

import numpy as np
import pytest

import gpuinfer.ops.conv as conv_module
from gpuinfer.ops.conv import conv_geometry
from tests.node_helpers import check_against_onnxruntime

CASES = [  # (x shape, w shape, attrs)
    ((2, 4, 11, 9), (6, 4, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((1, 3, 13, 12), (5, 3, 3, 3), {"pads": [1, 2, 0, 1], "strides": [2, 2]}),  # column-phased copy
    ((1, 3, 14, 10), (4, 3, 3, 2), {"pads": [2, 1, 2, 1], "dilations": [2, 1]}),
    ((1, 2, 7, 6), (3, 2, 5, 3), {"pads": [3, 0, 3, 0], "strides": [3, 1]}),  # bands wholly in the padding
    ((1, 6, 9, 9), (6, 3, 3, 3), {"pads": [1, 1, 1, 1], "group": 2}),
]


@pytest.mark.parametrize("tile_bytes", [1, 700, 1 << 20])
@pytest.mark.parametrize("x_shape, w_shape, attrs", CASES)
def test_banded_padding_matches_onnxruntime(monkeypatch, x_shape, w_shape, attrs, tile_bytes):
    monkeypatch.setattr(conv_module, "COLUMN_TILE_BYTES", tile_bytes)
    monkeypatch.setattr(conv_module, "use_kn2row", lambda *args: False)  # the im2col path under test
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    check_against_onnxruntime("Conv", [x, w, b], constant_inputs=(1, 2), rtol=1e-4, atol=1e-5, **attrs)


def test_padded_scratch_is_one_band_of_rows():
    """A big strided layer: a whole padded image would be as big as the input (VGG-19's 224x224x64
    layers took 13 MB of it before they read flat columns, which need none: test_conv_flat_columns.py)."""
    g = conv_geometry({"pads": [1, 1, 1, 1], "strides": [2, 2]}, (1, 64, 224, 224), (64, 64, 3, 3), np.float32)
    assert g.path == "im2col" and not g.flat and g.tile < 112
    assert g.padded_shape == (64, (g.tile - 1) * 2 + 3, 226)
