"""numpy twins of the CUDA kernels in ``kernels/``: the same arguments, the same result.

The strict stand-in runs these where real CuPy would launch the compiled kernel, so every op
variant that launches a kernel is tested on every CI run; tests/devices/test_cuda_kernels.py
compiles the CUDA sources with NVRTC and checks each kernel here has a twin of its arity.  A twin reads and writes the
arrays it is given in place, as the kernel writes device memory; scalars are numpy scalars.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

TWINS: dict[str, Callable[..., None]] = {}


def twin(kernel: Callable[..., None]) -> Callable[..., None]:
    TWINS[kernel.__name__] = kernel
    return kernel


def _windows(padded: np.ndarray, kh: int, kw: int, oh: int, ow: int, sh: int, sw: int, dh: int, dw: int):
    """The (N, C, OH, OW) slice of ``padded`` under kernel tap (kh, kw)."""
    return padded[:, :, kh * dh: kh * dh + (oh - 1) * sh + 1: sh, kw * dw: kw * dw + (ow - 1) * sw + 1: sw]


def _padded(x: np.ndarray, ph: int, pw: int, need_h: int, need_w: int, fill: float) -> np.ndarray:
    n, c, h, w = x.shape
    out = np.full((n, c, max(need_h, ph + h), max(need_w, pw + w)), fill, dtype=x.dtype)
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


@twin
def im2col_2d(x, cols, N, C, H, W, KH, KW, OH0, OH, OW, SH, SW, PH, PW, DH, DW):  # noqa: N803 (the kernel's names)
    xs = x.reshape(int(N), int(C), int(H), int(W))
    rows = (OH0 + OH - 1) * SH + (KH - 1) * DH + 1  # padded rows the band's last output row reaches
    padded = _padded(xs, int(PH), int(PW), rows, (OW - 1) * SW + (KW - 1) * DW + 1, 0.0)
    band = padded[:, :, int(OH0) * int(SH):]
    out = cols.reshape(int(N), int(C), int(KH), int(KW), int(OH), int(OW))
    for kh in range(int(KH)):
        for kw in range(int(KW)):
            out[:, :, kh, kw] = _windows(band, kh, kw, int(OH), int(OW), int(SH), int(SW), int(DH), int(DW))


def _activate(v: np.ndarray, act: int, a: float, b: float, slope: np.ndarray) -> None:
    """``activate`` of kernels/conv.cu, in place on float32 ``v`` (N, M, P); ``slope``: the M
    per-channel PRelu slopes (read for act 8 only)."""
    one, zero, a, b = np.float32(1), np.float32(0), np.float32(a), np.float32(b)
    with np.errstate(all="ignore"):
        if act == 1:
            np.maximum(v, zero, out=v)
        elif act == 2:
            np.divide(one, one + np.exp(-v), out=v)
        elif act == 3:
            np.copyto(v, np.where(v >= zero, v, a * v))
        elif act == 4:
            np.copyto(v, np.minimum(np.maximum(v, a), b))
        elif act == 5:
            np.tanh(v, out=v)
        elif act == 6:
            np.copyto(v, np.minimum(np.maximum(a * v + b, zero), one))
        elif act == 7:
            np.copyto(v, v * np.minimum(np.maximum(v / np.float32(6) + np.float32(0.5), zero), one))
        elif act == 8:
            s = slope.reshape(-1)[:v.shape[1]].reshape(1, -1, 1)
            np.copyto(v, np.where(v >= zero, v, s * v))
        elif act == 9:
            np.multiply(v, np.divide(one, one + np.exp(-v)), out=v)
        elif act == 10:  # CUDA's erff is within 2 ulp of erf: the twin rounds the exact value
            np.copyto(v, np.vectorize(math.erf, otypes=[np.float64])(v.astype(np.float64)).astype(np.float32))


@twin
def bias_act(x, y, bias, slope, total, M, P, has_bias, act, a, b):  # noqa: N803
    v = y.reshape(-1, int(M), int(P))
    np.copyto(v, x.reshape(v.shape))  # x may be y (in place): copying onto itself is harmless
    if has_bias:
        v += bias.reshape(-1)[:int(M)].reshape(1, -1, 1)
    _activate(v, int(act), a, b, slope)


@twin
def conv2d_direct(x, w, bias, slope, y, N, C, H, W, M, G, KH, KW, OH, OW, SH, SW, PH, PW, DH, DW,  # noqa: N803
                  has_bias, act, a, b):
    n, c, h, wd, m, g, kh_, kw_, oh, ow = (int(v) for v in (N, C, H, W, M, G, KH, KW, OH, OW))
    sh, sw, dh, dw = int(SH), int(SW), int(DH), int(DW)
    padded = _padded(x.reshape(n, c, h, wd), int(PH), int(PW), (oh - 1) * sh + (kh_ - 1) * dh + 1,
                     (ow - 1) * sw + (kw_ - 1) * dw + 1, 0.0)
    weights = w.reshape(g, m // g, c // g, kh_, kw_)
    acc = np.zeros((n, g, m // g, oh, ow), dtype=np.float32)
    for kh in range(kh_):
        for kw in range(kw_):
            taps = _windows(padded, kh, kw, oh, ow, sh, sw, dh, dw).reshape(n, g, c // g, oh, ow)
            acc += np.einsum("ngchw,gmc->ngmhw", taps, weights[:, :, :, kh, kw])
    out = acc.reshape(n, m, oh * ow)
    if has_bias:
        out += bias.reshape(-1)[:m].reshape(1, -1, 1)
    _activate(out, int(act), a, b, slope)
    y.reshape(n, m, oh * ow)[...] = out


@twin
def maxpool_2d(x, y, N, C, H, W, KH, KW, OH, OW, SH, SW, PH, PW, DH, DW):  # noqa: N803
    xs = x.reshape(int(N), int(C), int(H), int(W))
    padded = _padded(xs, int(PH), int(PW), (OH - 1) * SH + (KH - 1) * DH + 1, (OW - 1) * SW + (KW - 1) * DW + 1,
                     -np.inf)
    out = y.reshape(int(N), int(C), int(OH), int(OW))
    out[...] = -np.inf
    for kh in range(int(KH)):
        for kw in range(int(KW)):
            np.maximum(out, _windows(padded, kh, kw, int(OH), int(OW), int(SH), int(SW), int(DH), int(DW)), out=out)


@twin
def resize_taps_2d(x, y, ih, wh, iw, ww, planes, H, W, OH, OW, TH, TW):  # noqa: N803
    xs = x.reshape(int(planes), int(H), int(W))
    rows = ih.reshape(int(OH), int(TH))
    cols = iw.reshape(int(OW), int(TW))
    gathered = xs[:, rows][..., cols]  # (P, OH, TH, OW, TW)
    inner = (gathered * ww.reshape(1, 1, 1, int(OW), int(TW))).sum(axis=-1, dtype=np.float32)
    y.reshape(int(planes), int(OH), int(OW))[...] = (inner * wh.reshape(1, int(OH), int(TH), 1)).sum(
        axis=2, dtype=np.float32)
