"""Shared pieces of the benchmark scripts: the model list, timing, machine description, RESULTS.md.

Run the scripts from the repository root (``python bench/<script>.py``); they reuse the test
suite's model zoo so benchmarks and tests run the very same models and inputs.
"""
from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "RESULTS.md"
MIB = float(1 << 20)


def model_ids(selected: list[str] | None = None) -> list[str]:
    from tests.model_zoo import MODEL_IDS, shared_available

    ids = [m for m in MODEL_IDS if shared_available() or not m.startswith("shared/")]
    if selected:
        ids = [m for m in ids if any(s in m for s in selected)]
    return ids


def time_runs(fn: Callable[[], object], repeat: int) -> list[float]:
    """Wall-clock seconds of ``repeat`` calls (CPU work is synchronous, so wall clock is honest)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000.0


def geomean(values: list[float]) -> float:
    import math

    values = [v for v in values if v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def machine() -> str:
    """One line naming the machine, for every table."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    import onnx

    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = "absent"
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {numpy.__version__}, "
            f"onnx {onnx.__version__}, onnxruntime {ort}, {date.today().isoformat()}")


def run_isolated(script: Path, args: list[str]):
    """Run ``script --one ...`` in a fresh process and return the JSON it prints last
    (``{"error": ...}`` if the process failed)."""
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of bench/RESULTS.md."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
