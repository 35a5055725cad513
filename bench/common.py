"""Shared pieces of the benchmark scripts: which models to run and their feeds, timing, machine
description, progress, RESULTS.md.

Run the scripts from the repository root (``python bench/<script>.py [MODEL ...]``).  Every script
takes models as positional arguments, each one of:

* an ONNX file (``models/u2net.onnx``);
* a folder: every ``*.onnx`` directly inside it, sorted by name (files the test suite knows as
  copies of onnx's light networks are left out, with a note: ``light`` runs those graphs with
  random weights; name such a file to run it anyway);
* ``light`` (onnx's nine light model-zoo networks, with the test suite's seeded random weights) or
  ``light/NAME`` (one of them); ``shared/NAME`` is ``../shared/models/NAME``, as older commands
  wrote it.

With none, the default is ``../shared/models light``: the shared models folder next to the
repository (what the tables in bench/RESULTS.md ran), which must then exist.  A model that is
missing stops the script before it measures anything, with one line on stderr and exit status 2.

Feeds: a file whose name the test suite's model zoo knows (``tests/model_zoo.py``: the shared
models, silero-vad's stateful inputs included) gets the zoo's feeds, so benchmarks and tests run
the very same inputs; any other file gets inputs made from its declared input shapes by the
rules of the ``gpuinfer`` command (``gpuinfer.cli.inputs``, seed 0).
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gpuinfer.cli.errors import UsageError  # noqa: E402
from gpuinfer.cli.progress import Progress  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
MIB = float(1 << 20)
SHARED_MODELS = ROOT.parent / "shared" / "models"  # "../shared/models" from the repository root
DEFAULT_MODELS = [str(SHARED_MODELS), "light"]
PROGRESS_MARK = "@@progress "  # a child process's line on stderr: one unit done, the text is what runs next


@dataclass(frozen=True)
class BenchModel:
    """One model to measure: ``id`` is what tables print, ``arg`` finds it again in a child process."""

    id: str
    arg: str
    path: Optional[Path] = None  # None for onnx's light networks, which are built in memory

    @property
    def name(self) -> str:
        """Short name for progress bars."""
        return self.path.name if self.path is not None else self.id

    def load(self) -> tuple[object, dict]:
        """(model source for ``InferenceSession``: a path string or ONNX bytes, feeds)."""
        from tests import model_zoo

        if self.path is None:
            name = self.id.split("/", 1)[1]
            return model_zoo.light_model(name), model_zoo.light_feeds(name)
        maker = model_zoo.SHARED_FEEDS.get(self.path.name)
        if maker is not None:
            return str(self.path), model_zoo.shared_feeds(self.path.name)
        return str(self.path), made_feeds(self.path)


def made_feeds(path: Path, shapes: Optional[dict] = None, seed: int = 0) -> dict:
    """Inputs for ``path`` made from its declared input shapes, as ``gpuinfer run`` makes them."""
    import gpuinfer
    from gpuinfer.cli.inputs import make_feeds

    probe = gpuinfer.InferenceSession(str(path), device="cpu")
    specs = probe.get_inputs()
    del probe
    feeds, _ = make_feeds(specs, {}, shapes or {}, seed)
    return feeds


def add_model_arguments(parser, default_help: str = "../shared/models and onnx's light networks") -> None:
    """The positional MODEL arguments, ``--models`` (a filter) and ``--quiet``."""
    parser.add_argument("paths", nargs="*", metavar="MODEL",
                        help="ONNX files or folders of them; 'light' or 'light/NAME' for onnx's light "
                             f"networks (default: {default_help})")
    parser.add_argument("--models", nargs="*", metavar="TEXT",
                        help="keep only models whose id contains one of these")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def resolve_models(args: Sequence[str], selected: Optional[Sequence[str]] = None) -> list[BenchModel]:
    """The models ``args`` name (``DEFAULT_MODELS`` when empty), filtered by ``selected`` substrings.

    Raises ``UsageError`` (one line) for a missing file or folder, a folder without models, or an
    unknown light network; nothing is run before every argument is checked."""
    from tests import model_zoo

    named = bool(args)
    if not args:
        if not SHARED_MODELS.is_dir():
            raise UsageError(f"no models given, and the default folder ../shared/models ({SHARED_MODELS}) "
                             "does not exist: name model files or folders")
        args = DEFAULT_MODELS
    found: list[BenchModel] = []
    for arg in args:
        path = Path(arg)
        if path.is_file():
            found.append(_file_model(path))
        elif path.is_dir():
            found += _folder_models(path, note=named)
        elif arg == "light" or arg.startswith("light/"):
            names = model_zoo.LIGHT_NAMES if arg == "light" else [arg.split("/", 1)[1]]
            for name in names:
                if name not in model_zoo.LIGHT_NAMES:
                    raise UsageError(f"{arg}: not one of onnx's light networks ({', '.join(model_zoo.LIGHT_NAMES)})")
                found.append(BenchModel(f"light/{name}", f"light/{name}"))
        elif arg.startswith("shared/") and (SHARED_MODELS / arg.split("/", 1)[1]).is_file():
            found.append(_file_model(SHARED_MODELS / arg.split("/", 1)[1]))
        else:
            where = f" (nor in {SHARED_MODELS})" if arg.startswith("shared/") else ""
            raise UsageError(f"{arg}: no such model file or folder{where}")
    if selected:
        found = [m for m in found if any(s in m.id for s in selected)]
    return found


def _file_model(path: Path) -> BenchModel:
    resolved = path.resolve()
    if resolved.parent == SHARED_MODELS.resolve():
        return BenchModel(f"shared/{path.name}", str(resolved), resolved)  # the ids RESULTS.md tables use
    return BenchModel(str(path), str(resolved), resolved)


def _folder_models(folder: Path, note: bool) -> list[BenchModel]:
    from tests import model_zoo

    files = sorted(p for p in folder.glob("*.onnx") if p.is_file())
    if not files:
        raise UsageError(f"{folder}: no .onnx files in this folder")
    copies = [p.name for p in files if p.name in model_zoo.SHARED_FEEDS and model_zoo.SHARED_FEEDS[p.name] is None]
    if copies and note:  # the default leaves them out silently: 'light' is part of it
        print(f"note: {folder}: leaving out {', '.join(copies)} (onnx's light networks with constant weights; "
              "'light' runs them with random weights; name a file to run it)", file=sys.stderr)
    return [_file_model(p) for p in files if p.name not in copies]


def one_model(arg: str) -> BenchModel:
    """The model a child process was handed (``BenchModel.arg``)."""
    models = resolve_models([arg])
    if len(models) != 1:
        raise UsageError(f"{arg}: names {len(models)} models, expected one")
    return models[0]


def main_guard(main: Callable[[Optional[list]], int], argv: Optional[list] = None) -> int:
    """Run a script's ``main``: a ``UsageError`` becomes one line on stderr and exit status 2."""
    try:
        return main(argv)
    except UsageError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `... | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


def progress(total: int, description: str, quiet: bool) -> Progress:
    """The bench scripts' progress bar: drawn on a terminal unless ``--quiet`` (see gpuinfer.cli.progress)."""
    return Progress(total, description, enabled=not quiet)


def report_progress(enabled: bool, label: str) -> None:
    """In a child process: tell the parent's bar one unit is done and ``label`` runs next."""
    if enabled:
        print(PROGRESS_MARK + label, file=sys.stderr, flush=True)


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


def run_isolated(script: Path, args: list[str], bar: Optional[Progress] = None):
    """Run ``script --one ...`` in a fresh process and return the JSON it prints last
    (``{"error": ...}`` if the process failed).  With a drawing ``bar``, the child is asked to report
    progress (``--report-progress``) and each report advances the bar."""
    live = bar is not None and bar.drawing
    command = [sys.executable, str(script), *args] + (["--report-progress"] if live else [])
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    errors = []
    for line in proc.stderr:
        if line.startswith(PROGRESS_MARK):
            bar.advance(line[len(PROGRESS_MARK):].strip() or None)
        else:
            errors.append(line.rstrip("\n"))
    proc.wait()
    reader.join()
    lines = "".join(out).strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": ([e for e in errors if e.strip()] or ["failed"])[-1]}
    return json.loads(lines[-1])


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


BUSY = "while True:\n    pass\n"  # one spinning Python loop: a busy process beside the engines


@contextlib.contextmanager
def busy_processes(count: int):
    """``count`` processes spinning on the CPU while the block runs, as other work on the machine
    would; stopped (by their own handles) after it."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()


def onnxruntime_kernel_events(source, feeds: dict, runs: int, threads: Optional[int] = None) -> list[dict]:
    """onnxruntime's profiler events for every node kernel of ``runs`` runs of the model ``source``
    (a path or ONNX bytes, as ``BenchModel.load`` gives it) on ``feeds``, after one warm-up run (its
    events dropped): each a dict with ``dur`` (µs) and ``args.op_name``."""
    import tempfile

    import onnxruntime as ort

    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    with tempfile.TemporaryDirectory() as folder:
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(folder) / "ort")
        if threads:
            opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        for _ in range(runs + 1):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    return kernels[len(kernels) // (runs + 1):]  # every run times the same nodes: drop the warm-up's
