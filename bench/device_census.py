"""What one steady-state run costs the CUDA path, counted on the strict CuPy stand-in (no GPU).

    python bench/device_census.py [MODEL ...] [--modes arena ...] [--json census.json] [--by-op] [--write] [--quiet]

MODEL: ONNX files or folders (default ../shared/models and onnx's light networks; see
bench/common.py).  For each model and memory mode: a session on ``device="strict"`` (the CUDA
device's own code with the stand-in in place of ``cupy``), a warm-up run, then one counted run
whose feeds are already on the device and whose outputs stay there (``output_device="cuda"``),
so what is counted is the run itself:

- ``onnx_nodes``: nodes in the model file (subgraphs included); ``graph_nodes``: those gpuinfer
  runs after its graph passes (constants folded, activations fused into their producers);
- ``device_ops``: CuPy calls that launch device work (kernels, device copies);
- ``syncs``: device-to-host reads, but for ``control_flow_syncs`` (If/Loop/Scan conditions and
  trip counts, which data-dependent control flow needs) and ``check_syncs`` (the one read, after
  the run, of the index-range flags that Gather/Scatter compute on the device);
- ``uploads``: host-to-device copies during the run (the feeds are not among them);
- ``hook_allocations``: allocations through the session's counting allocator hook;
- ``bytes_outside_hook``: bytes allocated with no hook installed (hidden from the report);
- ``weights_bytes``: what went up once, at session creation;
- with ``--by-op``, ``launches_by_op``: device operations per op type (fused nodes as
  ``Conv+Relu``), to see where the launches go.

Each model runs in a fresh process (the stand-in's device memory of a model with 550 MB of
weights, in four modes, is gone when its process ends).

Targets (issue 15): syncs, uploads and bytes_outside_hook all 0 in every mode.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import main_guard, markdown_table, one_model, report_progress  # noqa: E402
from per_model import finish, mode_parser, records_per_model  # noqa: E402
CONTROL_FLOW = ("If", "Loop", "Scan")
CHECKS = "deferred checks"


def census(source, feeds: dict, mode: str, by_op: bool = False) -> dict:
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
    counters.by_op = {} if by_op else None
    before = counters.snapshot()
    sess.run(None, device_feeds, output_device="cuda")
    d = counters.delta(before, counters.snapshot())
    launches_by_op, counters.by_op = counters.by_op, None
    control = sum(n for op, n in counters.syncs_by_op.items() if op in CONTROL_FLOW)
    checks = counters.syncs_by_op.get(CHECKS, 0)
    return {"mode": mode, "onnx_nodes": _onnx_nodes(source), "graph_nodes": _count_nodes(sess.graph),
            "device_ops": d["launches"],
            "syncs": d["syncs"] - control - checks, "control_flow_syncs": control, "check_syncs": checks,
            "uploads": d["uploads"],
            "hook_allocations": d["hook_allocations"], "bytes_outside_hook": d["outside_bytes"],
            "weights_bytes": weights,
            "sync_ops": {op: n for op, n in counters.syncs_by_op.items() if op not in CONTROL_FLOW + (CHECKS,)},
            **({"launches_by_op": dict(sorted(launches_by_op.items(), key=lambda kv: -kv[1]))} if by_op else {})}


def one(arg: str, modes: list, by_op: bool, tell: bool) -> list:
    """In a child process: the records of one model, every mode."""
    model = one_model(arg)
    source, feeds = model.load()
    records = []
    for i, mode in enumerate(modes):
        records.append({"model": model.id, **census(source, feeds, mode, by_op)})
        report_progress(tell, f"{model.name} [{modes[i + 1]}]" if i + 1 < len(modes) else model.name)
    return records


def _upload(cp, value):
    if isinstance(value, list):
        return [_upload(cp, v) for v in value]
    import numpy as np

    return cp.asarray(np.asarray(value))


def _onnx_nodes(source) -> int:
    """Nodes in the ONNX model as given, If/Loop/Scan bodies included."""
    import onnx

    model = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(source)

    def count(graph) -> int:
        return sum(1 + sum(count(a.g) if a.HasField("g") else 0 for a in n.attribute)
                   + sum(count(g) for a in n.attribute for g in a.graphs) for n in graph.node)

    return count(model.graph)


def _count_nodes(graph) -> int:
    """Nodes gpuinfer runs after its graph passes (constants folded, activations fused)."""
    from gpuinfer.runtime.executor import subgraphs_of

    return len(graph.nodes) + sum(len(g.nodes) for g in subgraphs_of(graph))


def main(argv=None) -> int:
    parser = mode_parser(__doc__.split("\n\n")[0], "census")
    parser.add_argument("--by-op", action="store_true", help="attribute device operations to op types")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.modes, args.by_op, args.report_progress)))
        return 0
    records, failed = records_per_model(__file__, args, "device census", ["--by-op"] if args.by_op else [])
    header = ["model", "mode", "onnx nodes", "nodes run", "device ops", "syncs", "control-flow syncs", "check syncs", "uploads",
              "hook allocs", "bytes outside hook", "weights MB"]
    rows = [[r["model"], r["mode"], str(r["onnx_nodes"]), str(r["graph_nodes"]), str(r["device_ops"]), str(r["syncs"]),
             str(r["control_flow_syncs"]), str(r["check_syncs"]), str(r["uploads"]), str(r["hook_allocations"]),
             str(r["bytes_outside_hook"]), f"{r['weights_bytes'] / 1e6:.1f}"] for r in records]
    table = markdown_table(header, rows)
    print(table)
    for r in records:
        if r["sync_ops"]:
            print(f"  {r['model']} [{r['mode']}] syncs by op: {r['sync_ops']}")
        if r.get("launches_by_op"):
            print(f"  {r['model']} [{r['mode']}] device ops by op: {r['launches_by_op']}")
    return finish(__file__, args, argv, records, failed, "device-census", "Device census (strict CuPy stand-in, no GPU)",
                  "; one steady-state run each after a warm-up, feeds on the device, outputs left there", table)

if __name__ == "__main__":
    sys.exit(main_guard(main))
