"""The ONNX backend node tests on the strict stand-in: the CUDA path passes what numpy passes.

Runs ``tests/test_onnx_backend.py`` under pytest in a child process with
``GPUINFER_SUITE_DEVICE=strict`` (the suite's classes are built at import for one device), with
the same xfail list as numpy: a test that fails only on the CUDA path fails here.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_node_suite_passes_on_the_strict_device_as_on_numpy():
    env = dict(os.environ, GPUINFER_SUITE_DEVICE="strict")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                           "tests/test_onnx_backend.py", "-k", "NodeModel"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    tail = proc.stdout[-3000:]
    assert proc.returncode == 0, tail
    passed = int(re.search(r"(\d+) passed", tail).group(1))
    assert passed >= 2 * 1840, tail  # both memory modes
