"""DFT, STFT, window functions and MelWeightMatrix against onnxruntime."""
import numpy as np
import pytest

import gpuinfer.ops  # noqa: F401  (registers the kernels)
from gpuinfer.errors import NodeExecutionError
from tests.node_helpers import check_against_onnxruntime, run_kernel

rng = np.random.default_rng(0)
REAL = rng.standard_normal((2, 8, 5, 1)).astype(np.float32)
CPLX = rng.standard_normal((2, 8, 5, 2)).astype(np.float32)
TOL = dict(rtol=1e-4, atol=1e-4)


def I(v):
    return np.array(v, np.int64)


@pytest.mark.parametrize("x", [REAL, CPLX], ids=["real", "complex"])
@pytest.mark.parametrize("axis", [1, 2])
@pytest.mark.parametrize("inverse", [0, 1])
def test_dft_opset17(x, axis, inverse):
    check_against_onnxruntime("DFT", [x], opset=17, axis=axis, inverse=inverse, **TOL)


@pytest.mark.parametrize("axis", [1, 2, -2, -3])
def test_dft_opset20_axis_input(axis):
    check_against_onnxruntime("DFT", [CPLX, None, I(axis)], opset=20, constant_inputs=[2], **TOL)


def test_dft_opset20_default_axis_is_last_signal_dim():
    check_against_onnxruntime("DFT", [REAL], opset=20, **TOL)


@pytest.mark.parametrize("length", [5, 8, 12])
def test_dft_length_pads_or_truncates(length):
    check_against_onnxruntime("DFT", [REAL, I(length)], opset=17, axis=1, constant_inputs=[1], **TOL)
    check_against_onnxruntime("DFT", [CPLX, I(length), I(1)], opset=20, inverse=1, constant_inputs=[1, 2], **TOL)


@pytest.mark.parametrize("axis", [1, 2])
def test_dft_onesided(axis):
    check_against_onnxruntime("DFT", [REAL], opset=17, axis=axis, onesided=1, **TOL)


def test_dft_irfft_matches_numpy():
    spectrum = np.fft.rfft(REAL[..., 0], axis=1)
    x = np.stack([spectrum.real, spectrum.imag], axis=-1).astype(np.float32)
    got = run_kernel("DFT", [x, None, I(1)], opset=20, inverse=1, onesided=1)[0]
    assert got.shape == REAL.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, REAL, rtol=1e-4, atol=1e-5)


def test_dft_float64_and_bad_axis():
    check_against_onnxruntime("DFT", [CPLX.astype(np.float64)], opset=17, axis=1)
    with pytest.raises(NodeExecutionError, match="DFT"):
        run_kernel("DFT", [REAL], opset=17, axis=3)
    with pytest.raises(NodeExecutionError, match="DFT"):
        run_kernel("DFT", [rng.standard_normal((2, 3)).astype(np.float32)], opset=17, axis=0)


@pytest.mark.parametrize("onesided", [0, 1])
def test_stft_frame_length_and_window(onesided):
    sig = rng.standard_normal((2, 64, 1)).astype(np.float32)
    check_against_onnxruntime("STFT", [sig, I(8), None, I(16)], opset=17, onesided=onesided,
                              constant_inputs=[1, 3], **TOL)
    window = np.hanning(16).astype(np.float32)
    check_against_onnxruntime("STFT", [sig, I(5), window], opset=17, onesided=onesided,
                              constant_inputs=[1], **TOL)


def test_stft_complex_signal():
    sig = rng.standard_normal((1, 40, 2)).astype(np.float32)
    check_against_onnxruntime("STFT", [sig, I(4), None, I(10)], opset=17, onesided=0,
                              constant_inputs=[1, 3], **TOL)


@pytest.mark.parametrize("op_type", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
@pytest.mark.parametrize("size", [1, 2, 10])
def test_windows(op_type, periodic, size):
    check_against_onnxruntime(op_type, [np.array(size, np.int32)], opset=17, periodic=periodic, **TOL)


def test_window_output_datatype():
    check_against_onnxruntime("HannWindow", [np.array(7, np.int64)], opset=17, output_datatype=11)
    got = run_kernel("BlackmanWindow", [np.array(0, np.int32)], opset=17)[0]
    assert got.shape == (0,) and got.dtype == np.float32


@pytest.mark.parametrize("bins,n_fft,rate,low,high", [(8, 16, 8192, 0.0, 4096.0), (10, 64, 16000, 20.0, 7000.0),
                                                      (4, 9, 1000, 0.0, 400.0)])
def test_mel_weight_matrix(bins, n_fft, rate, low, high):
    args = [np.array(bins, np.int32), np.array(n_fft, np.int32), np.array(rate, np.int32),
            np.array(low, np.float32), np.array(high, np.float32)]
    check_against_onnxruntime("MelWeightMatrix", args, opset=17, **TOL)


def test_mel_weight_matrix_out_of_range_edges_raise():
    args = [np.array(4, np.int32), np.array(9, np.int32), np.array(1000, np.int32),
            np.array(0.0, np.float32), np.array(2000.0, np.float32)]
    with pytest.raises(NodeExecutionError, match="MelWeightMatrix"):
        run_kernel("MelWeightMatrix", args, opset=17)
