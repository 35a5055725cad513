"""Intra-op threads: big numpy passes split into row blocks over a small persistent pool.

BLAS spreads matrix products over its own threads; everything else numpy does (elementwise ops,
pooling folds, depthwise taps, Resize's gathers) runs on the calling thread.  numpy lets go of the
GIL inside its loops, so a pass over a big array can be cut into blocks of rows and the blocks run
at once.  Each block is a view into the buffers the op was given (its input and its planned
output): no byte is added, and every element sees the very same arithmetic as in one pass, so
results are identical bit for bit.

Only host arrays are split (the device's ``caps.host_arrays``); a GPU launches whole tensors.
Passes under ``MIN_BLOCK_BYTES`` per block stay on the calling thread: handing a block to a
worker costs ~10-20 us, which a small pass never earns back.

On a busy machine a worker may wait for a core.  The caller takes blocks too, from the same queue
(there are a few more blocks than threads), so the work goes to whichever threads are running;
blocks a worker has not started when the caller runs out of work are cancelled, not waited for.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, Optional

# Bytes a block must move for a second thread to pay: measured on the 2-core machine with float32
# Tanh/Relu/Add (bench/intra_op_threads.py); a thread hand-off costs ~15 us, a
# 256 KiB elementwise pass ~20-60 us.
MIN_BLOCK_BYTES = 1 << 18
BLOCKS_PER_THREAD = 2  # blocks queued per thread: lets running threads take a stalled one's share
SPLIT_MIN_BYTES = 2 * MIN_BLOCK_BYTES  # a pass smaller than this is never split (kernels test it first)
ALIGN = 1024  # flat block starts are multiples of this many elements: the same SIMD split as one pass

_current = threading.local()  # the pool of the run on this thread, if any


def default_threads() -> int:
    """The cores this process may run on (onnxruntime's default is the physical cores)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class RowThreads:
    """``threads`` threads in all: the caller and ``threads - 1`` persistent workers."""

    def __init__(self, threads: int):
        self.threads = max(1, int(threads))
        self._workers = (ThreadPoolExecutor(self.threads - 1, thread_name_prefix="gpuinfer-intra-op")
                         if self.threads > 1 else None)

    def blocks(self, rows: int, row_bytes: int, align: int = 1, most: Optional[int] = None) -> Optional[list]:
        """Row blocks for a pass over ``rows`` rows of ``row_bytes`` bytes (``most`` of them at
        most, when given), or None when one thread should do it all (too little work for a second)."""
        if self._workers is None or rows < 2:
            return None
        useful = min(self.threads, rows * row_bytes // MIN_BLOCK_BYTES)
        if useful < 2 or (most is not None and most < 2):
            return None
        count = useful * BLOCKS_PER_THREAD if most is None else min(useful * BLOCKS_PER_THREAD, most)
        size = max(align, -(-rows // count))
        size = -(-size // align) * align
        blocks = [(s, min(s + size, rows)) for s in range(0, rows, size)]
        return blocks if len(blocks) > 1 else None

    def run(self, blocks: list, body: Callable[[int, int, int], Any]) -> None:
        """``body(index, start, stop)`` for every block, on the caller and the workers at once;
        exceptions come out of this call, after every started block is done."""
        # a list iterator hands each block out once, under the GIL; ``work`` is emptied once the
        # call is done: a cancelled worker item stays in the executor's queue until a worker next
        # wakes, and through ``body`` it kept the op's arrays alive after the pool released them
        # (light/shufflenet reduce: 1.2-2.6 MB over the count now and then, at 2 threads)
        work = [iter(list(enumerate(blocks))), body]

        def drain() -> None:  # never runs after the clear: a worker's item is cancelled or waited for
            queue, fn = work
            for i, (start, stop) in queue:
                fn(i, start, stop)

        # each worker runs in a copy of the caller's context: numpy keeps its error state and ufunc
        # buffer size there (the run ignores IEEE warnings, as ONNX wants, and holds numpy's
        # buffers to runtime/executor.py's size); a worker's own default context warned
        # "overflow encountered in exp" for every block of an Exp that overflowed
        futures = [self._workers.submit(contextvars.copy_context().run, drain)
                   for _ in range(min(self.threads, len(blocks)) - 1)]
        try:
            drain()
        finally:  # every block is written before the buffers are read (and before an error leaves)
            errors = [future.exception() for future in futures if not future.cancel()]
            work.clear()
        for error in errors:
            if error is not None:
                raise error


@contextlib.contextmanager
def running_with(pool: Optional[RowThreads]) -> Iterator[None]:
    """Kernels called on this thread inside the block split their big passes over ``pool``."""
    before = getattr(_current, "pool", None)
    _current.pool = pool
    try:
        yield
    finally:
        _current.pool = before


def row_blocks(ctx: Any, rows: int, row_bytes: int, align: int = 1, most: Optional[int] = None) -> list:
    """How a pass over ``rows`` rows of ``row_bytes`` bytes is cut for the run's threads (into
    ``most`` blocks at most, when given): ``[(0, rows)]`` (one call) on GPU devices, for small
    passes, or outside a threaded run."""
    pool = getattr(_current, "pool", None)
    if pool is None or rows * row_bytes < SPLIT_MIN_BYTES or not ctx.caps.host_arrays:
        return [(0, rows)]
    return pool.blocks(rows, row_bytes, align, most) or [(0, rows)]


def run_blocks(blocks: list, body: Callable[[int, int, int], Any]) -> None:
    """``body(index, start, stop)`` for each of ``blocks`` (from ``row_blocks``), on the run's threads."""
    if len(blocks) == 1:
        body(0, *blocks[0])
        return
    _current.pool.run(blocks, body)


def split_rows(ctx: Any, rows: int, row_bytes: int, body: Callable[[int, int], Any], align: int = 1) -> None:
    """``body(start, stop)`` over ``[0, rows)``, in row blocks on the run's threads when it pays."""
    blocks = row_blocks(ctx, rows, row_bytes, align)
    if len(blocks) == 1:
        body(0, rows)
        return
    _current.pool.run(blocks, lambda _, start, stop: body(start, stop))


def split_flat(ctx: Any, body: Callable[..., Any], out: Any, *arrays: Any) -> None:
    """``body(out_block, *array_blocks)`` over matching flat blocks of same-shaped C-contiguous
    arrays (elementwise passes); arrays that are not all contiguous go in one call."""
    if getattr(_current, "pool", None) is None or not ctx.caps.host_arrays or out.nbytes < SPLIT_MIN_BYTES \
            or not all(a.shape == out.shape and a.flags.c_contiguous for a in (out, *arrays)):
        body(out, *arrays)
        return
    flats = [a.reshape(-1) for a in (out, *arrays)]
    split_rows(ctx, out.size, out.itemsize, lambda s, e: body(*(f[s:e] for f in flats)), ALIGN)


_shared: dict[int, RowThreads] = {}
_shared_lock = threading.Lock()


def shared_pool(threads: int) -> Optional[RowThreads]:
    """One pool per thread count, shared by the sessions that ask for it (workers are idle
    threads between runs; sessions are many, cores are few).  None for one thread."""
    if threads < 2:
        return None
    with _shared_lock:
        pool = _shared.get(threads)
        if pool is None:
            pool = _shared[threads] = RowThreads(threads)
        return pool
