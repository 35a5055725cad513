"""The seed study's table for every model: peak memory and latency of each memory mode, side by side.

    python bench/memory_modes.py [MODEL ...] [--models u2netp] [--repeat 10] [--threads N] [--quiet] [--write]

MODEL: ONNX files or folders ('light' for onnx's light networks; default ../shared/models and
those; see bench/common.py).  Each model runs in a fresh process.

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
from common import (MIB, add_model_arguments, machine, main_guard, markdown_table, median_ms, one_model, progress,  # noqa: E402
                    report_progress, resolve_models, run_isolated, time_runs, write_section)

MODES = ["per_tensor", "reduce", "reuse", "arena"]


def one(arg: str, repeat: int, threads=None, tell: bool = False) -> dict:
    import gpuinfer

    model = one_model(arg)
    source, feeds = model.load()
    out = {"model": model.id, "modes": {}}
    for i, mode in enumerate(MODES):
        sess = gpuinfer.InferenceSession(source, device="cpu", memory_mode=mode, intra_op_threads=threads)
        first = time_runs(lambda: sess.run(None, feeds), 1)[0]
        first_report = sess.memory_report()
        rest = time_runs(lambda: sess.run(None, feeds), repeat)
        report = sess.memory_report()
        del sess
        sampled_sess = gpuinfer.InferenceSession(source, device="cpu", memory_mode=mode, sample_memory=True,
                                                 intra_op_threads=threads)  # as the timed session
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
        report_progress(tell, f"{model.name}: {MODES[i + 1]}" if i + 1 < len(MODES) else model.name)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, help="BLAS threads (default: BLAS's own)")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--report-progress", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.repeat, args.threads, args.report_progress)))
        return 0
    models = resolve_models(args.paths, args.models)
    rows = []
    with progress(len(models) * len(MODES), f"memory_modes ({', '.join(MODES)})", args.quiet) as bar:
        for model in models:
            bar.show(f"{model.name}: {MODES[0]}")
            res = run_isolated(Path(__file__), ["--one", model.arg, "--repeat", str(args.repeat)]
                               + (["--threads", str(args.threads)] if args.threads else []), bar)
            rows += _rows(model.id, res)
            for row in rows[-len(MODES):] if "error" not in res else rows[-1:]:
                print(" | ".join(row), flush=True)
    header = ["model", "mode", "peak MiB", "sampled MiB", "lower bound MiB", "peak / per_tensor",
              "peak / bound", "first run ms", "median ms", "median / per_tensor", "allocs/run"]
    table = markdown_table(header, rows)
    print(table)
    if args.write:
        command = "python bench/memory_modes.py " + " ".join(a for a in (argv or sys.argv[1:]) if a not in ("--write", "--quiet"))
        write_section("memory-modes", "## Memory modes side by side (CPU)\n\n"
                      f"Command: `{command.strip()}` (peak = the pool's exact count in a steady-state run; "
                      "sampled = tracemalloc's peak over the run's start, plus the bytes the pool held then; median of the runs after the "
                      f"first)\n\nMachine: {machine()}\n\n{table}\n")
    return 0


def _rows(model_id: str, res: dict) -> list[list[str]]:
    """The table rows of one model: one per mode, or one error row."""
    if "error" in res:
        return [[model_id, "error: " + res["error"]] + [""] * 9]
    rows = []
    base = res["modes"]["per_tensor"]
    for mode in MODES:
        m = res["modes"][mode]
        rows.append([model_id if mode == "per_tensor" else "", mode,
                     f"{m['peak'] / MIB:.1f}", f"{m['sampled'] / MIB:.1f}", f"{m['bound'] / MIB:.1f}",
                     f"{m['peak'] / base['peak']:.2f}", f"{m['peak'] / max(m['bound'], 1):.2f}",
                     f"{m['first_ms']:.0f}", f"{m['median_ms']:.1f}", f"{m['median_ms'] / base['median_ms']:.2f}",
                     str(m["allocations"])])
    return rows


if __name__ == "__main__":
    sys.exit(main_guard(main))
