"""How a CuPy function runs on the stand-in: check it as CuPy would, run numpy's twin, count it.

``device_call`` is the one path every module function, ufunc and array method takes:

- keyword arguments real CuPy does not accept raise ``TypeError`` (read from the installed
  ``cupy`` when it imports: signatures, ufunc keywords, method docstrings);
- host numpy arrays among the operands raise ``TypeError`` (CuPy: "Unsupported type");
- object, string and other host-only dtypes raise ``TypeError``;
- a result that is a view of an operand costs nothing; anything else is one launch, and new
  arrays are allocated through the current CuPy allocator.
"""
from __future__ import annotations

import inspect
import re
from typing import Any, Callable, Iterable, Optional

import numpy as np

from gpuinfer.backends.strict.array import _host_address, check_dtype, ndarray, record

from gpuinfer.backends.cuda.installed import installed_cupy

REAL = installed_cupy()  # the API the stand-in checks against; absent, only numpy's names bound what exists

UFUNC_KEYWORDS = frozenset({"out", "dtype", "casting"})  # cupy._core._kernel.ufunc.__call__
ANY = None  # keywords not checkable (the real function takes **kwargs)


def real_attr(path: str) -> Any:
    """``cupy.<path>`` of the installed CuPy, or None where it lacks it (or is absent)."""
    obj = REAL
    for part in path.split("."):
        if obj is None:
            return None
        obj = getattr(obj, part, None)
    return obj


def keywords_of(func: Any) -> Optional[frozenset]:
    """The keyword arguments a real CuPy callable accepts (None: cannot tell / any)."""
    if func is None:
        return ANY
    if type(func).__name__ == "ufunc":
        return UFUNC_KEYWORDS
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return _doc_keywords(func)
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return _doc_keywords(func)
    return frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _doc_keywords(func: Any) -> Optional[frozenset]:
    """Keywords from the signature line CuPy's Cython docstrings start with."""
    doc = (getattr(func, "__doc__", None) or "").strip()
    match = re.match(r"[\w.]+\((.*?)\)", doc)
    if not match:
        return ANY
    names = []
    for part in match.group(1).split(","):
        part = part.strip().split("=")[0].strip().lstrip("*")
        if part and part != "self":
            names.append(part.split()[-1])
    return frozenset(names)


def check_keywords(name: str, kwargs: dict, allowed: Optional[frozenset]) -> None:
    if allowed is None:
        return
    bad = sorted(set(kwargs) - allowed)
    if bad:
        raise TypeError(f"cupy.{name}() got an unexpected keyword argument {bad[0]!r} "
                        f"(CuPy's {name} takes {sorted(allowed)})")


def unwrap(x: Any, what: str) -> Any:
    """Operands as numpy sees them; host arrays refused as CuPy refuses them."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        raise TypeError(f"Unsupported type {type(x)} passed to cupy.{what}: host arrays must be "
                        f"uploaded explicitly")
    if isinstance(x, (list, tuple)) and x and any(isinstance(i, (ndarray, np.ndarray)) for i in x):
        return type(x)(unwrap(i, what) for i in x)
    if isinstance(x, np.dtype) or (isinstance(x, type) and issubclass(x, np.generic)):
        check_dtype(x)
    return x


def device_arrays(values: Iterable[Any]) -> list[ndarray]:
    found = []
    for v in values:
        if isinstance(v, ndarray):
            found.append(v)
        elif isinstance(v, (list, tuple)):
            found.extend(device_arrays(v))
    return found


def _view_parent(res: np.ndarray, operands: list[ndarray]) -> Optional[ndarray]:
    """The operand whose memory ``res`` lies in (a view), or None for a new array."""
    if res.size == 0:
        return None
    addr = _host_address(res)
    for x in operands:
        buf = x._mem.mem.buffer
        start = _host_address(buf)
        if start <= addr < start + buf.nbytes:
            return x
    return None


def wrap(res: Any, operands: list[ndarray], out: Optional[Any]) -> tuple[Any, bool]:
    """(device result, whether device work was done) for a numpy result."""
    if isinstance(res, np.ndarray):
        if out is not None and isinstance(out, ndarray) and res is out._a:
            return out, True
        parent = _view_parent(res, operands)
        if parent is not None:
            return ndarray._view(parent, res), False
        return ndarray._fresh(res), True
    if isinstance(res, np.generic):
        return ndarray._fresh(np.asarray(res)), True
    if isinstance(res, (tuple, list)) and res and all(isinstance(r, (np.ndarray, np.generic)) for r in res):
        pairs = [wrap(r, operands, None) for r in res]
        return type(res)(p[0] for p in pairs), any(p[1] for p in pairs)
    return res, False


def _host_target(result: Any) -> Any:
    """The numpy data of a result, for replay: holding it keeps the bytes but not the allocation,
    so a temporary freed during a capture goes back to the graph's pool as it would on CUDA."""
    if isinstance(result, ndarray):
        return result._a
    if isinstance(result, (tuple, list)):
        return type(result)(_host_target(r) for r in result)
    return result


def refill(target: Any, res: Any) -> None:
    """Replay: write a fresh evaluation into the arrays the first one made."""
    if isinstance(target, np.ndarray):
        if res is not target:
            np.copyto(target, res, casting="unsafe")
    elif isinstance(target, (tuple, list)):
        for t, r in zip(target, res):
            refill(t, r)


def device_call(name: str, func: Callable[..., Any], args: tuple, kwargs: dict,
                allowed: Optional[frozenset], owner: Optional[ndarray] = None) -> Any:
    """Run ``func`` (numpy's twin of ``cupy.<name>``) on device operands, as CuPy would.

    ``owner``: the array a method is called on (its views are views, not new arrays)."""
    check_keywords(name, kwargs, allowed)
    dtype = kwargs.get("dtype")
    if dtype is not None:
        check_dtype(dtype)
    out = kwargs.get("out")
    if out is not None and not isinstance(out, (ndarray, tuple)):
        raise TypeError(f"cupy.{name}: out must be a cupy.ndarray, not {type(out).__name__}")
    operands = device_arrays(args) + device_arrays(kwargs.values())
    if owner is not None:
        operands.append(owner)
    np_args = tuple(unwrap(a, name) for a in args)
    np_kwargs = {k: unwrap(v, name) for k, v in kwargs.items()}
    res = func(*np_args, **np_kwargs)
    result, launched = wrap(res, operands, out)
    if launched:
        target = _host_target(result)
        record(lambda: refill(target, func(*np_args, **np_kwargs)))
    return result
