"""Whether a graph's BLAS products give the same bytes at any BLAS thread count.

OpenBLAS's threaded driver blocks a product's inner sum elsewhere than its one-thread driver for
some inner sizes (on the build measured: above 448, those not a multiple of 32; a vector times an
untransposed matrix too: ``bench/blas_bits.py``), so a thread count that followed the machine's
load would change result bits between runs of such a graph.  For the others it changes nothing
but speed: beside two busy processes, with BLAS following the load, u2netp's `arena` run took
1,032 ms where two BLAS threads waiting on each other took 2,835 (``bench/vs_onnxruntime.py
--load 2``, bench/RESULTS.md).  ``load_safe_products`` says which a graph is, so ``RunThreads`` lets BLAS follow the
load only where no bit can move.

The rule is the BLAS build's, not numpy's, so it is not assumed: each product kind a graph makes
(its inner size, its layout) is tried once per process with one thread and with each count a run
could take, on seeded random operands, and must agree to the byte.  Ops that call BLAS in ways
not listed here (attention, recurrent cells, grouped norms, control flow, other domains) keep BLAS
at one count.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Optional

import numpy as np

from gpuinfer.ops.conv import conv_geometry

# Op types whose CPU kernels call BLAS (matmul, dot, einsum, linalg): their files in gpuinfer/ops
# (tests/runtime_overhead/test_blas_follows_load.py keeps this list in step with them).  A fused
# step counts by its first part.
BLAS_OPS = frozenset({
    "Conv", "ConvTranspose", "Col2Im", "DeformConv", "ConvInteger", "QLinearConv",  # conv*.py, deform_conv.py
    "MatMul", "Gemm", "MatMulInteger", "QLinearMatMul", "Einsum",  # matmul.py
    "Attention", "LinearAttention", "CausalConvWithState", "FlexAttention", "RotaryEmbedding",  # attention.py
    "RoiAlign", "Det",  # detection.py, misc.py
    "LayerNormalization", "InstanceNormalization", "GroupNormalization", "RMSNormalization",  # norm.py's row sums
    "LSTM", "GRU", "RNN",  # rnn.py
    "If", "Loop", "Scan",  # their bodies are not looked into
})

# (rows, columns) of the product tried for an inner size: big enough that OpenBLAS threads it
# (it keeps products under 2^18 multiply-adds on one thread; here 8192 x K), small enough to try
# in milliseconds.  The inner blocking is what differs, and it follows the inner size: of the
# shapes ``bench/blas_bits.py`` tries (an im2col band's, a small map's), none differs at an inner
# size where this one agrees (the small one differs at fewer: OpenBLAS keeps it on one thread up
# to larger inner sizes).  A vector's product (rows 1, where Gemm or MatMul may multiply one row)
# is tried at its own size.
PROBE_BAND = (64, 128)
_VECTOR_COLUMNS = 512  # a transposed vector product's outputs tried (each one dot product)
_VECTOR_MAX = 1 << 22  # an untransposed one is tried at its own size up to this many elements, else not trusted


def calls_blas(graph: Any) -> bool:
    """Whether ``graph``'s CPU kernels may call BLAS (a node of ``BLAS_OPS`` or of another domain)."""
    return any(node.domain or node.op_type.split("+")[0] in BLAS_OPS for node in graph.nodes)


def load_safe_products(graph: Any, counts: tuple) -> bool:
    """True when every BLAS product ``graph``'s CPU kernels make gives the same bytes with one
    thread and with each of ``counts``; False when one does not or cannot be told ahead."""
    kinds = product_kinds(graph)
    return kinds is not None and all(_agrees(kind, tuple(counts)) for kind in sorted(kinds))


def product_kinds(graph: Any) -> Optional[set]:
    """The (inner size, layout) of each kind of BLAS product ``graph`` makes, or None where a node's
    products are not known ahead (an op outside Conv, Gemm, MatMul and LayerNormalization that
    calls BLAS, a shape only a run tells)."""
    kinds: set = set()
    for node in graph.nodes:
        base = node.op_type.split("+")[0]
        if node.domain:  # another domain's kernels are not looked into
            return None
        if base not in BLAS_OPS:
            continue
        found = _node_kinds(graph, node, base)
        if found is None:
            return None
        kinds.update(found)
    return kinds


