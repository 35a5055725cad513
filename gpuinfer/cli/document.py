"""Build and write the ``--json`` document (layout: ``gpuinfer.cli.schema.SCHEMA``, docs/cli.md)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from gpuinfer import __version__
from gpuinfer.cli.errors import UsageError
from gpuinfer.cli.inputs import InputChoice
from gpuinfer.cli.measure import ModeResult
from gpuinfer.cli.models import ModelChoice
from gpuinfer.cli.schema import SCHEMA_ID
from gpuinfer.cli.tables import ratio


def build_document(command: str, model: ModelChoice, repeat: int, seed: int, inputs: list[InputChoice],
                   results: list[ModeResult], disagreements: Optional[list[str]],
                   recommended: Optional[dict[str, str]]) -> dict:
    """The whole document; ``disagreements``/``recommended`` are None for ``run`` (one mode)."""
    base = next((r for r in results if r.mode == "per_tensor"), None)
    first = results[0]
    return {
        "schema": SCHEMA_ID,
        "command": command,
        "gpuinfer_version": __version__,
        "model": {"path": str(model.path), "default": model.is_default},
        "device": first.device,
        "repeat": repeat,
        "seed": seed,
        "inputs": [c.to_dict() for c in inputs],
        "outputs": [{"name": n, "shape": list(o.shape), "dtype": o.dtype.name}
                    for n, o in zip(first.output_names, first.outputs)],
        "results": [_result(r, base) for r in results],
        "outputs_agree": None if disagreements is None else not disagreements,
        "disagreements": list(disagreements or []),
        "recommended": recommended,
    }


def _result(res: ModeResult, base: Optional[ModeResult]) -> dict:
    rep = res.report
    return {
        "mode": rep.mode, "device": rep.device,
        "peak_bytes": rep.peak_bytes, "sampled_peak_bytes": rep.sampled_peak_bytes, "sampler": rep.sampler,
        "lower_bound_bytes": rep.lower_bound_bytes, "planned_bytes": rep.planned_bytes,
        "dynamic_bytes": rep.dynamic_bytes, "held_bytes_after_run": rep.held_bytes_after_run,
        "allocations": rep.allocations, "alloc_seconds": rep.alloc_seconds, "inplace_count": rep.inplace_count,
        "run_seconds": list(res.seconds), "first_run_seconds": res.first_seconds,
        "median_seconds": res.median_seconds,
        "peak_vs_per_tensor": ratio(rep.peak_bytes, base.report.peak_bytes if base else None),
        "peak_vs_lower_bound": ratio(rep.peak_bytes, rep.lower_bound_bytes),
        "latency_vs_per_tensor": ratio(res.typical_seconds, base.typical_seconds if base else None),
        "top_steps": [_step(s) for s in rep.top_steps(10)],
        "timeline": [_step(s) for s in rep.timeline],
    }


def _step(record) -> dict:
    return {"step": record.step, "op": record.op, "node": record.node, "live_bytes": record.live_bytes}


def write_document(document: dict, path: str) -> None:
    """Write ``document`` as indented JSON; an unwritable path is a one-line usage error."""
    try:
        Path(path).write_text(json.dumps(document, indent=2) + "\n")
    except OSError as exc:
        raise UsageError(f"--json {path}: cannot write it ({exc.strerror or exc})") from None
