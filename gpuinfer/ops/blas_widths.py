"""Whether a BLAS product's bytes depend on how many columns it is given.

im2col multiplies the weights by one band of columns at a time.  Every mode must give the same
bytes, and the bands are wider where a plan has room to spare (``scratch_slack``), so the products
were kept as wide as the narrowest band whatever the band's width (``ConvGeometry.gemm_rows``).
That costs speed where the weights are big: OpenBLAS packs the whole weight matrix for every
product, so VGG-19's 512-channel layers (9.4 MB of weights, products of two output rows of 28)
packed them 14 times a conv.

The bytes follow the width only for small products.  OpenBLAS multiplies those (on the build
measured, up to 10^6 multiply-adds: SkylakeX's small-matrix kernels) with sums of their own; above,
every output's sum is blocked by the inner size alone, and a column comes out the same in a product
of any width, at one thread or two (throwaway sweep of 6,100 products, inner sizes 27 to 4,800,
rows 16 to 512, widths 28 to 3,136 and 2-7x that: every product that differed had at most 940,800
multiply-adds).  So where even the narrowest product a conv could make is well above that size
(``WIDE_PRODUCT``), its bands are multiplied whole.  The boundary is the build's, not numpy's, so it
is not taken on trust: ``_build_agrees`` tries products just above ``WIDE_PRODUCT`` once per process,
at one BLAS thread and at BLAS's count, and if any column differs no band is ever multiplied whole.
"""
from __future__ import annotations

import functools

import numpy as np

WIDE_PRODUCT = 1 << 22  # multiply-adds: ~4x the largest product whose bytes were seen to follow its width

# (rows, inner size, columns) tried by ``_build_agrees``, each against the same columns inside a
# product 2x and 3x as wide: a conv band's (inner size a multiple of 32), and an inner size above
# 448 that is not (where OpenBLAS's threaded driver blocks the sum differently: runtime/blas_bits.py).
PROBES = ((64, 576, 128), (32, 600, 224))


def width_free(rows: int, inner: int, columns: int) -> bool:
    """Whether a ``rows`` x ``inner`` by ``inner`` x ``columns`` product, and any wider one with
    the same weights, gives each column the same bytes: big enough (``WIDE_PRODUCT``) on a BLAS
    build that passed ``_build_agrees``."""
    return rows * inner * columns >= WIDE_PRODUCT and _build_agrees()


@functools.lru_cache(maxsize=1)
def _build_agrees() -> bool:
    """Whether this process's BLAS gives the ``PROBES`` products' columns the same bytes at every
    width tried, with one thread and with its own count (seeded random float32 operands)."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:  # the count cannot be set: try the one there is
        return _probes_agree()
    counts = sorted({1, *(info.get("num_threads", 1) for info in threadpool_info()
                          if info.get("user_api") == "blas")})
    for count in counts:
        with threadpool_limits(count, user_api="blas"):
            if not _probes_agree():
                return False
    return True


def _probes_agree() -> bool:
    rng = np.random.default_rng(2026)
    for rows, inner, columns in PROBES:
        a = rng.standard_normal((rows, inner), dtype=np.float32)
        b = rng.standard_normal((inner, 3 * columns), dtype=np.float32)
        narrow = np.matmul(a, b[:, :columns])
        for times in (2, 3):
            if not np.array_equal(np.matmul(a, b[:, :times * columns])[:, :columns], narrow):
                return False
    return True
