"""The CUDA device: the only code that imports ``cupy`` (and, for the sampler, ``pynvml``).

``CudaDevice(cupy=None)`` imports the real CuPy; ``CudaDevice(cupy=STRICT)`` runs this very code on
the strict stand-in (``gpuinfer.backends.strict``), which is how CI checks the CUDA path
without a GPU: every launch, sync, upload and allocation outside the hook is counted there.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import numpy as np

from gpuinfer.backends.base import Capabilities
from gpuinfer.backends.cuda.allocator_hook import DeviceAllocatorHook
from gpuinfer.backends.cuda.errors import device_failure, translated
from gpuinfer.backends.cuda.graph_pool import GraphPool, SizingAllocator
from gpuinfer.backends.cuda.kernel_library import KernelLibrary
from gpuinfer.backends.cuda.nvml_sampler import NvmlSampler
from gpuinfer.errors import DeviceMemoryError

HOST_ONLY_KINDS = "OUSVM"  # object, strings, void, datetime: no CuPy arrays of these
WEIGHT_ALIGN = 256  # bytes between weights in their block: CuPy's own allocation alignment
SCATTER_UFUNCS = frozenset({"add", "subtract", "maximum", "minimum", "bitwise_and", "bitwise_or", "bitwise_xor"})


class CudaDevice:
    """CuPy arrays; typed views into raw device blocks with ``memptr=base + offset``."""

    kind = "cuda"
    caps = Capabilities(host_arrays=False, ufunc_where=False, scatter_ufuncs=SCATTER_UFUNCS,
                        einsum_out=False, tile_bytes=1 << 40, fused_kernels=True)

    def __init__(self, cupy: Any = None, allocator: str = "pool", name: str = "cuda") -> None:
        if cupy is None:
            import cupy
        self.xp = cupy
        self.name = name
        self.hook = DeviceAllocatorHook(cupy, allocator)
        self.kernels = KernelLibrary(cupy)
        self.mode = "?"  # the session's memory mode, for error messages

    # --- memory --------------------------------------------------------------------------------
    def raw(self, nbytes: int) -> Any:
        # CuPy's allocations are 256-byte aligned; ask for at least one byte so a pointer exists.
        return self.xp.empty((max(int(nbytes), 1),), dtype=self.xp.uint8)

    def view(self, raw: Any, offset: int, shape: tuple, dtype: Any) -> Any:
        return self.xp.ndarray(shape, dtype=dtype, memptr=raw.data + int(offset))

    def can_hold(self, dtype: Any) -> bool:
        return np.dtype(dtype).kind not in HOST_ONLY_KINDS

    def to_device(self, array: Any) -> Any:
        """One upload; host-only dtypes (strings, objects) stay on the host, where their ops run."""
        if isinstance(array, self.xp.ndarray) or not self.can_hold(np.asarray(array).dtype):
            return array
        return self.xp.asarray(array)

    def upload_constants(self, values: dict) -> dict:
        """The model's weights, uploaded once into one block of their own (a direct ``cudaMalloc``
        through ``cupy.cuda.Memory``, 256-byte aligned slots): freed when the session goes, not
        left cached in CuPy's default pool as arrays made by ``asarray`` would be.  Host-only
        values (strings, objects) and device arrays come back as they are."""
        host = {}
        for k, v in values.items():
            if not isinstance(v, self.xp.ndarray):
                v = np.asarray(v, order="C")  # (not ascontiguousarray: it makes 0-d arrays 1-d)
                if self.can_hold(v.dtype):
                    host[k] = v
        if not host:
            return dict(values)
        offsets, total = {}, 0
        for k, v in host.items():
            offsets[k], total = total, total + -(-max(v.nbytes, 1) // WEIGHT_ALIGN) * WEIGHT_ALIGN
        try:
            block = self.xp.cuda.Memory(total)
        except Exception as exc:
            failure = device_failure(self.xp, exc, 0, self.mode)
            if failure is None:
                raise
            if isinstance(failure, DeviceMemoryError):
                failure = DeviceMemoryError(f"the GPU has no room for the model's weights: {total} bytes "
                                            f"in one block", requested=total)
            raise failure from exc
        base = self.xp.cuda.MemoryPointer(block, 0)
        placed = dict(values)
        for k, v in host.items():
            placed[k] = self.xp.ndarray(v.shape, dtype=v.dtype, memptr=base + offsets[k])
            if v.size:
                placed[k].set(v)
        return placed

    def to_host(self, array: Any) -> np.ndarray:
        if isinstance(array, np.ndarray):
            return array
        return self.xp.asnumpy(array)

    def is_array(self, x: Any) -> bool:
        return isinstance(x, self.xp.ndarray)

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    def total_memory(self) -> Optional[int]:
        return int(self.xp.cuda.runtime.memGetInfo()[1])

    def available_memory(self) -> Optional[int]:
        """Free device memory now, plus what this session's hook already holds (it is ours)."""
        return int(self.xp.cuda.runtime.memGetInfo()[0]) + self.hook.in_use

    def launch(self, kernel: str, total: int, *args: Any) -> None:
        """One launch of ``kernels/``'s ``kernel`` over ``total`` elements; scalars as numpy types."""
        self.kernels.launch(kernel, total, args)

    # --- the run's scope -------------------------------------------------------------------------
    @contextlib.contextmanager
    def allocation_scope(self) -> Iterator[None]:
        """Every device allocation of the block through the counting hook; failures translated."""
        with translated(self.xp, self.hook, self.mode), self.hook.installed():
            yield

    # --- CUDA graphs (runtime/cuda_graph.py) ------------------------------------------------------
    def new_stream(self) -> Any:
        """A non-blocking stream: the legacy default stream cannot be captured."""
        return self.xp.cuda.Stream(non_blocking=True)

    def sizing_allocator(self) -> SizingAllocator:
        """Forwards to the allocator in place (the hook) and measures the private pool a capture
        of the same run needs; install its ``malloc`` with ``using(allocator)``."""
        return SizingAllocator(self.xp, self.xp.cuda.get_allocator())

    def graph_pool(self, raw: Any, nbytes: int) -> GraphPool:
        return GraphPool(self.xp, raw, nbytes)

    def using(self, malloc: Any):
        """Context manager: this thread's CuPy allocations from ``malloc``."""
        return self.xp.cuda.using_allocator(malloc)

    @contextlib.contextmanager
    def capture(self, stream: Any, malloc: Any) -> Iterator[list]:
        """Capture the block's device work on ``stream``, its allocations from ``malloc`` (the
        graph's private pool); yields a list that holds the ``cupy.cuda.Graph`` once the block
        ended cleanly.  A failure ends the capture too (its error is dropped: the block's own
        error says what broke it)."""
        holder: list = []
        with stream, self.xp.cuda.using_allocator(malloc):
            stream.begin_capture()
            try:
                yield holder
            except BaseException:
                with contextlib.suppress(Exception):
                    stream.end_capture()
                raise
            holder.append(stream.end_capture())

    def launch_graph(self, graph: Any, stream: Any) -> None:
        graph.launch(stream=stream)

    def make_sampler(self) -> NvmlSampler:
        return NvmlSampler(self.xp, use_nvml=self.name == "cuda")
