"""Per-op-type time of a model (``InferenceSession(profile=True)``), to see where a run goes.

    python bench/profile_model.py [MODEL ...] [--mode arena] [--runs 10] [--threads 1] [--quiet]
        [--write [--section profile-silero]]

MODEL: ONNX files or folders ('light/NAME' for one of onnx's light networks, 'shared/NAME' for
../shared/models/NAME; default ../shared/models and the light networks; see bench/common.py).
One table per model; ``--write`` takes exactly one model.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (add_model_arguments, machine, main_guard, markdown_table, progress, resolve_models,  # noqa: E402
                    write_section)
from gpuinfer.cli.errors import UsageError  # noqa: E402


def profile(model, mode: str, runs: int, threads, bar) -> tuple[str, int, float]:
    """The per-op table of one model (markdown), its node count after graph passes, kernel ms per run."""
    import gpuinfer

    source, feeds = model.load()
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--mode", default="arena")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--section", default="profile",
                        help="the RESULTS.md section to write (one per profiled model)")
    args = parser.parse_args(argv)
    models = resolve_models(args.paths, args.models)
    if args.write and len(models) != 1:
        raise UsageError(f"--write takes one model, and {len(models)} are named (one RESULTS.md section each)")
    for model in models:
        with progress(args.runs, f"profile_model {model.name} [{args.mode}]", args.quiet) as bar:
            text, nodes, kernel_ms = profile(model, args.mode, args.runs, args.threads, bar)
        if len(models) > 1:
            print(f"\n{model.id}\n")
        print(text)
        if args.write:
            command = f"python bench/profile_model.py {model.id} --mode {args.mode} --runs {args.runs}" + (
                f" --threads {args.threads}" if args.threads else "")
            if args.section != "profile":
                command += f" --section {args.section}"
            write_section(args.section, f"## Where the time goes: {model.id} ({args.mode})\n\nCommand: `{command}` "
                          f"({nodes} nodes after graph passes; {kernel_ms:.1f} ms per run in kernels)\n\n"
                          f"Machine: {machine()}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
