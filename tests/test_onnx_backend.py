"""The official ONNX backend test suite (``onnx.backend.test``) run against ``gpuinfer.backend``.

Every CPU test of the node, "real" (the "light" model-zoo networks that ship with onnx), "simple",
"pytorch-converted" and "pytorch-operator" kinds runs twice: in ``per_tensor`` and in ``arena``
memory mode (one ``BackendTest`` per mode, classes suffixed ``_per_tensor`` / ``_arena``, so
``-k arena`` selects a mode).  Tests that do not pass yet are listed, with a one-line reason each,
in ``tests/onnx_backend_xfail.txt`` and marked ``xfail(strict=True)``: a listed test that starts
passing fails the run until its line is removed.

Tool use (see docs/onnx-backend.md)::

    python -m tests.test_onnx_backend --count          # passed/failed per kind and per mode
    python -m tests.test_onnx_backend --update-xfail   # rewrite the xfail list from the current tree
    python -m tests.test_onnx_backend --count --device strict   # the CUDA path on the strict stand-in

With ``--device strict`` (or ``GPUINFER_SUITE_DEVICE=strict``) every test runs on the strict CuPy
stand-in instead of numpy, against the same list: the CUDA path must pass what numpy passes
(tests/devices/test_strict_onnx_suite.py runs it so in CI).
"""
from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import unittest
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import onnx
from onnx import helper
import onnx.backend.test
import pytest

from gpuinfer import errors
from gpuinfer.backend import backend_for

MODES = ("per_tensor", "arena")
SUITE_DEVICE = os.environ.get("GPUINFER_SUITE_DEVICE") or None  # None: numpy; "strict": the stand-in
XFAIL_FILE = Path(__file__).with_name("onnx_backend_xfail.txt")
# BackendTest category (TestCase class name) -> the kind of test data it comes from.
KINDS = {
    "OnnxBackendNodeModelTest": "node",
    "OnnxBackendRealModelTest": "real",
    "OnnxBackendSimpleModelTest": "simple",
    "OnnxBackendPyTorchConvertedModelTest": "pytorch-converted",
    "OnnxBackendPyTorchOperatorModelTest": "pytorch-operator",
}
# Tests that stay out of the run in some modes, with why: name -> (modes, reason).  No test is
# skipped for time: the whole suite fits CI's budget in both modes (see docs/onnx-backend.md).
_RANDOM = ("random op: onnx's expected output is one unseeded numpy draw, so a pass would be luck "
           "(a strict xfail would flake)")
SKIPS: dict[str, tuple[tuple[str, ...], str]] = {
    f"test_bernoulli{variant}_cpu": (MODES, _RANDOM)
    for variant in ("", "_double", "_seed", "_expanded", "_double_expanded", "_seed_expanded")
}


# --- the xfail list ------------------------------------------------------------------------------
_LINE = re.compile(r"^(?P<name>test_\S+)(?:\s+\[(?P<modes>[\w,]+)\])?\s+(?P<reason>\S.*)$")


@dataclass(frozen=True)
class XfailEntry:
    name: str
    modes: tuple[str, ...]  # the modes in which it fails (every mode when the line names none)
    reason: str

    def line(self, width: int) -> str:
        head = self.name if self.modes == MODES else f"{self.name} [{','.join(self.modes)}]"
        return f"{head:<{width}}  {self.reason}"


def read_xfails(path: Path = XFAIL_FILE) -> dict[str, XfailEntry]:
    """name -> entry; ``#`` starts a comment line.  Raises ValueError on a malformed line."""
    entries: dict[str, XfailEntry] = {}
    if not path.exists():
        return entries
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        m = _LINE.match(text)
        if not m:
            raise ValueError(f"{path.name}:{number}: expected '<test name> [modes]  <reason>', got {raw!r}")
        modes = tuple(m["modes"].split(",")) if m["modes"] else MODES
        bad = [mode for mode in modes if mode not in MODES]
        if bad or m["name"] in entries:
            raise ValueError(f"{path.name}:{number}: unknown mode {bad}" if bad
                             else f"{path.name}:{number}: {m['name']} listed twice")
        entries[m["name"]] = XfailEntry(m["name"], modes, m["reason"].strip())
    return entries


