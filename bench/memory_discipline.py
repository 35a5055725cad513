"""Does the numpy device's count hold?  tracemalloc's view of a steady-state run beside the
pool's counted peak, and ``arena`` beside the tensors-only lower bound (issue 15's targets: within
2% and 1.10x).

    python bench/memory_discipline.py [MODEL ...] [--modes arena ...] [--json FILE] [--write] [--quiet]

MODEL: ONNX files or folders (default ../shared/models and onnx's light networks; see
bench/common.py).  Each model runs in a fresh process.  Columns: counted = the pool's peak;
traced = the pool's held buffers plus what tracemalloc saw the run allocate; copied outputs =
outputs handed to the caller as copies of pool buffers (not in the pool's count); traced /
(counted + copied) everything tracemalloc sees, numpy data / (counted + copied) its numpy buffers
only, the figure held to 2% (Python objects: tracemalloc's total less numpy's data at the peak:
the pool's per-run records, numpy's caches and ufunc buffers, no tensor data; held to 2% or 64 KiB
by tests/test_memory_discipline.py); counted / tensors' bound
(no scratch) the one ``arena`` is held to 1.10x.  How it is read: tests/memory_probe.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MIB, main_guard, markdown_table, one_model, report_progress  # noqa: E402
from per_model import finish, mode_parser, records_per_model  # noqa: E402


def one(arg: str, modes: list, tell: bool) -> list:
    from tests.memory_probe import steady_state_memory

    model = one_model(arg)
    source, feeds = model.load()
    records = []
    for i, mode in enumerate(modes):
        records.append({"model": model.id, "mode": mode, **steady_state_memory(source, feeds, mode)})
        report_progress(tell, f"{model.name} [{modes[i + 1]}]" if i + 1 < len(modes) else model.name)
    return records


def main(argv=None) -> int:
    args = mode_parser(__doc__.split("\n\n")[0], "memory-discipline").parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.modes, args.report_progress)))
        return 0
    records, failed = records_per_model(__file__, args, "memory discipline", [])
    rows = [[r["model"], r["mode"], f"{r['counted'] / MIB:.2f}", f"{r['traced'] / MIB:.2f}",
             f"{r['copied_output_bytes'] / MIB:.2f}", f"{r['traced_ratio']:.3f}", f"{r['traced_numpy_ratio']:.3f}",
             f"{r['python_overhead'] / 1024:.0f}", f"{r['tensor_bound'] / MIB:.2f}",
             f"{r['counted'] / max(r['tensor_bound'], 1):.2f}"] for r in records]
    table = markdown_table(["model", "mode", "counted MiB", "traced MiB", "copied outputs MiB", "traced / (counted + copied)",
                            "numpy data / (counted + copied)", "Python objects KiB", "tensors' bound MiB",
                            "counted / tensors' bound"], rows)
    print(table)
    return finish(__file__, args, argv, records, failed, "memory-discipline", "Memory discipline of the numpy device",
                  "", table)

if __name__ == "__main__":
    sys.exit(main_guard(main))
