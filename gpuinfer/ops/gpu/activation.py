"""Activations on CUDA: one ``bias_act`` launch (the Conv epilogue kernel, with no bias).

CuPy's ufuncs spend one launch per step: Sigmoid is negative, exp, add and divide (four
launches, three extra passes over the tensor), HardSigmoid three, LeakyRelu and HardSwish four
over chunks, SiLU (the fused Sigmoid+Mul step) five, the fused hard-swish chain four, Erf's
polynomial sixteen.  The epilogue kernel applies each in one pass.  Only float32 takes this path (the
kernel's type); other dtypes, and a fused activation already absorbed by a Conv, go elsewhere.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from gpuinfer.graph.passes.hardswish import FUSED_TYPE as HARD_SWISH
from gpuinfer.graph.passes.silu import FUSED_TYPE as SILU
from gpuinfer.ops.gpu.conv import ACTIVATIONS
from gpuinfer.ops.registry import variant

# the multi-launch ones; Relu and Tanh are one CuPy launch already
ONE_LAUNCH = ("Sigmoid", "HardSigmoid", "LeakyRelu", "HardSwish", SILU, HARD_SWISH, "Erf")


def _scratch(shared: Any, attrs: dict, shapes: list, dtypes: list, **known: Any) -> list:
    """None for float32 (one kernel, no chunk buffers); else the shared kernel's."""
    if np.dtype(dtypes[0]) == np.float32:
        return []
    return list(shared(attrs, shapes, dtypes) or ()) if shared is not None else []


def _register(op_type: str) -> None:
    code, params_of = ACTIVATIONS[op_type]

    def activation_cuda(shared: Any, ctx: Any, x: Any) -> Any:
        if x.dtype != np.float32:
            return shared(ctx, x)
        out = ctx.out(0, x.shape, x.dtype)
        if out.size == 0:
            return out
        a, b = params_of(ctx.attrs)
        ctx.device.launch("bias_act", out.size, ctx.xp.ascontiguousarray(x), out, out, out, np.int64(out.size),
                          np.int32(1), np.int64(out.size), np.int32(0), np.int32(code), np.float32(a), np.float32(b))
        return out

    activation_cuda.__name__ = activation_cuda.__qualname__ = f"{op_type.lower()}_cuda"
    variant(op_type, "cuda", scratch=_scratch)(activation_cuda)


for _op in ONE_LAUNCH:
    _register(_op)
