"""Op kernels, one module per op family; importing this package registers all of them."""
from gpuinfer.ops import (  # noqa: F401  (imported for their @op registrations)
    attention,
    detection,
    loss,
    sampling,
    binary,
    cast,
    control,
    conv,
    conv_integer,
    conv_transpose,
    deform_conv,
    elementwise,
    indexing,
    matmul,
    misc,
    norm,
    pad,
    pool,
    quantize,
    random_ops,
    reduce,
    resize,
    rnn,
    sequence,
    shape,
    signal,
    softmax,
    strings,
    training,
    trees,
)
from gpuinfer.ops import gpu  # noqa: F401,E402  (CUDA variants, after the shared kernels they fall back on)
from gpuinfer.ops.registry import lookup, op, registered_ops

__all__ = ["lookup", "op", "registered_ops"]
