"""Convolution throughput beside onnxruntime, and what numpy's BLAS alone could reach on the same GEMMs.

    python bench/conv_throughput.py [MODEL ...] [--runs 10] [--rounds 2] [--threads N] [--quiet] [--write]

Per model: its convolutions' multiply-adds (dense, and depthwise apart: those are not GEMMs),
onnxruntime's Conv kernel time (its profiler: ``Conv`` and ``FusedConv``), gpuinfer's Conv steps'
kernel time (``profile=True``: every step whose op type starts with ``Conv+`` or is ``Conv``,
fused activations and residual adds included, as ``FusedConv`` includes its activation), and
the time numpy's matmul takes for the dense convolutions' GEMMs alone, one (M, K) @ (K, N)
product per group and convolution on operands already in cache (no im2col, no bands, no
scratch): the floor of any numpy convolution that multiplies by BLAS, against which gpuinfer's
own overhead and onnxruntime's kernels can be read.  The multiply-adds come from ONNX shape
inference with the inputs' shapes set to the feeds'.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (add_model_arguments, machine, main_guard, markdown_table, onnxruntime_kernel_events,  # noqa: E402
                    progress, resolve_models, time_runs, write_section)

GEMM_REPEAT = 7  # hot-cache timings of each distinct GEMM shape; the fastest counts (a floor)
PAUSE_S = 0.3  # between one engine's runs and the other's: their worker threads stop spinning


def conv_shapes(source, feeds: dict) -> list[dict]:
    """Every Conv node's (group, weight shape, output shape), from shape inference on ``source``
    (a path or ONNX bytes) with the graph inputs' shapes set to ``feeds``'.  Nodes whose shapes
    stay unknown are left out."""
    import onnx
    from onnx import shape_inference

    model = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(source)
    for value in model.graph.input:
        if value.name in feeds:
            dims = value.type.tensor_type.shape.dim
            del dims[:]
            for size in feeds[value.name].shape:
                dims.add().dim_value = int(size)
    model = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim]
              for v in (*model.graph.value_info, *model.graph.output, *model.graph.input)}
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    convs = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
            continue
        w, y = weights.get(node.input[1]) or shapes.get(node.input[1]), shapes.get(node.output[0])
        if not w or not y or 0 in w or 0 in y:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        convs.append({"group": group, "w": w, "y": y})
    return convs


def multiply_adds(conv: dict) -> int:
    return math.prod(conv["y"]) * math.prod(conv["w"][1:])


def depthwise(conv: dict) -> bool:
    return conv["group"] > 1 and conv["w"][1] == 1


def gemm_floor_ms(convs: list[dict]) -> float:
    """numpy's matmul time for the dense convolutions' GEMMs, ms: per conv and group (M, K) @ (K, N),
    M = output channels a group, K = input channels a group x taps, N = the batch's output pixels
    (one product per image), each distinct shape timed in cache (the fastest of ``GEMM_REPEAT``)."""
    import numpy as np

    rng = np.random.default_rng(0)
    timed: dict[tuple, float] = {}
    total = 0.0
    for conv in convs:
        if depthwise(conv):
            continue
        m = conv["w"][0] // conv["group"]
        k = math.prod(conv["w"][1:])
        n = math.prod(conv["y"][2:])
        key = (m, k, n)
        if key not in timed:
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, n), dtype=np.float32)
            out = np.empty((m, n), np.float32)
            timed[key] = min(time_runs(lambda: np.matmul(a, b, out=out), GEMM_REPEAT)) * 1000
        total += timed[key] * conv["group"] * conv["y"][0]
    return total


def conv_ms(source, feeds: dict, runs: int, threads, mode: str) -> tuple[float, float]:
    """(onnxruntime's Conv and FusedConv kernel ms per run, gpuinfer's Conv steps' kernel ms per
    run), from each engine's profiler over ``runs`` runs after a warm-up run: onnxruntime's runs,
    a pause, then gpuinfer's (runs taken in turn would leave each engine's spinning worker threads
    in the other's way: onnxruntime's convs measured up to 3x slower so)."""
    import time

    import gpuinfer

    kernels = onnxruntime_kernel_events(source, feeds, runs, threads)
    ort_ms = sum(e["dur"] for e in kernels if e.get("args", {}).get("op_name") in ("Conv", "FusedConv")) / 1e3 / runs
    time.sleep(PAUSE_S)
    ours = gpuinfer.InferenceSession(source, device="cpu", memory_mode=mode, profile=True, intra_op_threads=threads)
    ours.run(None, feeds)
    ours._executor.profile.clear()  # the steady-state runs only
    for _ in range(runs):
        ours.run(None, feeds)
    our_ms = sum(seconds for op, (_, seconds) in ours.profile().items()
                 if op == "Conv" or op.startswith("Conv+")) / runs * 1000
    return ort_ms, our_ms


def rate(macs: int, ms: float) -> str:
    return f"{2 * macs / ms / 1e6:.0f}" if ms > 0 else "-"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, help="both engines' intra-op threads (default: each one's own)")
    parser.add_argument("--mode", default="arena")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of both engines' runs; each engine's lowest total counts (a busy spell "
                             "of the machine falls on one round)")
    parser.add_argument("--write", action="store_true", help="write the table into bench/RESULTS.md")
    args = parser.parse_args(argv)
    models = resolve_models(args.paths, args.models)
    rows, skipped = [], []
    with progress(len(models), "conv_throughput", args.quiet) as bar:
        for model in models:
            source, feeds = model.load()  # once: the light networks are built in memory
            convs = conv_shapes(source, feeds)
            if not convs:  # nothing to compare
                skipped.append(model.id)
                bar.advance()
                continue
            dense = sum(multiply_adds(c) for c in convs if not depthwise(c))
            thin = sum(multiply_adds(c) for c in convs if depthwise(c))
            rounds = [conv_ms(source, feeds, args.runs, args.threads, args.mode) for _ in range(args.rounds)]
            ort_ms, ours = min(r[0] for r in rounds), min(r[1] for r in rounds)  # each engine's quietest round
            floor = gemm_floor_ms(convs)
            rows.append([model.id, f"{dense / 1e9:.2f}", f"{thin / 1e6:.0f}", f"{ort_ms:.2f}", f"{ours:.2f}",
                         f"{floor:.2f}", f"{ours / ort_ms:.2f}" if ort_ms else "-",
                         f"{floor / ort_ms:.2f}" if ort_ms else "-", rate(dense + thin, ort_ms),
                         rate(dense + thin, ours), rate(dense, floor)])
            bar.advance()
    table = markdown_table(["model", "dense GMAC", "depthwise MMAC", "onnxruntime Conv ms", "gpuinfer Conv ms",
                            "GEMMs alone ms", "gpuinfer / ort", "GEMMs alone / ort", "ort GF/s", "gpuinfer GF/s",
                            "GEMMs alone GF/s"], rows)
    note = f"\n\nNo convolution with known shapes in: {', '.join(skipped)}" if skipped else ""
    print(table + note)
    if args.write:
        command = "python bench/conv_throughput.py " + " ".join(a for a in (argv or sys.argv[1:])
                                                                if a not in ("--write", "--quiet"))
        write_section("conv-throughput", "## Convolution throughput: gpuinfer, onnxruntime, and numpy's GEMMs alone\n\n"
                      f"Command: `{command}` (Conv kernel ms per run from each engine's profiler, the lower of "
                      f"{args.rounds} rounds each, gpuinfer's "
                      "fused activations and adds included as onnxruntime's FusedConv includes its "
                      "activation; GEMMs alone = numpy's matmul on the dense convolutions' (M, K) @ (K, N) "
                      "products in cache, no im2col; GF/s = 2 x multiply-adds / time, depthwise ones "
                      f"counted in the engines' rates)\n\nMachine: {machine()}\n\n{table}{note}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
