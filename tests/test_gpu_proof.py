"""bench/gpu_proof.py --dry-run: the GPU proof's steps run end to end on the strict stand-in.

A tiny model keeps it under a minute: what is checked is that every step runs, records its
outcome and that the results file is written with its stand-in label and tables."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx

from tests.tiny_models import conv_net

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_exits_0_and_writes_the_table(tmp_path):
    (tmp_path / "models").mkdir()
    onnx.save(conv_net(), str(tmp_path / "models" / "conv_net.onnx"))
    results = tmp_path / "RESULTS-gpu-dryrun.md"
    done = subprocess.run([sys.executable, "bench/gpu_proof.py", "--dry-run", "--quick", "--models-dir", str(tmp_path),
                           "--results", str(results), "--steps", "measure,torch,tests"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = results.read_text()
    assert "strict CuPy stand-in, not a GPU" in text
    assert "| measure | ok |" in text and "| tests | ok |" in text
    assert "| conv_net.onnx | arena | yes | replayed |" in text  # graphs captured and replayed
    for mode in ("per_tensor", "reduce", "reuse", "arena"):
        assert f"| conv_net.onnx | {mode} | no |" in text


def test_stage_refuses_nothing_it_can_carry_and_prints_the_carry_list(tmp_path):
    done = subprocess.run([sys.executable, "bench/gpu_proof.py", "--stage", str(tmp_path / "staged"),
                           "--models", "mtcnn_pnet"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    if "no shared models" in done.stderr:
        return  # nothing to stage from on this machine
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "staged" / "models" / "mtcnn_pnet.onnx").exists()
    assert (tmp_path / "staged" / "u2net" / "rebuild.py").exists()
    assert "carry: [" in done.stdout and "limit 64 MiB" in done.stdout
