"""The CLI's own error: a problem with what the user typed, reported as one line, exit status 2."""
from __future__ import annotations

from gpuinfer.errors import GpuinferError


class UsageError(GpuinferError):
    """A bad command line: malformed ``--shape``/``--input``, unreadable file, missing extra."""
