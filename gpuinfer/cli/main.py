"""``gpuinfer`` entry point: parse the command line, run a command, turn failures into exit codes.

Exit status: 0 success; 1 ``compare`` found modes whose outputs disagree; 2 a problem the user
can fix (usage, model file, unsupported op, inputs, device), reported as one line on stderr;
3 an internal error (a gpuinfer bug); 130 interrupted.  ``--debug`` adds the traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import NoReturn, Optional, Sequence

from gpuinfer import MEMORY_MODES, GpuinferError, UnsupportedOpError, __version__
from gpuinfer.cli.errors import UsageError

EXIT_OK, EXIT_DISAGREE, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one ``UsageError`` line instead of printing usage."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gpuinfer", description="Run ONNX models with planned memory and measure the peak.")
    parser.add_argument("--version", action="version", version=f"gpuinfer {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="run a model in one memory mode",
                              description="Run MODEL (default: SqueezeNet from the onnx package) in one memory mode.")
    _common(run)
    run.add_argument("--memory-mode", default="per_tensor", choices=MEMORY_MODES + ("auto",), metavar="MODE",
                     help=f"one of {', '.join(MEMORY_MODES)}, or auto with --memory-limit (default per_tensor)")
    run.add_argument("--memory-limit", type=_positive_int, metavar="BYTES",
                     help="refuse runs over BYTES; with --memory-mode auto, the fastest mode whose plan fits")
    run.add_argument("--plan-only", action="store_true",
                     help="print the plan's memory report for the input shapes (planned bytes, lower bound, "
                          "the tensors alive at the peak step) without running the model")
    run.add_argument("--trace", metavar="FILE.json",
                     help="write every run as a Chrome trace: a span per node, live bytes per step "
                          "(open in chrome://tracing or ui.perfetto.dev)")
    run.add_argument("--memory-report", action="store_true",
                     help="print peaks, bound, plan, allocator, latency and the busiest steps")
    compare = commands.add_parser("compare", help="run every memory mode and compare them",
                                  description="Run MODEL in every memory mode on the same inputs, check the "
                                              "outputs agree and compare memory and latency.")
    _common(compare)
    compare.add_argument("--memory-report", action="store_true", help="also print each mode's full report")
    return parser


def _common(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("model", nargs="?", metavar="MODEL", help="ONNX file (default: light_squeezenet from onnx)")
    sub.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                     help="auto (cuda when usable), cpu or cuda")
    sub.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy", help="feed an input from .npy")
    sub.add_argument("--inputs", metavar="FILE.npz", help="feed inputs from an .npz (keys are input names)")
    sub.add_argument("--shape", action="append", default=[], metavar="NAME=D1,D2,...",
                     help="shape of a made input (fixes its dynamic dims)")
    sub.add_argument("--seed", type=int, default=0, help="seed of made inputs (default 0)")
    sub.add_argument("--threads", type=_positive_int, metavar="N",
                     help="threads during runs, BLAS's and gpuinfer's "
                          "(default: BLAS's own; gpuinfer's one per free core)")
    sub.add_argument("--repeat", type=_positive_int, metavar="N",
                     help="runs per mode (default 1 for a plain run, 3 when latency is reported)")
    sub.add_argument("--output", metavar="FILE.npz", help="save the outputs (keys are output names)")
    sub.add_argument("--json", metavar="FILE", help="write the results as JSON (schema in docs/cli.md)")
    sub.add_argument("--plot", metavar="FILE.png", help="plot bytes alive per step (needs matplotlib)")
    sub.add_argument("--quiet", "-q", action="store_true",
                     help="no progress bar (one is drawn on stderr only when stdout and stderr are terminals)")
    sub.add_argument("--debug", action="store_true", dest="sub_debug", help="show tracebacks of errors")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("choose a command: run or compare (see 'gpuinfer --help')")
        from gpuinfer.cli.commands import compare_command, run_command

        return run_command(args) if args.command == "run" else compare_command(args)
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except KeyboardInterrupt:
        _fail("interrupted", debug)
        return EXIT_INTERRUPTED
    except GpuinferError as exc:
        _fail(_one_line(exc), debug)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `gpuinfer compare | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return EXIT_OK
    except Exception as exc:
        _fail(f"internal error: {type(exc).__name__}: {_one_line(exc)}"
              + ("" if debug else " (rerun with --debug for the traceback)"), debug)
        return EXIT_INTERNAL


def _fail(message: str, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    print(f"gpuinfer: error: {message}", file=sys.stderr)


def _one_line(exc: BaseException) -> str:
    """The error's message squeezed onto one line; unsupported ops listed compactly."""
    if isinstance(exc, UnsupportedOpError):
        counts: dict[str, int] = {}
        for domain, op_type, _node, opset in exc.missing:
            key = f"{domain + '::' if domain else ''}{op_type} (opset {opset})"
            counts[key] = counts.get(key, 0) + 1
        listed = ", ".join(f"{k}: {n} node(s)" for k, n in sorted(counts.items()))
        return f"the model uses op types gpuinfer does not implement yet: {listed}"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
