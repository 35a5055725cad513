"""Signal processing: DFT, STFT, the Hann/Hamming/Blackman windows and MelWeightMatrix.

Signals carry a trailing dimension of 1 (real) or 2 (real, imaginary); transforms run through
``xp.fft`` in complex64 (complex128 for float64 input) and are written back into that layout.
"""
from __future__ import annotations

import math

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.cast import onnx_to_np_dtype
from gpuinfer.ops.registry import op


def _complex_dtype(dtype):
    return np.complex128 if np.dtype(dtype) == np.float64 else np.complex64


def _as_complex(xp, x, op_name):
    """The signal of a [..., 1|2] real/complex-pair tensor as a complex array."""
    if x.ndim < 2 or x.shape[-1] not in (1, 2):
        raise NodeExecutionError(f"{op_name}: the last dimension must be 1 (real) or 2 (complex), "
                                 f"got shape {list(x.shape)}")
    signal = x[..., 0].astype(_complex_dtype(x.dtype))
    if x.shape[-1] == 2:
        signal.imag = x[..., 1]
    return signal


def _write_pairs(ctx, z, dtype):
    """Write complex ``z`` into a new [..., 2] output of ``dtype``."""
    out = ctx.out(0, tuple(int(d) for d in z.shape) + (2,), dtype)
    out[..., 0] = z.real
    out[..., 1] = z.imag
    return out


def _scalar(ctx, t):
    return None if t is None else int(ctx.host(t).reshape(-1)[0])


def _dft(ctx, x, dft_length, axis):
    xp = ctx.xp
    inverse = bool(ctx.attr("inverse", 0))
    onesided = bool(ctx.attr("onesided", 0))
    if not -x.ndim <= axis < x.ndim - 1 or axis == -1:
        raise NodeExecutionError(f"DFT: axis {axis} must name a signal dimension of input shape {list(x.shape)}")
    axis %= x.ndim
    signal = _as_complex(xp, x, "DFT")
    n = _scalar(ctx, dft_length)
    if n is not None and n < 1:
        raise NodeExecutionError(f"DFT: dft_length must be positive, got {n}")
    if inverse and onesided:
        real = xp.fft.irfft(signal, n=n, axis=axis)
        out = ctx.out(0, tuple(int(d) for d in real.shape) + (1,), x.dtype)
        out[..., 0] = real
        return out
    if inverse:
        z = xp.fft.ifft(signal, n=n, axis=axis)
    else:
        z = xp.fft.fft(signal, n=n, axis=axis)
        if onesided:
            keep = z.shape[axis] // 2 + 1
            z = z[(slice(None),) * axis + (slice(0, keep),)]
    return _write_pairs(ctx, z, x.dtype)


@op("DFT", since=17)
def dft_17(ctx, x, dft_length=None):
    """Discrete Fourier transform along attribute ``axis`` (inverse, one-sided as asked)."""
    return _dft(ctx, x, dft_length, int(ctx.attr("axis", 1)))


@op("DFT", since=20)
def dft_20(ctx, x, dft_length=None, axis=None):
    """Discrete Fourier transform along the ``axis`` input (default -2, the last signal dimension)."""
    return _dft(ctx, x, dft_length, -2 if axis is None else _scalar(ctx, axis))


