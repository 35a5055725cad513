"""The strict CuPy stand-in behaves like CuPy where it matters, stricter where in doubt, and
counts what a GPU run pays.  These tests pin its manners; each would catch a stand-in that
let through something a real GPU refuses."""
from __future__ import annotations

import numpy as np
import pytest

from gpuinfer.backends.strict import STRICT as cp
from gpuinfer.backends.strict.counters import CaptureViolation
from gpuinfer.backends.strict.memory import SPACE, OutOfMemoryError


def counted(fn):
    before = cp.counters.snapshot()
    result = fn()
    return result, cp.counters.delta(before, cp.counters.snapshot())


def device(values, dtype=np.float32):
    return cp.asarray(np.asarray(values, dtype=dtype))


def test_no_implicit_conversion_to_numpy():
    x = device([1, 2, 3])
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(x)
    with pytest.raises(TypeError, match="numpy"):
        np.sum(x)  # a numpy function on a device array: use the device's module


def test_host_arrays_and_lists_are_refused_beside_device_arrays():
    x = device([1, 2, 3])
    with pytest.raises(TypeError, match="Unsupported type"):
        cp.add(x, np.ones(3, np.float32))
    with pytest.raises(TypeError, match="Unsupported type"):
        x + np.ones(3, np.float32)
    with pytest.raises(TypeError):
        cp.copyto(x, np.ones(3, np.float32))


def test_keywords_and_methods_real_cupy_lacks_are_refused():
    x = device([1, -2, 3])
    with pytest.raises(TypeError, match="where"):
        cp.subtract(x, 1, where=x > 0)
    with pytest.raises(TypeError, match="out"):
        cp.einsum("i->i", x, out=cp.empty(3, np.float32))
    with pytest.raises(NotImplementedError, match="multiply"):
        cp.multiply.at(x, device([0], np.int64), 2.0)
    with pytest.raises(TypeError, match="atomic"):
        cp.add.at(device([1, 2], np.int8), device([0], np.int64), 1)
    with pytest.raises(AttributeError):
        cp.not_a_cupy_function


def test_host_only_dtypes_are_refused():
    with pytest.raises(TypeError, match="Unsupported dtype"):
        cp.asarray(np.array(["a", "b"]))
    with pytest.raises(TypeError, match="Unsupported dtype"):
        cp.empty((2,), dtype=object)


def test_reads_back_are_counted_syncs():
    x = device([1, 2, 3])
    s, d = counted(lambda: cp.sum(x))
    assert d["syncs"] == 0 and d["launches"] == 1 and s.shape == ()  # a 0-d device array, as in CuPy
    _, d = counted(lambda: (float(s), s.item(), x.get(), bool(s > 0), x.tolist(), cp.asnumpy(x)))
    assert d["syncs"] == 6
    _, d = counted(lambda: x[x > 1])
    assert d["syncs"] == 1  # a boolean mask's result size is read back


def test_uploads_are_counted_and_views_cost_nothing():
    _, d = counted(lambda: cp.asarray(np.zeros((4, 4), np.float32)))
    assert d["uploads"] == 1 and d["upload_bytes"] == 64 and d["launches"] == 0
    x = device(np.arange(12).reshape(3, 4))
    _, d = counted(lambda: (x.reshape(4, 3), x.T, x[1:, ::2], x.astype(np.float32, copy=False), x.ravel()))
    assert d["launches"] == 0 and d["hook_allocations"] + d["outside_allocations"] == 0
    _, d = counted(lambda: x.astype(np.float64))
    assert d["launches"] == 1


def test_take_wraps_out_of_range_indices_as_cupy_does():
    x = device([10, 20, 30])
    assert cp.take(x, device([3, -1], np.int64)).get().tolist() == [10.0, 30.0]


