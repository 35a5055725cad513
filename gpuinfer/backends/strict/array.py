"""The strict stand-in's ``ndarray``: numpy data in emulated device memory, CuPy's manners.

It refuses implicit conversion to numpy (``np.asarray(a)`` raises, as CuPy's does), refuses
numpy functions and ufuncs (stricter than CuPy, which dispatches some of them), and counts every
launch, sync and upload in ``SPACE.counters``.  Views share their parent's memory and cost no
launch; anything that makes a new array allocates through the current CuPy allocator.
"""
from __future__ import annotations

import ctypes
import operator
from typing import Any, Callable, Optional

import numpy as np

from gpuinfer.backends.strict.counters import running_op
from gpuinfer.backends.strict.memory import SPACE, MemoryPointer, allocate

HOST_ONLY_KINDS = "OUSVM"  # object, strings, void, datetime: no CuPy dtype


def check_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind in HOST_ONLY_KINDS:
        raise TypeError(f"Unsupported dtype {dt}: CuPy has no {dt} arrays (strings and objects stay on the host)")
    return dt


def _host_address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


class _Zero:
    """The memory of zero-byte arrays: CuPy allocates nothing for them."""

    ptr, size, device_id = 0, 0, 0
    buffer = np.empty(1, dtype=np.uint8)


_ZERO = MemoryPointer(_Zero(), 0)


def record(fn: Callable[[], Any]) -> None:
    """Note a device operation: counted, and kept for replay while a graph is being captured."""
    counters = SPACE.counters
    counters.launches += 1
    if counters.by_op is not None:  # attribution asked for (bench/device_census.py --by-op)
        op = running_op()
        counters.by_op[op] = counters.by_op.get(op, 0) + 1
    if SPACE.capture.active:
        SPACE.capture.note(fn)


def sync(why: str) -> None:
    SPACE.capture.forbid(f"a device-to-host read ({why})")
    SPACE.counters.note_sync(why)


def upload(nbytes: int, why: str) -> None:
    SPACE.capture.forbid(f"a host-to-device upload ({why})")
    SPACE.counters.note_upload(nbytes, why)


