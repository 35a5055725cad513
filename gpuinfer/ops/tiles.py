"""Tile and chunk sizes of the tiled kernels, sized from the device's ``caps.tile_bytes``.

Every tile, band and chunk size in ``ops`` is measured on the CPU, where ``tile_bytes`` is the
numpy device's cache-sized ``CACHE_TILE_BYTES``; there each size is used exactly as written (and
as tests may set it).  A device declaring another ``tile_bytes`` scales every size by the same
factor: a GPU declares whole tensors (``1 << 40``), so its tiles cover the whole op and tiling
never multiplies its launches.

Scratch functions (``@op(scratch=...)``) run at plan time, without a context: the ones whose
buffers follow a tile take a ``tile_bytes`` keyword, defaulting to the CPU's, for the planner to
pass the device's ``caps.tile_bytes``.
"""
from __future__ import annotations

from gpuinfer.backends.numpy_backend import CACHE_TILE_BYTES

CPU_TILE_BYTES = CACHE_TILE_BYTES


def scaled(cpu_size: int, tile_bytes: int) -> int:
    """``cpu_size`` (a size tuned for the CPU's tiles) for a device whose tiles are ``tile_bytes``:
    unchanged on the CPU, in proportion elsewhere, never below 1."""
    if tile_bytes == CPU_TILE_BYTES:
        return cpu_size
    return max(1, cpu_size * int(tile_bytes) // CPU_TILE_BYTES)


def tile_bytes_of(ctx) -> int:
    """The tile size of the device ``ctx`` runs on."""
    return int(ctx.caps.tile_bytes)
