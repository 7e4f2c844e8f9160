"""Worker processes that die with the process that started them.

The decode pool (:func:`learner.data.cache.build_cache`) and the phantom renderer start worker processes.
When their parent is killed (``kill -9``, an out-of-memory kill, a cluster's time limit) nothing would stop
them: they kept decoding and writing cache entries for a run that no longer exists. On Linux each worker
asks the kernel for SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``); elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent exits (Linux); a pool's ``initializer``.
    If the parent is already gone, exit now: a spawned worker compares with the process that started it
    (``multiprocessing.parent_process``), since a parent killed while the worker was still importing has
    already left it to ``init``; such a worker would wait forever on a queue whose writer it holds itself."""
    if not sys.platform.startswith("linux"):
        return
    started_by = multiprocessing.parent_process()
    parent = started_by.pid if started_by is not None and started_by.pid is not None else os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return  # not allowed here (a sandbox): the worker lives as before
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