@op("STFT", since=17)
def stft(ctx, signal, frame_step, window=None, frame_length=None):
    """Short-time Fourier transform: windowed frames every ``frame_step`` samples, one DFT each."""
    xp = ctx.xp
    if signal.ndim != 3:
        raise NodeExecutionError(f"STFT: expected signal of shape [batch, length, 1|2], got {list(signal.shape)}")
    step = _scalar(ctx, frame_step)
    length = _scalar(ctx, frame_length)
    if length is None:
        if window is None:
            raise NodeExecutionError("STFT: needs a window or a frame_length")
        length = int(window.shape[0])
    if window is not None and int(window.shape[0]) != length:
        raise NodeExecutionError(f"STFT: window length {window.shape[0]} != frame_length {length}")
    n_samples = signal.shape[1]
    if step < 1 or length < 1 or length > n_samples:
        raise NodeExecutionError(f"STFT: frame_step {step} / frame_length {length} invalid for "
                                 f"{n_samples} samples")
    n_frames = 1 + (n_samples - length) // step
    z = _as_complex(xp, signal, "STFT")
    index = (np.arange(n_frames)[:, None] * step + np.arange(length)[None, :]).reshape(-1)
    frames = xp.take(z, xp.asarray(index), axis=1).reshape(z.shape[0], n_frames, length)
    if window is not None:
        frames *= window.astype(frames.real.dtype)
    spectrum = xp.fft.fft(frames, axis=2)
    if int(ctx.attr("onesided", 1)):
        spectrum = spectrum[:, :, :length // 2 + 1]
    return _write_pairs(ctx, spectrum, signal.dtype)


def _window(ctx, size, terms):
    """sum_k a_k cos(2 pi k n / N) for n < size; N = size (periodic) or size - 1 (symmetric)."""
    n = _scalar(ctx, size)
    if n < 0:
        raise NodeExecutionError(f"{ctx.op_type}: size must be non-negative, got {n}")
    dtype = onnx_to_np_dtype(ctx.attr("output_datatype", 1))
    denom = n if int(ctx.attr("periodic", 1)) else n - 1
    k = np.arange(n, dtype=np.float64)
    values = np.zeros(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # size 1 symmetric: 0/0, NaN as the formula says
        for order, a in enumerate(terms):
            values += a * np.cos(2 * math.pi * order * k / denom)
    out = ctx.out(0, (n,), dtype)
    ctx.xp.copyto(out, ctx.xp.asarray(values.astype(dtype)))
    return out


@op("HannWindow", since=17)
def hann_window(ctx, size):
    """0.5 - 0.5 cos(2 pi n / N)."""
    return _window(ctx, size, (0.5, -0.5))


@op("HammingWindow", since=17)
def hamming_window(ctx, size):
    """25/46 - 21/46 cos(2 pi n / N)."""
    return _window(ctx, size, (25 / 46, -21 / 46))


@op("BlackmanWindow", since=17)
def blackman_window(ctx, size):
    """0.42 - 0.5 cos(2 pi n / N) + 0.08 cos(4 pi n / N)."""
    return _window(ctx, size, (0.42, -0.5, 0.08))


@op("MelWeightMatrix", since=17)
def mel_weight_matrix(ctx, num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz):
    """[dft_length // 2 + 1, num_mel_bins] triangular filters evenly spaced on the mel scale."""
    bins, n_fft, rate = _scalar(ctx, num_mel_bins), _scalar(ctx, dft_length), _scalar(ctx, sample_rate)
    low = float(ctx.host(lower_edge_hertz).reshape(-1)[0])
    high = float(ctx.host(upper_edge_hertz).reshape(-1)[0])
    if bins < 1 or n_fft < 1 or rate < 1 or not 0 <= low < high:
        raise NodeExecutionError(f"MelWeightMatrix: bad arguments bins={bins} dft_length={n_fft} "
                                 f"sample_rate={rate} edges=({low}, {high})")
    n_spec = n_fft // 2 + 1

    def to_mel(hz):
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    # bins + 2 edge points; the step divides the mel range by their count, as the ONNX spec does
    mels = to_mel(low) + np.arange(bins + 2) * (to_mel(high) - to_mel(low)) / (bins + 2)
    hz = 700.0 * (np.power(10.0, mels / 2595.0) - 1.0)
    edges = np.floor((n_fft + 1) * hz / rate).astype(np.int64)
    if edges.min() < 0 or edges.max() >= n_spec:
        raise NodeExecutionError(f"MelWeightMatrix: the filters reach bin {int(edges.max())}, past the "
                                 f"{n_spec} bins of dft_length {n_fft} at sample_rate {rate}")
    weights = np.zeros((n_spec, bins), dtype=np.float64)
    for i in range(bins):
        lo, center, hi = (int(v) for v in edges[i:i + 3])
        if center == lo:
            weights[center, i] = 1.0
        else:
            for j in range(lo, center + 1):
                weights[j, i] = (j - lo) / (center - lo)
        for j in range(center, hi):
            weights[j, i] = (hi - j) / (hi - center)
    dtype = onnx_to_np_dtype(ctx.attr("output_datatype", 1))
    out = ctx.out(0, weights.shape, dtype)
    ctx.xp.copyto(out, ctx.xp.asarray(weights.astype(dtype)))
    return out
