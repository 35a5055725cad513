"""How many threads a run uses — gpuinfer's own row-block threads and BLAS's — chosen so that a
busy machine does not make runs collapse, without changing a single result bit.

Row-block threads (backends/numpy_threads.py) give the same bytes for any count, so their count
follows the load: unless told otherwise, a run uses one per core that is free when it starts (the
cores this process may run on, less other processes' work, ``busy_elsewhere``), less the BLAS
workers the run leaves spinning when its graph multiplies with BLAS: OpenBLAS's workers busy-wait
for a while after each product, so on two quiet cores with two BLAS threads a second row thread
shares a core with a spinning worker (forcing two made nudenet 1.11x, the PP-OCRv4 detector
1.18x, the recogniser 1.12x, light/resnet50 1.05x as slow as one; same-process A/B).  At least
one.  On a busy machine the blocks go to the threads that run (the caller takes them too), so a
stalled worker costs little.

BLAS is different: OpenBLAS's products are not bit-identical across thread counts (its threaded
driver blocks the inner sum elsewhere: on the build measured, inner sizes above 448 that are not
multiples of 32, e.g. AlexNet's and Inception-v1's; ``bench/blas_bits.py``), so for a session that
makes such products a count that followed the load would make two runs disagree.  Its BLAS keeps
one count for the process: its own default, or ``intra_op_threads=N`` (or onnxruntime's
``SessionOptions.intra_op_num_threads``), set for the run and put back after, overriding a BLAS
thread variable in the environment only when N is given.  OpenBLAS's spin time is read from its
environment at load only, so it is not set here (that would mean changing the caller's
environment).

Unless the count is given, a session whose products all give the same bytes at any count
(``runtime/blas_bits.py`` tries each kind once per process) lets BLAS follow the load too: one
thread while other processes keep at least half the cores busy (``busy_elsewhere``: the CPU time
other processes took since the last reading, so gpuinfer's own spinning BLAS workers do not
count), BLAS's default otherwise.  Beside two busy processes on two cores u2netp's `arena` run went 2,835 -> 1,032 ms
(``bench/vs_onnxruntime.py --load 2``, bench/RESULTS.md).
"""
from __future__ import annotations

import os
import time
from typing import Any, Optional

from gpuinfer.backends.numpy_threads import default_threads, running_with, shared_pool
from gpuinfer.errors import GpuinferError

LOAD_MAX_AGE_S = 0.5  # reading /proc costs ~10 us, a tenth of a small model's run
BUSY_MAX_WINDOW_S = 5.0  # an older reading says little of now: glance at the runnable tasks instead
try:
    _TICKS_PER_S = os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):
    _TICKS_PER_S = 100

_blas: Optional[list] = None  # threadpoolctl's BLAS controllers of this process, found once
_blas_now: list = [float("-inf"), 1]  # (when read, BLAS's thread count then)
_busy: list = [0.0, 0, None]  # (when read, busy cores not of this process, (when, _cpu_ticks()) sampled)


def requested_threads(threads: Optional[int], sess_options: Any = None) -> Optional[int]:
    """The thread count the caller asked for: ``threads``, else onnxruntime's
    ``intra_op_num_threads`` when above 0 (0 is onnxruntime's "default"); None for neither."""
    if threads is None:
        asked = getattr(sess_options, "intra_op_num_threads", 0) or 0
        threads = int(asked) if int(asked) > 0 else None
    if threads is not None and int(threads) < 1:
        raise GpuinferError(f"intra_op_threads must be at least 1, got {threads}")
    return None if threads is None else int(threads)


def blas_controllers(required: bool) -> list:
    """threadpoolctl's controllers of the BLAS libraries loaded (numpy's OpenBLAS)."""
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            if required:
                raise GpuinferError("intra_op_threads needs the threadpoolctl package: "
                                    "pip install threadpoolctl") from None
            return []
        _blas = list(ThreadpoolController().select(user_api="blas").lib_controllers)
    return _blas


def busy_elsewhere() -> int:
    """Cores' worth of work on the machine that is not this process's, read at most every
    ``LOAD_MAX_AGE_S``: the CPU time the machine spent busy (``/proc/stat``, the hypervisor's
    steal included) less this process's own (``/proc/self/stat``), over the time since the last
    reading, rounded.  A window, not a glance: one glance at ``/proc/loadavg``'s runnable count
    (what this read before) caught a passing task now and then on a quiet machine, and the whole
    run then went with one BLAS thread (u2netp 400 -> 605 ms; throwaway spy on ``blas_count``,
    1 run in 20).  The first reading, and one after more than ``BUSY_MAX_WINDOW_S``, has no
    window yet: it counts the runnable tasks that are not this process's threads (OpenBLAS's
    workers spin after a product, so on a quiet machine they would read as load).  0 where the
    kernel does not say."""
    now = time.monotonic()
    if now - _busy[0] <= LOAD_MAX_AGE_S:
        return _busy[1]
    sample = _cpu_ticks()
    previous, _busy[2] = _busy[2], (now, sample)
    if sample is not None and previous is not None and previous[1] is not None \
            and now - previous[0] <= BUSY_MAX_WINDOW_S:
        (busy, own), (busy0, own0) = sample, previous[1]
        elsewhere = max(0, (busy - busy0) - (own - own0)) / (_TICKS_PER_S * (now - previous[0]))
        _busy[0], _busy[1] = now, int(elsewhere + 0.5)
    else:
        _busy[0], _busy[1] = now, max(0, _running_tasks() - _own_running_threads())
    return _busy[1]


