"""``StrictCupy``: a module object that takes the place of ``cupy`` for the CUDA device's code.

Names resolve lazily: a ufunc of real CuPy becomes a ``ufunc`` here, a function real CuPy and
numpy both have becomes a checked ``device_call`` of numpy's twin, and the few functions whose
behaviour differs (uploads, syncs, CuPy's wrap-around ``take``, ``ufunc.at``'s scatter ops,
``einsum`` without ``out=``) are written out below.  A name real CuPy lacks is an
``AttributeError``, as it would be on a GPU.
"""
from __future__ import annotations

import types
from typing import Any, Optional

import numpy as np

from gpuinfer.backends.strict import cuda as cuda_namespace, memory
from gpuinfer.backends.strict.array import check_dtype, ndarray, record, sync, upload
from gpuinfer.backends.strict.calls import ANY, REAL, UFUNC_KEYWORDS, device_call, keywords_of, real_attr, unwrap
from gpuinfer.backends.strict.memory import SPACE

# ufunc.at works where CuPy has a scatter op for the ufunc (its ``_scatter_op``), on the target
# dtypes whose atomics CuPy 14.2 accepts: ``issubclass(dtype.type, ...)`` with these types, as
# ``_scatter_op_single`` in cupy/_core/_routines_indexing.pyx (v14.2.0) checks them (14.0.0
# had no int64 add).  CuPy skips the check for a boolean-mask index, whose
# atomics then fail to compile on the other dtypes: the stand-in refuses them on every path.
_INT32 = (np.int32, np.intc, np.uint32, np.uintc)
_INT64 = (np.int64, np.longlong, np.uint64, np.ulonglong)
SCATTER_TYPES = {"add": (np.float16, np.float32, np.float64) + _INT32 + _INT64,
                 "subtract": _INT32,
                 "maximum": (np.float32, np.float64) + _INT32 + _INT64,
                 "minimum": (np.float32, np.float64) + _INT32 + _INT64,
                 "bitwise_and": _INT32 + _INT64, "bitwise_or": _INT32 + _INT64, "bitwise_xor": _INT32 + _INT64}
HOST_TYPE_FUNCTIONS = ("result_type", "promote_types", "can_cast", "dtype", "iinfo", "finfo",
                       "issubdtype", "isscalar", "ndim", "shape", "size", "broadcast_shapes")


class ufunc:  # noqa: N801 (CuPy's name)
    """A CuPy ufunc: ``out``, ``dtype`` and ``casting`` only (no ``where=``)."""

    def __init__(self, name: str, twin: np.ufunc) -> None:
        self.__name__ = name
        self._twin = twin
        self.nin, self.nout, self.nargs = twin.nin, twin.nout, twin.nargs
        real = real_attr(name)
        self._scatter = getattr(real, "_scatter_op", None) if REAL is not None else name in SCATTER_TYPES

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return device_call(self.__name__, self._twin, args, kwargs, UFUNC_KEYWORDS)

    def _method(self, method: str, args: tuple, kwargs: dict) -> Any:
        real = real_attr(f"{self.__name__}.{method}")
        if REAL is not None and real is None:
            raise AttributeError(f"cupy.{self.__name__} has no method {method!r}")
        return device_call(f"{self.__name__}.{method}", getattr(self._twin, method), args, kwargs,
                           keywords_of(real))

    def reduce(self, *args: Any, **kwargs: Any) -> Any:
        return self._method("reduce", args, kwargs)

    def accumulate(self, *args: Any, **kwargs: Any) -> Any:
        return self._method("accumulate", args, kwargs)

    def reduceat(self, *args: Any, **kwargs: Any) -> Any:
        return self._method("reduceat", args, kwargs)

    def outer(self, *args: Any, **kwargs: Any) -> Any:
        return self._method("outer", args, kwargs)

    def at(self, a: ndarray, indices: Any, b: Any = None) -> None:
        """Unbuffered scatter; only ufuncs with a CuPy scatter op, only atomics' dtypes."""
        if not self._scatter:
            raise NotImplementedError(f"cupy.{self.__name__}.at is not supported (CuPy has no scatter "
                                      f"op for {self.__name__})")
        if not issubclass(a.dtype.type, SCATTER_TYPES.get(self.__name__, ())):
            raise TypeError(f"cupy.{self.__name__}.at: no atomic for dtype {a.dtype}")
        target = a._a
        idx = _index_operand(indices)
        value = unwrap(b, f"{self.__name__}.at")
        self._twin.at(target, idx, value)
        record(lambda: self._twin.at(target, idx, value))


def _index_operand(indices: Any) -> Any:
    if isinstance(indices, tuple):
        return tuple(_index_operand(i) for i in indices)
    if isinstance(indices, ndarray):
        return indices._a
    if isinstance(indices, (np.ndarray, list)):
        host = np.asarray(indices)
        upload(host.nbytes, "host indices")
        return host
    return indices


