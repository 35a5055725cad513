"""gpuinfer (CPU) against onnxruntime (CPU), side by side, one process per model, optionally on a busy machine.

    python bench/vs_onnxruntime.py [MODEL ...] [--models u2netp squeezenet] [--repeat 10] [--threads N]
        [--load N] [--processes K] [--modes per_tensor arena] [--quiet] [--write]

MODEL: ONNX files or folders ('light' for onnx's light networks; default ../shared/models, those,
and models/u2net.onnx when it has been rebuilt there: see the README; bench/common.py).  Each model
runs in a fresh process.

Threads: by default each engine keeps its own default (onnxruntime one thread per core, gpuinfer
one per free core); ``--threads N`` gives both N.  ``--load N`` runs N busy processes (one
spinning Python loop each) beside both engines for the whole measurement, as other work on the
machine would.  ``--processes K`` measures each model in K fresh processes, one after another,
and keeps each engine's lowest median (``best_of``).

Prints the median latency of each engine after warm-up, taken in interleaved rounds (each turn
after a short pause and an untimed run, so that the other engine's spinning threads are idle and
charge neither), and the ratio
gpuinfer / onnxruntime (lower is better).  The geometric mean is over the models that take at
least ``--min-ms`` (10) in onnxruntime; the tiny ones are listed with their cost per node (the
nodes one gpuinfer run executes, subgraph bodies included) instead, where the run loop, not the
kernels, is what is measured.  ``--write`` puts the table into bench/RESULTS.md (its own section
per load).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpuinfer import MEMORY_MODES  # noqa: E402
from common import (ROOT, SHARED_MODELS, add_model_arguments, busy_processes, geomean, machine, main_guard,  # noqa: E402
                    markdown_table, median_ms, one_model, progress, report_progress, resolve_models,
                    run_isolated, time_runs, write_section)

# The runs of each engine are spread over this many rounds, taken in turn, so that a burst of noise
# from the rest of the machine falls on every engine alike rather than on whichever ran then.
ROUNDS = 5
SETTLE_S = 0.3  # pause before each engine's turn: the previous engine's spinning threads go idle
FULL_U2NET = ROOT / "models" / "u2net.onnx"  # rebuilt from ../shared/models/u2net (git-ignored)


def one(arg: str, modes: list[str], repeat: int, threads: int | None, tell: bool = False) -> dict:
    """Time onnxruntime and each gpuinfer mode on one model, in this process, interleaved."""
    import onnxruntime as ort

    import gpuinfer

    model = one_model(arg)
    source, feeds = model.load()
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    engines = {"onnxruntime": ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])}
    for mode in modes:
        engines[mode] = gpuinfer.InferenceSession(data, device="cpu", memory_mode=mode, intra_op_threads=threads)
    counting = gpuinfer.InferenceSession(data, device="cpu", memory_mode=modes[0], profile=True)
    counting.run(None, feeds)
    nodes = sum(calls for calls, _ in counting.profile().values())  # subgraph nodes included
    del counting
    times: dict[str, list[float]] = {name: [] for name in engines}
    for sess in engines.values():  # warm-up: plans made, buffers placed
        sess.run(None, feeds)
        sess.run(None, feeds)
    per_round = max(1, -(-repeat // ROUNDS))
    report_progress(tell, f"{model.name}: round 1 of {ROUNDS}")
    for r in range(ROUNDS):
        for name, sess in engines.items():
            # A pause and one untimed run first: the engine that ran before may still have threads
            # spinning (onnxruntime's pool and OpenBLAS both spin a while after a run), which
            # would charge this engine's runs for them.  Measured: squeezenet per_tensor, timed
            # right after onnxruntime, 27.7 ms against 13 ms alone; squeezenet arena (a throwaway
            # probe, median of 12) with one untimed run after onnxruntime's still 22 ms against
            # 10.3 alone, after a 0.3 s pause 11.3; onnxruntime after gpuinfer 14.1 against 10.3.
            time.sleep(SETTLE_S)
            sess.run(None, feeds)
            times[name] += time_runs(lambda: sess.run(None, feeds), per_round)
        report_progress(tell, f"{model.name}: round {r + 2} of {ROUNDS}" if r + 1 < ROUNDS else model.name)
    return {"model": model.id, "nodes": nodes, **{name: median_ms(t) for name, t in times.items()}}


def _default_models() -> list[str]:
    """The shared models, onnx's light ones and the rebuilt full u2net; [] without ../shared (so
    that common.resolve_models says what is missing)."""
    if not SHARED_MODELS.is_dir():
        return []
    models = [str(SHARED_MODELS), "light"]
    if FULL_U2NET.is_file():
        models.append(str(FULL_U2NET))
    else:
        print(f"note: the full u2net is not at {FULL_U2NET.relative_to(ROOT)}; rebuild it with `mkdir -p models && "
              "python ../shared/models/u2net/rebuild.py models/u2net.onnx` to include it", file=sys.stderr)
    return models


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser, "../shared/models, onnx's light networks and models/u2net.onnx if rebuilt")
    parser.add_argument("--modes", nargs="+", choices=MEMORY_MODES, default=["per_tensor", "arena", "reduce", "reuse"],
                        help="gpuinfer's memory modes to time (put model paths before this option)")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per engine (at least 10)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for both engines (default: each engine's own default)")
    parser.add_argument("--load", type=int, default=0, metavar="N", help="busy processes beside both engines")
    parser.add_argument("--processes", type=int, default=1, metavar="K",
                        help="measure each model in K fresh processes, one after another, and keep each "
                             "engine's lowest median (default 1)")
    parser.add_argument("--min-ms", type=float, default=10.0,
                        help="models faster than this in onnxruntime are reported per node, not in the mean")
    parser.add_argument("--write", action="store_true", help="write the table into bench/RESULTS.md")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--report-progress", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.repeat = max(args.repeat, 10)
    if args.one:
        print(json.dumps(one(args.one, args.modes, args.repeat, args.threads, args.report_progress)))
        return 0

    models = resolve_models(args.paths or _default_models(), args.models)
    child = ["--repeat", str(args.repeat), "--modes", *args.modes] + (
        ["--threads", str(args.threads)] if args.threads else [])
    results = []
    engines = ", ".join(["onnxruntime", *args.modes])
    load = f", {args.load} busy processes" if args.load else ""
    k = max(1, args.processes)
    with progress(len(models) * k * (ROUNDS + 1), f"vs_onnxruntime ({engines}{load})", args.quiet) as bar:
        for model in models:
            tries = []
            for i in range(k):
                bar.show(f"{model.name}: loading, warm-up" + (f" (process {i + 1} of {k})" if k > 1 else ""))
                with busy_processes(args.load):
                    tries.append(run_isolated(Path(__file__), ["--one", model.arg, *child], bar))
                print(json.dumps(tries[-1]), flush=True)
            results.append((model, best_of(tries)))
    table = _table(results, args.modes, args.min_ms)
    print(table)
    if args.write:
        command = "python bench/vs_onnxruntime.py " + " ".join(a for a in (argv or sys.argv[1:])
                                                               if a not in ("--write", "--quiet"))
        threads = f"threads={args.threads} on both" if args.threads else "each engine's default threads"
        best = (f"; each model measured in {k} fresh processes one after another, each engine's lowest "
                f"median kept" if k > 1 else "")
        busy = f", {args.load} busy processes beside them" if args.load else ", no other load"
        section = "vs-onnxruntime" + (f"-load{args.load}" if args.load else "")
        write_section(section, f"## gpuinfer (CPU) vs onnxruntime (CPU){' under load' if args.load else ''}\n\n"
                      f"Command: `{command.strip()}` ({threads}{busy}; median of {args.repeat} runs after 2 "
                      f"warm-up runs, taken in {ROUNDS} interleaved rounds, each engine's turn after a "
                      f"{SETTLE_S} s pause and an untimed run{best}; ratio < 1 means gpuinfer is faster; "
                      f"geometric mean over the models taking at least {args.min_ms:g} ms in onnxruntime, the "
                      f"others shown per node)\n\nMachine: {machine()}\n\n{table}\n")
    return 0


def best_of(tries: list[dict]) -> dict:
    """One result from several processes' results for the same model: each engine's lowest median.
    On a shared machine a process may run through a slow spell (other tenants' memory traffic slows
    gpuinfer's memory-bound passes more than onnxruntime's packed kernels: u2netp's gpuinfer runs
    went from ~500 to ~730 ms a third of a minute into one process while onnxruntime's stayed at
    ~290, throwaway /tmp/probe/phase.py); the lowest median of each engine is its steady state.
    A failed process counts only if every one failed."""
    good = [t for t in tries if "error" not in t]
    if not good:
        return tries[-1]
    best = dict(good[0])
    for t in good[1:]:
        for key, value in t.items():
            if key not in ("model", "nodes") and isinstance(value, (int, float)):
                best[key] = min(best[key], value)
    return best


def _table(results: list, modes: list[str], min_ms: float) -> str:
    """Every model with its ratios, the geometric mean over the big ones, then the tiny ones per node."""
    big, tiny, ratios = [], [], {m: [] for m in modes}
    for model, res in results:
        if "error" in res:
            big.append([model.id, "error: " + res["error"]] + [""] * (2 * len(modes)))
            continue
        ort_ms = res["onnxruntime"]
        row = [model.id, f"{ort_ms:.1f}"]
        for mode in modes:
            ratio = res[mode] / ort_ms
            row += [f"{res[mode]:.1f}", f"{ratio:.2f}"]
            if ort_ms >= min_ms:
                ratios[mode].append(ratio)
        if ort_ms < min_ms:
            row[0] += " (tiny: per node below)"
            per_node = [f"{1000 * res[name] / res['nodes']:.2f}" for name in ("onnxruntime", *modes)]
            tiny.append([model.name, str(res["nodes"]), *per_node])
        big.append(row)
    big.append([f"**geometric mean** (onnxruntime >= {min_ms:g} ms)", ""] + sum(
        [["", f"**{geomean(ratios[m]):.2f}**"] for m in modes], []))
    big.append(["**worst**", ""] + sum([["", f"{max(ratios[m]):.2f}" if ratios[m] else ""] for m in modes], []))
    header = ["model", "onnxruntime ms"] + sum([[f"{m} ms", f"{m} / ort"] for m in modes], [])
    text = markdown_table(header, big)
    if tiny:
        text += (f"\n\nUnder {min_ms:g} ms in onnxruntime: µs per node (run time / nodes one gpuinfer run executes)"
                 "\n\n" + markdown_table(["model", "nodes", "onnxruntime", *modes], tiny))
    return text


if __name__ == "__main__":
    sys.exit(main_guard(main))
