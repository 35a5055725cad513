"""One session, several input shapes: each run matches onnxruntime and gets its own plan."""
from __future__ import annotations

import numpy as np
import pytest

import gpuinfer
from tests.model_zoo import SHARED_MODELS, assert_matches_reference, reference_outputs, shared_available

CASES = {
    "mtcnn_pnet.onnx": ("input_1", [(1, 120, 160, 3), (2, 64, 96, 3)]),
    "ch_PP-OCRv4_rec_infer.onnx": ("x", [(1, 3, 48, 320), (1, 3, 48, 160)]),
    "nudenet_320n.onnx": ("images", [(1, 3, 320, 320), (1, 3, 256, 192)]),
}


@pytest.mark.skipif(not shared_available(), reason=f"shared models folder not found at {SHARED_MODELS}")
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("mode", ["per_tensor", "arena"])
def test_two_shapes_in_one_session(name, mode):
    path = str(SHARED_MODELS / name)
    input_name, shapes = CASES[name]
    sess = gpuinfer.InferenceSession(path, device="cpu", memory_mode=mode)
    rng = np.random.default_rng(3)
    plans = []
    for shape in shapes + shapes[:1]:
        feeds = {input_name: rng.standard_normal(shape).astype(np.float32)}
        got = sess.run(None, feeds)
        assert_matches_reference(got, reference_outputs(path, feeds), what=f"{name} {shape}")
        plans.append(sess.plan_for(feeds))
    assert plans[0] is plans[2], "the plan of a signature seen before must be reused"
    assert plans[0] is not plans[1]
