"""The strict CuPy stand-in: a ``cupy``-shaped module over numpy that behaves like CuPy where it
matters and counts what a GPU run would pay (see ``module.StrictCupy``).  Used by the ``strict``
device (the CUDA device's own code with this module in place of ``cupy``) in tests and benches.
"""
from gpuinfer.backends.strict.counters import CaptureViolation, StrictCounters
from gpuinfer.backends.strict.module import STRICT, StrictCupy

__all__ = ["STRICT", "CaptureViolation", "StrictCounters", "StrictCupy"]