XFAIL_HEADER = """\
# ONNX backend tests that gpuinfer does not pass yet; tests/test_onnx_backend.py marks each one
# xfail(strict=True), so a listed test that starts passing fails the run until its line goes.
# Format: <test name> [modes]  <one-line reason>   ([modes] only when it fails in some modes only)
# Regenerate: python -m tests.test_onnx_backend --update-xfail   (keeps the reasons written here)
"""


def write_xfails(entries: dict[str, XfailEntry], path: Path = XFAIL_FILE) -> None:
    width = max((len(e.line(0).split("  ")[0]) for e in entries.values()), default=0)
    width = min(width, 60)
    lines = [entries[name].line(width) for name in sorted(entries)]
    path.write_text(XFAIL_HEADER + "\n".join(lines) + ("\n" if lines else ""))


# --- the suite, one BackendTest per mode ----------------------------------------------------------
@dataclass
class Case:
    mode: str
    kind: str
    name: str
    cls: type  # the generated unittest.TestCase class
    model_test: Optional[object]  # onnx's TestCase record (url, model_dir, ...)


def _local(model_test) -> bool:
    """False for a model test whose data would be downloaded (the runner fetches URLs)."""
    url = getattr(model_test, "url", None)
    return getattr(model_test, "model_dir", None) is not None or url is None or \
        url.startswith("onnx/backend/test/data/")


def build_suite(mode: str) -> tuple[dict[str, type], list[Case]]:
    """The unittest classes for ``mode`` (CPU tests only), renamed ``<category>_<mode>``."""
    runner = onnx.backend.test.BackendTest(backend_for(mode, SUITE_DEVICE), __name__)
    records = {}
    for kind in ("node", "real", "simple", "pytorch-converted", "pytorch-operator"):
        for rec in onnx.backend.test.loader.load_model_tests(kind=kind):
            records[f"{rec.name}_cpu"] = rec
    classes, cases = {}, []
    for category, cls in runner.test_cases.items():
        kind = KINDS.get(category)
        if kind is None:
            raise RuntimeError(f"onnx's BackendTest made an unknown category {category!r}; add it to KINDS")
        name = f"{category}_{mode}"
        cls.__name__ = cls.__qualname__ = name
        for attr in [a for a in vars(cls) if a.startswith("test_")]:
            if not attr.endswith("_cpu"):  # the CUDA twins: this suite runs on the CPU only
                delattr(cls, attr)
                continue
            rec = records.get(attr)
            if rec is not None and not _local(rec):
                setattr(cls, attr, unittest.skip("needs a network download of model data")(getattr(cls, attr)))
            cases.append(Case(mode, kind, attr, cls, rec))
        classes[name] = cls
    return classes, cases


def _mark(cases: list[Case], xfails: dict[str, XfailEntry]) -> None:
    """Put strict xfail (listed tests) and skip (SKIPS) marks on the generated test methods."""
    for case in cases:
        func = getattr(case.cls, case.name)
        if case.name in SKIPS and case.mode in SKIPS[case.name][0]:
            func = pytest.mark.skip(reason=SKIPS[case.name][1])(func)
        entry = xfails.get(case.name)
        if entry is not None and case.mode in entry.modes:
            func = pytest.mark.xfail(strict=True, reason=entry.reason)(func)
        setattr(case.cls, case.name, func)


_onnx_home = tempfile.mkdtemp(prefix="gpuinfer-onnx-home-")
atexit.register(shutil.rmtree, _onnx_home, ignore_errors=True)


def _private_onnx_home() -> None:
    """The runner writes the "light" models' generated test data under $ONNX_HOME: keep it private
    (one folder per process, so parallel workers never read each other's half-written files)."""
    os.environ["ONNX_HOME"] = os.path.join(_onnx_home, str(os.getpid()))
    os.environ.pop("ONNX_MODELS", None)


ALL_CASES: list[Case] = []
_XFAILS = read_xfails()
with warnings.catch_warnings():  # onnx computes the node tests' expected outputs here, noisily
    warnings.simplefilter("ignore", RuntimeWarning)
    for _mode in MODES:
        _classes, _cases = build_suite(_mode)
        _mark(_cases, _XFAILS)
        globals().update(_classes)
        ALL_CASES.extend(_cases)
