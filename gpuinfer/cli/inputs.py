"""Feeds for a command: read the ones the user gave, make the rest from the model's input spec.

Made inputs follow fixed, documented rules (docs/cli.md, "Inputs it makes") so a run is
repeatable and every choice is printed:

* unknown dims: ``--shape`` first, then a symbol already bound by another input, then
  batch-like dims (named like ``batch``/``N``/``B``, or axis 0 of a rank >= 2 input) -> 1,
  other dims of a rank-4 input (image H/W) -> 224, anything else -> 16;
* float inputs: seeded standard normal; bool: seeded coin flips;
* integer inputs: names with ``mask`` -> ones, ``type_ids``/``token_type``/``segment`` -> zeros,
  ``position`` -> 0, 1, 2, ... along the last axis, a 0-d input named ``sr`` or like
  ``sample_rate`` -> 16000, anything else (token-id-like) -> seeded ints in [0, 1000).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from gpuinfer.cli.errors import UsageError

BATCH_DIM = 1
IMAGE_DIM = 224  # unknown non-batch dims of rank-4 inputs (image H/W)
OTHER_DIM = 16  # every other unknown dim
TOKEN_ID_LIMIT = 1000  # token-id-like integers are drawn from [0, 1000)
SAMPLE_RATE = 16000

_BATCH_NAME = re.compile(r"batch|^(n|b|bs)$", re.IGNORECASE)
_ONNX_TYPES = {"float": "float32", "double": "float64", "string": "object"}


@dataclass
class InputChoice:
    """What one input was fed with, for printing and for the JSON document."""

    name: str
    shape: tuple
    dtype: str
    source: str  # "file x.npy", "generated: random normal (seed 0)", ...
    notes: list[str] = field(default_factory=list)  # dims chosen by default, and why
    guessed: dict[int, tuple] = field(default_factory=dict)  # axis -> (declared dim, batch-like) of guessed dims

    def describe(self) -> str:
        text = f"input {self.name!r}: shape {list(self.shape)} {self.dtype}, {self.source}"
        return text + (f" ({'; '.join(self.notes)})" if self.notes else "")

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "source": self.source, "notes": list(self.notes)}


def parse_shapes(items: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``["x=1,3,320,320", "sr="]`` -> ``{"x": (1, 3, 320, 320), "sr": ()}``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims = item.rpartition("=")
        if not sep or not name:
            raise UsageError(f"bad --shape {item!r}: expected NAME=D1,D2,... (e.g. input=1,3,224,224)")
        try:
            shape = tuple(int(d) for d in dims.split(",")) if dims.strip() else ()
        except ValueError:
            raise UsageError(f"bad --shape {item!r}: dimensions must be integers separated by commas") from None
        if any(d < 0 for d in shape):
            raise UsageError(f"bad --shape {item!r}: dimensions must not be negative")
        if name in shapes:
            raise UsageError(f"--shape gives input {name!r} twice")
        shapes[name] = shape
    return shapes


def load_given(items: Sequence[str], npz: Optional[str]) -> dict[str, tuple[np.ndarray, str]]:
    """Arrays from ``--input NAME=FILE.npy`` and ``--inputs FILE.npz``: name -> (array, source)."""
    given: dict[str, tuple[np.ndarray, str]] = {}
    if npz is not None:
        given.update(_load_npz(npz))
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"bad --input {item!r}: expected NAME=FILE.npy")
        if name in given:
            raise UsageError(f"input {name!r} is given twice (--input/--inputs)")
        given[name] = (_load_npy(name, path), f"file {path}")
    return given


def _load_npz(path: str) -> dict[str, tuple[np.ndarray, str]]:
    if not Path(path).is_file():
        raise UsageError(f"--inputs {path}: file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise UsageError(f"--inputs {path}: cannot read it as .npz ({_one_line(exc)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UsageError(f"--inputs {path}: not an .npz archive (use --input NAME=FILE.npy for one array)")
    with archive:
        try:
            return {key: (archive[key], f"file {path}[{key}]") for key in archive.files}
        except Exception as exc:
            raise UsageError(f"--inputs {path}: cannot read it as .npz ({_one_line(exc)})") from None


def _load_npy(name: str, path: str) -> np.ndarray:
    if not Path(path).is_file():
        raise UsageError(f"--input {name}={path}: file not found")
    try:
        value = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise UsageError(f"--input {name}={path}: cannot read it as .npy ({_one_line(exc)})") from None
    if not isinstance(value, np.ndarray):
        raise UsageError(f"--input {name}={path}: holds several arrays; use --inputs for .npz archives")
    return value


def make_feeds(specs: Sequence[Any], given: dict[str, tuple[np.ndarray, str]],
               shapes: dict[str, tuple[int, ...]], seed: int = 0
               ) -> tuple[dict[str, np.ndarray], list[InputChoice]]:
    """Every input of the model fed: given arrays as they are, the rest made by the rules above.

    ``specs`` are NodeArg-like (``name``, ``shape``, ``type``).  Raises ``UsageError`` for names the
    model lacks, ``--shape`` that disagrees with the model, or inputs that cannot be made.
    """
    names = [s.name for s in specs]
    for name in list(given) + list(shapes):
        if name not in names:
            raise UsageError(f"{name!r} is not an input of the model; its inputs are {names}")
    for name in shapes:
        if name in given:
            raise UsageError(f"input {name!r} has both a file and a --shape; give one")
    symbols: dict[str, int] = {}
    for spec in specs:  # bind symbolic dims from what the user fixed, before defaulting any
        fixed = given[spec.name][0].shape if spec.name in given else shapes.get(spec.name)
        if fixed is not None:
            _check_rank(spec, fixed, "the file" if spec.name in given else "--shape")
            for dim, size in zip(spec.shape, fixed):
                if isinstance(dim, str):
                    symbols.setdefault(dim, size)
    fixed_symbols = set(symbols)
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    choices = []
    for spec in specs:
        if spec.name in given:
            array, source = given[spec.name]
            feeds[spec.name] = array
            choices.append(InputChoice(spec.name, array.shape, array.dtype.name, source))
            continue
        shape, notes, guessed = _shape_for(spec, shapes.get(spec.name), symbols, fixed_symbols)
        dtype = dtype_of(spec.type)
        array, how = make_values(spec.name, shape, dtype, rng, seed)
        feeds[spec.name] = array
        choices.append(InputChoice(spec.name, shape, dtype.name, how, notes, guessed))
    return feeds, choices


def dtype_of(type_string: str) -> np.dtype:
    """numpy dtype of an onnxruntime type string like ``tensor(float)``."""
    inner = type_string[len("tensor("):-1] if type_string.startswith("tensor(") else type_string
    try:
        return np.dtype(_ONNX_TYPES.get(inner, inner))
    except TypeError:
        raise UsageError(f"cannot make an input of type {type_string}; give it with --input") from None


def _check_rank(spec: Any, shape: tuple, where: str) -> None:
    dims = list(spec.shape or [])  # [] is a scalar or an unknown rank: nothing to check
    if dims and len(shape) != len(dims):
        raise UsageError(f"input {spec.name!r}: {where} gives rank {len(shape)} {list(shape)}, "
                         f"the model declares rank {len(dims)} {_dims_text(dims)}")
    for axis, (want, got) in enumerate(zip(dims, shape)):
        if isinstance(want, int) and want > 0 and want != got:
            raise UsageError(f"input {spec.name!r}: {where} gives dimension {axis} = {got}, "
                             f"the model fixes it at {want} {_dims_text(dims)}")


def _shape_for(spec: Any, forced: Optional[tuple], symbols: dict[str, int], fixed_symbols: set[str]
               ) -> tuple[tuple, list[str], dict[int, tuple]]:
    """Shape, notes, and the guessed axes: axis -> (declared dim, whether it was taken as a batch)."""
    if forced is not None:
        return tuple(forced), ["shape from --shape"], {}
    dims = list(spec.shape or [])
    rank = len(dims)
    shape, notes, guessed = [], [], {}
    for axis, dim in enumerate(dims):
        if isinstance(dim, int) and dim > 0:
            shape.append(dim)
            continue
        label = f"dim {axis} {dim!r}" if isinstance(dim, str) else f"dim {axis}"
        if isinstance(dim, str) and dim in symbols:
            size, why = symbols[dim], "bound by another input"
            if dim not in fixed_symbols:  # bound to a size guessed for another input
                guessed[axis] = (dim, "batch" in default_dim(dim, axis, rank)[1])
        else:
            size, why = default_dim(dim, axis, rank)
            guessed[axis] = (dim, "batch" in why)
            if isinstance(dim, str):
                symbols[dim] = size
        shape.append(size)
        notes.append(f"{label} -> {size}, {why}")
    return tuple(shape), notes, guessed


def default_dim(dim: Any, axis: int, rank: int) -> tuple[int, str]:
    """Size for an unknown dim, and the rule that chose it."""
    if isinstance(dim, str) and _BATCH_NAME.search(dim):
        return BATCH_DIM, "batch-like name"
    if axis == 0 and rank >= 2:
        return BATCH_DIM, "batch-like (axis 0)"
    if rank == 4:
        return IMAGE_DIM, "image H/W default for rank-4 inputs"
    return OTHER_DIM, "default for unknown dims"


def make_values(name: str, shape: tuple, dtype: np.dtype, rng: np.random.Generator, seed: int
                ) -> tuple[np.ndarray, str]:
    """Values for a made input by the rules above, and a phrase saying how they were made."""
    lname = name.lower()
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype), f"generated: random normal (seed {seed})"
    if dtype.kind == "b":
        return rng.random(shape) < 0.5, f"generated: random bools (seed {seed})"
    if dtype.kind in "iu":
        if "mask" in lname:
            return np.ones(shape, dtype), "generated: ones (mask)"
        if any(k in lname for k in ("type_id", "token_type", "segment")):
            return np.zeros(shape, dtype), "generated: zeros (type ids)"
        if "position" in lname and len(shape) >= 1:
            return (np.broadcast_to(np.arange(shape[-1], dtype=dtype), shape).copy(),
                    "generated: 0, 1, 2, ... (position ids)")
        if len(shape) == 0 and (lname == "sr" or "sample_rate" in lname or "sampling_rate" in lname):
            return np.array(SAMPLE_RATE, dtype), f"generated: {SAMPLE_RATE} (sample rate)"
        high = min(TOKEN_ID_LIMIT, int(np.iinfo(dtype).max) + 1)
        return (rng.integers(0, high, size=shape, dtype=dtype),
                f"generated: random ints in [0, {high}) (seed {seed})")
    raise UsageError(f"cannot make input {name!r} of dtype {dtype.name}; give it with --input {name}=FILE.npy")


def _dims_text(dims: list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
