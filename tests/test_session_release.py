"""``del session`` gives the session's memory back at once, not when the garbage collector next runs.

A session whose objects form a reference cycle keeps its weights, arena and kept buffers (on CUDA:
device memory, and the counting hook's pool of cached blocks) until Python's cyclic collector
happens to run, which can be never in a loop that makes few objects.  Three cycles did that: each
runner's code held the executor's bound ``_store`` (and itself, in its own globals), the runner's
context class held its bound views, and the CUDA graph runner held its session (which holds it).
The CUDA allocator hook and the graph pools held a ``PythonFunctionAllocator`` of their own bound
methods.  And the strict stand-in never freed device memory at all (its address space held
every block).  These tests run with the collector off.

Each session is preceded by one of the same model and mode, made and dropped: what the first
use of a kernel or shape leaves in process-wide caches (and, on the stand-in, blocks uploaded
outside the hook and cached in CuPy's default pool, as real CuPy does) is not the session's.
"""
from __future__ import annotations

import gc
import tracemalloc

import pytest

import gpuinfer
from tests.memory_probe import NUMPY_DOMAIN
from tests.model_zoo import model_case

MODELS = ["shared/mtcnn_rnet.onnx", "shared/silero_vad.onnx", "light/squeezenet"]


@pytest.fixture
def collector_off():
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _use_and_drop(source, feeds: dict, device: str, mode: str) -> None:
    sess = gpuinfer.InferenceSession(source, device=device, memory_mode=mode,
                                     cuda_graph=device == "strict" and mode in ("per_tensor", "arena"))
    for _ in range(4):  # on the stand-in: eager, sized, captured, replayed
        sess.run(None, feeds)
    del sess


def _numpy_bytes() -> int:
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, NUMPY_DOMAIN)])
    return sum(trace.size for trace in snapshot.traces)


@pytest.mark.parametrize("mode", gpuinfer.MEMORY_MODES)
@pytest.mark.parametrize("model_id", MODELS)
def test_del_frees_the_sessions_numpy_data_on_the_cpu(model_id, mode, collector_off):
    source, feeds = model_case(model_id)
    _use_and_drop(source, feeds, "cpu", mode)
    tracemalloc.start()
    try:
        before = _numpy_bytes()
        _use_and_drop(source, feeds, "cpu", mode)
        left = _numpy_bytes() - before
    finally:
        tracemalloc.stop()
    assert left <= 0, f"{model_id} {mode}: {left} bytes of numpy data outlived `del session`"


@pytest.mark.parametrize("mode", gpuinfer.MEMORY_MODES)
@pytest.mark.parametrize("model_id", MODELS)
def test_del_frees_the_sessions_device_memory_on_the_strict_device(model_id, mode, collector_off):
    from gpuinfer.backends.strict.memory import SPACE

    source, feeds = model_case(model_id)
    _use_and_drop(source, feeds, "strict", mode)
    before = SPACE.used
    _use_and_drop(source, feeds, "strict", mode)
    assert SPACE.used == before, (f"{model_id} {mode}: {SPACE.used - before} bytes of device memory "
                                  "outlived `del session`")
