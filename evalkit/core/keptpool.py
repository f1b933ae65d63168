"""Check workers kept from one evaluation to the next, so back-to-back evaluations do not fork them again.

Forking a worker and ending it cost a few tens of milliseconds per evaluation (more the more memory the
process holds), which is a tenth of a small model's whole evaluation call. So when an evaluation ends, its
`CheckPool` is kept (`keep`) rather than closed, and the next evaluation takes it (`take`) when it checks the
very same task objects (the workers hold them as they were when forked: a task object is never run from a
fork of another one), with the same worker count and deadline, on the same thread (workers die with the
thread that forked them), within `KEEP_S` seconds. Otherwise the kept pool is closed and a new one forked.

- **What a kept worker costs**: a fork shares the parent's memory as it was at the fork, so pages the parent
  changes afterwards (a training loop's weights and optimizer state) are held twice while the worker lives.
  So a kept worker ends by itself after `KEEP_S` seconds without work (it is told so when parked), and a pool
  older than `MAX_AGE_S` is not reused (a loop evaluating every few seconds forks afresh that often). The
  parent reuses a pool only up to `MARGIN_S` before its workers would end, so a job never reaches a worker
  that has just decided to end.
- **Hung checks are ended exactly as before**: a reused pool is the same `CheckPool`, its workers replaced
  when one is killed for a deadline or dies; an evaluation that fails (or is interrupted) kills its workers
  and keeps nothing.
- At most one pool is kept; it is closed at interpreter exit, and a forked child forgets it.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from evalkit.core.checkpool import CheckPool

if TYPE_CHECKING:
    from evalkit.core.task import Task

KEEP_S = 10.0  # a kept worker ends after this many seconds without work
MAX_AGE_S = 30.0  # a pool created longer ago than this is not reused
MARGIN_S = 1.0  # a kept pool is reused only this long before its workers would end

_lock = threading.Lock()
_kept: tuple[tuple[object, ...], CheckPool, float, threading.Thread] | None = None
_registered = False


def _key(tasks: Sequence[Task], workers: int, timeout: float | None) -> tuple[object, ...]:
    return (tuple(id(t) for t in tasks), max(1, int(workers)), timeout if timeout and timeout > 0 else None)


def take(tasks: Sequence[Task], *, workers: int, timeout: float | None) -> CheckPool:
    """A pool for `tasks`: the kept one when it fits (see the module's doc), else a new one (nothing forked
    until its first check)."""
    global _kept
    with _lock:
        kept, _kept = _kept, None
    if kept is not None:
        key, pool, since, thread = kept
        now = time.monotonic()
        if (key == _key(tasks, workers, timeout) and thread is threading.current_thread()
                and now - since < KEEP_S - MARGIN_S and now - pool.created < MAX_AGE_S):
            pool.prune()
            return pool
        pool.close()
    return CheckPool(tasks, workers=workers, timeout=timeout)


def keep(pool: CheckPool) -> None:
    """Keep `pool`'s idle workers for the next evaluation (`take`); a pool with a busy worker is closed."""
    global _kept, _registered
    if not pool.park(KEEP_S):
        return
    with _lock:
        old, _kept = _kept, (_key(pool.tasks, pool.size, pool.timeout), pool, time.monotonic(),
                             threading.current_thread())
        if not _registered:  # after multiprocessing's own exit hook, so this one runs first (LIFO)
            atexit.register(close_kept)
            _registered = True
    if old is not None:
        old[1].close()


def close_kept() -> None:
    """End the kept workers now (they would end by themselves after `KEEP_S` seconds)."""
    global _kept
    with _lock:
        kept, _kept = _kept, None
    if kept is not None:
        kept[1].close()


def kept_workers() -> list[int]:
    """The process ids of the kept workers (none while an evaluation holds the pool)."""
    with _lock:
        return _kept[1].pids() if _kept is not None else []


def _forget() -> None:  # in a forked child: the pool's workers are its parent's, not its own
    global _kept, _lock
    _kept, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget)

__all__ = ["KEEP_S", "MARGIN_S", "MAX_AGE_S", "close_kept", "keep", "kept_workers", "take"]
