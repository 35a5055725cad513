"""Test-wide setup: CUDA tests (marker ``cuda``) skip cleanly where CuPy or a GPU is absent."""
from __future__ import annotations

import pytest

from gpuinfer.backends import cuda_unavailable_reason


def pytest_collection_modifyitems(config, items):
    reason = None
    for item in items:
        if "cuda" in item.keywords:
            if reason is None:
                reason = cuda_unavailable_reason() or ""
            if reason:
                item.add_marker(pytest.mark.skip(reason=f"CUDA not available: {reason}"))


def pytest_configure(config):
    """One BLAS thread for the whole run: tests check results, not speed, and OpenBLAS threads
    that spin-wait on a busy 2-core machine slow every matmul down by an order of magnitude."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    config._gpuinfer_blas_limit = threadpool_limits(limits=1, user_api="blas")


try:  # property tests explore the same examples on every run, so CI results do not flake
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("gpuinfer", derandomize=True, deadline=None)
    _hypothesis_settings.load_profile("gpuinfer")
except ImportError:
    pass
