"""The ``gpuinfer`` command as a user runs it: a subprocess of the installed script.

Most checks use a tiny Conv/Relu/MaxPool/Sigmoid/Add/Concat model built here (fast to load and
run); the default model (onnx's light SqueezeNet) is run once and u2netp once.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import gpuinfer
from gpuinfer.backends import cuda_unavailable_reason
from gpuinfer.cli.inputs import make_feeds
from gpuinfer.cli.measure import ModeResult, disagreements
from gpuinfer.cli.schema import SCHEMA, validate

SHARED_MODELS = Path(__file__).resolve().parents[3] / "shared" / "models"


def _command() -> list[str]:
    """The installed script (next to this Python first, then on PATH), else ``python -m gpuinfer``."""
    beside = Path(sys.executable).parent / "gpuinfer"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("gpuinfer")
    return [found] if found else [sys.executable, "-m", "gpuinfer"]


def cli(*args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*_command(), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """x[N,3,H,W] -> Conv -> Relu -> MaxPool -> (Conv -> Sigmoid) + pooled, concat with pooled."""
    rng = np.random.default_rng(1)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Sigmoid", ["c2"], ["s2"], name="sigmoid2"),
        helper.make_node("Add", ["s2", "p1"], ["a2"], name="add2"),
        helper.make_node("Concat", ["a2", "p1"], ["y"], axis=1, name="concat"),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16, "h", "w"])], initializer=[w1, w2])
    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def _one_error_line(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# --- run ------------------------------------------------------------------------------------------

def test_run_without_a_model_runs_the_embedded_default():
    result = cli("run", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "light_squeezenet.onnx (default model" in result.stdout
    assert "input 'data_0': shape [1, 3, 224, 224] float32, generated: random normal (seed 0)" in result.stdout
    assert "output 'softmaxout_1': shape [1, 1000, 1, 1] float32" in result.stdout
    assert result.stderr == ""


def test_run_prints_the_dims_it_chose_and_feeds_files(tiny, tmp_path):
    result = cli("run", tiny, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "shape [1, 3, 224, 224]" in result.stdout
    assert "dim 0 'N' -> 1, batch-like name" in result.stdout
    assert "dim 2 'H' -> 224, image H/W default" in result.stdout

    x = np.random.default_rng(5).standard_normal((2, 3, 12, 10)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = cli("run", tiny, "--device", "cpu", "--memory-mode", "reduce", "--input", f"x={tmp_path / 'x.npy'}",
                 "--output", tmp_path / "out.npz")
    assert result.returncode == 0, result.stderr
    want = gpuinfer.InferenceSession(tiny, device="cpu").run(None, {"x": x})[0]
    got = np.load(tmp_path / "out.npz")["y"]
    assert got.tobytes() == want.tobytes()


def test_memory_report_on_u2netp_agrees_with_the_api():
    model = SHARED_MODELS / "u2netp.onnx"
    if not model.is_file():
        pytest.skip(f"shared models are absent ({SHARED_MODELS}); u2netp.onnx is not there")
    result = cli("run", model, "--device", "cpu", "--memory-mode", "arena", "--memory-report", "--repeat", "1")
    assert result.returncode == 0, result.stderr
    printed = {label: int(num.replace(",", "")) for label, num in
               re.findall(r"^\s+(peak, counted|lower bound|planned)\s+[\d.]+ MiB\s+([\d,]+) bytes", result.stdout, re.M)}
    assert set(printed) == {"peak, counted", "lower bound", "planned"}, result.stdout
    assert re.search(r"peak, sampled\s+[\d.]+ MiB\s+[\d,]+ bytes, tracemalloc", result.stdout)
    assert "latency, first run" in result.stdout and "the 10 steps with the most bytes alive" in result.stdout

    # the same run in-process: the CLI's made input (seed 0), created before the session
    x = np.random.default_rng(0).standard_normal((1, 3, 320, 320)).astype(np.float32)
    tracing = tracemalloc.is_tracing()
    try:
        session = gpuinfer.InferenceSession(model, device="cpu", memory_mode="arena", sample_memory=True)
        session.run(None, {"input.1": x})
        report = session.memory_report()
    finally:
        if not tracing:
            tracemalloc.stop()
    assert printed == {"peak, counted": report.peak_bytes, "lower bound": report.lower_bound_bytes,
                       "planned": report.planned_bytes}


# --- compare --------------------------------------------------------------------------------------

def test_compare_writes_json_that_fits_the_schema_and_a_plot(tiny, tmp_path):
    out_json, out_png = tmp_path / "c.json", tmp_path / "c.png"
    result = cli("compare", tiny, "--device", "cpu", "--shape", "x=1,3,48,40", "--repeat", "2",
                 "--json", out_json, "--plot", out_png)
    assert result.returncode == 0, result.stderr
    table = result.stdout
    for mode in gpuinfer.MEMORY_MODES:
        assert re.search(rf"^{mode}\s+[\d.]+ MiB\s+[\d.]+ MiB\s+[\d.]+x", table, re.M), table
    assert "least memory:" in table and "fastest:" in table and "all modes agree bitwise" in table

    document = json.loads(out_json.read_text())
    assert validate(document) == []
    assert document["command"] == "compare" and document["outputs_agree"] is True
    assert [r["mode"] for r in document["results"]] == list(gpuinfer.MEMORY_MODES)
    assert document["recommended"]["least_memory"] in gpuinfer.MEMORY_MODES
    assert document["inputs"][0]["shape"] == [1, 3, 48, 40]
    for entry in document["results"]:
        assert len(entry["run_seconds"]) == 2 and entry["timeline"]
        assert entry["sampled_peak_bytes"] is not None

    import matplotlib.image

    pixels = matplotlib.image.imread(out_png)
    assert pixels.ndim == 3 and float(pixels.std()) > 0


def test_run_json_fits_the_same_schema(tiny, tmp_path):
    out_json = tmp_path / "r.json"
    result = cli("run", tiny, "--device", "cpu", "--shape", "x=1,3,16,16", "--json", out_json)
    assert result.returncode == 0, result.stderr
    document = json.loads(out_json.read_text())
    assert validate(document) == []
    assert document["command"] == "run" and len(document["results"]) == 1
    assert document["outputs_agree"] is None and document["recommended"] is None


def test_outputs_that_differ_are_reported():
    report = gpuinfer.MemoryReport("x", "cpu", 0, 0, 0, None, "off", 0, 0.0, 0, 0, 0.0)
    a = ModeResult("per_tensor", "cpu", report, [0.1], ["y"], [np.array([1.0, np.nan], np.float32)])
    b = ModeResult("arena", "cpu", report, [0.1], ["y"], [np.array([1.0, np.nan], np.float32)])
    c = ModeResult("reduce", "cpu", report, [0.1], ["y"], [np.array([1.0 + 1e-7, np.nan], np.float32)])
    assert disagreements(a, b, bitwise=True) == []
    assert "reduce differs from per_tensor" in disagreements(a, c, bitwise=True)[0]
    assert disagreements(a, c, bitwise=False) == []


def test_the_validator_catches_a_broken_document():
    assert validate({"schema": "gpuinfer-cli/1"}, SCHEMA)
    assert validate([], SCHEMA) == ["$: expected object, got list"]


# --- inputs it makes ------------------------------------------------------------------------------

def test_made_inputs_follow_the_documented_rules():
    specs = [SimpleNamespace(name="input_ids", shape=["batch", "seq"], type="tensor(int64)"),
             SimpleNamespace(name="attention_mask", shape=["batch", "seq"], type="tensor(int64)"),
             SimpleNamespace(name="token_type_ids", shape=["batch", "seq"], type="tensor(int64)"),
             SimpleNamespace(name="sr", shape=[], type="tensor(int64)"),
             SimpleNamespace(name="flags", shape=[None], type="tensor(bool)"),
             SimpleNamespace(name="state", shape=[2, None, 128], type="tensor(float)")]
    feeds, choices = make_feeds(specs, {}, {"input_ids": (1, 7)}, seed=0)
    assert feeds["input_ids"].shape == (1, 7) and feeds["input_ids"].dtype == np.int64
    assert 0 <= feeds["input_ids"].min() and feeds["input_ids"].max() < 1000
    assert feeds["attention_mask"].shape == (1, 7) and (feeds["attention_mask"] == 1).all()
    assert (feeds["token_type_ids"] == 0).all()
    assert feeds["sr"].shape == () and int(feeds["sr"]) == 16000
    assert feeds["flags"].dtype == np.bool_ and feeds["flags"].shape == (16,)
    assert feeds["state"].shape == (2, 16, 128) and feeds["state"].dtype == np.float32
    assert any("bound by another input" in note for note in choices[1].notes)


# --- errors: one line on stderr, exit 2, no traceback --------------------------------------------

def test_python_dash_m_is_the_same_command():
    via_m = subprocess.run([sys.executable, "-m", "gpuinfer", "--version"], capture_output=True, text=True)
    assert via_m.returncode == 0 and via_m.stdout == cli("--version").stdout
    _one_error_line(subprocess.run([sys.executable, "-m", "gpuinfer", "run", "/no/such/model.onnx"],
                                   capture_output=True, text=True), "not found")


@pytest.fixture(scope="module")
def broken_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("broken")
    (root / "notonnx.onnx").write_text("this is not a protobuf")
    node = helper.make_node("FancyOp", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                      helper.make_opsetid("com.example", 1)]), root / "fancy.onnx")
    np.save(root / "f64.npy", np.zeros((1, 3, 8, 8)))
    return {"notonnx": root / "notonnx.onnx", "fancy": root / "fancy.onnx", "f64": root / "f64.npy"}


ERROR_CASES = {
    "missing model file": (["run", "/no/such/model.onnx"], ["not found"]),
    "not an ONNX file": (["run", "{notonnx}"], ["not an ONNX model"]),
    "unsupported op": (["run", "{fancy}"], ["com.example::FancyOp"]),
    "--input without =": (["run", "{tiny}", "--input", "x"], ["--input"]),
    "--input file missing": (["run", "{tiny}", "--input", "x=/no/such.npy"], ["not found"]),
    "--input unknown name": (["run", "{tiny}", "--input", "z={f64}"], ["'z'", "not an input"]),
    "--input wrong dtype": (["run", "{tiny}", "--input", "x={f64}"], ["float64"]),
    "--shape not integers": (["run", "{tiny}", "--shape", "x=1,3,a,b"], ["--shape"]),
    "--shape wrong rank": (["run", "{tiny}", "--shape", "x=1,3"], ["rank"]),
    "--shape fixed dim": (["run", "{tiny}", "--shape", "x=1,4,8,8"], ["dimension 1"]),
    "unknown memory mode": (["run", "{tiny}", "--memory-mode", "fastest"], ["--memory-mode", "fastest"]),
    "unknown device": (["compare", "{tiny}", "--device", "tpu"], ["--device", "tpu"]),
    "usage error": (["run", "{tiny}", "--repeat", "0"], ["--repeat"]),
    "no command": ([], ["command"]),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_are_one_line_and_exit_2(case, tiny, broken_files):
    args, words = ERROR_CASES[case]
    names = {"tiny": tiny, **broken_files}
    _one_error_line(cli(*[a.format(**names) for a in args]), *words)


def test_cuda_asked_for_without_cuda_is_one_line(tiny):
    if cuda_unavailable_reason() is None:
        pytest.skip("CUDA is usable here")
    _one_error_line(cli("run", tiny, "--device", "cuda"), "cuda")


def test_debug_shows_the_traceback():
    result = cli("run", "/no/such/model.onnx", "--debug")
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_plot_without_matplotlib_says_how_to_install_it(tiny, tmp_path):
    blocker = tmp_path / "blocker" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('matplotlib hidden by the test')\n")
    result = cli("run", tiny, "--plot", tmp_path / "p.png", env={"PYTHONPATH": str(blocker.parent)})
    _one_error_line(result, "matplotlib", "gpuinfer[plot]")