del _mode, _classes, _cases


@pytest.fixture(scope="module", autouse=True)
def _onnx_home_fixture():
    saved = {k: os.environ.get(k) for k in ("ONNX_HOME", "ONNX_MODELS")}
    _private_onnx_home()
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_xfail_list_names_real_tests():
    """Every line of the xfail list names a test of this suite (a renamed or removed test is stale)."""
    names = {c.name for c in ALL_CASES}
    stale = sorted(set(_XFAILS) - names)
    assert not stale, f"{XFAIL_FILE.name} lists tests that do not exist: {stale[:20]}"
    assert all(entry.reason for entry in _XFAILS.values())


def test_test_names_are_distinct_across_kinds():
    """The xfail list keys on test names alone, so no two kinds may share one."""
    seen: dict[str, str] = {}
    for case in ALL_CASES:
        if case.mode != MODES[0]:
            continue
        assert seen.setdefault(case.name, case.kind) == case.kind, case.name


# --- gpuinfer.backend itself, and the harness's own logic ----------------------------------------
def _add_model() -> onnx.ModelProto:
    node = helper.make_node("Add", ["a", "b"], ["sum"])
    graph = helper.make_graph(
        [node], "add", [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [2, 3]),
                        helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("sum", onnx.TensorProto.FLOAT, [2, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_backend_prepare_runs_list_and_dict_inputs_in_every_mode():
    import gpuinfer.backend as backend

    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((2, 3), np.float32)
    for mode in ("per_tensor", "reduce", "reuse", "arena"):
        rep = backend.prepare(_add_model(), "CPU", memory_mode=mode)
        assert rep.session.memory_mode == mode
        by_list, by_dict = rep.run([a, b]), rep.run({"b": b, "a": a})
        np.testing.assert_array_equal(by_list[0], a + b)
        np.testing.assert_array_equal(by_dict["sum"], a + b)
        assert by_list.sum is by_list[0] and len(by_list) == 1


def test_backend_default_mode_comes_from_class_then_module(monkeypatch):
    import gpuinfer.backend as backend

    assert backend.backend_for("arena").prepare(_add_model()).session.memory_mode == "arena"
    monkeypatch.setattr(backend, "DEFAULT_MEMORY_MODE", "reuse")
    assert backend.prepare(_add_model()).session.memory_mode == "reuse"
    with pytest.raises(errors.GpuinferError, match="memory_mode"):
        backend.prepare(_add_model(), memory_mode="bogus")
    with pytest.raises(TypeError, match="nonsense"):
        backend.prepare(_add_model(), nonsense=1)


def test_backend_run_node_and_devices():
    import gpuinfer.backend as backend

    node = helper.make_node("Add", ["x", "y"], ["z"])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = backend.run_node(node, [x, np.array(2.0, np.float32)])
    np.testing.assert_array_equal(out[0], x + 2)
    assert backend.supports_device("CPU") and not backend.supports_device("TPU")
    assert not backend.supports_device("CUDA:1")
    with pytest.raises(errors.InputError, match="'b'"):
        backend.prepare(_add_model()).run([x, [x]])  # a list fed to a tensor input is refused
    with pytest.raises(errors.InputError, match="3 inputs given"):
        backend.prepare(_add_model()).run([x, x, x])


def test_classify_names_the_failure():
    assert classify(errors.UnsupportedOpError([("", "Foo", "n", 17), ("ai.onnx.ml", "Bar", "m", 1)])) == \
        "unsupported ops Foo, ai.onnx.ml::Bar"
    exc = errors.NodeExecutionError("node 'Cast#0' (Cast, opset 25): Cast: unsupported target type INT4")
    assert classify(exc) == "Cast kernel fails: unsupported target type INT4"
    try:
        np.testing.assert_allclose(np.ones(2), np.zeros(2))
    except AssertionError as mismatch:
        assert classify(mismatch) == "mismatch (beyond rtol/atol)"
    assert classify(TypeError("boom")).startswith("bug: TypeError")  # no traceback: blame gpuinfer
    try:
        len(np.float32(1.0))
    except TypeError as harness:
        assert classify(harness).startswith("harness error: TypeError")


def test_update_keeps_hand_written_reasons_and_replaces_stale_ones():
    case = Case("per_tensor", "node", "test_x_cpu", object, None)
    arena = Case("arena", "node", "test_x_cpu", object, None)
    fails = [Outcome(case, "failed", "mismatch in Foo (beyond rtol/atol)", 0.0),
             Outcome(arena, "failed", "mismatch in Foo (beyond rtol/atol)", 0.0)]
    stale = {"test_x_cpu": XfailEntry("test_x_cpu", MODES, "unsupported op Foo")}
    assert updated_xfails(fails, stale)["test_x_cpu"].reason == "mismatch in Foo (beyond rtol/atol)"
    hand = {"test_x_cpu": XfailEntry("test_x_cpu", MODES, "random op: expected output is numpy's RNG")}
    assert updated_xfails(fails, hand)["test_x_cpu"] == hand["test_x_cpu"]
    only_arena = updated_xfails(fails[1:], {})["test_x_cpu"]
    assert only_arena.modes == ("arena",) and only_arena.reason.endswith("(only in arena)")
    assert updated_xfails([Outcome(case, "passed", "", 0.0), Outcome(arena, "passed", "", 0.0)], hand) == {}


def test_xfail_file_round_trips(tmp_path):
    entries = {"test_a_cpu": XfailEntry("test_a_cpu", MODES, "unsupported op A"),
               "test_b_cpu": XfailEntry("test_b_cpu", ("arena",), "mismatch in B (only in arena)")}
    write_xfails(entries, tmp_path / "x.txt")
    assert read_xfails(tmp_path / "x.txt") == entries


# --- outside pytest: run every test, classify failures, count ---------------------------------
@dataclass
class Outcome:
    case: Case
    status: str  # "passed" | "failed" | "skipped"
    reason: str  # why it failed (classified), or why skipped
    seconds: float
    detail: str = ""  # last line of the exception


_BLAS_LIMITED: dict[int, object] = {}


def _blas_as_in_pytest() -> None:
    """One BLAS thread per process, as tests/conftest.py sets for pytest: results can depend on it
    (OpenBLAS rounds differently with one thread), and the counts must match what pytest sees."""
    if os.getpid() in _BLAS_LIMITED:
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        _BLAS_LIMITED[os.getpid()] = None
        return
    _BLAS_LIMITED[os.getpid()] = threadpool_limits(limits=1, user_api="blas")


def run_case(case: Case) -> Outcome:
    """Run one generated test (its raw method: marks do not apply) and classify the result."""
    _private_onnx_home()
    _blas_as_in_pytest()
    if case.name in SKIPS and case.mode in SKIPS[case.name][0]:
        return Outcome(case, "skipped", SKIPS[case.name][1], 0.0)
    instance = case.cls(case.name)
    method = getattr(instance, case.name)
    started = time.perf_counter()
    try:
        method()
    except unittest.SkipTest as exc:
        return Outcome(case, "skipped", str(exc), time.perf_counter() - started)
    except BaseException as exc:  # noqa: BLE001 - every failure is data here
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        seconds = time.perf_counter() - started
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()
        return Outcome(case, "failed", classify(exc, _model_of(case)), seconds, detail[0] if detail else "")
    return Outcome(case, "passed", "", time.perf_counter() - started)


def _model_of(case: Case) -> Optional[onnx.ModelProto]:
    rec = case.model_test
    if rec is None:
        return None
    model = getattr(rec, "model", None)
    if model is None and getattr(rec, "model_dir", None):
        path = os.path.join(rec.model_dir, "model.onnx")
        if os.path.exists(path):
            model = onnx.load(path, load_external_data=False)
    return model


def _non_tensor_io(model: Optional[onnx.ModelProto]) -> list[str]:
    if model is None:
        return []
    kinds = set()
    for v in list(model.graph.input) + list(model.graph.output):
        which = v.type.WhichOneof("value")
        if which and which != "tensor_type":
            kinds.add(which.replace("_type", ""))
    return sorted(kinds)


def _first_line(text: str, limit: int = 90) -> str:
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    line = re.sub(r"\s+", " ", line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _kernel_reason(text: str) -> str:
    """'node 'Cast#0' (Cast, opset 28): Cast: bad type' -> 'Cast kernel: bad type' (no node name/opset)."""
    m = re.search(r"\((\w+), opset \d+\)", text)
    op = m.group(1) if m else "a"
    if "failed on inputs" in text and "]: " in text:
        message = text.split("]: ", 1)[1]
    elif m:
        message = text[m.end():].lstrip(": ")
    else:
        message = text
    if message.startswith(op + ": "):
        message = message[len(op) + 2:]
    return f"{op} kernel fails: {_first_line(message, 80)}"


def _ops_of(model: Optional[onnx.ModelProto]) -> str:
    """' in Resize' for a test model with few op types ('' when unknown or many)."""
    if model is None:
        return ""
    ops = sorted({n.op_type for n in model.graph.node} - {"Constant"})
    return f" in {', '.join(ops)}" if 0 < len(ops) <= 2 else ""


def classify(exc: BaseException, model: Optional[onnx.ModelProto] = None) -> str:
    """A short reason line for a failed test, derived from the exception (and the model's types)."""
    non_tensor = _non_tensor_io(model)
    if isinstance(exc, errors.UnsupportedOpError):
        ops = sorted({(f"{d}::{o}" if d else o) for d, o, _, _ in exc.missing})
        return ("unsupported op " if len(ops) == 1 else "unsupported ops ") + ", ".join(ops)
    if non_tensor and isinstance(exc, errors.InputError):
        return f"{'/'.join(non_tensor)} inputs not supported (InputError: {_first_line(exc, 60)})"
    if isinstance(exc, errors.ModelLoadError):  # InvalidModelError included
        return f"load fails ({type(exc).__name__}): {_first_line(exc, 70)}"
    if isinstance(exc, errors.NodeExecutionError):
        return _kernel_reason(str(exc))
    if isinstance(exc, errors.InputError):
        return f"feeds rejected (InputError): {_first_line(exc, 70)}"
    if isinstance(exc, errors.GpuinferError):
        return f"run fails ({type(exc).__name__}): {_first_line(exc, 70)}"
    if isinstance(exc, AssertionError):
        text = str(exc)
        if "incorrect shape" in text:
            return f"wrong output shape{_ops_of(model)}"
        if "Items are not equal" in text:  # assert_equal on dtypes (or output count)
            return f"wrong output dtype{_ops_of(model)}" if "dtype" in text else "wrong number of outputs"
        if "Arrays are not equal" in text:
            return f"mismatch{_ops_of(model)} (exact compare)"
        if "Not equal to tolerance" in text:
            return f"mismatch{_ops_of(model)} (beyond rtol/atol)"
        return f"assertion: {_first_line(text, 70)}"
    if _raised_in_gpuinfer(exc):
        return f"bug: {type(exc).__name__} escapes gpuinfer: {_first_line(exc, 60)}"
    return f"harness error: {type(exc).__name__}: {_first_line(exc, 60)}"


_GPUINFER_DIR = os.path.dirname(os.path.abspath(errors.__file__))


def _raised_in_gpuinfer(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc`` lies in the gpuinfer package (else onnx's runner)."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is None or os.path.abspath(last).startswith(_GPUINFER_DIR + os.sep)


def iter_cases(modes=MODES, kinds=None, pattern: Optional[str] = None) -> Iterator[Case]:
    rx = re.compile(pattern) if pattern else None
    for case in ALL_CASES:
        if case.mode in modes and (kinds is None or case.kind in kinds) and (rx is None or rx.search(case.name)):
            yield case


def run_all(cases: list[Case], jobs: int = 1, progress: Optional[Callable[[Outcome], None]] = None
            ) -> list[Outcome]:
    """Run ``cases`` (in ``jobs`` worker processes when > 1); outcomes in the order given."""
    if jobs <= 1:
        out = []
        for case in cases:
            out.append(run_case(case))
            if progress:
                progress(out[-1])
        return out
    import multiprocessing as mp

    keys = [(c.mode, c.name) for c in cases]
    results: dict[tuple, Outcome] = {}
    with mp.get_context("fork").Pool(jobs, maxtasksperchild=200) as pool:
        for key, status, reason, seconds, detail in pool.imap_unordered(_run_key, keys, chunksize=8):
            case = _BY_KEY[key]
            results[key] = Outcome(case, status, reason, seconds, detail)
            if progress:
                progress(results[key])
    return [results[k] for k in keys]


_BY_KEY = {(c.mode, c.name): c for c in ALL_CASES}


def _run_key(key: tuple) -> tuple:
    o = run_case(_BY_KEY[key])
    return key, o.status, o.reason, o.seconds, o.detail


def counts(outcomes: list[Outcome]) -> dict[tuple[str, str], dict[str, int]]:
    table: dict[tuple[str, str], dict[str, int]] = {}
    for o in outcomes:
        row = table.setdefault((o.case.kind, o.case.mode), {"passed": 0, "failed": 0, "skipped": 0})
        row[o.status] += 1
    return table


def format_counts(outcomes: list[Outcome]) -> str:
    table = counts(outcomes)
    kinds = [k for k in KINDS.values() if any(key[0] == k for key in table)]
    modes = [m for m in MODES if any(key[1] == m for key in table)]
    lines = [f"{'kind':<18} {'mode':<11} {'passed':>7} {'failed':>7} {'skipped':>8} {'total':>6}"]
    for kind in kinds:
        for mode in modes:
            row = table.get((kind, mode))
            if row:
                total = sum(row.values())
                lines.append(f"{kind:<18} {mode:<11} {row['passed']:>7} {row['failed']:>7} "
                             f"{row['skipped']:>8} {total:>6}")
    for mode in modes:
        rows = [v for (k, m), v in table.items() if m == mode]
        lines.append(f"{'all':<18} {mode:<11} {sum(r['passed'] for r in rows):>7} "
                     f"{sum(r['failed'] for r in rows):>7} {sum(r['skipped'] for r in rows):>8} "
                     f"{sum(sum(r.values()) for r in rows):>6}")
    return "\n".join(lines)


def format_reasons(outcomes: list[Outcome], top: int = 25) -> str:
    """Failure reasons grouped by count (a test failing in both modes counts once)."""
    by_reason: dict[str, set] = {}
    for o in outcomes:
        if o.status == "failed":
            by_reason.setdefault(o.reason, set()).add(o.case.name)
    ranked = sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return "\n".join(f"{len(names):>5} tests: {reason}" for reason, names in ranked[:top])


_REASON_KINDS = [  # (kind, regex over an auto-derived reason), as classify() writes them
    ("unsupported", r"^unsupported ops? "), ("io", r"^\S+ inputs not supported"),
    ("load", r"^load fails "), ("kernel", r"^\w+ kernel fails: "), ("mismatch", r"^mismatch\b"),
    ("shape", r"^wrong output shape"), ("dtype", r"^wrong output dtype"), ("count", r"^wrong number of outputs"),
    ("feeds", r"^feeds rejected "), ("run", r"^run fails "), ("assertion", r"^assertion: "), ("bug", r"^bug: "),
    ("harness", r"^harness error: "),
]


def reason_kind(reason: str) -> Optional[str]:
    """The failure kind of an auto-derived reason; None for a hand-written one (always kept)."""
    for kind, rx in _REASON_KINDS:
        if re.match(rx, reason):
            return kind
    return None


def updated_xfails(outcomes: list[Outcome], old: dict[str, XfailEntry]) -> dict[str, XfailEntry]:
    """The xfail list the outcomes call for.

    A test still failing keeps its reason when that reason was written by hand or still names the
    same kind of failure (an "unsupported op" test that now fails a compare gets a new reason);
    a new failure gets the reason ``classify`` derives; passing tests leave the list.
    """
    failing: dict[str, dict[str, Outcome]] = {}
    ran: dict[str, set] = {}
    for o in outcomes:
        ran.setdefault(o.case.name, set()).add(o.case.mode)
        if o.status == "failed":
            failing.setdefault(o.case.name, {})[o.case.mode] = o
    entries: dict[str, XfailEntry] = {}
    for name, entry in old.items():  # tests not run this time keep their line as it was
        if name not in ran:
            entries[name] = entry
    for name, by_mode in failing.items():
        modes = set(by_mode)
        if name in old:  # modes not run this time keep what the list said about them
            modes |= set(old[name].modes) - ran[name]
        modes_t = tuple(m for m in MODES if m in modes)
        reasons = [by_mode[m].reason for m in MODES if m in by_mode]
        reason = reasons[0] + (f" (only in {'/'.join(modes_t)})" if modes_t != MODES else "")
        if name in old and reason_kind(old[name].reason) in (None, reason_kind(reason)):
            reason = old[name].reason  # hand-written, or still failing the same way
        entries[name] = XfailEntry(name, modes_t, reason)
    return entries


def main(argv: Optional[list[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.test_onnx_backend", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update-xfail", action="store_true",
                        help=f"rewrite {XFAIL_FILE.name} from the failures of this run")
    parser.add_argument("--count", action="store_true", help="print passed/failed per kind and mode")
    parser.add_argument("--reasons", action="store_true", help="print failure reasons grouped by count")
    parser.add_argument("--mode", action="append", choices=MODES, help="only this mode (repeatable)")
    parser.add_argument("--kind", action="append", choices=list(KINDS.values()), help="only this kind")
    parser.add_argument("-k", "--pattern", help="only tests whose name matches this regex")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--slowest", type=int, default=0, help="print the N slowest tests")
    parser.add_argument("--show", action="store_true", help="print each failure's exception line")
    parser.add_argument("--device", choices=("cpu", "strict", "cuda"), default=SUITE_DEVICE or "cpu",
                        help="run on numpy (cpu) or on the strict CuPy stand-in (the CUDA path)")
    args = parser.parse_args(argv)
    wanted = None if args.device == "cpu" else args.device
    if wanted != SUITE_DEVICE:  # the suite's classes are built at import: start again on that device
        env = dict(os.environ, GPUINFER_SUITE_DEVICE=wanted or "")
        os.execve(sys.executable, [sys.executable, "-m", "tests.test_onnx_backend",
                                   *(argv if argv is not None else sys.argv[1:])], env)
    if not (args.update_xfail or args.count or args.reasons or args.slowest or args.show):
        args.count = True
    cases = list(iter_cases(tuple(args.mode or MODES), args.kind, args.pattern))
    started = time.perf_counter()
    done = [0]

    def progress(_o: Outcome) -> None:
        done[0] += 1
        if sys.stderr.isatty() and done[0] % 50 == 0:
            print(f"\r{done[0]}/{len(cases)}", end="", file=sys.stderr, flush=True)

    outcomes = run_all(cases, args.jobs, progress)
    wall = time.perf_counter() - started
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if args.count:
        print(format_counts(outcomes))
        per_mode = {m: sum(o.seconds for o in outcomes if o.case.mode == m) for m in MODES}
        print("test time (summed over tests): " + ", ".join(f"{m} {s:.1f}s" for m, s in per_mode.items())
              + f"; wall {wall:.1f}s with {args.jobs} job(s)")
    if args.reasons:
        print(format_reasons(outcomes, top=1000))
    if args.show:
        for o in outcomes:
            if o.status == "failed":
                print(f"{o.case.name} [{o.case.mode}] {o.reason}\n    {o.detail[:300]}")
    if args.slowest:
        for o in sorted(outcomes, key=lambda o: -o.seconds)[: args.slowest]:
            print(f"{o.seconds:8.2f}s  {o.case.name} [{o.case.mode}] {o.status}")
    if args.update_xfail and SUITE_DEVICE is not None:
        print("--update-xfail writes the numpy device's list; run it without --device", file=sys.stderr)
        return 2
    if args.update_xfail:
        old = read_xfails()
        new = updated_xfails(outcomes, old)
        write_xfails(new)
        gone = sorted(set(old) - set(new))
        added = sorted(set(new) - set(old))
        print(f"{XFAIL_FILE}: {len(new)} entries ({len(added)} added, {len(gone)} removed as passing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