def _node_kinds(graph: Any, node: Any, base: str) -> Optional[set]:
    if base == "Conv":
        return _conv_kinds(graph, node)
    if base in ("Gemm", "MatMul"):
        return _matmul_kinds(graph, node, base)
    if base == "LayerNormalization":
        shape = _shape(graph, node.inputs[0])
        if shape is None:
            return None
        axis = int(node.attrs.get("axis", -1)) % len(shape)
        return {(math.prod(shape[axis:]), "rows")}  # norm.py's sums of squares, a dot per row
    return None


def _conv_kinds(graph: Any, node: Any) -> Optional[set]:
    w = graph.constants.get(node.inputs[1]) if len(node.inputs) > 1 else None
    if w is None or w.ndim < 3:
        return None
    group = int(node.attrs.get("group", 1))
    m, cg, taps = w.shape[0], w.shape[1], math.prod(w.shape[2:])
    if group == m == cg * group and group > 1:  # depthwise: BLAS in the "rows" layout alone
        return _depthwise_kinds(graph, node, w)
    # im2col's columns, pointwise's input rows, kn2row's rows shifted by each kernel column
    return {(cg * taps, "band"), (cg, "band"), (cg * w.shape[-1], "band")}


def _depthwise_kinds(graph: Any, node: Any, w: Any) -> Optional[set]:
    """A depthwise conv's products: none, or in the "rows" layout (ops/conv_depthwise_rows.py) a
    kernel row's weights (1, kw) times a window (kw, a band's output pixels) of the shifted copies."""
    shape = _shape(graph, node.inputs[0])
    if shape is None:
        return None
    g = conv_geometry(node.attrs, shape, tuple(w.shape), w.dtype)
    if g.layout != "rows":
        return set()
    rows, width = g.out_shape[2:]
    last = rows % g.band_rows or g.band_rows  # the last band's rows
    return {(g.kernel[-1], f"vector:{g.band_rows * width}"), (g.kernel[-1], f"vector:{last * width}")}


def _matmul_kinds(graph: Any, node: Any, base: str) -> Optional[set]:
    a, b = _shape(graph, node.inputs[0]), _shape(graph, node.inputs[1])
    if b is None or len(b) < 2 or (a is not None and len(a) < 1):
        return None
    transposed = base == "Gemm" and bool(int(node.attrs.get("transB", 0)))
    k, n = (b[-1], b[-2]) if transposed else (b[-2], b[-1])
    layout = "vector-t" if transposed else "vector"
    return {(k, "band"), (k, f"{layout}:{n}")}


def _shape(graph: Any, name: str) -> Optional[tuple]:
    if name in graph.constants:
        return tuple(graph.constants[name].shape)
    value = graph.values.get(name)
    shape = getattr(value, "shape", None)
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    return tuple(shape)


@functools.lru_cache(maxsize=None)
def _agrees(kind: tuple, counts: tuple) -> bool:
    """Whether products of ``kind`` give the same bytes with one BLAS thread and each of ``counts``."""
    k, layout = kind
    if k < 1:
        return True
    rng = np.random.default_rng(k)
    if layout == "band":
        rows, columns = PROBE_BAND
        a, b = rng.standard_normal((rows, k), dtype=np.float32), rng.standard_normal((k, columns), dtype=np.float32)
    elif layout == "rows":
        a, b = rng.standard_normal((8, 1, k), dtype=np.float32), rng.standard_normal((8, k, 1), dtype=np.float32)
    elif layout.startswith("vector-t"):  # B transposed: dot products, each output its own sum
        n = min(int(layout.split(":")[1]), _VECTOR_COLUMNS)
        a, b = rng.standard_normal((1, k), dtype=np.float32), rng.standard_normal((n, k), dtype=np.float32).T
    else:  # B as stored: OpenBLAS may split the inner sum among threads, by sizes of its own
        n = int(layout.split(":")[1])
        if k * n > _VECTOR_MAX:
            return False
        a, b = rng.standard_normal((1, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    return products_agree(a, b, counts)


def products_agree(a: np.ndarray, b: np.ndarray, counts: tuple) -> bool:
    """Whether ``a @ b`` gives the same bytes with one BLAS thread and with each of ``counts``."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        one = np.matmul(a, b)
    for count in counts:
        with threadpool_limits(count, user_api="blas"):
            if not np.array_equal(one, np.matmul(a, b)):
                return False
    return True
