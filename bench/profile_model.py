"""Per-op-type time of a model (``InferenceSession(profile=True)``), to see where a run goes.

    python bench/profile_model.py [MODEL ...] [--mode arena] [--runs 10] [--threads 1] [--quiet]
        [--onnxruntime] [--write [--section profile-silero]]

MODEL: ONNX files or folders ('light/NAME' for one of onnx's light networks, 'shared/NAME' for
../shared/models/NAME; default ../shared/models and the light networks; see bench/common.py).
One table per model; ``--write`` takes exactly one model.  ``--onnxruntime`` adds onnxruntime's
own table for the same runs (its profiler's kernel times per op type, under its names: it fuses
other chains than gpuinfer, e.g. ``FusedConv``, ``QuickGelu``), to see which ops the gap is in.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (add_model_arguments, machine, main_guard, markdown_table, onnxruntime_kernel_events,  # noqa: E402
                    progress, resolve_models, write_section)
from gpuinfer.cli.errors import UsageError  # noqa: E402


def profile(source, feeds: dict, mode: str, runs: int, threads, bar) -> tuple[str, int, float]:
    """The per-op table of one model (markdown), its node count after graph passes, kernel ms per run."""
    import gpuinfer

    sess = gpuinfer.InferenceSession(source, device="cpu", memory_mode=mode, profile=True, intra_op_threads=threads)
    sess.run(None, feeds)
    sess._executor.profile.clear()  # keep the steady-state runs only
    for _ in range(runs):
        sess.run(None, feeds)
        bar.advance()
    table = sess.profile()
    total = sum(seconds for _, seconds in table.values())
    rows = [[op, str(calls // runs), f"{seconds / runs * 1000:.2f}", f"{seconds / total * 100:.1f}"]
            for op, (calls, seconds) in sorted(table.items(), key=lambda kv: -kv[1][1])]
    return (markdown_table(["op type", "calls per run", "ms per run", "% of run"], rows), len(sess.graph.nodes),
            total / runs * 1000)


def onnxruntime_profile(source, feeds: dict, runs: int, threads) -> tuple[str, float]:
    """onnxruntime's per-op-type table of one model (markdown) and its kernel ms per run, from its
    profiler over ``runs`` runs after one warm-up run."""
    kernels = onnxruntime_kernel_events(source, feeds, runs, threads)
    table: dict[str, list] = {}
    for e in kernels:
        entry = table.setdefault(e.get("args", {}).get("op_name", "?"), [0, 0.0])
        entry[0] += 1
        entry[1] += e["dur"] / 1e6
    total = sum(seconds for _, seconds in table.values()) or 1e-12
    rows = [[op, str(calls // runs), f"{seconds / runs * 1000:.2f}", f"{seconds / total * 100:.1f}"]
            for op, (calls, seconds) in sorted(table.items(), key=lambda kv: -kv[1][1])]
    return markdown_table(["onnxruntime op type", "calls per run", "ms per run", "% of run"], rows), total / runs * 1000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--mode", default="arena")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--onnxruntime", action="store_true",
                        help="also onnxruntime's per-op-type table for the same model and runs")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--section", default="profile",
                        help="the RESULTS.md section to write (one per profiled model)")
    args = parser.parse_args(argv)
    models = resolve_models(args.paths, args.models)
    if args.write and len(models) != 1:
        raise UsageError(f"--write takes one model, and {len(models)} are named (one RESULTS.md section each)")
    for model in models:
        with progress(args.runs, f"profile_model {model.name} [{args.mode}]", args.quiet) as bar:
            source, feeds = model.load()  # once: the light networks are built in memory
            text, nodes, kernel_ms = profile(source, feeds, args.mode, args.runs, args.threads, bar)
        if args.onnxruntime:
            ort_text, ort_ms = onnxruntime_profile(source, feeds, args.runs, args.threads)
            text += (f"\n\ngpuinfer: {kernel_ms:.1f} ms per run in kernels; onnxruntime: {ort_ms:.1f} ms\n\n"
                     f"{ort_text}")
        if len(models) > 1:
            print(f"\n{model.id}\n")
        print(text)
        if args.write:
            command = f"python bench/profile_model.py {model.id} --mode {args.mode} --runs {args.runs}" + (
                f" --threads {args.threads}" if args.threads else "") + (" --onnxruntime" if args.onnxruntime else "")
            if args.section != "profile":
                command += f" --section {args.section}"
            write_section(args.section, f"## Where the time goes: {model.id} ({args.mode})\n\nCommand: `{command}` "
                          f"({nodes} nodes after graph passes; {kernel_ms:.1f} ms per run in kernels)\n\n"
                          f"Machine: {machine()}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
