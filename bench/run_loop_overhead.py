"""What one node costs when its kernel does almost nothing: the run loop's floor, against onnxruntime's.

    python bench/run_loop_overhead.py [MODEL ...] [--nodes 200] [--runs 300] [--quiet] [--write]

A chain of tiny ops (Relu, Neg, Abs, Add on a 1x16 tensor) is timed end to end in each memory mode
and in onnxruntime, one BLAS thread, engines taken in turn; the best run over the node count is
the per-node cost.  Small models (silero-vad, the PP-OCR classifier) are made of such nodes.

MODEL (optional; files or folders, see bench/common.py; unlike the other scripts there is no
default, the chain needs no model): for each, a second table puts that floor beside the model's
own run: the nodes one run executes after graph passes (subgraph nodes included), their floor (nodes x arena's us per node), the median arena run
(one thread, ``--model-runs``) and the share of it the floor accounts for.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_model_arguments, machine, main_guard, markdown_table, progress, resolve_models, write_section  # noqa: E402

OPS = ["Relu", "Neg", "Abs", "Add"]


def chain_model(n_nodes: int):
    from onnx import TensorProto, helper

    nodes, prev = [], "x"
    for i in range(n_nodes):
        op = OPS[i % len(OPS)]
        nodes.append(helper.make_node(op, [prev, prev] if op == "Add" else [prev], [f"v{i}"], name=f"n{i}"))
        prev = f"v{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--model-runs", type=int, default=10, help="arena runs per MODEL (median)")
    parser.add_argument("--write", action="store_true", help="write the table into bench/RESULTS.md")
    add_model_arguments(parser, default_help="none: only the chain")
    args = parser.parse_args(argv)
    models = resolve_models(args.paths, args.models) if args.paths else []

    import onnxruntime as ort
    from threadpoolctl import threadpool_limits

    import gpuinfer

    model = chain_model(args.nodes)
    feeds = {"x": np.ones((1, 16), np.float32)}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    engines = {"onnxruntime": ort.InferenceSession(model.SerializeToString(), opts,
                                                   providers=["CPUExecutionProvider"])}
    for mode in gpuinfer.MEMORY_MODES:
        engines[mode] = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode, intra_op_threads=1)
    best = {name: float("inf") for name in engines}
    with threadpool_limits(limits=1), progress(args.runs + len(models), "run_loop_overhead "
                                               f"({args.nodes}-node chain, {', '.join(engines)})", args.quiet) as bar:
        for sess in engines.values():
            sess.run(None, feeds)
            sess.run(None, feeds)
        for _ in range(args.runs):
            for name, sess in engines.items():
                start = time.perf_counter()
                sess.run(None, feeds)
                best[name] = min(best[name], time.perf_counter() - start)
            bar.advance()
        floor_us = best["arena"] / args.nodes * 1e6
        model_rows = []
        for entry in models:
            bar.show(f"{entry.name}: arena")
            model_rows.append(_model_row(entry, floor_us, args.model_runs))
            bar.advance()
    rows = [[name, f"{seconds / args.nodes * 1e6:.2f}"] for name, seconds in best.items()]
    table = markdown_table(["engine", "µs per node"], rows)
    if model_rows:
        table += "\n\n" + markdown_table(["model", "nodes run (after passes)", f"floor ms (x {floor_us:.2f} µs)",
                                          "arena run ms", "floor / run"], model_rows)
    print(table)
    if args.write:
        command = "python bench/run_loop_overhead.py" + "".join(f" {m.id}" for m in models) + "".join(
            f" --{k} {v}" for k, v in (("nodes", args.nodes), ("runs", args.runs)))
        if models:
            command += f" --model-runs {args.model_runs}"
        write_section("run-loop", f"## The run loop's floor: a chain of {args.nodes} tiny ops\n\nCommand: "
                      f"`{command}` (best of {args.runs} runs each, engines in turn, one thread)\n\n"
                      f"Machine: {machine()}\n\n{table}\n")
    return 0


def _model_row(model, floor_us: float, runs: int) -> list[str]:
    """One model's nodes, their floor, its median arena run (one thread) and the floor's share."""
    import statistics

    import gpuinfer

    source, feeds = model.load()
    counting = gpuinfer.InferenceSession(source, device="cpu", memory_mode="arena", profile=True)
    counting.run(None, feeds)
    nodes = sum(calls for calls, _ in counting.profile().values())  # subgraph nodes (If, Loop bodies) included
    del counting
    sess = gpuinfer.InferenceSession(source, device="cpu", memory_mode="arena", intra_op_threads=1)
    sess.run(None, feeds)
    times = []
    for _ in range(max(runs, 1)):
        start = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - start)
    floor_ms, run_ms = nodes * floor_us / 1e3, statistics.median(times) * 1e3
    return [model.id, str(nodes), f"{floor_ms:.2f}", f"{run_ms:.2f}", f"{floor_ms / run_ms:.2f}"]


if __name__ == "__main__":
    sys.exit(main_guard(main))
