"""``gpuinfer run --plan-only``: the plan's memory report, nothing run."""
from __future__ import annotations

import io
import json
from argparse import Namespace

import gpuinfer
from gpuinfer.cli.commands import run_command
from gpuinfer.cli.main import build_parser
from tests.tiny_models import conv_net


def _args(*argv: str) -> Namespace:
    return build_parser().parse_args(["run", *argv])


def test_plan_only_prints_the_plan_of_the_given_shape(tmp_path):
    model = tmp_path / "net.onnx"
    model.write_bytes(conv_net(channels=8).SerializeToString())
    out = io.StringIO()
    report_file = tmp_path / "plan.json"
    assert run_command(_args(str(model), "--device", "cpu", "--memory-mode", "arena", "--shape", "x=1,3,32,32",
                             "--plan-only", "--quiet", "--json", str(report_file)), out) == 0
    text = out.getvalue()
    expected = gpuinfer.InferenceSession(str(model), device="cpu", memory_mode="arena").plan_memory({"x": (1, 3, 32, 32)})
    assert f"planned bytes : {expected.planned_bytes} " in text
    assert "nothing run" in text and "ran arena" not in text and "top tensors alive" in text
    assert json.loads(report_file.read_text())["planned_bytes"] == expected.planned_bytes


def test_plan_only_with_auto_and_a_limit_says_which_mode(tmp_path):
    model = tmp_path / "net.onnx"
    model.write_bytes(conv_net(channels=8).SerializeToString())
    per_tensor = gpuinfer.InferenceSession(str(model), device="cpu").plan_memory({"x": (1, 3, 32, 32)})
    out = io.StringIO()
    run_command(_args(str(model), "--device", "cpu", "--memory-mode", "auto", "--memory-limit",
                      str(per_tensor.need_bytes - 1), "--shape", "x=1,3,32,32", "--plan-only", "--quiet"), out)
    assert "memory_mode='auto' chose" in out.getvalue() and "per_tensor'" not in out.getvalue().split("chose")[1][:14]
