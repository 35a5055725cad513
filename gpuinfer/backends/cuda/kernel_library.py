"""Compiling and launching the CUDA kernels of ``kernels/`` (one ``cupy.RawModule`` per source).

Each source is compiled by NVRTC at first use (CuPy caches the binary on disk); ``launch`` runs a
kernel written as a grid-stride loop over ``total`` elements.  ``compile_ptx`` compiles a source
without a GPU (NVRTC only), which is how CI checks every kernel builds.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

KERNEL_DIR = Path(__file__).with_name("kernels")
OPTIONS = ("-std=c++14",)
BLOCK = 256
MAX_GRID = 65535 * 32  # grid-stride loops: more blocks than this only adds scheduling


def kernel_names(source: str) -> list[str]:
    """The ``extern "C" __global__`` functions a source defines."""
    return re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(', source)


def sources() -> dict[str, str]:
    """file name -> CUDA C source, for every ``kernels/*.cu``."""
    return {p.name: p.read_text() for p in sorted(KERNEL_DIR.glob("*.cu"))}


def source_of(function: str) -> str:
    for text in sources().values():
        if function in kernel_names(text):
            return text
    raise KeyError(f"no CUDA kernel named {function!r} in {KERNEL_DIR}")


class KernelLibrary:
    """The kernels of one device, compiled on first use and kept."""

    def __init__(self, cupy: Any) -> None:
        self._cp = cupy
        self._functions: dict[str, Any] = {}

    def function(self, name: str) -> Any:
        fn = self._functions.get(name)
        if fn is None:
            module = self._cp.RawModule(code=source_of(name), options=OPTIONS)
            fn = self._functions[name] = module.get_function(name)
        return fn

    def launch(self, name: str, total: int, args: Sequence[Any]) -> None:
        """One launch of kernel ``name`` covering ``total`` elements (grid-stride)."""
        grid = max(1, min((int(total) + BLOCK - 1) // BLOCK, MAX_GRID))
        self.function(name)((grid,), (BLOCK,), tuple(args))


def compile_ptx(source: str, arch: str = "sm_90") -> bytes:
    """PTX for ``source`` from NVRTC (needs the NVRTC library, not a GPU)."""
    from cupy_backends.cuda.libs import nvrtc

    program = nvrtc.createProgram(source, "gpuinfer.cu", [], [])
    try:
        nvrtc.compileProgram(program, [f"--gpu-architecture={arch}", *OPTIONS])
    except Exception as exc:
        raise RuntimeError(f"NVRTC failed: {exc}\n{nvrtc.getProgramLog(program)}") from None
    return nvrtc.getPTX(program)


# C parameter type -> what a launch must pass: ("array", element dtype) or ("scalar", numpy type)
_C_TYPES = {"float": "float32", "double": "float64", "int": "int32", "long long": "int64",
            "unsigned int": "uint32", "bool": "bool"}


def kernel_signature(source: str, name: str) -> list[tuple[str, str]]:
    """[(kind, dtype name)] of each parameter of kernel ``name``: "array" for pointers, "scalar" else."""
    match = re.search(r'extern\s+"C"\s+__global__\s+void\s+' + name + r'\s*\(([^)]*)\)', source)
    if match is None:
        raise KeyError(f"kernel {name!r} is not in the source")
    params = []
    for raw in match.group(1).split(","):
        text = " ".join(raw.replace("__restrict__", "").replace("const", "").split())
        pointer = "*" in text
        base = text.replace("*", " ").split()
        ctype = " ".join(base[:-1])
        if ctype not in _C_TYPES:
            raise ValueError(f"kernel {name}: parameter type {ctype!r} has no numpy twin type")
        params.append(("array" if pointer else "scalar", _C_TYPES[ctype]))
    return params
