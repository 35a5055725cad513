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
from gpuinfer.graph.kernels import install as _install_for_graph  # noqa: E402
from gpuinfer.ops.graph_kernels import RegistryKernels  # noqa: E402
from gpuinfer.ops.registry import lookup, op, registered_ops  # noqa: E402

_install_for_graph(RegistryKernels())  # the graph layer binds, folds and fuses through this

__all__ = ["lookup", "op", "registered_ops"]
