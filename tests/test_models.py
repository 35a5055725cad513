"""Every shared model and every light network matches onnxruntime, on the CPU and on the CUDA
path run by the strict CuPy stand-in (``device="strict"``: the CUDA device's own code, its
kernel variants and their numpy twins, with every CuPy call checked against the real API).

Floats within rtol 1e-3 / atol 1e-4, integers exactly, at the shapes MODELS.md lists.  The light
networks run with seeded random weights and are also compared before their final Softmax.
"""
from __future__ import annotations

import numpy as np
import pytest

import gpuinfer
from tests.model_zoo import MODEL_IDS, assert_matches_reference, model_case, reference_for


@pytest.mark.parametrize("device", ["cpu", "strict"])
@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_model_matches_onnxruntime(model_id, device):
    source, feeds = model_case(model_id)
    expected = reference_for(model_id)
    sess = gpuinfer.InferenceSession(source, device=device, memory_mode="arena" if device == "strict" else "per_tensor")
    got = sess.run(None, feeds)
    assert_matches_reference(got, expected, what=f"{model_id} on {device}")
    for out in got:
        if np.issubdtype(out.dtype, np.floating):
            assert np.isfinite(out).all(), f"{model_id}: non-finite output"
