"""CUDA graph replay on a real GPU (skipped elsewhere; the stand-in's tests are in tests/devices):
replay gives eager's outputs, costs no allocation outside the hook, and the report counts the
graph's memory."""
from __future__ import annotations

import numpy as np
import pytest

import gpuinfer
from tests.model_zoo import model_case
from tests.tiny_models import conv_net, conv_net_feeds

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("mode", ["arena", "per_tensor"])
def test_replay_matches_eager_on_the_gpu(mode):
    sess = gpuinfer.InferenceSession(conv_net(), device="cuda", memory_mode=mode, cuda_graph=True)
    for seed in range(5):  # warm-up, sizing, capture, two replays with new data each
        feeds = conv_net_feeds(2, 40, 40, seed=seed)
        expected = gpuinfer.InferenceSession(conv_net(), device="cpu").run(None, feeds)[0]
        np.testing.assert_allclose(sess.run(None, feeds)[0], expected, rtol=1e-3, atol=1e-4)
    report = sess.memory_report()
    assert report.cuda_graph == "replayed", report.cuda_graph
    assert report.graph_pool_bytes > 0


def test_u2netp_replay_matches_eager_and_allocates_nothing_outside_the_hook():
    import cupy

    source, feeds = model_case("shared/u2netp.onnx")
    eager = gpuinfer.InferenceSession(source, device="cuda", memory_mode="arena").run(None, feeds)
    sess = gpuinfer.InferenceSession(source, device="cuda", memory_mode="arena", cuda_graph=True)
    for _ in range(3):
        sess.run(None, feeds)
    pool = cupy.get_default_memory_pool()
    before = pool.total_bytes()
    got = sess.run(None, feeds)
    assert pool.total_bytes() == before
    assert sess.memory_report().cuda_graph == "replayed", sess.memory_report().cuda_graph
    for g, e in zip(got, eager):
        np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-4)
