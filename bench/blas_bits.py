"""Which products, and which models, give other bytes with one BLAS thread than with one per core.

    python bench/blas_bits.py [MODEL ...] [--max-depth 3200] [--step 8] [--quiet] [--write]

Why: issue 19 wants runs that hold up on a busy machine, where one BLAS thread beats OpenBLAS's
own two (u2netp beside two busy processes: 3.2 s with two, 1.0 s with one), but gpuinfer keeps
one BLAS count per process because a count that followed the load would change result bits
between runs (runtime/run_threads.py).  This finds where the bits really change:

- depths: products (R, K) @ (K, C) for a few (R, C), an im2col band's among them and the one
  gpuinfer itself tries (runtime/blas_bits.py), for every inner size K from ``--step`` to
  ``--max-depth`` in steps of ``--step``: the K whose bytes differ between one BLAS thread and
  one per core (OpenBLAS blocks the inner loop one way in its one-thread driver and another in
  its threaded one, so a sum may be split at other places), and whether the shape gpuinfer tries
  finds every K another shape does (a small product differs at fewer K: OpenBLAS runs it on one
  thread);
- models (MODEL arguments, 'light' or 'shared/NAME' as in the other scripts): whether every
  output of an ``arena`` run is bitwise the same with ``intra_op_threads=1`` and one per core,
  and whether gpuinfer judges the session load-safe (its BLAS count then follows the load).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (add_model_arguments, machine, main_guard, markdown_table, progress,  # noqa: E402
                    resolve_models, write_section)

def shapes() -> tuple:
    """(rows, columns) tried: a 128-channel conv's band at 26x26, a 16-channel one's at 7x7, and
    the shape gpuinfer's own check tries."""
    from gpuinfer.runtime.blas_bits import PROBE_BAND

    return ((128, 676), (16, 49), PROBE_BAND)


def differing_depths(rows: int, columns: int, max_depth: int, step: int, threads: int, bar=None) -> list[int]:
    """The inner sizes K in ``step .. max_depth`` whose (rows, K) @ (K, columns) product differs
    between one BLAS thread and ``threads``."""
    from gpuinfer.runtime.blas_bits import products_agree

    rng = np.random.default_rng(0)
    differ = []
    for k in range(step, max_depth + 1, step):
        a = rng.standard_normal((rows, k), dtype=np.float32)
        b = rng.standard_normal((k, columns), dtype=np.float32)
        if not products_agree(a, b, (threads,)):
            differ.append(k)
        if bar is not None:
            bar.advance()
    return differ


def runs(values: list[int], step: int) -> str:
    """``values`` (sorted) as ranges of consecutive steps, e.g. '456-472, 488-504'."""
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + step:
            parts.append(f"{start}" if start == v else f"{start}-{v}")
            start = None
    return ", ".join(parts) or "none"


def pattern(differ: list[int], step: int, max_depth: int) -> str:
    """What ``differ`` amounts to, where it is that simple: every K up to some size agrees, and
    above it exactly the multiples of some power of two do."""
    if not differ:
        return "every K agrees"
    first = differ[0]
    above = list(range(first, max_depth + 1, step))
    for m in (16, 32, 64, 128, 256):
        if m % step == 0 and differ == [k for k in above if k % m]:
            return f"every K below {first} agrees; above, exactly the multiples of {m} do"
    return f"the first K to differ is {first}"


def model_agrees(model, threads: int) -> tuple[bool, int, bool]:
    """(every output bitwise equal with one thread and ``threads``, outputs compared, whether
    gpuinfer judges the session load-safe: runtime/blas_bits.py)."""
    import gpuinfer
    from gpuinfer.runtime.blas_bits import load_safe_products

    source, feeds = model.load()
    outputs = []
    for n in (1, threads):
        sess = gpuinfer.InferenceSession(source, device="cpu", memory_mode="arena", intra_op_threads=n)
        outputs.append(sess.run(None, feeds))
    same = all(np.array_equal(a, b) for a, b in zip(*outputs))
    return same, len(outputs[0]), load_safe_products(sess.graph, (threads,))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser, "none: depths only")
    parser.add_argument("--max-depth", type=int, default=3200, help="largest inner size K to try")
    parser.add_argument("--step", type=int, default=8, help="inner sizes K tried: multiples of this")
    parser.add_argument("--write", action="store_true", help="put the results into bench/RESULTS.md")
    args = parser.parse_args(argv)
    from gpuinfer.backends.numpy_threads import default_threads
    from gpuinfer.cli.errors import UsageError

    if args.step < 1 or args.max_depth < args.step:
        raise UsageError(f"--step must be at least 1 and --max-depth at least --step, got {args.step}, "
                         f"{args.max_depth}")
    models = resolve_models(args.paths, args.models) if args.paths else []
    threads = max(2, default_threads())
    depths = args.max_depth // args.step
    tried = shapes()
    with progress(depths * len(tried) + len(models), f"blas_bits (1 vs {threads} BLAS threads)", args.quiet) as bar:
        found = {}
        for rows, columns in tried:
            bar.show(f"({rows}, K) @ (K, {columns})")
            found[rows, columns] = differing_depths(rows, columns, args.max_depth, args.step, threads, bar)
        table = []
        for model in models:
            bar.show(model.name)
            same, n_out, safe = model_agrees(model, threads)
            table.append([model.id, str(n_out), "yes" if same else "no", "yes" if safe else "no"])
            bar.advance()
    lines = [f"Inner sizes K = {args.step}..{args.max_depth} step {args.step}, 1 vs {threads} BLAS threads:"]
    for (rows, columns), differ in found.items():
        lines.append(f"- ({rows}, K) @ (K, {columns}): {len(differ)} of {depths} differ; K differing: "
                     f"{runs(differ, args.step)} ({pattern(differ, args.step, args.max_depth)})")
    from gpuinfer.runtime.blas_bits import PROBE_BAND

    covered = all(set(d) <= set(found[PROBE_BAND]) for d in found.values())
    lines.append(f"- every K that differs for some shape differs for {PROBE_BAND} too (the shape gpuinfer's "
                 f"load-safety check tries): {'yes' if covered else 'NO'}")
    text = "\n".join(lines)
    if table:
        text += "\n\n" + markdown_table(["model", "outputs", f"arena bytes equal, 1 vs {threads} threads",
                                          "load-safe (BLAS follows the load)"], table)
    print(text)
    if args.write:
        command = " ".join(["python bench/blas_bits.py", *args.paths, f"--max-depth {args.max_depth}",
                            f"--step {args.step}"])
        write_section("blas-bits", "## Which products change bytes with the BLAS thread count\n\n"
                                   f"Command: `{command}`\n\nMachine: {machine()}\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
