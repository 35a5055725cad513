"""The two commands: ``run`` (one memory mode) and ``compare`` (every mode on the same inputs).

Each returns the process exit status; problems the user can fix are raised as ``GpuinferError``
and turned into one line on stderr by ``gpuinfer.cli.main``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, TextIO

import numpy as np

from gpuinfer import MEMORY_MODES, InferenceSession
from gpuinfer.cli.document import build_document, write_document
from gpuinfer.cli.errors import UsageError
from gpuinfer.cli.inputs import InputChoice, load_given, make_feeds, parse_shapes
from gpuinfer.cli.measure import ModeResult, disagreements, measure, recommend
from gpuinfer.cli.models import ModelChoice, choose_model
from gpuinfer.cli.plot import plot_timelines, require_matplotlib
from gpuinfer.cli.progress import Progress
from gpuinfer.cli.shape_hint import guessed_shapes_hint
from gpuinfer.cli.tables import compare_table, later_runs, memory_report_text, mib, ms, recommendation_text

REPORT_REPEAT = 3  # default --repeat when latencies are reported (run 1 + a median of two)


def run_command(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """``gpuinfer run``: one mode, optional report, JSON and plot."""
    reporting = bool(args.memory_report or args.json or args.plot)
    if args.plot:
        require_matplotlib()
    _check_writable("--trace", args.trace)
    model, feeds, choices = _prepare(args, out)
    if args.plan_only:
        return _plan_only(args, model, feeds, out)
    repeat = args.repeat or (REPORT_REPEAT if reporting else 1)
    with Progress(repeat, f"run {model.path.name}", enabled=not args.quiet) as bar:
        bar.show(args.memory_mode)
        with guessed_shapes_hint(model.path, feeds, choices):  # failing on guessed shapes: ask for --shape
            result = measure(model.path, args.memory_mode, args.device, feeds, repeat, reporting, bar.advance,
                             args.threads, args.trace, args.memory_limit)
    median = f", median {ms(result.median_seconds)} ({later_runs(repeat)})" if repeat > 1 else ""
    print(f"ran {result.mode} on {result.device}: {repeat} run(s), first {ms(result.first_seconds)}{median}",
          file=out)
    _print_outputs(result, out)
    _save_outputs(args.output, result, out)
    if args.memory_report:
        print("\n" + memory_report_text(result), file=out)
    _write_extras(args, "run", model, repeat, choices, [result], None, None, out)
    if args.trace:
        print(f"wrote trace to {args.trace} (open it in chrome://tracing or ui.perfetto.dev)", file=out)
    return 0


def _plan_only(args: argparse.Namespace, model: ModelChoice, feeds: dict, out: TextIO) -> int:
    """``gpuinfer run --plan-only``: the plan's memory report for the feeds' shapes; nothing runs."""
    sess = InferenceSession(model.path, device=args.device, memory_mode=args.memory_mode,
                            memory_limit_bytes=args.memory_limit)
    shapes = {name: value.shape for name, value in feeds.items()}
    report = sess.plan_memory(shapes, {name: value.dtype for name, value in feeds.items()})
    print(report.text(), file=out)
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(report.to_dict(), indent=1, default=str))
        print(f"wrote JSON to {args.json}", file=out)
    return 0


def compare_command(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """``gpuinfer compare``: every mode, a side-by-side table, outputs checked against per_tensor."""
    if args.plot:
        require_matplotlib()
    model, feeds, choices = _prepare(args, out)
    repeat = args.repeat or REPORT_REPEAT
    results: list[ModeResult] = []
    with Progress(repeat * len(MEMORY_MODES), f"compare {model.path.name}", enabled=not args.quiet) as bar:
        for mode in MEMORY_MODES:
            bar.show(mode)  # named before its session loads: on a big model that takes a while too
            with guessed_shapes_hint(model.path, feeds, choices):
                results.append(measure(model.path, mode, args.device, feeds, repeat, True, bar.advance,
                                       args.threads))
    device = results[0].device
    found: list[str] = []
    for other in results[1:]:
        found += disagreements(results[0], other, bitwise=(device == "cpu"))
    picks = recommend(results)
    median = f"median over {later_runs(repeat)}" if repeat > 1 else "no median: use --repeat 2 or more"
    print(f"compared {len(results)} modes on {device}, {repeat} run(s) each "
          f"(memory from the last run, {median})\n", file=out)
    print(compare_table(results), file=out)
    bounds = sorted({r.report.lower_bound_bytes for r in results})
    print(f"\nlower bound (most bytes alive at one step): {' / '.join(mib(b) for b in bounds)}", file=out)
    print(recommendation_text(results, picks), file=out)
    agree = "bitwise" if device == "cpu" else "within rtol 1e-5, atol 1e-6"
    print(f"outputs: {'all modes agree ' + agree if not found else 'MODES DISAGREE (see stderr)'}", file=out)
    _print_outputs(results[0], out)
    _save_outputs(args.output, results[0], out)
    if args.memory_report:
        for res in results:
            print("\n" + memory_report_text(res), file=out)
    _write_extras(args, "compare", model, repeat, choices, results, found, picks, out)
    for line in found:
        print(f"gpuinfer: outputs differ: {line}", file=sys.stderr)
    return 1 if found else 0


def _prepare(args: argparse.Namespace, out: TextIO) -> tuple[ModelChoice, dict, list[InputChoice]]:
    """The model, and feeds made before any measuring session exists (see measure.py)."""
    shapes = parse_shapes(args.shape)
    for flag, path in (("--output", args.output), ("--json", args.json), ("--plot", args.plot)):
        _check_writable(flag, path)
    model = choose_model(args.model)
    given = load_given(args.input, args.inputs)
    probe = InferenceSession(model.path, device="cpu")  # loads and checks the model; reads its inputs
    specs = probe.get_inputs()
    del probe
    feeds, choices = make_feeds(specs, given, shapes, args.seed)
    print(f"model: {model.description}", file=out)
    for choice in choices:
        print(choice.describe(), file=out)
    return model, feeds, choices


def _check_writable(flag: str, path: Optional[str]) -> None:
    """Fail before the model runs when a result file could not be written afterwards."""
    if path and not Path(path).resolve().parent.is_dir():
        raise UsageError(f"{flag} {path}: its folder does not exist")
    if path and Path(path).is_dir():
        raise UsageError(f"{flag} {path}: is a folder, not a file name")


def _print_outputs(result: ModeResult, out: TextIO) -> None:
    for name, value in zip(result.output_names, result.outputs):
        print(f"output {name!r}: shape {list(value.shape)} {value.dtype.name}", file=out)


def _save_outputs(path: Optional[str], result: ModeResult, out: TextIO) -> None:
    if not path:
        return
    path = path if path.endswith(".npz") else path + ".npz"  # what numpy would name it anyway
    try:
        np.savez(path, **dict(zip(result.output_names, result.outputs)))
    except OSError as exc:
        raise UsageError(f"--output {path}: cannot write it ({exc.strerror or exc})") from None
    print(f"wrote outputs of {result.mode} to {path}", file=out)


def _write_extras(args: argparse.Namespace, command: str, model: ModelChoice, repeat: int,
                  choices: list[InputChoice], results: list[ModeResult], found: Optional[list[str]],
                  picks: Optional[dict], out: TextIO) -> None:
    if args.json:
        write_document(build_document(command, model, repeat, args.seed, choices, results, found, picks),
                       args.json)
        print(f"wrote JSON to {args.json}", file=out)
    if args.plot:
        title = f"{model.path.name}: bytes alive per step ({results[0].device})"
        plot_timelines(results, args.plot, title)
        print(f"wrote plot to {args.plot}", file=out)
