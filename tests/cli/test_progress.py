"""The progress bar: drawn on a terminal by default, never into pipes, never with ``--quiet``.

The helper is checked with its terminal test injected; the command is checked for real, run in
a pseudo-terminal (what a user's shell gives it) and through pipes.
"""
from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from gpuinfer.cli.progress import Progress

from tests.cli.test_cli import _command, cli


def _drawn(terminal: bool, enabled: bool = True) -> str:
    screen = io.StringIO()
    with Progress(4, "compare u2net.onnx", enabled=enabled, terminal=lambda: terminal, file=screen) as bar:
        assert bar.drawing == (terminal and enabled)
        for mode in ("per_tensor", "reduce", "reuse", "arena"):
            bar.show(mode)
            bar.advance()
    return screen.getvalue()


def test_the_helper_draws_the_model_and_mode_on_a_terminal():
    text = _drawn(terminal=True)
    assert "compare u2net.onnx [per_tensor]" in text or "compare u2net.onnx [arena]" in text, text
    assert "4/4" in text  # the count reached the end before the bar was erased


def test_the_helper_draws_nothing_off_a_terminal_or_when_disabled():
    assert _drawn(terminal=False) == ""
    assert _drawn(terminal=True, enabled=False) == ""


def test_the_default_terminal_check_sees_pipes(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # StringIO.isatty() is False, as a pipe's is
    with Progress(3, "run x.onnx") as bar:
        assert not bar.drawing


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], initializer=[w])
    path = tmp_path_factory.mktemp("progress") / "small_net.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def _in_a_terminal(*args: str, timeout: float = 240) -> tuple[int, str]:
    """Run the command with stdout and stderr on a pseudo-terminal; its return code and all it wrote."""
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "160"}
    proc = subprocess.Popen([*_command(), *map(str, args)], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env=env, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the command closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_compare_on_a_terminal_draws_a_bar_naming_model_and_mode(small_model):
    code, text = _in_a_terminal("compare", small_model, "--device", "cpu", "--repeat", "2")
    assert code == 0, text
    assert "compare small_net.onnx [" in text, text  # the bar: command, model, then the mode running
    assert "compared 4 modes" in text  # the results themselves


def test_quiet_is_accepted_and_draws_no_bar(small_model):
    code, text = _in_a_terminal("compare", small_model, "--device", "cpu", "--repeat", "2", "--quiet")
    assert code == 0, text
    assert "compared 4 modes" in text
    assert "compare small_net.onnx [" not in text and "\x1b[?25l" not in text, text  # no bar, no hidden cursor
    code, text = _in_a_terminal("run", small_model, "--device", "cpu", "--repeat", "3", "-q")
    assert code == 0 and "ran per_tensor" in text and "run small_net.onnx [" not in text, text


def test_piped_output_has_no_bar(small_model):
    result = cli("run", small_model, "--device", "cpu", "--repeat", "3")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "run small_net.onnx [" not in result.stdout
