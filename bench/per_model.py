"""The frame of the bench scripts that measure each model in every memory mode, one child process
a model (bench/device_census.py, bench/memory_discipline.py): their common arguments, and the
loop that runs the children and gathers their records."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import add_model_arguments, machine, progress, resolve_models, run_isolated, write_section

MODES = ["per_tensor", "reduce", "reuse", "arena"]


def mode_parser(description: str, section: str) -> argparse.ArgumentParser:
    """Models, ``--modes``, ``--json``, ``--write`` (``section`` of bench/RESULTS.md) and the
    child's hidden ``--one`` / ``--report-progress``."""
    parser = argparse.ArgumentParser(description=description)
    add_model_arguments(parser)
    parser.add_argument("--modes", nargs="*", choices=MODES, default=MODES, help="memory modes (default all)")
    parser.add_argument("--json", metavar="FILE", help="write the records as JSON")
    parser.add_argument("--write", action="store_true", help=f"replace the {section} section of bench/RESULTS.md")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--report-progress", action="store_true", help=argparse.SUPPRESS)
    return parser


def records_per_model(script: str, args: argparse.Namespace, label: str, extra: list) -> tuple[list, list]:
    """(records, failures): each model's records from a child ``script --one MODEL --modes ... extra``."""
    models = resolve_models(args.paths, args.models)
    records, failed = [], []
    with progress(len(models) * len(args.modes), label, args.quiet) as bar:
        for model in models:
            bar.show(f"{model.name} [{args.modes[0]}]")
            res = run_isolated(Path(script), ["--one", model.arg, "--modes", *args.modes, *extra], bar)
            if isinstance(res, dict):  # {"error": ...}: the child failed
                failed.append(f"{model.id}: {res['error']}")
            else:
                records += res
    return records, failed


def finish(script: str, args: argparse.Namespace, argv, records: list, failed: list, section: str, title: str,
           note: str, table: str) -> int:
    """Report the failures, write ``--json`` and (``--write``) the RESULTS.md section; exit status."""
    for line in failed:
        print(f"  FAILED {line}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    if args.write:
        command = f"python bench/{Path(script).name} " + " ".join(
            a for a in (argv or sys.argv[1:]) if a not in ("--write", "--quiet"))
        write_section(section, f"## {title}\n\nCommand: `{command.strip()}` on {machine()}{note}\n\n{table}\n")
    return 1 if failed else 0
