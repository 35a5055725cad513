"""Matrix products cut into a fixed number of blocks and run on the run's threads.

During a run on the host, BLAS is held to one thread (runtime/run_threads.py): OpenBLAS's own
threads spin after every product, which made runs collapse on a busy machine (light_resnet50 1.7x
-> 2.9x onnxruntime with two other busy processes), and they cannot share a band's copies and adds
with the product beside them.  So the products that matter (MatMul, Gemm, convolutions) are cut
here into blocks of output rows or columns, each an ordinary single-threaded BLAS call writing a
view of the output, and the blocks go to gpuinfer's own row-block threads.

How a product is cut depends only on its shapes and on the process's core count
(``host_slots``), never on how many threads a run gets, so a product's bits are the same in every
run, on a quiet machine or a busy one, with one thread or several.  On a GPU a product is one call.
"""
from __future__ import annotations

import math
from typing import Any

from gpuinfer.backends.numpy_threads import BLOCKS_PER_THREAD, host_slots, run_slotted

# A block must do this much arithmetic to be worth handing to a thread (~15 us of hand-off; one
# core does ~100 GFLOP/s of float32 BLAS here, so 4 MFLOP is ~40 us).
BLOCK_FLOPS = 4 << 20
COLUMN_ALIGN = 64  # column blocks start on whole SIMD/cache-line runs
ROW_ALIGN = 16


def product_parts(flops: int) -> int:
    """Blocks a product of ``flops`` is cut into (1: not cut)."""
    return max(1, min(host_slots() * BLOCKS_PER_THREAD, flops // BLOCK_FLOPS))


def _cuts(length: int, parts: int, align: int) -> list:
    size = -(-length // parts)
    size = -(-size // align) * align
    return [(s, min(s + size, length)) for s in range(0, length, size)]


def matmul_into(ctx: Any, a: Any, b: Any, out: Any) -> Any:
    """``a @ b`` written into ``out`` (numpy matmul's shapes), cut into blocks on the host."""
    xp = ctx.xp
    if not ctx.caps.host_arrays or a.ndim < 2 or b.ndim < 2 or out.size == 0:
        return xp.matmul(a, b, out=out)
    m, k = a.shape[-2:]
    n = b.shape[-1]
    parts = product_parts(2 * m * n * k * math.prod(out.shape[:-2]))
    if parts < 2:
        return xp.matmul(a, b, out=out)
    if a.ndim > 2 and b.ndim == 2 and a.flags.c_contiguous and out.flags.c_contiguous:
        a, out2 = a.reshape(-1, k), out.reshape(-1, n)  # stacked rows: one 2-D product
        _matmul_2d(ctx, a, b, out2, parts)
        return out
    if a.ndim == 2 and b.ndim == 2:
        _matmul_2d(ctx, a, b, out, parts)
        return out
    contiguous = a.flags.c_contiguous and b.flags.c_contiguous and out.flags.c_contiguous
    if contiguous and a.shape[:-2] == b.shape[:-2] == out.shape[:-2]:  # the same batch: cut the batch
        a3, b3, o3 = (x.reshape((-1,) + x.shape[-2:]) for x in (a, b, out))  # views: all contiguous
        if o3.shape[0] >= parts:
            run_slotted(ctx, _cuts(o3.shape[0], parts, 1),
                        lambda _, c: xp.matmul(a3[c[0]:c[1]], b3[c[0]:c[1]], out=o3[c[0]:c[1]]), parts)
            return out
    return xp.matmul(a, b, out=out)


def _matmul_2d(ctx: Any, a: Any, b: Any, out: Any, parts: int) -> None:
    """A 2-D product cut into column blocks where it is wide, else row blocks."""
    xp = ctx.xp
    m, n = out.shape
    if n >= parts * COLUMN_ALIGN:
        run_slotted(ctx, _cuts(n, parts, COLUMN_ALIGN),
                    lambda _, c: xp.matmul(a, b[:, c[0]:c[1]], out=out[:, c[0]:c[1]]), parts)
    elif m >= parts * ROW_ALIGN:
        run_slotted(ctx, _cuts(m, parts, ROW_ALIGN),
                    lambda _, c: xp.matmul(a[c[0]:c[1]], b, out=out[c[0]:c[1]]), parts)
    else:
        xp.matmul(a, b, out=out)