class ndarray:  # noqa: N801 (CuPy's name)
    """``cupy.ndarray`` as the stand-in has it: ``ndarray(shape, dtype, memptr=None, strides=None)``."""

    __slots__ = ("_a", "_mem", "__weakref__")
    __array_ufunc__ = None  # numpy's operators hand over to ours; np.<ufunc>(device) raises
    __array_priority__ = 100

    def __init__(self, shape: Any, dtype: Any = float, memptr: Optional[MemoryPointer] = None,
                 strides: Any = None, order: str = "C") -> None:
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
        dt = check_dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        if memptr is None:
            memptr = allocate(nbytes) if nbytes else _ZERO
        if strides is None:
            extent = nbytes
        else:
            extent = dt.itemsize + sum((d - 1) * s for d, s in zip(shape, strides) if d > 0) if nbytes else 0
        raw = memptr.bytes_view(extent)
        self._a = np.ndarray(shape, dtype=dt, buffer=memptr.mem.buffer, offset=memptr.offset,
                             strides=strides, order=order) if nbytes else np.empty(shape, dtype=dt)
        del raw
        self._mem = memptr

    # --- construction helpers (not CuPy API) ---------------------------------------------------
    @classmethod
    def _view(cls, parent: "ndarray", a: np.ndarray) -> "ndarray":
        obj = object.__new__(cls)
        obj._a = a
        obj._mem = parent._mem
        return obj

    @classmethod
    def _fresh(cls, value: Any) -> "ndarray":
        """A new device array holding ``value`` (a host result of the emulated kernel)."""
        value = np.asarray(value)
        obj = cls(value.shape, value.dtype)
        if value.size:
            np.copyto(obj._a, value, casting="unsafe")
        return obj

    # --- attributes ----------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    base = property(lambda self: None)
    device = property(lambda self: 0)

    @property
    def data(self) -> MemoryPointer:
        if self._a.size == 0:
            return self._mem
        return MemoryPointer(self._mem.mem, _host_address(self._a) - _host_address(self._mem.mem.buffer))

    @property
    def T(self) -> "ndarray":  # noqa: N802
        return ndarray._view(self, self._a.T)

    @property
    def real(self) -> "ndarray":
        return ndarray._view(self, self._a.real) if self.dtype.kind == "c" else self

    @property
    def imag(self) -> "ndarray":
        if self.dtype.kind == "c":
            return ndarray._view(self, self._a.imag)
        zeros = ndarray._fresh(np.zeros(self.shape, self.dtype))  # CuPy: a new zero array
        target = zeros._a
        record(lambda: target.fill(0))
        return zeros

    @imag.setter
    def imag(self, value: Any) -> None:
        if self.dtype.kind != "c":
            raise TypeError("array does not have imaginary part to set")
        source, target = _operand(value, "imag"), self._a
        target.imag = source
        record(lambda: setattr(target, "imag", source))

    @real.setter
    def real(self, value: Any) -> None:
        source, target = _operand(value, "real"), self._a
        if self.dtype.kind == "c":
            target.real = source
            record(lambda: setattr(target, "real", source))
        else:
            np.copyto(target, source)
            record(lambda: np.copyto(target, source))

    # --- refused conversions -------------------------------------------------------------------
    def __array__(self, *args: Any, **kwargs: Any):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any):
        raise TypeError(f"numpy.{func.__name__} called on a device array: use the device's array "
                        f"module (ctx.xp), or move the value to the host explicitly")

    # --- device -> host (each a sync) ---------------------------------------------------------
    def get(self, stream: Any = None, order: str = "C", out: Any = None, blocking: bool = True) -> np.ndarray:
        sync(f"get() of {self.shape} {self.dtype}")
        return np.array(self._a, order=order)

    def item(self) -> Any:
        sync("item()")
        return self._a.item()

    def tolist(self) -> Any:
        sync("tolist()")
        return self._a.tolist()

    def __bool__(self) -> bool:
        sync("bool()")
        return bool(self._a)

    def __int__(self) -> int:
        sync("int()")
        return int(self._a)

    def __float__(self) -> float:
        sync("float()")
        return float(self._a)

    def __index__(self) -> int:
        sync("operator.index()")
        return operator.index(self._a)

    def __complex__(self) -> complex:
        sync("complex()")
        return complex(self._a)

    def __repr__(self) -> str:
        return f"strict.ndarray(shape={self.shape}, dtype={self.dtype})"

    __str__ = __repr__

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d array")
        for i in range(self.shape[0]):
            yield ndarray._view(self, self._a[i])

    # --- host -> device ------------------------------------------------------------------------
    def set(self, arr: Any, stream: Any = None) -> None:
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, not {type(arr).__name__}")
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError(f"set(): shape and dtype must match: {arr.shape} {arr.dtype} vs {self.shape} {self.dtype}")
        upload(arr.nbytes, f"set() of {arr.shape} {arr.dtype}")
        np.copyto(self._a, arr)

    # --- indexing ------------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> "ndarray":
        key, fancy = _device_key(key)
        result = self._a[key]
        if not fancy:  # basic indexing: always a view (CuPy gives a 0-d array where numpy a scalar)
            if not isinstance(result, np.ndarray):
                result = self._a[(key if isinstance(key, tuple) else (key,)) + (None,)].reshape(())
            return ndarray._view(self, result)
        src = self._a
        out = ndarray._fresh(result)
        record(lambda: np.copyto(out._a, src[key]))
        return out

    def __setitem__(self, key: Any, value: Any) -> None:
        key, _ = _device_key(key)
        value = _operand(value, "__setitem__")
        dst = self._a
        dst[key] = value
        record(lambda: dst.__setitem__(key, value))

    # --- operators -----------------------------------------------------------------------------
    def _binary(self, other: Any, fn: Callable[[Any, Any], Any], name: str) -> Any:
        other = _operand(other, name)
        if other is NotImplemented:
            return NotImplemented
        a = self._a
        result = ndarray._fresh(fn(a, other))
        out = result._a
        record(lambda: np.copyto(out, fn(a, other), casting="unsafe"))
        return result

    def _inplace(self, other: Any, fn: Callable[[Any, Any], Any], name: str) -> "ndarray":
        other = _operand(other, name)
        a = self._a
        fn(a, other)
        record(lambda: fn(a, other))
        return self

    def _unary(self, fn: Callable[[Any], Any]) -> "ndarray":
        a = self._a
        result = ndarray._fresh(fn(a))
        out = result._a
        record(lambda: np.copyto(out, fn(a), casting="unsafe"))
        return result

    def __neg__(self): return self._unary(operator.neg)
    def __pos__(self): return self._unary(operator.pos)
    def __abs__(self): return self._unary(abs)
    def __invert__(self): return self._unary(operator.invert)


