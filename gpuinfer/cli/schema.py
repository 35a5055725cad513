"""The JSON document ``--json FILE`` writes, as a JSON-Schema dict, and a small validator for it.

One schema serves ``run`` (one entry in ``results``) and ``compare`` (one per mode); docs/cli.md
describes every field.  The validator knows only the JSON-Schema keywords used here (``type``,
``properties``, ``required``, ``additionalProperties``, ``items``, ``enum``, ``minimum``), so
gpuinfer needs no ``jsonschema`` dependency.
"""
from __future__ import annotations

from typing import Any

SCHEMA_ID = "gpuinfer-cli/1"

_BYTES = {"type": "integer", "minimum": 0}
_BYTES_OR_NULL = {"type": ["integer", "null"], "minimum": 0}
_SECONDS = {"type": "number", "minimum": 0}
_SECONDS_OR_NULL = {"type": ["number", "null"], "minimum": 0}
_RATIO_OR_NULL = {"type": ["number", "null"], "minimum": 0}

_STEP = {
    "type": "object",
    "required": ["step", "op", "node", "live_bytes"],
    "additionalProperties": False,
    "properties": {"step": {"type": "integer", "minimum": 0}, "op": {"type": "string"},
                   "node": {"type": "string"}, "live_bytes": _BYTES},
}

_INPUT = {
    "type": "object",
    "required": ["name", "shape", "dtype", "source", "notes"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "dtype": {"type": "string"},
        "source": {"type": "string"},
        "notes": {"type": "array", "items": {"type": "string"}},
    },
}

_RESULT = {
    "type": "object",
    "required": ["mode", "device", "peak_bytes", "sampled_peak_bytes", "sampler", "lower_bound_bytes",
                 "planned_bytes", "dynamic_bytes", "held_bytes_after_run", "allocations", "alloc_seconds",
                 "inplace_count", "run_seconds", "first_run_seconds", "median_seconds",
                 "peak_vs_per_tensor", "peak_vs_lower_bound", "latency_vs_per_tensor", "top_steps",
                 "timeline"],
    "additionalProperties": False,
    "properties": {
        "mode": {"type": "string"},
        "device": {"type": "string", "enum": ["cpu", "cuda"]},
        "peak_bytes": _BYTES,
        "sampled_peak_bytes": _BYTES_OR_NULL,
        "sampler": {"type": "string"},
        "lower_bound_bytes": _BYTES,
        "planned_bytes": _BYTES,
        "dynamic_bytes": _BYTES,
        "held_bytes_after_run": _BYTES,
        "allocations": {"type": "integer", "minimum": 0},
        "alloc_seconds": _SECONDS,
        "inplace_count": {"type": "integer", "minimum": 0},
        "run_seconds": {"type": "array", "items": _SECONDS},
        "first_run_seconds": _SECONDS,
        "median_seconds": _SECONDS_OR_NULL,
        "peak_vs_per_tensor": _RATIO_OR_NULL,
        "peak_vs_lower_bound": _RATIO_OR_NULL,
        "latency_vs_per_tensor": _RATIO_OR_NULL,
        "top_steps": {"type": "array", "items": _STEP},
        "timeline": {"type": "array", "items": _STEP},
    },
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "gpuinfer run/compare results",
    "type": "object",
    "required": ["schema", "command", "gpuinfer_version", "model", "device", "repeat", "seed", "inputs",
                 "outputs", "results", "outputs_agree", "disagreements", "recommended"],
    "additionalProperties": False,
    "properties": {
        "schema": {"type": "string", "enum": [SCHEMA_ID]},
        "command": {"type": "string", "enum": ["run", "compare"]},
        "gpuinfer_version": {"type": "string"},
        "model": {
            "type": "object",
            "required": ["path", "default"],
            "additionalProperties": False,
            "properties": {"path": {"type": "string"}, "default": {"type": "boolean"}},
        },
        "device": {"type": "string", "enum": ["cpu", "cuda"]},
        "repeat": {"type": "integer", "minimum": 1},
        "seed": {"type": "integer"},
        "inputs": {"type": "array", "items": _INPUT},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "shape", "dtype"],
                "additionalProperties": False,
                "properties": {"name": {"type": "string"},
                               "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                               "dtype": {"type": "string"}},
            },
        },
        "results": {"type": "array", "items": _RESULT},
        "outputs_agree": {"type": ["boolean", "null"]},
        "disagreements": {"type": "array", "items": {"type": "string"}},
        "recommended": {
            "type": ["object", "null"],
            "required": ["least_memory", "fastest"],
            "additionalProperties": False,
            "properties": {"least_memory": {"type": "string"}, "fastest": {"type": "string"}},
        },
    },
}

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def validate(document: Any, schema: dict = SCHEMA, where: str = "$") -> list[str]:
    """Every way ``document`` breaks ``schema``, as ``"$.results[0].mode: ..."`` lines; [] if valid."""
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_TYPES[k](document) for k in kinds):
            return [f"{where}: expected {' or '.join(kinds)}, got {type(document).__name__}"]
    problems = []
    if "enum" in schema and document not in schema["enum"]:
        problems.append(f"{where}: {document!r} is not one of {schema['enum']}")
    if "minimum" in schema and _TYPES["number"](document) and document < schema["minimum"]:
        problems.append(f"{where}: {document} is below the minimum {schema['minimum']}")
    if isinstance(document, dict):
        props = schema.get("properties", {})
        problems += [f"{where}: missing {key!r}" for key in schema.get("required", []) if key not in document]
        if schema.get("additionalProperties") is False:
            problems += [f"{where}: unexpected {key!r}" for key in document if key not in props]
        for key, value in document.items():
            if key in props:
                problems += validate(value, props[key], f"{where}.{key}")
    if isinstance(document, list) and "items" in schema:
        for i, item in enumerate(document):
            problems += validate(item, schema["items"], f"{where}[{i}]")
    return problems
