"""gpuinfer (CPU) against onnxruntime (CPU, same thread count), side by side, one process per model.

    python bench/vs_onnxruntime.py [MODEL ...] [--models u2netp squeezenet] [--repeat 10] [--threads N]
        [--modes per_tensor arena] [--quiet] [--write]

MODEL: ONNX files or folders ('light' for onnx's light networks; default ../shared/models and
those; see bench/common.py).  Each model runs in a fresh process.

Prints median latency of each after warm-up and the ratio gpuinfer / onnxruntime (lower is
better), with the geometric mean; ``--write`` puts the table into bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (add_model_arguments, geomean, machine, main_guard, markdown_table, median_ms, one_model,  # noqa: E402
                    progress, report_progress, resolve_models, run_isolated, time_runs, write_section)


# The runs of each engine are spread over this many rounds, taken in turn, so that a burst of noise
# from the rest of the machine falls on every engine alike rather than on whichever ran then.
ROUNDS = 5


def one(arg: str, modes: list[str], repeat: int, threads: int, tell: bool = False) -> dict:
    """Time onnxruntime and each gpuinfer mode on one model, in this process, interleaved."""
    import onnxruntime as ort
    from threadpoolctl import threadpool_limits

    import gpuinfer

    model = one_model(arg)
    source, feeds = model.load()
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    engines = {"onnxruntime": ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])}
    with threadpool_limits(limits=threads):
        for mode in modes:
            engines[mode] = gpuinfer.InferenceSession(data, device="cpu", memory_mode=mode)
        times: dict[str, list[float]] = {name: [] for name in engines}
        for sess in engines.values():  # warm-up: plans made, buffers placed
            sess.run(None, feeds)
            sess.run(None, feeds)
        per_round = max(1, -(-repeat // ROUNDS))
        report_progress(tell, f"{model.name}: round 1 of {ROUNDS}")
        for r in range(ROUNDS):
            for name, sess in engines.items():
                times[name] += time_runs(lambda: sess.run(None, feeds), per_round)
            report_progress(tell, f"{model.name}: round {r + 2} of {ROUNDS}" if r + 1 < ROUNDS else model.name)
    return {"model": model.id, **{name: median_ms(t) for name, t in times.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--modes", nargs="*", default=["per_tensor", "arena", "reduce", "reuse"])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--write", action="store_true", help="write the table into bench/RESULTS.md")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--report-progress", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.modes, args.repeat, args.threads, args.report_progress)))
        return 0

    models = resolve_models(args.paths, args.models)
    rows, ratios = [], {m: [] for m in args.modes}
    engines = ", ".join(["onnxruntime", *args.modes])
    with progress(len(models) * (ROUNDS + 1), f"vs_onnxruntime ({engines})", args.quiet) as bar:
        for model in models:
            bar.show(f"{model.name}: loading, warm-up")
            res = run_isolated(Path(__file__), ["--one", model.arg, "--repeat", str(args.repeat), "--threads",
                                                str(args.threads), "--modes", *args.modes], bar)
            if "error" in res:
                rows.append([model.id, "error: " + res["error"]] + [""] * (2 * len(args.modes)))
                print(" | ".join(rows[-1]), flush=True)
                continue
            row = [model.id, f"{res['onnxruntime']:.1f}"]
            for mode in args.modes:
                ratio = res[mode] / res["onnxruntime"]
                ratios[mode].append(ratio)
                row += [f"{res[mode]:.1f}", f"{ratio:.2f}"]
            rows.append(row)
            print(" | ".join(row), flush=True)
    rows.append(["**geometric mean**", ""] + sum([["", f"**{geomean(ratios[m]):.2f}**"] for m in args.modes], []))
    header = ["model", "onnxruntime ms"] + sum([[f"{m} ms", f"{m} / ort"] for m in args.modes], [])
    table = markdown_table(header, rows)
    print(table)
    if args.write:
        command = "python bench/vs_onnxruntime.py " + " ".join(a for a in (argv or sys.argv[1:]) if a not in ("--write", "--quiet"))
        write_section("vs-onnxruntime", f"## gpuinfer (CPU) vs onnxruntime (CPU)\n\nCommand: `{command.strip()}` "
                      f"(threads={args.threads}, median of {args.repeat} runs after 2 warm-up runs, taken in "
                      f"{ROUNDS} interleaved rounds; ratio "
                      f"< 1 means gpuinfer is faster)\n\nMachine: {machine()}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
