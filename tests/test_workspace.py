"""``gpuinfer.Workspace``: sessions run in turn share one arena block sized to the largest plan."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import gpuinfer
from tests.model_zoo import shared_available, shared_model_path

OCR = ["ch_PP-OCRv4_det_infer.onnx", "ch_ppocr_mobile_v2.0_cls_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx"]
needs_ocr = pytest.mark.skipif(not shared_available() or not all(shared_model_path(n).exists() for n in OCR),
                               reason="PP-OCR det/cls/rec not in /work/shared/models")


def _feeds(det_hw: int, rec_w: int) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal(shape, dtype=np.float32)}
            for shape in ((1, 3, det_hw, det_hw), (1, 3, 48, 192), (1, 3, 48, rec_w))]


def _pipeline(device: str, det_hw: int, rec_w: int) -> None:
    feeds = _feeds(det_hw, rec_w)
    ws = gpuinfer.Workspace(device=device)
    sessions = [ws.session(shared_model_path(name)) for name in OCR]
    got = [[s.run(None, f) for s in sessions for f in [feeds[sessions.index(s)]]] for _ in range(2)][-1]
    separate, plans, peaks = [], [], []
    for name, f in zip(OCR, feeds):
        alone = gpuinfer.InferenceSession(shared_model_path(name), device=device, memory_mode="arena")
        separate.append(alone.run(None, f))
        plans.append(alone.memory_report().planned_bytes)
        peaks.append(alone.memory_report().peak_bytes)
    for mine, theirs in zip(got, separate):
        for a, b in zip(mine, theirs):
            np.testing.assert_array_equal(a, b)
    report = ws.memory_report()
    # on the CPU the feeds are the caller's: the peak is the shared block; on CUDA a run's peak also
    # counts what it holds beside its plan (uploaded feeds, device-made constants), as a lone run does
    beside = max(peak - plan for peak, plan in zip(peaks, plans)) if device != "cpu" else 0
    assert report.peak_bytes <= 1.05 * max(plans) + beside, (report.peak_bytes, plans, peaks)
    assert report.block_bytes == max(plans) and report.largest_plan_bytes == max(plans)
    assert report.separate_bytes == sum(plans) and report.saving_bytes == sum(plans) - max(plans)
    text = report.text()
    assert "saving" in text and f"{report.saving_bytes / 2**20:.2f} MiB" in text
    assert ws.allocator.in_use == report.block_bytes  # one block held between runs, not three


@needs_ocr
def test_ppocr_det_cls_rec_share_one_block_on_the_cpu():
    _pipeline("cpu", 640, 320)


@needs_ocr
def test_ppocr_det_cls_rec_share_one_block_on_the_strict_device():
    _pipeline("strict", 64, 96)


@needs_ocr
def test_runs_through_one_workspace_are_serialised():
    ws = gpuinfer.Workspace(device="cpu")
    a = ws.session(shared_model_path(OCR[1]))
    b = ws.session(shared_model_path(OCR[1]), memory_mode="reduce")
    assert a._lock is b._lock is ws.lock
    feeds = _feeds(64, 96)[1]
    expected = a.run(None, feeds)[0]
    results, errors = [], []

    def worker(s):
        try:
            for _ in range(3):
                results.append(s.run(None, feeds)[0])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in (a, b, a)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        np.testing.assert_array_equal(r, expected)


def test_a_workspace_session_must_run_on_its_device():
    from tests.tiny_models import conv_net

    ws = gpuinfer.Workspace(device="cpu")
    with pytest.raises(gpuinfer.GpuinferError, match="workspace runs on 'cpu'"):
        gpuinfer.InferenceSession(conv_net().SerializeToString(), device="strict", workspace=ws)
