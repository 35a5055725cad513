"""When a model fails on input shapes the CLI guessed, say so and ask for ``--shape`` with an example.

The CLI guesses sizes for dynamic dims (``gpuinfer.cli.inputs``).  Many models run on any size;
some only on the sizes their data has (Silero VAD wants audio chunks of a few hundred samples and
a state whose batch matches the audio's).  A failure deep inside such a model ("LSTM: X must be
3-D") does not tell the user what to do, so ``guessed_shapes_hint`` turns it into a ``UsageError``
that names the guessed inputs and shows a ``--shape`` example.  The example comes from a short,
bounded search: the guessed dims are set to a few common sizes and the model is tried on the CPU
until it runs; when nothing tried runs, the example shows the guessed sizes to replace.
"""
from __future__ import annotations

import contextlib
import itertools
import re
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from gpuinfer.cli.errors import UsageError
from gpuinfer.cli.inputs import InputChoice, make_values
from gpuinfer.errors import (DeviceUnavailableError, GpuinferError, ModelLoadError, UnsupportedOpError)

TRIAL_SIZES = (1, 32, 64, 128, 256, 512, 1024)  # tried for each guessed non-batch dim, after the guess
MAX_TRIALS = 64
MAX_SECONDS = 20.0
TRIAL_MEMORY_LIMIT = 1 << 30  # a trial that would need more is refused before it allocates
NOT_SHAPE_RELATED = (UsageError, DeviceUnavailableError, ModelLoadError, UnsupportedOpError)


@contextlib.contextmanager
def guessed_shapes_hint(model: Path, feeds: dict, choices: list[InputChoice]) -> Iterator[None]:
    """Run the body; a ``GpuinferError`` it raises while some input dims were guessed becomes a
    ``UsageError`` asking for ``--shape`` (with an example that runs, when one is found)."""
    try:
        yield
    except NOT_SHAPE_RELATED:
        raise
    except GpuinferError as exc:
        guessed = [c for c in choices if c.guessed]
        if not guessed:
            raise
        raise UsageError(hint_message(model, feeds, choices, exc)) from exc


def hint_message(model: Path, feeds: dict, choices: list[InputChoice], error: BaseException) -> str:
    """One line: which inputs were guessed, the error (shortened), and a ``--shape`` example."""
    guessed = [c for c in choices if c.guessed]
    described = "; ".join(
        f"{c.name} {list(c.shape)} (dim{'s' if len(c.guessed) > 1 else ''} "
        f"{', '.join(map(str, sorted(c.guessed)))} guessed)" for c in guessed)
    working = find_working_shapes(model, feeds, choices)
    if working is not None:
        example = _shape_flags(working) + " (the model runs with these; use your data's sizes)"
    else:
        example = (_shape_flags({c.name: c.shape for c in guessed})
                   + " with the guessed sizes replaced by your data's (no common size tried here ran)")
    reason = _innermost(" ".join(str(error).split()))
    reason = reason if len(reason) <= 200 else reason[:199] + "…"
    return (f"the model fails on the input shapes guessed for its dynamic dims ({described}): {reason}; "
            f"give the input shapes with --shape NAME=D1,D2,..., e.g. {example}")


def find_working_shapes(model: Path, feeds: dict, choices: list[InputChoice]) -> dict[str, tuple] | None:
    """Shapes of the guessed inputs with which the model runs on the CPU, or None.

    Guessed dims that share a symbolic name move together; batch-like ones stay at their guess.
    At most ``MAX_TRIALS`` runs and about ``MAX_SECONDS`` seconds.
    """
    from gpuinfer import InferenceSession

    keys, options = [], []
    places: dict[tuple, list[tuple[str, int]]] = {}
    for choice in choices:
        for axis, (dim, batch_like) in sorted(choice.guessed.items()):
            key = ("symbol", dim) if isinstance(dim, str) else ("axis", choice.name, axis)
            if key not in places:
                size = choice.shape[axis]
                keys.append(key)
                options.append([size] if batch_like else [size] + [s for s in TRIAL_SIZES if s != size])
                places[key] = []
            places[key].append((choice.name, axis))
    try:
        session = InferenceSession(model, device="cpu", memory_mode="reduce", memory_limit_bytes=TRIAL_MEMORY_LIMIT)
    except Exception:  # noqa: BLE001 - the hint must never hide the error it explains
        return None
    by_name = {c.name: c for c in choices}
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    trials = itertools.islice(itertools.product(*options), 1, MAX_TRIALS + 1)  # the first is the guess
    for sizes in trials:
        if time.perf_counter() - started > MAX_SECONDS:
            break
        shapes = {c.name: list(c.shape) for c in choices if c.guessed}
        for key, size in zip(keys, sizes):
            for name, axis in places[key]:
                shapes[name][axis] = size
        trial = dict(feeds)
        for name, shape in shapes.items():
            trial[name] = make_values(name, tuple(shape), np.dtype(by_name[name].dtype), rng, 0)[0]
        try:
            session.run(None, trial)
        except Exception:  # noqa: BLE001 - a failed trial only means: not this size
            continue
        return {name: tuple(shape) for name, shape in shapes.items()}
    return None


def _innermost(text: str) -> str:
    """The failing node's own message: nested If/Loop prefixes ("node 'If_0' (If, opset 16): ") dropped."""
    nodes = list(re.finditer(r"node '[^']*' \(\w+, opset \d+\)", text))
    return text[nodes[-1].start():] if len(nodes) > 1 else text


def _shape_flags(shapes: dict[str, tuple]) -> str:
    return " ".join(f"--shape {name}={','.join(map(str, shape))}" for name, shape in shapes.items())
