"""CUDA variants of ops whose CuPy building blocks would cost many launches a call.

Each registers with ``@variant(op, "cuda")`` and launches kernels from
``gpuinfer/backends/cuda/kernels`` through ``ctx.device.launch``: Conv as im2col + one batched
matmul + a bias-and-activation epilogue (narrow ones: one direct kernel), MaxPool, Resize and
multi-step activations (Sigmoid, HardSigmoid, LeakyRelu, HardSwish, per-channel PRelu) as one kernel each.  What a variant
does not cover (other dtypes, 3-D windows, Indices outputs, crop-and-resize) goes to the shared
kernel it is handed.  On the strict stand-in the kernels' numpy twins run instead.
"""
from gpuinfer.ops.gpu import activation, conv, pool, prelu  # noqa: F401  (imported for their registrations; resize is called by ops.resize)
