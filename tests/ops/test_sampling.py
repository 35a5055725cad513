"""GridSample and AffineGrid against onnxruntime: every mode, padding and align_corners, 2-D and 3-D."""
import numpy as np
import pytest

import gpuinfer.ops  # noqa: F401  (registers the kernels)
from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.context import StandaloneContext
from gpuinfer.ops.registry import lookup
from tests.node_helpers import check_against_onnxruntime, run_kernel

rng = np.random.default_rng(0)


@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample_2d(mode, padding, align):
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    grid = (rng.random((2, 4, 7, 2)) * 3.2 - 1.6).astype(np.float32)  # reaches well outside [-1, 1]
    check_against_onnxruntime("GridSample", [x, grid], opset=20, rtol=1e-4, atol=1e-5,
                              mode=mode, padding_mode=padding, align_corners=align)


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_grid_sample_opset16_mode_names(mode):
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    grid = (rng.random((1, 3, 3, 2)) * 2.4 - 1.2).astype(np.float32)
    check_against_onnxruntime("GridSample", [x, grid], opset=16, rtol=1e-4, atol=1e-5, mode=mode)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_grid_sample_3d(mode, padding):
    x = rng.standard_normal((1, 2, 3, 4, 5)).astype(np.float32)
    grid = (rng.random((1, 2, 3, 4, 3)) * 2.6 - 1.3).astype(np.float32)
    check_against_onnxruntime("GridSample", [x, grid], opset=20, rtol=1e-4, atol=1e-5,
                              mode=mode, padding_mode=padding, align_corners=1)


def test_grid_sample_float64_and_scratch_prediction():
    x = rng.standard_normal((2, 3, 4, 5))
    grid = rng.random((2, 6, 2, 2)) * 2 - 1
    check_against_onnxruntime("GridSample", [x, grid], opset=20, rtol=1e-9, atol=1e-12)
    spec = lookup("GridSample", 20)
    asked = []

    class Recording(StandaloneContext):
        def scratch(self, shape, dtype):
            asked.append((tuple(shape), np.dtype(dtype)))
            return super().scratch(shape, dtype)

    spec.kernel(Recording(opset=20), x, grid)
    assert [(tuple(s), np.dtype(d)) for s, d in spec.scratch({}, [x.shape, grid.shape], [x.dtype, grid.dtype])] \
        == asked


def test_grid_sample_rejects_bad_grid():
    with pytest.raises(NodeExecutionError, match="grid"):
        run_kernel("GridSample", [np.zeros((1, 1, 3, 3), np.float32), np.zeros((1, 2, 2, 3), np.float32)],
                   opset=20)


@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("size", [(2, 3, 4, 5), (2, 1, 3, 4, 5)])
def test_affine_grid(align, size):
    r = len(size) - 2
    theta = rng.standard_normal((2, r, r + 1)).astype(np.float32)
    check_against_onnxruntime("AffineGrid", [theta, np.array(size, np.int64)], opset=20, rtol=1e-5, atol=1e-6,
                              constant_inputs=[1], align_corners=align)


def test_affine_grid_feeds_grid_sample_identity():
    x = rng.standard_normal((1, 2, 4, 6)).astype(np.float32)
    theta = np.array([[[1, 0, 0], [0, 1, 0]]], np.float32)
    (grid,) = run_kernel("AffineGrid", [theta, np.array(x.shape, np.int64)], opset=20)
    (y,) = run_kernel("GridSample", [x, grid], opset=20)
    np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)
