"""The stand-in's ``ufunc.at`` accepts exactly the target dtypes CuPy 14.2's scatter atomics do.

The table below is transcribed from ``_scatter_op_single`` in cupy/_core/_routines_indexing.pyx at
tag v14.2.0 (the TypeError lists "cupy.add.at only supports ..."); which ufuncs have a scatter op at
all is read from the installed CuPy (its ufuncs' ``_scatter_op``, readable without a GPU).
"""
from __future__ import annotations

import numpy as np
import pytest

from gpuinfer.backends.strict import STRICT

FLOATS = ["float16", "float32", "float64"]
INTS = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
CUPY_14_2 = {
    "add": {"int32", "int64", "float16", "float32", "float64", "uint32", "uint64"},
    "subtract": {"int32", "uint32"},
    "maximum": {"int32", "int64", "float32", "float64", "uint32", "uint64"},
    "minimum": {"int32", "int64", "float32", "float64", "uint32", "uint64"},
    "bitwise_and": {"int32", "int64", "uint32", "uint64"},
    "bitwise_or": {"int32", "int64", "uint32", "uint64"},
    "bitwise_xor": {"int32", "int64", "uint32", "uint64"},
}


@pytest.mark.parametrize("dtype", FLOATS + INTS + ["bool", "complex64", "longlong", "ulonglong"])
@pytest.mark.parametrize("name", sorted(CUPY_14_2))
def test_scatter_dtypes_match_cupy_14_2(name, dtype):
    if name.startswith("bitwise") and np.dtype(dtype).kind in "fc":
        pytest.skip("no bitwise ufunc on floats at all")
    target = STRICT.zeros(4, dtype=dtype)
    index = STRICT.asarray(np.array([0, 2, 2], dtype=np.int64))
    values = STRICT.ones(3, dtype=dtype)
    ufunc = getattr(STRICT, name)
    if np.dtype(dtype).name in CUPY_14_2[name]:
        ufunc.at(target, index, values)
        expected = np.zeros(4, dtype=dtype)
        getattr(np, name).at(expected, [0, 2, 2], np.ones(3, dtype=dtype))
        np.testing.assert_array_equal(STRICT.asnumpy(target), expected)
    else:
        with pytest.raises(TypeError, match=f"{name}.at"):
            ufunc.at(target, index, values)


@pytest.mark.parametrize("name", ["multiply", "divide", "power", "fmax", "logical_and"])
def test_ufuncs_without_a_scatter_op_refuse_at(name):
    target = STRICT.zeros(4, dtype=np.float32)
    with pytest.raises(NotImplementedError):
        getattr(STRICT, name).at(target, STRICT.asarray(np.array([1], dtype=np.int64)), STRICT.ones(1, np.float32))


def test_scatter_ufuncs_are_those_of_the_installed_cupy():
    cupy = pytest.importorskip("cupy")
    if cupy.__version__ != "14.2.0":
        pytest.skip(f"the table is CuPy 14.2.0's; CuPy {cupy.__version__} is installed")
    names = [n for n in dir(cupy) if type(getattr(cupy, n)).__name__ == "ufunc"]
    with_scatter = {n for n in names if getattr(getattr(cupy, n), "_scatter_op", None) is not None}
    assert with_scatter == set(CUPY_14_2)
