"""LRN runs a band of channels at a time (ops/norm.py): onnxruntime's results for channel counts
that split into full and partial bands, and windows wider than a band (onnxruntime takes odd sizes only); its scratch is
a band's squares, not the whole input's."""
from __future__ import annotations

import numpy as np
import pytest

from gpuinfer.ops.norm import _lrn_scratch
from tests.node_helpers import check_against_onnxruntime


@pytest.mark.parametrize("channels, size", [(20, 5), (9, 3), (17, 9), (3, 7), (64, 5)])
def test_banded_lrn_matches_onnxruntime(channels, size):
    x = np.random.default_rng(channels).standard_normal((2, channels, 5, 6)).astype(np.float32) * 3
    check_against_onnxruntime("LRN", [x], size=size, alpha=2e-3, beta=0.75, bias=1.5, rtol=1e-5)


def test_lrn_scratch_is_a_band():
    """zfnet512's first LRN: 96 channels of 109x109 squares (4.6 MB) became 12 + 4."""
    (shape, _), = _lrn_scratch({"size": 5}, [(1, 96, 109, 109)], [np.float32])
    assert shape == (1, 16, 109, 109)
