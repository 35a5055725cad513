"""Checks that ops made on the device, read once, after the run.

An op whose inputs live on a GPU (Gather's indices, say) cannot look at them without stalling the
host until the device has caught up.  It computes a device flag instead (``ctx.defer_check``); the
session reads all of a run's flags in one transfer after the run and raises for the first that
failed, naming the node.  On the CPU ops check at once and no flag is ever deferred.
"""
from __future__ import annotations

from typing import Any

from gpuinfer.errors import NodeExecutionError


def verify_deferred(checks: list[tuple[Any, str]], device: Any) -> None:
    """Raise ``NodeExecutionError`` for the first failed check (one device read for all of them)."""
    if not checks:
        return
    xp = device.xp
    flags = checks[0][0].reshape(1) if len(checks) == 1 else xp.stack([flag.reshape(()) for flag, _ in checks])
    failed = device.to_host(flags)
    for (_, message), bad in zip(checks, failed.reshape(-1)):
        if bad:
            raise NodeExecutionError(message)