def test_views_share_memory_through_memptr():
    raw = cp.empty((64,), dtype=cp.uint8)
    a = cp.ndarray((4,), np.float32, memptr=raw.data + 16)
    b = cp.ndarray((2,), np.float32, memptr=raw.data + 24)
    cp.copyto(a, device([1, 2, 3, 4]))
    assert b.get().tolist() == [3.0, 4.0] and b.data.ptr == raw.data.ptr + 24
    with pytest.raises(Exception, match="overruns"):
        cp.ndarray((1024,), np.float32, memptr=raw.data)  # past the (512-byte) block


def test_allocations_are_counted_inside_and_outside_the_hook():
    seen = []
    pool = cp.cuda.MemoryPool()

    def malloc(size, device_id):
        seen.append(size)
        mem = pool.malloc(size)
        malloc.keep[mem.ptr] = mem
        return mem.ptr

    malloc.keep = {}
    hook = cp.cuda.PythonFunctionAllocator(malloc, lambda ptr, dev: malloc.keep.pop(ptr))
    _, d = counted(lambda: cp.zeros((10,), np.float32))
    assert d["outside_allocations"] == 1 and d["outside_bytes"] == 40
    with cp.cuda.using_allocator(hook.malloc):
        _, d = counted(lambda: cp.zeros((10,), np.float32))
    assert d["hook_allocations"] == 1 and d["outside_allocations"] == 0 and seen == [40]
    assert malloc.keep  # the result is alive: its memory is still out
    del _
    assert not malloc.keep  # the result died, its free callback ran


def test_out_of_memory_is_cupys_error_with_the_size():
    pool = cp.cuda.MemoryPool()
    saved = SPACE.capacity
    SPACE.capacity = SPACE.used + (1 << 20)
    try:
        with pytest.raises(OutOfMemoryError) as info:
            pool.malloc(2 << 20)
        assert info.value.size == 2 << 20
        with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="cudaErrorMemoryAllocation"):
            cp.cuda.Memory(2 << 20)
    finally:
        SPACE.capacity = saved


def test_capture_forbids_syncs_uploads_and_mallocs_and_replays_launches():
    x = device([1, 2, 3])
    y = cp.empty((3,), np.float32)
    stream = cp.cuda.Stream(non_blocking=True)
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError):
        cp.cuda.Stream.null.begin_capture()
    with stream:
        for forbidden in (lambda: x.get(), lambda: cp.asarray(np.ones(3, np.float32)),
                          lambda: cp.cuda.Memory(4096), stream.synchronize):
            stream.begin_capture()
            with pytest.raises(CaptureViolation):
                forbidden()
            with pytest.raises(CaptureViolation, match="invalidated"):  # as CUDA: the capture is lost
                stream.end_capture()
        stream.begin_capture()
        cp.multiply(x, 2, out=y)
        graph = stream.end_capture()
    x.set(np.array([5, 6, 7], np.float32))
    _, d = counted(lambda: graph.launch(stream))
    assert d["launches"] == 1 and y.get().tolist() == [10.0, 12.0, 14.0]


def test_raw_kernels_check_argument_types_against_the_c_signature():
    from gpuinfer.backends.cuda.kernel_library import source_of

    kernel = cp.RawModule(code=source_of("bias_act")).get_function("bias_act")
    y = device(np.arange(6).reshape(1, 2, 3) - 2.0)
    bias = device([1, 10])
    # x, y (in place), bias, slope (unread: act is relu), total, M, P, has_bias, act, a, b
    args = [y, y, bias, bias, np.int64(6), np.int32(2), np.int64(3), np.int32(1), np.int32(1), np.float32(0),
            np.float32(0)]
    bad = list(args)
    bad[5] = 2  # M as a Python int: a GPU would get 8 bytes where the kernel reads 4
    with pytest.raises(TypeError, match="numpy.int32"):
        kernel((1,), (32,), tuple(bad))
    _, d = counted(lambda: kernel((1,), (32,), tuple(args)))
    assert d["launches"] == 1
    assert y.get().ravel().tolist() == [0.0, 0.0, 1.0, 11.0, 12.0, 13.0]  # relu(y + bias)
