"""A progress bar for long commands (``compare``, ``run --repeat N``, the bench scripts), drawn with rich.

The bar goes to stderr, and only when both stdout and stderr are terminals (and ``TERM`` is not
``dumb``), so piped output and logs stay clean; ``enabled=False`` (the CLI's ``--quiet``) turns it
off everywhere.  It is transient: once the work is done it is erased, and what the command prints
afterwards is the same with or without it.  When it does not draw, every call here does nothing.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional, TextIO


class Progress:
    """``with Progress(total, "compare u2net.onnx") as bar: bar.show("arena"); bar.advance()``.

    ``terminal`` decides whether to draw (default: stdout and stderr are both terminals);
    ``file`` is where to draw (default: stderr).  Both are there so tests can force a terminal.
    """

    def __init__(self, total: int, description: str, *, enabled: bool = True,
                 terminal: Optional[Callable[[], bool]] = None, file: Optional[TextIO] = None) -> None:
        self._total = total
        self._description = description
        self._enabled = enabled
        self._terminal = terminal or _terminal
        self._file = file
        self._bar: Any = None
        self._task: Any = None

    @property
    def drawing(self) -> bool:
        """Whether a bar is on screen now."""
        return self._bar is not None

    def __enter__(self) -> "Progress":
        if not self._enabled or self._total < 1 or not self._terminal():
            return self
        try:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, SpinnerColumn,
                                       TextColumn, TimeElapsedColumn)
        except ImportError:  # rich is a dependency; an install without it still runs, just without a bar
            return self
        console = Console(file=self._file or sys.stderr, force_terminal=True)
        self._bar = RichProgress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True)
        self._bar.start()
        self._task = self._bar.add_task(self._description, total=self._total)
        return self

    def show(self, label: Optional[str] = None) -> None:
        """Name what runs now (a mode, a model) beside the description, without advancing."""
        if self._bar is not None:
            self._bar.update(self._task, description=self._text(label))

    def advance(self, label: Optional[str] = None) -> None:
        """One unit done; ``label`` (e.g. the mode) is shown beside the description when given."""
        if self._bar is not None:
            if label is None:
                self._bar.update(self._task, advance=1)
            else:
                self._bar.update(self._task, advance=1, description=self._text(label))

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _text(self, label: Optional[str]) -> str:
        return f"{self._description} [{label}]" if label else self._description


def _terminal() -> bool:
    """Both stdout and stderr are terminals that can redraw a line."""
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return sys.stdout.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
