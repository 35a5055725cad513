"""What one steady-state run costs the CUDA path, counted on the strict CuPy stand-in (no GPU).

    python bench/device_census.py [MODEL ...] [--modes arena ...] [--json census.json] [--write] [--quiet]

MODEL: ONNX files or folders (default ../shared/models and onnx's light networks; see
bench/common.py).  For each model and memory mode: a session on ``device="strict"`` (the CUDA
device's own code with the stand-in in place of ``cupy``), a warm-up run, then one counted run
whose feeds are already on the device and whose outputs stay there (``output_device="cuda"``),
so what is counted is the run itself:

- ``device_ops``: CuPy calls that launch device work (kernels, device copies);
- ``syncs``: device-to-host reads, but for ``control_flow_syncs`` (If/Loop/Scan conditions and
  trip counts, which data-dependent control flow needs) and ``check_syncs`` (the one read, after
  the run, of the index-range flags that Gather/Scatter compute on the device);
- ``uploads``: host-to-device copies during the run (the feeds are not among them);
- ``hook_allocations``: allocations through the session's counting allocator hook;
- ``bytes_outside_hook``: bytes allocated with no hook installed (hidden from the report);
- ``weights_bytes``: what went up once, at session creation.

Targets (issue 15): syncs, uploads and bytes_outside_hook all 0 in every mode.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (add_model_arguments, machine, main_guard, markdown_table, progress,  # noqa: E402
                    resolve_models, write_section)

MODES = ["per_tensor", "reduce", "reuse", "arena"]
CONTROL_FLOW = ("If", "Loop", "Scan")
CHECKS = "deferred checks"


def census(source, feeds: dict, mode: str) -> dict:
    """One record: the counted costs of a steady-state run of ``source`` in ``mode``."""
    import gpuinfer
    from gpuinfer.backends.strict import STRICT

    counters = STRICT.counters
    before_load = counters.snapshot()
    sess = gpuinfer.InferenceSession(source, device="strict", memory_mode=mode)
    weights = counters.delta(before_load, counters.snapshot())["upload_bytes"]
    device_feeds = {k: _upload(STRICT, v) for k, v in feeds.items()}
    sess.run(None, device_feeds, output_device="cuda")  # warm-up: plans, kept buffers, traces
    counters.syncs_by_op.clear()
    before = counters.snapshot()
    sess.run(None, device_feeds, output_device="cuda")
    d = counters.delta(before, counters.snapshot())
    control = sum(n for op, n in counters.syncs_by_op.items() if op in CONTROL_FLOW)
    checks = counters.syncs_by_op.get(CHECKS, 0)
    return {"mode": mode, "onnx_nodes": _count_nodes(sess.graph), "device_ops": d["launches"],
            "syncs": d["syncs"] - control - checks, "control_flow_syncs": control, "check_syncs": checks,
            "uploads": d["uploads"],
            "hook_allocations": d["hook_allocations"], "bytes_outside_hook": d["outside_bytes"],
            "weights_bytes": weights,
            "sync_ops": {op: n for op, n in counters.syncs_by_op.items() if op not in CONTROL_FLOW + (CHECKS,)}}


def _upload(cp, value):
    if isinstance(value, list):
        return [_upload(cp, v) for v in value]
    import numpy as np

    return cp.asarray(np.asarray(value))


def _count_nodes(graph) -> int:
    from gpuinfer.runtime.executor import subgraphs_of

    return len(graph.nodes) + sum(len(g.nodes) for g in subgraphs_of(graph))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--modes", nargs="*", choices=MODES, default=MODES, help="memory modes (default all)")
    parser.add_argument("--json", metavar="FILE", help="write the records as JSON")
    parser.add_argument("--write", action="store_true", help="replace the census section of bench/RESULTS.md")
    args = parser.parse_args(argv)
    models = resolve_models(args.paths, args.models)
    records = []
    with progress(len(models) * len(args.modes), "device census", args.quiet) as bar:
        for model in models:
            source, feeds = model.load()
            for mode in args.modes:
                bar.advance(f"{model.name} [{mode}]")
                records.append({"model": model.id, **census(source, feeds, mode)})
    header = ["model", "mode", "onnx nodes", "device ops", "syncs", "control-flow syncs", "check syncs", "uploads",
              "hook allocs", "bytes outside hook", "weights MB"]
    rows = [[r["model"], r["mode"], str(r["onnx_nodes"]), str(r["device_ops"]), str(r["syncs"]),
             str(r["control_flow_syncs"]), str(r["check_syncs"]), str(r["uploads"]), str(r["hook_allocations"]),
             str(r["bytes_outside_hook"]), f"{r['weights_bytes'] / 1e6:.1f}"] for r in records]
    table = markdown_table(header, rows)
    print(table)
    for r in records:
        if r["sync_ops"]:
            print(f"  {r['model']} [{r['mode']}] syncs by op: {r['sync_ops']}")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    if args.write:
        write_section("Device census (strict CuPy stand-in)",
                      f"`python bench/device_census.py {' '.join(argv or sys.argv[1:])}` on {machine()}; "
                      "one steady-state run each, feeds on the device, outputs left there.\n\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
