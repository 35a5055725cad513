"""Soak: many runs of a mid-sized model in every mode, input shapes changing every few runs.

    python bench/soak.py [MODEL ...] [--runs 1000] [--quiet] [--write]

MODEL: ONNX files or folders (see bench/common.py); default ../shared/models/mtcnn_pnet.onnx.
Reports, per model and mode, the growth after warm-up of the process's resident memory, of the
numpy bytes tracemalloc sees, and of the pool's held bytes, plus how many plans are cached.

Input shapes cycle through five sets, three runs each.  mtcnn_pnet gets the five image sizes
below; any other model gets inputs made from its declared shapes (gpuinfer.cli.inputs) with its
dynamic dims scaled per set (batch-like dims 1, 2, 1, 3, 1; others x1, x0.75, x0.5, x1.25, x0.625,
kept multiples of 32 from 32 up).  A set the model refuses is dropped, and the table says how many
distinct sets ran (1: the model's shapes are fixed).
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
from common import (SHARED_MODELS, add_model_arguments, machine, main_guard, markdown_table, progress,  # noqa: E402
                    resolve_models, run_isolated, write_section)
from gpuinfer.cli.errors import UsageError  # noqa: E402

DEFAULT_MODEL = SHARED_MODELS / "mtcnn_pnet.onnx"
PNET_SHAPES = [(1, 120, 160, 3), (2, 96, 128, 3), (1, 64, 64, 3), (3, 48, 80, 3), (1, 160, 120, 3)]
BATCH_SIZES = [1, 2, 1, 3, 1]
SCALES = [1.0, 0.75, 0.5, 1.25, 0.625]


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def numpy_traced() -> int:
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)])
    return sum(s.size for s in snap.statistics("filename"))


def feed_sets(sess, path: Path) -> list[dict]:
    """Five feed dicts of changing shapes (see the module's docstring)."""
    from gpuinfer.cli.inputs import make_feeds

    specs = sess.get_inputs()
    if path.name == "mtcnn_pnet.onnx":
        rng = np.random.default_rng(0)
        return [{specs[0].name: rng.standard_normal(s).astype(np.float32)} for s in PNET_SHAPES]
    _, base = make_feeds(specs, {}, {}, 0)
    sets = []
    for v in range(len(SCALES)):
        sizes: dict = {}  # a symbolic dim gets one size in every input of a set
        shapes = {}
        for spec, choice in zip(specs, base):
            shape = list(choice.shape)
            for axis, dim in enumerate(spec.shape or []):
                if isinstance(dim, int) and dim > 0:
                    continue
                key = dim if isinstance(dim, str) else (spec.name, axis)
                shape[axis] = sizes.setdefault(key, _scaled(shape[axis], v))
            shapes[spec.name] = tuple(shape)
        sets.append(make_feeds(specs, {}, shapes, v)[0])
    return sets


def _scaled(size: int, v: int) -> int:
    if size == 1:
        return BATCH_SIZES[v]
    if size >= 32:
        return max(32, round(size * SCALES[v] / 32) * 32)
    return max(1, round(size * SCALES[v]))


def soak(path: Path, mode: str, runs: int, traced: bool) -> list:
    """[RSS growth, numpy-bytes growth, pool growth, plans, shape sets] of one mode; RSS only when
    not traced (tracemalloc's own bookkeeping grows the process), numpy bytes only when traced."""
    import gpuinfer

    sess = gpuinfer.InferenceSession(str(path), device="cpu", memory_mode=mode)
    feeds = []
    for candidate in feed_sets(sess, path):  # keep the sets the model runs on
        try:
            out = sess.run(None, candidate)
        except gpuinfer.GpuinferError:
            continue
        del out
        feeds.append(candidate)
    if not feeds:
        raise SystemExit(f"{path.name}: none of the input shape sets runs")
    signatures = {tuple((k, v.shape) for k, v in f.items()) for f in feeds}
    cycle = 3 * len(feeds)
    warm = 3 * cycle - 1  # both marks at the same point of the shape cycle
    last = max(runs // cycle, 4) * cycle - 1
    marks = []
    for i in range(last + 1):
        out = sess.run(None, feeds[(i // 3) % len(feeds)])
        del out
        if i in (warm, last):
            gc.collect()
            marks.append((rss_bytes(), numpy_traced() if traced else 0, sess.held_bytes))
    (rss0, np0, held0), (rss1, np1, held1) = marks
    return [(rss1 - rss0) / 1024, (np1 - np0) / 1024, (held1 - held0) / 1024, len(sess._plans), len(signatures),
            last + 1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser, default_help="../shared/models/mtcnn_pnet.onnx")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--model", help=argparse.SUPPRESS)  # older form: a model name in ../shared/models
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:  # one mode in this fresh process, so resident-memory figures are its own
        if args.traced:
            tracemalloc.start()
        print(json.dumps(soak(Path(args.paths[0]), args.one, args.runs, args.traced)))
        return 0
    import gpuinfer

    paths = list(args.paths) + ([f"shared/{args.model}.onnx"] if args.model else [])
    models = resolve_models(paths or [str(DEFAULT_MODEL)], args.models)
    if any(m.path is None for m in models):
        raise UsageError("soak runs model files, not onnx's light networks (they have fixed input shapes)")
    rows = []
    modes = gpuinfer.MEMORY_MODES
    with progress(len(models) * len(modes) * 2, f"soak ({args.runs} runs a mode)", args.quiet) as bar:
        for model in models:
            for mode in modes:
                child = ["--one", mode, "--runs", str(args.runs), model.arg]
                bar.show(f"{model.name}: {mode}")
                plain = run_isolated(Path(__file__), child)
                bar.advance()
                traced = run_isolated(Path(__file__), child + ["--traced"])
                bar.advance()
                if isinstance(plain, dict) or isinstance(traced, dict):
                    error = (plain if isinstance(plain, dict) else traced)["error"]
                    rows.append([model.id, mode, "error: " + error, "", "", "", "", ""])
                    continue
                rows.append([model.id, mode, f"{plain[0]:.0f}", f"{traced[1]:.0f}", f"{plain[2]:.0f}", str(plain[3]),
                             str(plain[4]), str(plain[5])])
    table = markdown_table(["model", "mode", "RSS growth KiB", "numpy bytes growth KiB", "pool held growth KiB",
                            "plans cached (LRU size 8)", "input shape sets", "runs"], rows)
    print(table)
    if args.write:
        named = " ".join(m.id for m in models)
        write_section("soak", f"## Soak: {args.runs} runs, shapes changing every 3 runs\n\nCommand: "
                      f"`python bench/soak.py {named} --runs {args.runs}` (growth measured from the "
                      f"end of warm-up to the last run)\n\nMachine: {machine()}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
