"""Every shared model and every light network runs on the CPU and matches onnxruntime.

Floats within rtol 1e-3 / atol 1e-4, integers exactly, at the shapes MODELS.md lists.  The light
networks run with seeded random weights and are also compared before their final Softmax.
"""
from __future__ import annotations

import numpy as np
import pytest

import gpuinfer
from tests.model_zoo import MODEL_IDS, assert_matches_reference, model_case, reference_for


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_model_matches_onnxruntime(model_id):
    source, feeds = model_case(model_id)
    expected = reference_for(model_id)
    sess = gpuinfer.InferenceSession(source, device="cpu")
    got = sess.run(None, feeds)
    assert_matches_reference(got, expected, what=model_id)
    for out in got:
        if np.issubdtype(out.dtype, np.floating):
            assert np.isfinite(out).all(), f"{model_id}: non-finite output"
