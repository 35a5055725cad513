"""The numpy device's count is the truth: in a steady-state run, what tracemalloc sees is within
2% of the counted peak, and ``arena`` is within 1.10x of the tensors-only lower bound (issue 15).

How tracemalloc is read: tests/memory_probe.py (outputs handed over as copies of pool buffers
are added to the counted side; ``bench/memory_discipline.py`` prints the figures for every model
and mode).  Cheap models only: PP-OCRv4's detector, u2netp, squeezenet, inception_v1.
"""
from __future__ import annotations

import pytest

from tests.memory_probe import steady_state_memory
from tests.model_zoo import model_case  # skips shared models where the folder is absent

MODELS = ["shared/ch_PP-OCRv4_det_infer.onnx", "shared/u2netp.onnx"]


@pytest.mark.parametrize("mode", ["per_tensor", "arena"])
@pytest.mark.parametrize("model_id", MODELS)
def test_tracemalloc_sees_the_counted_peak(model_id, mode):
    source, feeds = model_case(model_id)
    m = steady_state_memory(source, feeds, mode)
    assert 0.98 <= m["traced_ratio"] <= 1.02, m  # nothing allocated behind the pool, and no fictional bytes


# inception_v1: LRN's squares of every channel made its arena 1.51x the bound (1.07x in bands)
@pytest.mark.parametrize("model_id", MODELS + ["light/squeezenet", "light/inception_v1"])
def test_arena_stays_within_a_tenth_of_the_tensors_bound(model_id):
    """Scratch (im2col columns and padded bands, LRN's squares) may not dominate the peak."""
    source, feeds = model_case(model_id)
    m = steady_state_memory(source, feeds, "arena")
    assert m["counted"] <= 1.10 * m["tensor_bound"], m
