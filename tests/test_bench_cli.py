"""The bench scripts as a user runs them: model paths as arguments, one-line errors, no ../shared needed."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpuinfer.cli.models import light_models_dir

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SCRIPTS = ["blas_bits.py", "conv_throughput.py", "memory_modes.py", "profile_model.py", "run_loop_overhead.py",
           "soak.py", "vs_onnxruntime.py"]
SQUEEZENET = light_models_dir() / "light_squeezenet.onnx"  # ships inside the onnx package


def bench(script: str, *args: str, bench_dir: Path = BENCH, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(bench_dir / script), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def _one_line(result: subprocess.CompletedProcess, script: str, *words: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{script}: error: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert result.stdout == ""  # nothing measured, nothing printed
    return lines[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_missing_model_is_one_line_and_exit_2(script, tmp_path):
    missing = tmp_path / "no_such_model.onnx"
    _one_line(bench(script, missing), script, str(missing), "no such model file or folder")


def test_a_missing_file_among_good_ones_stops_before_measuring(tmp_path):
    missing = tmp_path / "gone.onnx"
    _one_line(bench("memory_modes.py", SQUEEZENET, missing, "--repeat", "1"), "memory_modes.py", "gone.onnx")


def test_a_folder_without_models_is_one_line(tmp_path):
    _one_line(bench("vs_onnxruntime.py", tmp_path), "vs_onnxruntime.py", str(tmp_path), "no .onnx files")


def test_without_the_shared_folder_the_default_is_one_line(tmp_path):
    """A checkout with no ../shared beside it: the scripts copied into such a tree, run with no MODEL."""
    repo = tmp_path / "checkout"
    (repo / "bench").mkdir(parents=True)
    for script in ["common.py", *SCRIPTS]:
        shutil.copy(BENCH / script, repo / "bench" / script)
    os.symlink(ROOT / "tests", repo / "tests")  # the model zoo the scripts read feeds from
    assert not (tmp_path / "shared").exists()
    line = _one_line(bench("vs_onnxruntime.py", bench_dir=repo / "bench"), "vs_onnxruntime.py",
                     "../shared/models", "does not exist")
    assert str(tmp_path / "shared" / "models") in line
    _one_line(bench("soak.py", bench_dir=repo / "bench"), "soak.py", "mtcnn_pnet.onnx")
    # a model named on the command line still runs there
    done = bench("vs_onnxruntime.py", SQUEEZENET, "--repeat", "1", "--modes", "arena", "--threads", "1",
                 bench_dir=repo / "bench")
    assert done.returncode == 0, done.stderr


def _table_row(stdout: str, model: str) -> list[str]:
    rows = [line for line in stdout.splitlines() if line.startswith(f"| {model}")]
    assert rows, stdout
    return [cell.strip() for cell in rows[-1].strip("|").split("|")]


def test_vs_onnxruntime_runs_a_model_given_by_path():
    assert SQUEEZENET.is_file()
    result = bench("vs_onnxruntime.py", SQUEEZENET, "--repeat", "1", "--modes", "arena", "--threads", "1")
    assert result.returncode == 0, result.stderr
    model, ort_ms, arena_ms, ratio = _table_row(result.stdout, str(SQUEEZENET))
    assert float(ort_ms) > 0 and float(arena_ms) > 0
    assert float(ratio) == pytest.approx(float(arena_ms) / float(ort_ms), rel=0.05, abs=0.01)
    assert "error" not in result.stdout


def test_vs_onnxruntime_best_of_processes():
    """--processes K: each model in K fresh processes (K JSON lines), each engine's lowest median kept."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("vs_onnxruntime", BENCH / "vs_onnxruntime.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tries = [{"model": "m", "nodes": 5, "onnxruntime": 10.0, "arena": 30.0},
             {"error": "crashed"},
             {"model": "m", "nodes": 5, "onnxruntime": 12.0, "arena": 21.0}]
    assert module.best_of(tries) == {"model": "m", "nodes": 5, "onnxruntime": 10.0, "arena": 21.0}
    assert module.best_of([{"error": "a"}, {"error": "b"}]) == {"error": "b"}
    result = bench("vs_onnxruntime.py", SQUEEZENET, "--repeat", "1", "--modes", "arena", "--threads", "1",
                   "--processes", "2")
    assert result.returncode == 0, result.stderr
    runs = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(runs) == 2
    _, ort_ms, arena_ms, _ = _table_row(result.stdout, str(SQUEEZENET))
    assert float(ort_ms) == pytest.approx(min(r["onnxruntime"] for r in runs), abs=0.06)
    assert float(arena_ms) == pytest.approx(min(r["arena"] for r in runs), abs=0.06)


