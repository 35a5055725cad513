"""``memory_limit_bytes`` gives the same answer on every identical run, and the ceiling without one
is the memory the device can give now (available host memory on the CPU)."""
from __future__ import annotations

import re

import numpy as np
import pytest

import gpuinfer
from gpuinfer.backends.numpy_backend import NumpyBackend
from gpuinfer.plan import MODES
from tests.model_zoo import shared_available, shared_feeds, shared_model_path
from tests.shape_chain_models import nonzero_feeds, nonzero_model, resize_chain, resize_chain_feeds

RUNS = 3


def _answers(model, feeds: dict, mode: str, limit: int, runs: int = RUNS) -> list:
    """Per run: its counted peak, or "refused"; the pool's held bytes must not drift on refusals."""
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode, memory_limit_bytes=limit)
    answers, held_after_refusals = [], set()
    for _ in range(runs):
        try:
            sess.run(None, feeds)
        except gpuinfer.MemoryLimitError as exc:
            assert str(limit) in str(exc)
            answers.append("refused")
            held_after_refusals.add(sess.held_bytes)  # kept blocks only: a refused run's own bytes went back
            assert sess.held_bytes <= limit and len(held_after_refusals) == 1, f"{mode}: {held_after_refusals}"
            continue
        peak = sess.memory_report().peak_bytes
        assert peak <= limit, f"{mode}: a run under memory_limit_bytes={limit} peaked at {peak}"
        answers.append(peak)
    return answers


def _first_peaks(model, feeds: dict, mode: str) -> tuple[int, int]:
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode)
    sess.run(None, feeds)
    first = sess.memory_report().peak_bytes
    sess.run(None, feeds)
    return first, sess.memory_report().peak_bytes


def _same_answer_every_run(model, feeds: dict, mode: str, runs: int = RUNS) -> None:
    first, later = _first_peaks(model, feeds, mode)
    for limit in sorted({first, later, first - 1, later - 1}):
        answers = _answers(model, feeds, mode, limit, runs)
        kinds = {"refused" if a == "refused" else "ran" for a in answers}
        assert len(kinds) == 1, f"{mode}, limit {limit} (first run peaked {first}, later {later}): {answers}"
    assert _answers(model, feeds, mode, min(first, later) - 1, 1) == ["refused"]
    assert "refused" not in _answers(model, feeds, mode, max(first, later), runs)


@pytest.mark.parametrize("mode", MODES)
def test_same_limit_same_answer_static_shapes(mode):
    _same_answer_every_run(resize_chain("div", dynamic=True), resize_chain_feeds(), mode)


@pytest.mark.parametrize("mode", MODES)
def test_same_limit_same_answer_data_dependent_shapes(mode):
    """NonZero: the plan cannot see the sizes; the allocator holds the run to the limit, and a
    finished plan that would not fit is not adopted, so later runs repeat the first."""
    _same_answer_every_run(nonzero_model(), nonzero_feeds(), mode)


@pytest.mark.skipif(not shared_available() or not shared_model_path("u2netp.onnx").exists(),
                    reason="u2netp.onnx is not in ../shared/models on this machine")
@pytest.mark.parametrize("mode", MODES)
def test_same_limit_same_answer_u2netp(mode):
    path, feeds = shared_model_path("u2netp.onnx"), shared_feeds("u2netp.onnx")
    sess = gpuinfer.InferenceSession(path, device="cpu", memory_mode=mode)
    sess.run(None, feeds)
    first = sess.memory_report().peak_bytes
    assert _answers(path, feeds, mode, first, 2) == [first, first]
    assert _answers(path, feeds, mode, first - 1, 2) == ["refused", "refused"]


def test_refusal_names_a_mode_that_fits_with_its_planned_figure():
    model, feeds = resize_chain("mul"), resize_chain_feeds()
    arena = gpuinfer.InferenceSession(model, device="cpu", memory_mode="arena")
    arena_need = arena.plan_for(feeds).need_bytes
    per_tensor_peak = _first_peaks(model, feeds, "per_tensor")[0]
    assert arena_need < per_tensor_peak
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode="per_tensor", memory_limit_bytes=arena_need)
    with pytest.raises(gpuinfer.MemoryLimitError) as info:
        sess.run(None, feeds)
    text = str(info.value)
    assert f"needs {per_tensor_peak} bytes" in text  # the figure the run would have reached
    assert f"memory_mode='arena' would fit: its plan needs {arena_need} bytes" in text
    arena_limited = gpuinfer.InferenceSession(model, device="cpu", memory_mode="arena", memory_limit_bytes=arena_need)
    arena_limited.run(None, feeds)
    assert arena_limited.memory_report().peak_bytes == arena_need  # the advice was right


def test_refusal_with_no_mode_fitting_says_so():
    sess = gpuinfer.InferenceSession(resize_chain("mul"), device="cpu", memory_mode="reuse", memory_limit_bytes=4096)
    with pytest.raises(gpuinfer.MemoryLimitError, match=r"no mode fits: the least any needs is \d+ bytes"):
        sess.run(None, resize_chain_feeds())


def test_report_names_the_ceiling():
    model, feeds = resize_chain("mul"), resize_chain_feeds()
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode="arena")
    sess.run(None, feeds)
    report = sess.memory_report()
    assert report.memory_ceiling == "available host memory"
    assert report.peak_bytes < report.memory_ceiling_bytes
    limited = gpuinfer.InferenceSession(model, device="cpu", memory_mode="arena", memory_limit_bytes=10**9)
    limited.run(None, feeds)
    assert (limited.memory_report().memory_ceiling, limited.memory_report().memory_ceiling_bytes) == \
        ("memory_limit_bytes", 10**9)


def test_ceiling_is_available_not_total_memory(monkeypatch):
    """With little memory available (far less than the machine has), a run that needs more is refused
    before it allocates, naming the available host memory as the ceiling."""
    model, feeds = resize_chain("mul"), resize_chain_feeds()
    need = _first_peaks(model, feeds, "per_tensor")[0]
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode="per_tensor")
    total = sess._backend.total_memory()
    assert total is None or total > 100 * need
    monkeypatch.setattr(type(sess._backend), "available_memory", lambda self: need - 1)
    with pytest.raises(gpuinfer.MemoryLimitError, match="available host memory") as info:
        sess.run(None, feeds)
    assert f"({need - 1} bytes now)" in str(info.value) and "memory_mode='arena' would fit" in str(info.value)
    assert sess.held_bytes == 0
    monkeypatch.setattr(type(sess._backend), "available_memory", lambda self: need)
    sess._ceiling.available_cache = None  # a fresh reading (readings are reused for half a second)
    sess.run(None, feeds)
    assert sess.memory_report().memory_ceiling_bytes == need


def test_numpy_available_memory_reads_memavailable():
    backend = NumpyBackend()
    available = backend.available_memory()
    assert available is not None and 0 < available
    total = backend.total_memory()
    assert total is None or available <= total
    try:
        text = open("/proc/meminfo").read()
    except OSError:
        pytest.skip("no /proc/meminfo here")
    listed = int(re.search(r"MemAvailable:\s+(\d+) kB", text).group(1)) * 1024
    assert abs(available - listed) <= max(0.05 * listed, 64 << 20)  # memory moves between the readings