def _blas_threads_now() -> int:
    """The most threads a loaded BLAS library runs now (1 where none is known), read at most every
    ``LOAD_MAX_AGE_S`` (threadpoolctl takes ~5 us to ask)."""
    now = time.monotonic()
    if now - _blas_now[0] > LOAD_MAX_AGE_S:
        _blas_now[0], _blas_now[1] = now, max((lib.get_num_threads() for lib in blas_controllers(False)), default=1)
    return _blas_now[1]


def _cpu_ticks() -> Optional[tuple[int, int]]:
    """(ticks the machine's CPUs spent busy, ticks this process ran), or None where unknown."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle, iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is in user)
    return busy, int(own[11]) + int(own[12])  # utime, stime


def _running_tasks() -> int:
    """Runnable tasks on the machine, the reader included (``/proc/loadavg``; 0 where it is not)."""
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0


def _own_running_threads() -> int:
    """This process's threads in state R (running or runnable), the reader included."""
    count = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 1
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        count += state == "R"
    return max(1, count)


class RunThreads:
    """``with run_threads():`` around a run: BLAS and the row-block pool at this run's count."""

    def __init__(self, threads: Optional[int] = None, sess_options: Any = None):
        self.fixed = requested_threads(threads, sess_options)
        self.cores = default_threads()
        # BLAS is set only to a count the caller gave: one that followed the load would change bits
        self.blas = blas_controllers(True) if self.fixed is not None else []
        self.follows_load = False  # BLAS's count follows the load (see ``fit_to_graph``)
        self.calls_blas = True  # the graph may multiply with BLAS (``fit_to_graph`` tells)
        self._blas_default = 0
        self._restore: list = []
        self._scope: Any = None

    def fit_to_graph(self, graph: Any) -> bool:
        """Read from ``graph`` the two things the thread counts depend on: whether it calls BLAS at
        all (``calls_blas``, which ``count`` reads), and whether BLAS's count may follow the load
        for its runs: only if no count was given and every product the graph makes gives the same
        bytes with one thread and BLAS's default (``runtime/blas_bits.py``).  Returns the latter."""
        from gpuinfer.runtime.blas_bits import calls_blas, load_safe_products

        self.calls_blas = calls_blas(graph)
        if self.fixed is not None or self.cores < 2:
            return False
        libs = blas_controllers(False)
        default = max((lib.get_num_threads() for lib in libs), default=1)
        if default < 2 or not load_safe_products(graph, (default,)):
            return False
        self.blas, self._blas_default, self.follows_load = libs, default, True
        return True

    def blas_count(self) -> int:
        """BLAS threads for a run starting now: the given count; with ``fit_to_graph``, one while
        other processes keep half the cores or more busy, else BLAS's default; 0: left alone."""
        if self.fixed is not None:
            return self.fixed
        if not self.follows_load:
            return 0
        return 1 if busy_elsewhere() >= max(1, self.cores // 2) else self._blas_default

    def count(self, blas: int = 0) -> int:
        """Row-block threads for a run starting now whose BLAS runs ``blas`` threads (0: as it is):
        the given count; else the cores other processes leave free, less BLAS's spinning workers
        where the graph calls BLAS, at least one."""
        if self.fixed is not None:
            return self.fixed
        free = self.cores - busy_elsewhere()
        if self.calls_blas:
            free -= (blas or _blas_threads_now()) - 1
        return max(1, free)

    def __call__(self) -> "RunThreads":
        return self

    def __enter__(self) -> "RunThreads":
        blas = self.blas_count()  # a fixed count, or one that changes no bit (``fit_to_graph``)
        n = self.count(blas)
        for lib in self.blas if blas else ():
            before = lib.get_num_threads()
            if before != blas:
                lib.set_num_threads(blas)
                self._restore.append((lib, before))
        self._scope = running_with(shared_pool(n))
        self._scope.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._scope.__exit__(*exc)
        self._scope = None
        for lib, before in self._restore:
            lib.set_num_threads(before)
        self._restore.clear()