def test_memory_modes_runs_a_model_given_by_path():
    result = bench("memory_modes.py", SQUEEZENET, "--repeat", "1", "--threads", "1")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("|")]
    peaks = {}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 11 and cells[1] in ("per_tensor", "reduce", "reuse", "arena"):
            peaks[cells[1]] = float(cells[2])
    assert set(peaks) == {"per_tensor", "reduce", "reuse", "arena"}, result.stdout
    assert peaks["arena"] <= peaks["reduce"] < peaks["per_tensor"]  # the planned modes hold less than one buffer each


def test_profile_model_puts_onnxruntime_beside_gpuinfer():
    import onnx

    result = bench("profile_model.py", SQUEEZENET, "--runs", "2", "--quiet", "--onnxruntime")
    assert result.returncode == 0, result.stderr
    convs = sum(node.op_type == "Conv" for node in onnx.load(SQUEEZENET, load_external_data=False).graph.node)
    ort_rows = [line.split("|") for line in result.stdout.split("| onnxruntime op type |")[1].splitlines()[2:]
                if line.startswith("|")]
    conv_calls = sum(int(row[2]) for row in ort_rows if "Conv" in row[1])  # Conv or FusedConv, by version
    assert conv_calls == convs  # per run: the warm-up run's kernels are not counted
    assert "| Conv+Relu |" in result.stdout.split("| onnxruntime op type |")[0]
    assert "gpuinfer:" in result.stdout and "ms per run in kernels; onnxruntime:" in result.stdout


def test_blas_bits_compares_products_and_a_model():
    """Depths for each shape and a model, checked against products computed here (bytes agree or
    not by inner size, not by the operands' values) and gpuinfer's own load-safety judgement."""
    import numpy as np

    import gpuinfer
    from gpuinfer.runtime.blas_bits import load_safe_products, products_agree

    result = bench("blas_bits.py", SQUEEZENET, "--max-depth", "64", "--step", "32", "--quiet")
    assert result.returncode == 0, result.stderr
    rng = np.random.default_rng(1)
    found = re.findall(r"^- \((\d+), K\) @ \(K, (\d+)\): (\d+) of 2 differ", result.stdout, re.M)
    assert len(found) == 3, result.stdout
    for rows, columns, differ in found:
        expected = sum(not products_agree(rng.standard_normal((int(rows), k), dtype=np.float32),
                                          rng.standard_normal((k, int(columns)), dtype=np.float32), (2,))
                       for k in (32, 64))
        assert int(differ) == expected, (rows, columns)
    row = [line for line in result.stdout.splitlines() if line.startswith(f"| {SQUEEZENET}")]
    assert len(row) == 1, result.stdout
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    assert cells[2] in ("yes", "no")
    graph = gpuinfer.InferenceSession(str(SQUEEZENET), device="cpu").graph
    assert cells[3] == ("yes" if load_safe_products(graph, (2,)) else "no")


def _bench_module(name: str):
    import importlib.util

    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_conv_throughput_counts_each_convs_multiply_adds():
    """Dense, grouped and depthwise convs with padding and stride, their multiply-adds against
    output shapes onnxruntime computes (output channels x pixels x input channels a group x taps)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    specs = [("a", (8, 3, 3, 3), {"pads": [1, 1, 1, 1]}, 3),
             ("b", (8, 4, 5, 3), {"pads": [2, 1, 2, 1], "strides": [2, 1], "group": 2}, 8),
             ("c", (8, 1, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2], "group": 8}, 8)]
    nodes, inits, previous = [], [], "x"
    for name, w, attrs, _ in specs:
        inits.append(numpy_helper.from_array(rng.standard_normal(w).astype(np.float32), f"w_{name}"))
        nodes.append(helper.make_node("Conv", [previous, f"w_{name}"], [name], kernel_shape=list(w[2:]), **attrs))
        previous = name
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n, *_ in specs], inits)
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    feeds = {"x": rng.standard_normal((2, 3, 13, 11)).astype(np.float32)}
    outputs = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    module = _bench_module("conv_throughput")
    convs = module.conv_shapes(data, feeds)
    assert [c["y"] for c in convs] == [list(o.shape) for o in outputs]
    expected = [o.size * (w[1] * w[2] * w[3]) for o, (_, w, _, _) in zip(outputs, specs)]
    assert [module.multiply_adds(c) for c in convs] == expected
    assert [module.depthwise(c) for c in convs] == [False, False, True]


def test_conv_throughput_puts_the_engines_and_the_gemm_floor_side_by_side():
    result = bench("conv_throughput.py", SQUEEZENET, "--runs", "2", "--quiet", "--threads", "1")
    assert result.returncode == 0, result.stderr
    cells = _table_row(result.stdout, str(SQUEEZENET))
    ort_ms, ours, alone = float(cells[3]), float(cells[4]), float(cells[5])
    assert ort_ms > 0 and ours > 0 and alone > 0
    assert float(cells[6]) == pytest.approx(ours / ort_ms, abs=0.01)
    assert float(cells[7]) == pytest.approx(alone / ort_ms, abs=0.01)
    assert cells[2] == "0"  # squeezenet has no depthwise convolution
