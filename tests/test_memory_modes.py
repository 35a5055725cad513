"""The four memory modes on the real models: same outputs bit for bit, and the figures each promises.

- every mode's outputs are bitwise identical to ``per_tensor``'s on the CPU;
- every plan passes the independent verifier;
- ``arena`` peak within 5% of the lower bound (+ 4 KiB of alignment), ``reduce`` within 10%;
- ``reuse`` plans exactly the best same-shape sharing for the run order, and its scratch as
  ``per_tensor`` does;
- ``per_tensor`` plans the sum of all intermediates, plus one block its steps' scratch shares (the
  most one step takes), or a block per scratch buffer where that is less;
- tracemalloc's sampled peak is within 3% (+ the run's Python objects) of the pool's count (no
  hidden temporaries).

Figures are from the second run: the first may take the reduce path for tensors whose shape
only a run reveals, after which the signature is planned again with them in it.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

import gpuinfer
from gpuinfer.plan import verify_plan
from gpuinfer.plan.plan import align
from tests.model_zoo import MODEL_IDS, model_case



def _best_same_shape_sharing(plan) -> int:
    """The fewest bytes same-shape sharing of the intermediates takes, plus the steps' scratch as
    ``per_tensor`` holds it (or shared by shape too, where a block each is less than one shared)."""
    shared, scratch = _scratch_layout(plan)
    placed = [l for l in plan.lifetimes.values() if l.kind == "value" or (l.kind == "scratch" and not shared)]
    best = 0
    for cls in {(l.shape, l.dtype) for l in placed}:
        members = [l for l in placed if (l.shape, l.dtype) == cls]
        steps = range(min(m.first for m in members), max(m.last for m in members) + 1)
        best += max(sum(1 for m in members if m.first <= s <= m.last) for s in steps) * members[0].nbytes
    return best + (scratch if shared else 0)


def _per_tensor_bytes(plan) -> int:
    """Every intermediate's bytes, and the steps' scratch."""
    return sum(l.nbytes for l in plan.lifetimes.values() if l.kind == "value") + _scratch_layout(plan)[1]


def _scratch_layout(plan) -> tuple:
    """(whether the steps' scratch shares one block, its bytes): the most one step takes, its
    buffers side by side at aligned offsets, or all of them, a block each, where that is less."""
    by_step: dict = {}
    for l in plan.lifetimes.values():
        if l.kind == "scratch":
            by_step.setdefault(l.first, []).append(l.nbytes)
    spans = [sum(align(n) for n in sizes[:-1]) + sizes[-1] for sizes in by_step.values()]
    total = sum(map(sum, by_step.values()))
    most = max(spans, default=0)
    return (True, most) if most < total else (False, total)


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_modes_agree_and_keep_their_promises(model_id):
    source, feeds = model_case(model_id)
    results, reports = {}, {}
    for mode in gpuinfer.MEMORY_MODES:
        sess = gpuinfer.InferenceSession(source, device="cpu", memory_mode=mode, sample_memory=True)
        # digests, not arrays: the first run's outputs must not be alive (and sampled) during the second
        first = [hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for a in sess.run(None, feeds)]
        results[mode] = [hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
                         for a in sess.run(None, feeds)]
        assert first == results[mode], f"{model_id} {mode}: second run differs from first"
        plan = sess.plan_for(feeds)
        verify_plan(plan, check_alignment=(mode == "arena"))
        reports[mode] = report = sess.memory_report()
        sampled = report.sampled_peak_bytes
        # tracemalloc also sees the Python objects the run makes (the pool's per-run record, the
        # environment, numpy's ufunc buffers): 20-540 KB on these models (PP-OCRv4 det arena, 235
        # nodes, the most); tensors beyond the pool's count would show as more than that.  The
        # baseline is the run's start (report/sampler.py): with one taken at session creation this
        # test failed now and then, another model each time.
        python_objects = 256 * 1024 + 2048 * len(sess.graph.nodes)
        assert -0.02 * report.peak_bytes <= sampled - report.peak_bytes <= 0.03 * report.peak_bytes + python_objects, (
            f"{model_id} {mode}: tracemalloc saw {sampled} bytes, the pool counted {report.peak_bytes}")
        if mode == "per_tensor":
            assert plan.planned_bytes == _per_tensor_bytes(plan)
        if mode == "reuse":
            assert plan.planned_bytes == _best_same_shape_sharing(plan)
        del sess
    for mode, digests in results.items():
        assert digests == results["per_tensor"], f"{model_id}: {mode} outputs differ from per_tensor's"
    bound = reports["reduce"].lower_bound_bytes
    # + 4 KiB: 256-byte alignment weighs on models whose tensors are a few bytes (silero's 4-byte ones)
    assert reports["arena"].peak_bytes <= 1.05 * bound + 4096, f"{model_id}: arena {reports['arena'].peak_bytes} vs bound {bound}"
    assert reports["reduce"].peak_bytes <= 1.10 * bound, f"{model_id}: reduce {reports['reduce'].peak_bytes} vs bound {bound}"
