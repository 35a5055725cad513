"""Matrix products three ways, quiet or beside busy processes: OpenBLAS's own threads, one BLAS
thread, and fixed row blocks on one BLAS thread each run over gpuinfer's intra-op pool.

    python bench/blas_threads.py [--load N] [--repeat 7] [--quiet] [--write]

Why: issue 19 wants the default threads to hold on a busy machine (loaded geometric mean at most
1.3x the quiet one), and gpuinfer keeps BLAS at one count per process because OpenBLAS's products
are not bit-identical across thread counts (runtime/run_threads.py).  This measures the options
on the products the shared models make (the shapes below: im2col bands and MatMuls), each a
median of ``--repeat`` timings after a warm-up:

- ``openblas xN``: OpenBLAS at one thread per core (its default), as gpuinfer runs today;
- ``openblas x1``: one BLAS thread;
- ``rows xN (dot)`` / ``rows xN (matmul)``: the product cut into ``BLOCKS`` fixed row blocks, each
  a one-thread BLAS call (``np.dot`` / ``np.matmul`` into its rows of the output), run on
  ``RowThreads`` (backends/numpy_threads.py) with one thread per core.  Fixed blocks would give
  the same bytes for any number of threads running them, so the count could follow the load.

Two columns say whether bytes agree: one BLAS thread against N, and the row blocks against one
whole one-thread product (OpenBLAS blocks its loops by the operands' sizes, so a split product
may differ from the whole).  Times are this machine's; ratios are what to compare.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import busy_processes, machine, main_guard, markdown_table, progress, time_runs, write_section  # noqa: E402

# (rows, inner, columns) of products gpuinfer's CPU kernels make, and where from
SHAPES = [
    ((64, 576, 1280), "u2netp 64-channel 3x3 conv, one im2col band"),
    ((512, 4608, 56), "vgg19 512-channel 3x3 conv at 28x28, one band"),
    ((256, 2304, 112), "vgg19 256-channel 3x3 conv at 56x56, one band"),
    ((128, 1152, 640), "resnet50 128-channel 3x3 conv, one band"),
    ((64, 256, 3136), "resnet50 1x1 conv 256->64 at 56x56"),
    ((256, 64, 3136), "resnet50 1x1 conv 64->256 at 56x56"),
    ((128, 384, 1536), "MiniLM feed-forward up (128 tokens)"),
    ((128, 1536, 384), "MiniLM feed-forward down"),
]
BLOCKS = 4  # fixed row blocks per product (two per thread on two cores)


def _products(m: int, k: int, n: int, threads: int, repeat: int) -> dict:
    """Median microseconds of each way, and whether the bytes agree."""
    from threadpoolctl import threadpool_limits

    from gpuinfer.backends.numpy_threads import RowThreads, shared_pool

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), np.float32)
    step = -(-m // BLOCKS)
    blocks = [(s, min(m, s + step)) for s in range(0, m, step)]
    pool = shared_pool(threads) or RowThreads(1)  # the sessions' own pool (none for one core)

    def rows(fn):
        return lambda: pool.run(blocks, lambda _, s, e: fn(a[s:e], b, out=out[s:e]))

    def median_us(fn) -> float:
        fn()
        return float(np.median(time_runs(fn, repeat))) * 1e6

    figures = {}
    with threadpool_limits(threads, user_api="blas"):
        figures["openblas xN"] = median_us(lambda: np.matmul(a, b, out=out))
        many = out.copy()
    with threadpool_limits(1, user_api="blas"):
        figures["openblas x1"] = median_us(lambda: np.matmul(a, b, out=out))
        one = out.copy()
        figures["rows xN (dot)"] = median_us(rows(np.dot))
        figures["rows xN (matmul)"] = median_us(rows(np.matmul))
        split = out.copy()
    figures["x1 == xN"] = np.array_equal(one, many)
    figures["rows == whole"] = np.array_equal(split, one)
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", type=int, default=0, metavar="N", help="busy processes beside the products")
    parser.add_argument("--repeat", type=int, default=7, help="timings per way (median)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--write", action="store_true", help="put the table into bench/RESULTS.md")
    args = parser.parse_args(argv)
    from gpuinfer.backends.numpy_threads import default_threads

    threads = default_threads()
    ways = ["openblas xN", "openblas x1", "rows xN (dot)", "rows xN (matmul)"]
    table = []
    with progress(len(SHAPES), f"blas_threads ({args.load} busy processes)", args.quiet) as bar, \
            busy_processes(args.load):
        for (m, k, n), where in SHAPES:
            bar.show(f"{m}x{k}x{n}")
            f = _products(m, k, n, threads, args.repeat)
            table.append([f"{m}x{k}x{n}", where] + [f"{f[w]:.0f}" for w in ways]
                         + [f"{f['rows xN (dot)'] / f['openblas xN']:.2f}", "yes" if f["x1 == xN"] else "no",
                            "yes" if f["rows == whole"] else "no"])
            bar.advance()
    header = (["product (MxKxN)", "from"] + [f"{w.replace('N', str(threads))} us" for w in ways]
              + ["rows (dot) / openblas", "x1 bytes == xN", "rows bytes == whole"])
    text = markdown_table(header, table)
    print(text)
    if args.write:
        busy = f"{args.load} busy processes beside it" if args.load else "no other load"
        section = "blas-threads" + (f"-load{args.load}" if args.load else "")
        write_section(section, f"## Matrix products: OpenBLAS's threads or fixed row blocks ({busy})\n\n"
                               f"Command: `python bench/blas_threads.py --repeat {args.repeat}"
                               f"{f' --load {args.load}' if args.load else ''}` (median microseconds; "
                               f"threads: one per core)\n\nMachine: {machine()}\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
