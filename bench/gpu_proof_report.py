"""bench/RESULTS-gpu.md from bench/gpu_proof.py's state: the device, the command, each step's
outcome, u2net beside the seed study's figures and the targets, then every row measured."""
from __future__ import annotations

import sys
import time
from typing import Any, Optional

from gpu_proof import AILIA, GPU_RUN_COMMAND, MODES

MB = 1e6  # the seed study's unit


def _mb(value: Optional[float]) -> str:
    return "-" if value is None else f"{value / MB:,.1f}"


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value * 1e3:,.2f}"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _row(proof: Any, model: str, mode: str, graphs: bool) -> Optional[dict]:
    for row in proof.rows:
        if row.get("model") == model and row.get("mode") == mode and row.get("graphs") == graphs and "error" not in row:
            return row
    return None


def headline_model(proof: Any) -> Optional[str]:
    """The full u2net where it ran, else u2netp (the dry run's stand-in for it)."""
    names = [r.get("model") for r in proof.rows]
    for name in ("u2net.onnx (full, rebuilt)", "u2netp.onnx"):
        if name in names:
            return name
    return next((n for n in names if n), None)


def u2net_table(proof: Any) -> str:
    model = headline_model(proof)
    if model is None:
        return "(no model was measured)"
    base = _row(proof, model, "per_tensor", False)
    rows = []
    for mode in MODES:
        eager, graph = _row(proof, model, mode, False), _row(proof, model, mode, True)
        ratio = (f"{eager['median_s'] / base['median_s']:.2f}x" if eager and base and base["median_s"] else "-")
        rows.append([mode, _mb(eager and eager["peak_bytes"]), _mb(eager and eager["sampled_peak_bytes"]),
                     _mb(eager and eager["lower_bound_bytes"]), _ms(eager and eager["first_s"]),
                     _ms(eager and eager["median_s"]), ratio, _ms(graph and graph["median_s"]),
                     _mb(graph and graph["peak_bytes"]), _mb(graph and graph["graph_pool_bytes"]),
                     AILIA.get(mode, "-") if model.startswith("u2net.onnx") else "(full u2net only)"])
    torch = proof.torch
    if torch:
        rows.append([f"PyTorch eager ({torch.get('model')}, {torch.get('device')})", _mb(torch.get("peak_bytes")), "-", "-",
                     _ms(torch.get("first_s")), _ms(torch.get("median_s")), "-", "-", "-", "-", "-"])
    header = ["mode", "peak counted MB", "peak NVML MB", "lower bound MB", "first run ms", "median ms",
              "vs per_tensor", "graphs median ms", "graphs peak MB", "graph pool MB", "ailia MB"]
    return f"{model}\n\n" + _table(header, rows)


def targets(proof: Any) -> list[list[str]]:
    model = headline_model(proof)
    if model is None:
        return []
    arena, graphs = _row(proof, model, "arena", False), _row(proof, model, "arena", True)
    per_tensor, reduce = _row(proof, model, "per_tensor", False), _row(proof, model, "reduce", False)
    torch = proof.torch
    out = []

    def verdict(value: Optional[float], limit: float) -> str:
        return "not measured" if value is None else ("met" if value <= limit else "missed")

    value = graphs["median_s"] / torch["median_s"] if graphs and torch and torch.get("median_s") else None
    out.append(["arena with graphs <= 0.5x PyTorch eager latency", "-" if value is None else f"{value:.2f}x",
                verdict(value, 0.5)])
    value = arena["peak_bytes"] / arena["lower_bound_bytes"] if arena and arena["lower_bound_bytes"] else None
    out.append(["arena peak within 10% of the lower bound", "-" if value is None else f"{value:.3f}x",
                verdict(value, 1.10)])
    value = reduce["median_s"] / per_tensor["median_s"] if reduce and per_tensor and per_tensor["median_s"] else None
    out.append(["reduce <= 1.3x per_tensor latency", "-" if value is None else f"{value:.2f}x", verdict(value, 1.3)])
    return out


def render(proof: Any) -> str:
    dry = proof.dry
    title = ("# GPU proof, DRY RUN: strict CuPy stand-in, not a GPU" if dry else "# GPU proof")
    lines = [title, ""]
    if dry:
        lines += ["Every figure below comes from the strict stand-in (numpy on the CPU, device=\"strict\") at "
                  "reduced sizes: it proves that bench/gpu_proof.py runs end to end, not how fast or how lean "
                  "anything is on a GPU.  Latencies are numpy's.", ""]
    facts = proof.facts
    lines += [_table(["", ""], [[k, v] for k, v in facts.items()]), ""]
    lines += [f"Command: `{' '.join([sys.executable.rsplit('/', 1)[-1]] + sys.argv)}`  ",
              f"GPU session's call: `{GPU_RUN_COMMAND}`  ",
              f"Written {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, "
              f"{time.perf_counter() - proof.started:.0f} s after the start.", ""]
    lines += ["## Steps", "", _table(["step", "status", "seconds", "command"],
                                     [[n, s["status"], s["seconds"], f"`{s['command']}`" if s["command"] else ""]
                                      for n, s in proof.steps.items()]), ""]
    lines += ["## u2net beside the seed study", "",
              "MB = 10^6 bytes.  Seed study (ailia SDK, full u2net, 1x3x320x320): default 557.2 MB, reduce "
              "176.4 MB, reuse 296.8 MB; reduce about 5x slower than default.  'peak counted' is the allocator "
              "hook's exact figure; 'peak NVML' the sampler's (process or device memory over the session's "
              "baseline).", "", u2net_table(proof), ""]
    lines += ["## Targets", "", _table(["target", "measured", "verdict"], targets(proof)), ""]
    rows = []
    for r in proof.rows:
        if "error" in r:
            rows.append([r.get("model"), r.get("mode", "-"), "yes" if r.get("graphs") else "no", r["error"],
                         "-", "-", "-", "-", "-", "-"])
            continue
        rows.append([r["model"], r["mode"], "yes" if r["graphs"] else "no", r["status"], _ms(r["first_s"]),
                     _ms(r["median_s"]), _mb(r["peak_bytes"]), _mb(r["sampled_peak_bytes"]),
                     _mb(r["lower_bound_bytes"]), _mb(r["graph_pool_bytes"])])
    lines += ["## Every model, every mode", "",
              _table(["model", "mode", "graphs", "status", "first ms", "median ms", "peak MB", "NVML MB",
                      "bound MB", "graph pool MB"], rows), ""]
    for name, step in proof.steps.items():
        if step.get("tail"):
            lines += [f"### {name}: last lines", "", "```", step["tail"], "```", ""]
    return "\n".join(lines)
