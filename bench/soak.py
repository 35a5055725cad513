"""Soak: many runs of a mid-sized model in every mode, input shapes changing every few runs.

    python bench/soak.py [--runs 1000] [--model mtcnn_pnet] [--write]

Reports, per mode, the growth after warm-up of the process's resident memory, of the numpy
bytes tracemalloc sees, and of the pool's held bytes, plus how many plans are cached.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, markdown_table, run_isolated, write_section  # noqa: E402

SHAPES = [(1, 120, 160, 3), (2, 96, 128, 3), (1, 64, 64, 3), (3, 48, 80, 3), (1, 160, 120, 3)]


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def numpy_traced() -> int:
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)])
    return sum(s.size for s in snap.statistics("filename"))


def soak(model: str, mode: str, runs: int, traced: bool) -> list:
    """[RSS growth, numpy-bytes growth, pool growth, plans] of one mode; RSS only when not traced
    (tracemalloc's own bookkeeping grows the process), numpy bytes only when traced."""
    import gpuinfer
    from tests.model_zoo import SHARED_MODELS

    path = SHARED_MODELS / f"{model}.onnx"
    sess = gpuinfer.InferenceSession(str(path), device="cpu", memory_mode=mode)
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(0)
    feeds = [{name: rng.standard_normal(s).astype(np.float32)} for s in SHAPES]
    cycle = 3 * len(SHAPES)
    warm = 3 * cycle - 1  # both marks at the same point of the shape cycle
    last = (runs // cycle) * cycle - 1
    marks = []
    for i in range(last + 1):
        out = sess.run(None, feeds[(i // 3) % len(SHAPES)])
        del out
        if i in (warm, last):
            gc.collect()
            marks.append((rss_bytes(), numpy_traced() if traced else 0, sess.held_bytes))
    (rss0, np0, held0), (rss1, np1, held1) = marks
    return [(rss1 - rss0) / 1024, (np1 - np0) / 1024, (held1 - held0) / 1024, len(sess._plans)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--model", default="mtcnn_pnet")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:  # one mode in this fresh process, so resident-memory figures are its own
        if args.traced:
            tracemalloc.start()
        print(json.dumps(soak(args.model, args.one, args.runs, args.traced)))
        return 0
    import gpuinfer

    rows = []
    for mode in gpuinfer.MEMORY_MODES:
        child = ["--one", mode, "--runs", str(args.runs), "--model", args.model]
        plain, traced = run_isolated(Path(__file__), child), run_isolated(Path(__file__), child + ["--traced"])
        if isinstance(plain, dict) or isinstance(traced, dict):
            rows.append([mode, "error", "", "", "", ""])
            continue
        rows.append([mode, f"{plain[0]:.0f}", f"{traced[1]:.0f}", f"{plain[2]:.0f}", str(plain[3]), str(args.runs)])
    table = markdown_table(["mode", "RSS growth KiB", "numpy bytes growth KiB", "pool held growth KiB",
                            "plans cached (LRU size 8)", "runs"], rows)
    print(table)
    if args.write:
        write_section("soak", f"## Soak: {args.runs} runs, shapes changing every 3 runs\n\nCommand: "
                      f"`python bench/soak.py --runs {args.runs} --model {args.model}` (growth measured from the "
                      f"end of warm-up to the last run)\n\nMachine: {machine()}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
