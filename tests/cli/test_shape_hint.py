"""A model that fails on the sizes the CLI guessed for its dynamic dims asks for ``--shape``, with an example."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import gpuinfer
from tests.cli.test_cli import SHARED_MODELS, cli

SILERO = SHARED_MODELS / "silero_vad.onnx"


def _reshape_model(path: Path, width: int) -> Path:
    """x[1, T] -> Reshape(-1, width) -> Relu: runs only when T is a multiple of ``width``."""
    shape = numpy_helper.from_array(np.array([-1, width], dtype=np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"], name="rows"),
             helper.make_node("Relu", ["r"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "rows", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, width])],
                              initializer=[shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _error_line(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _example_flags(line: str) -> list[str]:
    match = re.search(r"e\.g\. ((?:--shape \S+ ?)+)", line)
    assert match, line
    return shlex.split(match.group(1))


def test_synthetic_model_failing_on_the_guess_gets_a_working_example(tmp_path):
    model = _reshape_model(tmp_path / "rows.onnx", 64)
    line = _error_line(cli("run", model, "--device", "cpu"))
    assert "guessed" in line and "x [1, 16]" in line and "'rows' (Reshape" in line
    assert "--shape x=1,64" in line and "the model runs with these" in line
    rerun = cli("run", model, "--device", "cpu", *_example_flags(line))
    assert rerun.returncode == 0, rerun.stderr
    assert "output 'y': shape [1, 64] float32" in rerun.stdout


def test_when_no_size_tried_runs_the_example_shows_what_to_replace(tmp_path):
    model = _reshape_model(tmp_path / "wide.onnx", 3001)  # a prime: no common size is a multiple
    line = _error_line(cli("run", model, "--device", "cpu"))
    assert "--shape x=1,16 with the guessed sizes replaced" in line and "no common size" in line


def test_compare_asks_for_shape_too(tmp_path):
    model = _reshape_model(tmp_path / "rows.onnx", 64)
    line = _error_line(cli("compare", model, "--device", "cpu"))
    assert "--shape x=1,64" in line


def test_failure_on_shapes_the_user_gave_is_reported_as_it_is(tmp_path):
    model = _reshape_model(tmp_path / "rows.onnx", 64)
    line = _error_line(cli("run", model, "--device", "cpu", "--shape", "x=1,10"))
    assert "guessed" not in line and "'rows' (Reshape" in line


@pytest.mark.skipif(not SILERO.is_file(), reason="shared model silero_vad.onnx is absent")
def test_silero_without_shape_asks_for_it_with_an_example_that_runs():
    line = _error_line(cli("run", SILERO, "--device", "cpu"))
    assert line.startswith("gpuinfer: error: ") and "--shape" in line
    flags = _example_flags(line)
    named = dict(flag.split("=", 1) for flag in flags if flag != "--shape")
    assert set(named) == {"input", "state"}  # sr is a fixed scalar: nothing to guess
    assert named["state"] == "2,1,128"  # the state's batch must match the audio's
    rerun = cli("run", SILERO, "--device", "cpu", *flags)
    assert rerun.returncode == 0, rerun.stderr
    assert "output 'stateN': shape [2, 1, 128] float32" in rerun.stdout


@pytest.mark.skipif(not SILERO.is_file(), reason="shared model silero_vad.onnx is absent")
def test_silero_missing_feeds_in_the_python_api_name_their_shapes():
    sess = gpuinfer.InferenceSession(str(SILERO), device="cpu")
    with pytest.raises(gpuinfer.InputError, match=r"'state': shape \[2, \?, 128\] float32.*'sr': shape \[\] int64"):
        sess.run(None, {"input": np.zeros((1, 512), np.float32)})
