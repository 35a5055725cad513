"""The CUDA backend on a real GPU: same answers as the CPU, every allocation through the hook,
NVML agreeing with the hook.  Skipped (marker ``cuda``) where CuPy or a GPU is absent."""
from __future__ import annotations

import numpy as np
import pytest

import gpuinfer
from tests.model_zoo import MODEL_IDS, model_case
from tests.tiny_models import conv_net, conv_net_feeds

pytestmark = pytest.mark.cuda
MIB = 1 << 20


@pytest.mark.parametrize("model_id", MODEL_IDS)
@pytest.mark.parametrize("mode", gpuinfer.MEMORY_MODES)
def test_cuda_matches_cpu(model_id, mode):
    source, feeds = model_case(model_id)
    expected = gpuinfer.InferenceSession(source, device="cpu").run(None, feeds)
    sess = gpuinfer.InferenceSession(source, device="cuda", memory_mode=mode)
    for _ in range(2):  # the second run uses the plan refined by the first
        got = sess.run(None, feeds)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-4, err_msg=f"{model_id} {mode}")


@pytest.mark.parametrize("mode", gpuinfer.MEMORY_MODES)
def test_no_allocation_bypasses_the_hook(mode):
    import cupy

    default_pool = cupy.get_default_memory_pool()
    sess = gpuinfer.InferenceSession(conv_net(), device="cuda", memory_mode=mode)
    feeds = conv_net_feeds(2, 64, 64)
    before = default_pool.total_bytes()
    sess.run(None, feeds)
    sess.run(None, feeds)
    assert default_pool.total_bytes() == before, "some device allocation of the run bypassed the hook"
    report = sess.memory_report()
    assert report.allocations > 0 and report.peak_bytes >= report.planned_bytes


def test_cupy_outputs_without_host_copy():
    import cupy

    sess = gpuinfer.InferenceSession(conv_net(), device="cuda", memory_mode="arena")
    first = sess.run(None, conv_net_feeds(seed=1), output_device="cuda")[0]
    assert isinstance(first, cupy.ndarray)
    kept = first.copy()
    sess.run(None, conv_net_feeds(seed=2), output_device="cuda")
    cupy.testing.assert_array_equal(first, kept)  # the next run did not overwrite it


def test_nvml_sample_agrees_with_hook_on_u2netp():
    source, feeds = model_case("shared/u2netp.onnx")
    sess = gpuinfer.InferenceSession(source, device="cuda", memory_mode="reduce", sample_memory=True,
                                     device_allocator="cuda_malloc")
    sess.run(None, feeds)
    sess.run(None, feeds)
    report = sess.memory_report()
    if report.sampled_peak_bytes is None:
        pytest.skip(report.sampler)
    cublas_workspace = 64 * MIB
    assert abs(report.sampled_peak_bytes - report.peak_bytes) <= 0.10 * report.peak_bytes + cublas_workspace