def _function(path: str, twin: Any) -> Any:
    allowed = keywords_of(real_attr(path)) if REAL is not None else ANY

    def call(*args: Any, **kwargs: Any) -> Any:
        return device_call(path, twin, args, kwargs, allowed)

    call.__name__ = path.rsplit(".", 1)[-1]
    return call


class _Namespace(types.SimpleNamespace):
    """A CuPy submodule (``fft``, ``linalg``, ``lib.stride_tricks``) over numpy's."""

    def __init__(self, path: str, twin: Any) -> None:
        super().__init__()
        self._path, self._twin = path, twin

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        path = f"{self._path}.{name}"
        twin = getattr(self._twin, name, None)
        if twin is None or (REAL is not None and real_attr(path) is None):
            raise AttributeError(f"module 'cupy.{self._path}' has no attribute {name!r}")
        if isinstance(twin, types.ModuleType):
            value: Any = _Namespace(path, twin)
        else:
            value = _function(path, twin)
        setattr(self, name, value)
        return value


class StrictCupy(types.ModuleType):
    """The stand-in module.  ``counters`` and ``space`` are its own (not CuPy API)."""

    def __init__(self) -> None:
        super().__init__("cupy")
        self.ndarray = ndarray
        self.cuda = cuda_namespace.namespace()
        self.fft = _Namespace("fft", np.fft)
        self.linalg = _Namespace("linalg", np.linalg)
        self.lib = types.SimpleNamespace(stride_tricks=_Namespace("lib.stride_tricks", np.lib.stride_tricks))
        self.RawModule = RawModule
        self.space = SPACE
        self.counters = SPACE.counters
        self.__version__ = "strict-stand-in"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        real = real_attr(name)
        if REAL is not None and real is None:
            raise AttributeError(f"module 'cupy' has no attribute {name!r}")
        twin = getattr(np, name, None)
        if twin is None:
            raise AttributeError(f"module 'cupy' has no attribute {name!r} (the strict stand-in has no twin)")
        if isinstance(twin, np.ufunc):
            value: Any = ufunc(name, twin)
        elif isinstance(twin, type) or not callable(twin):
            value = twin  # dtypes (float32, ...), constants (pi, inf, newaxis)
        elif name in HOST_TYPE_FUNCTIONS:
            value = _host_type_function(twin)
        else:
            value = _function(name, twin)
        setattr(self, name, value)
        return value

    # --- creation ------------------------------------------------------------------------------
    def empty(self, shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
        return ndarray(_shape(shape), dtype, order=order)

    def _filled(self, shape: Any, dtype: Any, value: Any) -> ndarray:
        out = ndarray(_shape(shape), dtype)
        target = out._a
        target.fill(value)
        record(lambda: target.fill(value))
        return out

    def zeros(self, shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
        return self._filled(shape, dtype, 0)

    def ones(self, shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
        return self._filled(shape, dtype, 1)

    def full(self, shape: Any, fill_value: Any, dtype: Any = None, order: str = "C") -> ndarray:
        if isinstance(fill_value, ndarray):
            fill_value = _host_scalar(fill_value, "full(fill_value=device array)")
        if dtype is None:
            dtype = np.asarray(fill_value).dtype
        return self._filled(shape, dtype, fill_value)

    def empty_like(self, a: ndarray, dtype: Any = None, order: str = "K", subok: Any = None,
                   shape: Any = None) -> ndarray:
        return self.empty(a.shape if shape is None else shape, a.dtype if dtype is None else dtype)

    def zeros_like(self, a: ndarray, dtype: Any = None, order: str = "K", subok: Any = None,
                   shape: Any = None) -> ndarray:
        return self.zeros(a.shape if shape is None else shape, a.dtype if dtype is None else dtype)

    def ones_like(self, a: ndarray, dtype: Any = None, order: str = "K", subok: Any = None,
                  shape: Any = None) -> ndarray:
        return self.ones(a.shape if shape is None else shape, a.dtype if dtype is None else dtype)

    def full_like(self, a: ndarray, fill_value: Any, dtype: Any = None, order: str = "K",
                  subok: Any = None, shape: Any = None) -> ndarray:
        return self.full(a.shape if shape is None else shape, fill_value, a.dtype if dtype is None else dtype)

    def arange(self, start: Any, stop: Any = None, step: Any = 1, dtype: Any = None) -> ndarray:
        start, stop, step = (_host_scalar(v, "arange bound") for v in (start, stop, step))
        res = np.arange(start, stop, step, dtype=dtype) if stop is not None else np.arange(start, step=step, dtype=dtype)
        out = ndarray._fresh(res)
        target = out._a
        record(lambda: np.copyto(target, res))
        return out

    # --- host <-> device -----------------------------------------------------------------------
    def asarray(self, a: Any, dtype: Any = None, order: Any = None, *, copy: Any = None,
                blocking: bool = False) -> ndarray:
        if isinstance(a, ndarray):
            if dtype is None or np.dtype(dtype) == a.dtype:
                return a
            return a.astype(dtype)
        host = np.asarray(a, dtype=dtype)
        check_dtype(host.dtype)
        upload(host.nbytes, f"asarray of a host {host.shape} {host.dtype}")
        return ndarray._fresh(host)

    def array(self, obj: Any, dtype: Any = None, copy: bool = True, order: str = "K",
              subok: bool = False, ndmin: int = 0, *, blocking: bool = False) -> ndarray:
        if isinstance(obj, ndarray):
            return obj.astype(obj.dtype if dtype is None else dtype, copy=True)
        return self.asarray(obj, dtype=dtype)

    def asnumpy(self, a: Any, stream: Any = None, order: str = "C", out: Any = None,
                blocking: bool = True) -> np.ndarray:
        if isinstance(a, ndarray):
            return a.get()
        return np.asarray(a)

    def get_array_module(self, *args: Any) -> Any:
        return self

    def get_default_memory_pool(self) -> Any:
        return memory.get_default_memory_pool()

    # --- functions whose CuPy behaviour differs from numpy's -------------------------------------
    def copyto(self, dst: ndarray, src: Any, casting: str = "same_kind", where: Any = None) -> None:
        if not isinstance(dst, ndarray):
            raise TypeError(f"cupy.copyto: dst must be a cupy.ndarray, not {type(dst).__name__}")
        source = unwrap(src, "copyto")
        mask = unwrap(where, "copyto") if where is not None else True
        target = dst._a
        np.copyto(target, source, casting=casting, where=mask)
        record(lambda: np.copyto(target, source, casting=casting, where=mask))

    def take(self, a: ndarray, indices: Any, axis: Optional[int] = None, out: Any = None) -> ndarray:
        """CuPy's take has no ``mode``: out-of-range indices wrap around instead of raising."""
        idx = _index_operand(indices)
        kwargs = {"axis": axis} if out is None else {"axis": axis, "out": out}
        return device_call("take", lambda x, axis=None, out=None: np.take(x, idx, axis=axis, out=out, mode="wrap"),
                           (a,), kwargs, frozenset({"axis", "out"}))

    def take_along_axis(self, a: ndarray, indices: ndarray, axis: int) -> ndarray:
        n = a.shape[axis] if a.ndim else 1
        return device_call("take_along_axis", lambda x, i, ax: np.take_along_axis(x, i % max(n, 1), ax),
                           (a, indices, axis), {}, frozenset())

    def where(self, condition: Any, x: Any = None, y: Any = None) -> Any:
        if x is None and y is None:
            return self.nonzero(condition)
        return device_call("where", np.where, (condition, x, y), {}, frozenset())

    def nonzero(self, a: ndarray) -> tuple:
        sync("nonzero (the count of non-zeros is read back)")
        return device_call("nonzero", np.nonzero, (a,), {}, frozenset())

    def unique(self, ar: ndarray, return_index: bool = False, return_inverse: bool = False,
               return_counts: bool = False, axis: Any = None, *, equal_nan: bool = True) -> Any:
        sync("unique (the number of unique values is read back)")
        return device_call("unique", np.unique, (ar,), dict(return_index=return_index, return_inverse=return_inverse,
                                                            return_counts=return_counts, axis=axis), ANY)

    def compress(self, condition: Any, a: ndarray, axis: Any = None, out: Any = None) -> ndarray:
        sync("compress (the selected count is read back)")
        return device_call("compress", np.compress, (condition, a, axis, out), {}, frozenset())

    def bincount(self, x: ndarray, weights: Any = None, minlength: Any = None) -> ndarray:
        if minlength is None:
            sync("bincount without minlength (the largest value is read back)")
        return device_call("bincount", np.bincount, (x, weights, minlength or 0), {}, frozenset())

    def einsum(self, subscripts: str, *operands: Any, dtype: Any = None, optimize: Any = False) -> ndarray:
        """No ``out=`` (CuPy's einsum has none): its result is always a new allocation."""
        kwargs = {"dtype": dtype} if dtype is not None else {}
        return device_call("einsum", lambda s, *ops, **kw: np.einsum(s, *ops, optimize=bool(optimize), **kw),
                           (subscripts, *operands), kwargs, frozenset({"dtype"}))


class RawKernel:
    """A compiled kernel on the stand-in: launching runs its numpy twin (backends/cuda/twins.py).

    Stricter than CuPy: every argument must match the C parameter's type exactly (a device array of
    the pointer's element type, or a numpy scalar of the value's type), since a Python int or a
    wrong width would be passed as the wrong bytes on a GPU."""

    def __init__(self, code: str, name: str) -> None:
        from gpuinfer.backends.cuda.kernel_library import kernel_signature
        from gpuinfer.backends.cuda.twins import TWINS

        self.name = name
        self.signature = kernel_signature(code, name)
        if name not in TWINS:
            raise RuntimeError(f"kernel {name!r} has no numpy twin in gpuinfer/backends/cuda/twins.py")
        self._twin = TWINS[name]

    def __call__(self, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0, stream: Any = None) -> None:
        if not (isinstance(grid, tuple) and isinstance(block, tuple) and grid and block):
            raise TypeError(f"{self.name}: grid and block must be non-empty tuples, got {grid!r}, {block!r}")
        if any(not isinstance(d, (int, np.integer)) or d < 1 for d in (*grid, *block)) or int(np.prod(block)) > 1024:
            raise ValueError(f"{self.name}: bad launch configuration grid={grid} block={block}")
        if len(args) != len(self.signature):
            raise TypeError(f"{self.name} takes {len(self.signature)} arguments, got {len(args)}")
        host_args = []
        for i, (arg, (kind, dtype)) in enumerate(zip(args, self.signature)):
            if kind == "array":
                if not isinstance(arg, ndarray) or arg.dtype != np.dtype(dtype) or not arg.flags.c_contiguous:
                    raise TypeError(f"{self.name} argument {i}: expected a C-contiguous device {dtype} array, "
                                    f"got {type(arg).__name__} {getattr(arg, 'dtype', '')}")
                host_args.append(arg._a)
            else:
                if type(arg) is not np.dtype(dtype).type:
                    raise TypeError(f"{self.name} argument {i}: expected numpy.{dtype}, got {type(arg).__name__} "
                                    f"(a GPU would receive the wrong bytes)")
                host_args.append(arg)
        twin = self._twin
        twin(*host_args)
        record(lambda: twin(*host_args))


class RawModule:
    """``cupy.RawModule(code=..., options=...)``: ``get_function(name)`` gives a ``RawKernel``."""

    def __init__(self, code: Optional[str] = None, path: Optional[str] = None, options: tuple = (),
                 backend: str = "nvrtc", translate_cucomplex: bool = False, *, enable_cooperative_groups=False,
                 name_expressions: Any = None, jitify: bool = False) -> None:
        if code is None:
            raise TypeError("RawModule: the stand-in needs code= (no cubin files)")
        self.code = code

    def get_function(self, name: str) -> RawKernel:
        return RawKernel(self.code, name)


def _shape(shape: Any) -> tuple:
    if isinstance(shape, ndarray):
        raise TypeError("a shape must be host integers, not a device array")
    return (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)


def _host_scalar(value: Any, why: str) -> Any:
    if isinstance(value, ndarray):
        sync(why)
        return value._a.item()
    return value


def _host_type_function(twin: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        args = tuple(a._a if isinstance(a, ndarray) else a for a in args)
        return twin(*args, **kwargs)

    return call


def _install_methods() -> None:
    """``ndarray`` methods: each a checked ``device_call`` of numpy's method on the data."""
    names = ("reshape", "astype", "copy", "ravel", "flatten", "view", "squeeze", "swapaxes", "transpose",
             "sum", "max", "min", "mean", "prod", "argmax", "argmin", "all", "any", "cumsum", "cumprod",
             "clip", "repeat", "dot", "var", "std", "round", "argsort", "conj", "conjugate", "diagonal",
             "ptp", "trace", "searchsorted", "choose")

    def method(name: str) -> Any:
        allowed = keywords_of(real_attr(f"ndarray.{name}")) if REAL is not None else ANY

        def call(self: ndarray, *args: Any, **kwargs: Any) -> Any:
            if name == "reshape" and len(args) == 1 and isinstance(args[0], (tuple, list)):
                args = (tuple(int(d) for d in args[0]),)
            return device_call(f"ndarray.{name}", getattr(self._a, name), args, kwargs, allowed, self)

        call.__name__ = name
        return call

    for name in names:
        setattr(ndarray, name, method(name))

    def fill(self: ndarray, value: Any) -> None:
        value = _host_scalar(value, "fill(device array)")
        target = self._a
        target.fill(value)
        record(lambda: target.fill(value))

    def take(self: ndarray, indices: Any, axis: Any = None, out: Any = None) -> ndarray:
        return STRICT.take(self, indices, axis, out)

    def nonzero(self: ndarray) -> tuple:
        return STRICT.nonzero(self)

    def sort(self: ndarray, axis: int = -1, kind: Any = None) -> None:
        target = self._a
        target.sort(axis=axis)
        record(lambda: target.sort(axis=axis))

    ndarray.fill, ndarray.take, ndarray.nonzero, ndarray.sort = fill, take, nonzero, sort


_install_methods()
STRICT = StrictCupy()
