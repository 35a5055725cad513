"""RoiAlign against onnxruntime: opsets 10/16, both coordinate modes, avg/max, adaptive sampling."""
import warnings

import numpy as np
import pytest

import gpuinfer.ops  # noqa: F401  (registers the kernels)
from gpuinfer.errors import NodeExecutionError
from tests.node_helpers import check_against_onnxruntime, requested_scratch, run_kernel

rng = np.random.default_rng(0)
X = rng.standard_normal((2, 3, 8, 9)).astype(np.float32)
# inside, fractional, thin, partly outside, far larger than the map
ROIS = np.array([[0, 0, 5, 6], [1.2, 2.5, 7.7, 6.1], [3, 3, 3.5, 9], [-2, -1, 4, 3], [0.5, 0.5, 20, 20]], np.float32)
BATCH = np.array([1, 0, 1, 0, 1], np.int64)


def check(inputs, opset, **attrs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return check_against_onnxruntime("RoiAlign", inputs, opset=opset, atol=1e-5, rtol=1e-5, **attrs)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ratio", [0, 1, 2, 3])
@pytest.mark.parametrize("transform", ["half_pixel", "output_half_pixel"])
def test_roialign_16(mode, ratio, transform):
    check([X, ROIS, BATCH], 16, mode=mode, sampling_ratio=ratio, coordinate_transformation_mode=transform,
          output_height=3, output_width=4, spatial_scale=0.8)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ratio", [0, 2])
def test_roialign_10_has_no_half_pixel_shift(mode, ratio):
    check([X, ROIS, BATCH], 10, mode=mode, sampling_ratio=ratio, output_height=2, output_width=5, spatial_scale=1.5)


def test_roialign_defaults_float64_and_unsorted_batches():
    x = rng.standard_normal((3, 2, 6, 5))
    rois = (rng.random((6, 4)) * 4).astype(np.float64)
    rois[:, 2:] += rois[:, :2]
    batch = np.array([2, 0, 2, 1, 0, 2], np.int64)  # rois of one image are not contiguous
    check([x, rois, batch], 16)
    check([x, rois, batch], 16, output_height=4, output_width=2, sampling_ratio=0)


def test_roialign_no_rois_and_scratch_promise():
    (out,) = run_kernel("RoiAlign", [X, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)], opset=16,
                        output_height=2, output_width=3)
    assert out.shape == (0, 3, 2, 3) and out.dtype == np.float32
    for mode in ("avg", "max"):
        predicted, requested = requested_scratch("RoiAlign", [X, ROIS, BATCH], 16, mode=mode, output_height=3,
                                                 output_width=2)
        assert predicted == requested


def test_roialign_rejects_bad_inputs():
    with pytest.raises(NodeExecutionError, match="batch_indices"):
        run_kernel("RoiAlign", [X, ROIS, np.array([0, 1, 2, 0, 0], np.int64)], opset=16)
    with pytest.raises(NodeExecutionError, match="rois"):
        run_kernel("RoiAlign", [X, ROIS[:, :3], BATCH], opset=16)
    with pytest.raises(NodeExecutionError, match="rank 4"):
        run_kernel("RoiAlign", [X[0], ROIS, BATCH], opset=16)
