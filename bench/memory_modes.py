"""The seed study's table for every model: peak memory and latency of each memory mode, side by side.

    python bench/memory_modes.py [--models u2netp] [--repeat 10] [--write]

Per model and mode: counted peak (the pool's exact figure), tracemalloc's sampled peak (from a
separate run with the sampler on, since tracemalloc slows Python down), the lower bound, the
first run's latency and the median of the next ``--repeat`` runs, and ratios to ``per_tensor``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MIB, machine, markdown_table, median_ms, model_ids, run_isolated, time_runs, write_section  # noqa: E402

MODES = ["per_tensor", "reduce", "reuse", "arena"]


def one(model_id: str, repeat: int, threads=None) -> dict:
    import gpuinfer
    from tests.model_zoo import model_case

    source, feeds = model_case(model_id)
    out = {"model": model_id, "modes": {}}
    for mode in MODES:
        sess = gpuinfer.InferenceSession(source, device="cpu", memory_mode=mode, intra_op_threads=threads)
        first = time_runs(lambda: sess.run(None, feeds), 1)[0]
        first_report = sess.memory_report()
        rest = time_runs(lambda: sess.run(None, feeds), repeat)
        report = sess.memory_report()
        del sess
        sampled_sess = gpuinfer.InferenceSession(source, device="cpu", memory_mode=mode, sample_memory=True)
        sampled_sess.run(None, feeds)
        sampled_sess.run(None, feeds)
        sampled = sampled_sess.memory_report().sampled_peak_bytes
        sampled_sess.close()
        del sampled_sess
        out["modes"][mode] = {
            "peak": report.peak_bytes, "first_peak": first_report.peak_bytes, "sampled": sampled,
            "bound": report.lower_bound_bytes, "planned": report.planned_bytes,
            "allocations": report.allocations, "first_ms": first * 1000, "median_ms": median_ms(rest),
        }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, help="BLAS threads (default: BLAS's own)")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.repeat, args.threads)))
        return 0
    rows = []
    for model_id in model_ids(args.models):
        res = run_isolated(Path(__file__), ["--one", model_id, "--repeat", str(args.repeat)]
                           + (["--threads", str(args.threads)] if args.threads else []))
        if "error" in res:
            rows.append([model_id, "error: " + res["error"]] + [""] * 9)
            continue
        base = res["modes"]["per_tensor"]
        for mode in MODES:
            m = res["modes"][mode]
            rows.append([model_id if mode == "per_tensor" else "", mode,
                         f"{m['peak'] / MIB:.1f}", f"{m['sampled'] / MIB:.1f}", f"{m['bound'] / MIB:.1f}",
                         f"{m['peak'] / base['peak']:.2f}", f"{m['peak'] / max(m['bound'], 1):.2f}",
                         f"{m['first_ms']:.0f}", f"{m['median_ms']:.1f}", f"{m['median_ms'] / base['median_ms']:.2f}",
                         str(m["allocations"])])
            print(" | ".join(rows[-1]), flush=True)
    header = ["model", "mode", "peak MiB", "sampled MiB", "lower bound MiB", "peak / per_tensor",
              "peak / bound", "first run ms", "median ms", "median / per_tensor", "allocs/run"]
    table = markdown_table(header, rows)
    print(table)
    if args.write:
        command = "python bench/memory_modes.py " + " ".join(a for a in (argv or sys.argv[1:]) if a != "--write")
        write_section("memory-modes", "## Memory modes side by side (CPU)\n\n"
                      f"Command: `{command.strip()}` (peak = the pool's exact count in a steady-state run; "
                      "sampled = tracemalloc over the session's ready baseline; median of the runs after the "
                      f"first)\n\nMachine: {machine()}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
