"""A progress bar for repeated runs and for ``compare``, drawn with rich when it can be.

rich is an optional extra (``pip install gpuinfer[progress]``).  The bar is drawn on stderr only
when both stdout and stderr are terminals, so piped output and logs stay clean; otherwise every
call here does nothing.
"""
from __future__ import annotations

import sys
from typing import Any, Optional


class Progress:
    """``with Progress(total, "runs") as bar: bar.advance("arena")``; silent when it cannot draw."""

    def __init__(self, total: int, description: str) -> None:
        self._total = total
        self._description = description
        self._bar: Any = None
        self._task: Optional[int] = None

    def __enter__(self) -> "Progress":
        if self._total > 1 and _terminal():
            try:
                from rich.console import Console
                from rich.progress import Progress as RichProgress
            except ImportError:
                return self
            self._bar = RichProgress(console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self._description, total=self._total)
        return self

    def advance(self, label: Optional[str] = None) -> None:
        """One unit done; ``label`` (e.g. the mode) replaces the description when given."""
        if self._bar is not None:
            text = f"{self._description} [{label}]" if label else self._description
            self._bar.update(self._task, advance=1, description=text)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _terminal() -> bool:
    try:
        return sys.stdout.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