def _reflected(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    return lambda a, b: fn(b, a)


_BINARY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
           "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow, "matmul": operator.matmul,
           "and": operator.and_, "or": operator.or_, "xor": operator.xor, "lshift": operator.lshift,
           "rshift": operator.rshift}
_INPLACE = {"add": operator.iadd, "sub": operator.isub, "mul": operator.imul, "truediv": operator.itruediv,
            "floordiv": operator.ifloordiv, "mod": operator.imod, "pow": operator.ipow,
            "and": operator.iand, "or": operator.ior, "xor": operator.ixor, "lshift": operator.ilshift,
            "rshift": operator.irshift}
_COMPARE = {"eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le,
            "gt": operator.gt, "ge": operator.ge}


def _install_operators() -> None:
    def binary(fn, name):
        return lambda self, other: self._binary(other, fn, name)

    for name, fn in {**_BINARY, **_COMPARE}.items():
        setattr(ndarray, f"__{name}__", binary(fn, name))
    for name, fn in _BINARY.items():
        setattr(ndarray, f"__r{name}__", binary(_reflected(fn), "r" + name))
    for name, fn in _INPLACE.items():
        setattr(ndarray, f"__i{name}__", lambda self, other, fn=fn, name=name: self._inplace(other, fn, name))
    ndarray.__hash__ = None


_install_operators()


def _operand(value: Any, what: str) -> Any:
    """A device array's data, or a host scalar; host arrays are refused as CuPy refuses them."""
    if isinstance(value, ndarray):
        return value._a
    if isinstance(value, np.ndarray):
        raise TypeError(f"Unsupported type {type(value)} in {what}: a host numpy array met a device "
                        f"array (upload it explicitly, once)")
    if isinstance(value, (list, tuple)):
        raise TypeError(f"Unsupported type {type(value)} in {what}: CuPy takes no lists as arrays")
    if isinstance(value, (bool, int, float, complex, np.generic)) or value is None:
        return value
    return NotImplemented


def _device_key(key: Any) -> tuple[Any, bool]:
    """An index as numpy takes it; device index arrays are gathers, boolean masks sync."""
    items = key if isinstance(key, tuple) else (key,)
    fancy = False
    out = []
    for item in items:
        if isinstance(item, ndarray):
            fancy = True
            if item.dtype == np.bool_:
                sync("boolean-mask indexing (the result's size is read back)")
            out.append(item._a)
        elif isinstance(item, np.ndarray) or isinstance(item, list):
            fancy = True
            host = np.asarray(item)
            upload(host.nbytes, "a host index array")
            out.append(host)
        else:
            out.append(item)
    return (tuple(out) if isinstance(key, tuple) else out[0]), fancy
