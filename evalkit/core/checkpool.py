"""Scoring in worker processes, where a hung check can be ended rather than abandoned.

A check stuck in a Python loop cannot be stopped from another thread: the thread it runs in
can only be abandoned, and it spins on, taking the GIL from every other thread for the rest
of the process (plain Python ran 2-3x slower after one). So the runner scores in forked worker
processes:

- **fork** (Linux): the workers inherit the tasks as they are in memory — a task defined in a
  notebook or a test, a lambda checker — so only (task index, example, output) cross to a
  worker, and its `Scored` result crosses back (pickle: both ends run this process's code).
  A worker only runs checks; it never touches torch or the model the parent may hold.
- A worker scores one output at a time **in its main thread**, so `score`'s SIGALRM deadline
  applies exactly as in a main thread: extraction and check get `timeout` seconds each, and a
  check past it is a TIMEOUT verdict ("check exceeded 30s") with the answer kept.
- A check that does not yield to the alarm (stuck in C code, or with SIGALRM blocked) is
  **killed with its worker** (SIGKILL) once the worker has been silent for 2 × timeout +
  GRACE_S: the sample is a TIMEOUT, the worker is replaced, its other jobs go to the others.
- A worker that dies in a check (os._exit, a crash) gives that sample an ERROR verdict. An
  `InfrastructureError` raised by a checker (e.g. no sandbox) crosses back and is raised here:
  the run stops, the answer is not blamed.
- `submit` sends the jobs and returns, so the caller can generate the next batch while they are
  checked; `collect` gathers the results (`score` is both). Jobs go out in chunks (one message
  each; a worker's whole share at once when checks are known to be quick); results come back one
  by one, each stamped with when it was done, so the parent knows when each check began even when it
  reads them later. One worker starts first, more only while the work left outweighs a fork (see
  CheckPool). The worker's side is `evalkit.core.checkworker`.
- Workers never outlive the pool: `close()` ends them (a stop message, then SIGKILL; an error
  or Ctrl-C in `score` kills them at once); they ignore SIGINT (the parent handles Ctrl-C), and
  they die with the parent thread that forked them (PR_SET_PDEATHSIG), so even a `kill -9` of
  the parent leaves no worker spinning. A pool kept between evaluations (`evalkit.core.keptpool`) has its
  idle workers `park`ed: each ends by itself once unused for the time it is told.
"""

from __future__ import annotations

import math
import multiprocessing
import pickle
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, TypeVar

from evalkit.core.checkworker import Job, Worker, stop_signals_held
from evalkit.core.scoring import Scored
from evalkit.core.verdict import Status, Verdict

if TYPE_CHECKING:
    from evalkit.core.task import Task

CONTAINED = "__evalkit_contained__"
GRACE_S = 2.0  # beyond twice the deadline (extraction + check): past it, the worker is killed
MAX_CHUNK = 16  # jobs per message to a worker
AHEAD_S = 0.5  # a worker is sent all its share of a submission at once when it takes about this long at most
# Another worker starts when the work left per worker is this many times what a fork takes in the parent
# (the child's start, its exit and the cores it shares cost more than the fork call itself).
GROW_AFTER = 10.0
T = TypeVar("T")


def fork_available() -> bool:
    """Whether worker processes can inherit in-memory tasks here (the 'fork' start method: Linux)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def contained(obj: T) -> T:
    """Mark a task class (or its `check`) whose checks bound their own time: the runner scores them on
    threads in its own process, not in a worker process.

    For checks that run their real work elsewhere under a limit that ends it, such as code run in the
    sandbox (`evalkit.checkers.python_tests`, `python_io`): the sandbox's pool of supervisors lives in
    this process and is reused from one evaluation to the next, where a worker would start its own.
    Anything else such a check does in Python must be quick, as on any thread.
    """
    setattr(obj, CONTAINED, True)
    return obj


def is_contained(task: Task) -> bool:
    """Whether `task`'s implementation, or its `check`, is marked with `contained`."""
    impl = task.impl
    return marked_contained(impl) or marked_contained(getattr(impl, "check", None))


def marked_contained(obj: object) -> bool:
    """Whether `obj` (a task class or instance, or a check function) is marked with `contained`."""
    return bool(getattr(obj, CONTAINED, False))


class CheckPool:
    """Forked worker processes that score outputs of `tasks`; a hung check is ended with its worker.

        with CheckPool(tasks, workers=4, timeout=30) as pool:
            scored = pool.score(task, [(example, output), ...])   # in order, one Scored per job

    Workers start at the first `score` call (a pool never used forks nothing) and inherit the
    tasks as they are then; `close()` ends them. One worker starts first; more (up to `workers`)
    only while the work left per worker outweighs what a fork has cost — a fork copies the
    parent's page tables, so it costs more the more memory the parent holds (a model being
    trained), and cheap checks are done sooner than a second worker could start. Not thread-safe:
    one `score` call at a time.
    """

    def __init__(self, tasks: Sequence[Task], *, workers: int, timeout: float | None):
        if not fork_available():
            raise RuntimeError("CheckPool needs the 'fork' start method (Linux)")
        self.tasks = list(tasks)
        self.size = max(1, int(workers))
        self.timeout = timeout if timeout and timeout > 0 else None
        self.limit = 2 * self.timeout + GRACE_S if self.timeout else None  # silence that kills a worker
        self._index = {id(t): i for i, t in enumerate(self.tasks)}
        self._context = multiprocessing.get_context("fork")
        self._workers: list[Worker] = []
        self._fork_s = 0.0  # what the last fork took
        self._check_s = 0.0  # a moving average of a check's time, as the workers measure it
        self.created = time.monotonic()
        self.forks = 0  # workers started, replacements included
        self.kills = 0  # workers killed for a check past its deadline
        self._pending: Pending | None = None  # submitted, not yet collected

    def __enter__(self) -> CheckPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(kill=exc[0] is not None)

    def close(self, kill: bool = False) -> None:
        """End every worker: idle ones stop when told; busy or stubborn ones are killed."""
        workers, self._workers = self._workers, []
        self._pending = None  # what was submitted is dropped with the workers
        for w in workers:
            w.end(kill=kill or bool(w.queue))

    def park(self, idle_s: float) -> bool:
        """Keep the (idle) workers for a later evaluation: each ends by itself after `idle_s` seconds without
        work. False, with every worker ended, when one is still busy or none is left."""
        if any(w.queue for w in self._workers):
            self.close(kill=True)
            return False
        for w in list(self._workers):
            try:
                w.conn.send_bytes(pickle.dumps(("park", idle_s)))
            except OSError:  # it died idle
                self._workers.remove(w)
                w.end(kill=True)
        return bool(self._workers)

    def prune(self) -> None:
        """Forget workers that have ended (a parked one past its idle time, one killed from outside)."""
        for w in [w for w in self._workers if not w.process.is_alive()]:
            self._workers.remove(w)
            w.end(kill=True)

    def pids(self) -> list[int]:
        """The worker processes' ids."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def _spawn(self) -> Worker:
        self.forks += 1
        start = time.monotonic()
        with stop_signals_held():
            worker = Worker(self._context, self.tasks, self.timeout, [w.conn for w in self._workers])
        self._fork_s = time.monotonic() - start
        return worker

    def score(self, task: Task, jobs: Sequence[Job]) -> list[Scored]:
        """Score `jobs` of `task` (one of the pool's tasks) in the workers; results in job order.

        Raises what a checker's InfrastructureError was; any error (or Ctrl-C) here kills the workers
        (the next call starts new ones).
        """
        return self.collect(self.submit(task, jobs))

    def submit(self, task: Task, jobs: Sequence[Job]) -> Pending:
        """Send `jobs` of `task` to the workers and return at once: they check while the caller does other
        work (generates the next batch); `collect` waits for the results. One submission at a time.

        When a check's time is known to be small, each worker is sent its whole share at once (at most
        `AHEAD_S` seconds of checks); otherwise one chunk, and the rest goes out as `collect` hears back.
        """
        if id(task) not in self._index:
            raise ValueError(f"task {task.name!r} is not one of this pool's tasks")
        if self._pending is not None:
            raise RuntimeError("collect() the previous submit() first: one submission at a time")
        jobs = list(jobs)
        most = min(self.size, len(jobs))
        pending = Pending(self._index[id(task)], jobs, [None] * len(jobs), deque(range(len(jobs))),
                          max(1, min(MAX_CHUNK, math.ceil(len(jobs) / (4 * most or 1)))), most)
        if not jobs:
            return pending
        self._pending = pending
        try:
            if not self._workers:
                self._workers.append(self._spawn())
            while self._grow(pending) == 0.0:
                pass
            share = math.ceil(len(jobs) / len(self._workers))
            ahead = share if 0 < self._check_s * share <= AHEAD_S else pending.chunk
            for w in self._workers:
                self._feed(w, pending, ahead)
        except BaseException:
            self.close(kill=True)  # which drops the submission too
            raise
        return pending

    def collect(self, pending: Pending) -> list[Scored]:
        """The results of `pending` (from `submit`), in job order; see `score` for errors."""
        if pending.jobs and pending is not self._pending:
            raise RuntimeError("this submission was collected already, or its pool closed")
        try:
            return self._collect(pending)
        except BaseException:
            self.close(kill=True)
            raise
        finally:
            self._pending = None

    def _feed(self, w: Worker, p: Pending, size: int) -> None:
        """Send `w` (idle) up to `size` of the jobs left."""
        if not p.todo or w.queue:
            return
        ids = [p.todo.popleft() for _ in range(min(size, len(p.todo)))]
        try:
            w.send(p.index, ids, [p.jobs[i] for i in ids])
        except OSError:  # it died idle (e.g. the OOM killer): the jobs go to a new one
            p.todo.extendleft(reversed(ids))
            p.idle_deaths.append(w.how_it_died())
            if len(p.idle_deaths) > 3:
                raise RuntimeError(f"check worker processes keep dying ({p.idle_deaths[-1]})") from None
            self._replace(w, p, None)

    def _replace(self, w: Worker, p: Pending, verdict: Verdict | None) -> None:
        if verdict is not None:  # for the job it was on; the jobs behind it are innocent: again
            p.results[w.queue.popleft()] = Scored("", verdict)
        p.todo.extendleft(reversed(w.queue))
        w.queue.clear()
        w.end(kill=True)
        self._workers[self._workers.index(w)] = self._spawn()

    def _grow(self, p: Pending) -> float | None:
        """Start another worker if the work left per worker outweighs a fork (0.0); else when to look again
        (None: no more workers for this submission)."""
        if len(self._workers) >= p.most or not p.todo:
            return None
        now = time.monotonic()
        running = max((now - w.since for w in self._workers if w.queue and w.answered), default=0.0)
        if max(self._check_s, running) * len(p.todo) / len(self._workers) > GROW_AFTER * self._fork_s:
            self._workers.append(self._spawn())
            return 0.0
        return max(0.01, self._fork_s)  # a long check may make it worth it: look again

    def _collect(self, p: Pending) -> list[Scored]:
        while p.todo or any(w.queue for w in self._workers):
            look_again = self._grow(p)
            for w in self._workers:
                self._feed(w, p, p.chunk)
            busy = {w.conn: w for w in self._workers if w.queue}
            waits = [look_again] if look_again is not None else []
            if self.limit is not None:
                waits.append(max(0.0, min(w.since for w in busy.values()) + self.limit - time.monotonic()))
            for conn in wait(list(busy), timeout=min(waits) if waits else None):
                w = busy[conn]  # type: ignore[index]
                if self._read(w, p):
                    self._feed(w, p, p.chunk)
            if self.limit is not None:
                for w in [w for w in self._workers if w.queue and time.monotonic() - w.since > self.limit]:
                    # Answers that came while no one read (the caller was generating) are not the silence:
                    # read them first, so that only the check still running is blamed.
                    if self._read(w, p) and w.queue and time.monotonic() - w.since > self.limit:
                        self.kills += 1
                        self._replace(w, p, Verdict(Status.TIMEOUT, 0.0, f"check exceeded {self.timeout:g}s"))
        assert all(r is not None for r in p.results)
        return p.results  # type: ignore[return-value]

    def _read(self, w: Worker, p: Pending) -> bool:
        """Take every answer `w` has sent so far; False when it died (its job is an ERROR, it is replaced)."""
        while w.queue and w.conn.poll():
            try:
                kind, payload, took, done = pickle.loads(w.conn.recv_bytes())
            except (EOFError, OSError):
                self._replace(w, p, Verdict(Status.ERROR, 0.0, f"the check's worker process died ({w.how_it_died()})"))
                return False
            if kind == "raise":
                raise payload
            p.results[w.queue.popleft()] = payload
            self._check_s = 0.8 * self._check_s + 0.2 * took if w.answered or self._check_s else took
            w.since, w.answered = done, True  # its next job began when this one was done
        return True


@dataclass
class Pending:
    """Jobs of one `CheckPool.submit`: their results so far, those not yet sent, the chunk size, the workers
    it may use, and workers found dead while idle."""

    index: int
    jobs: list[Job]
    results: list[Scored | None]
    todo: deque[int]
    chunk: int
    most: int
    idle_deaths: list[str] = field(default_factory=list)


__all__ = ["AHEAD_S", "CONTAINED", "GRACE_S", "CheckPool", "Job", "Pending", "contained", "fork_available",
           "is_contained", "marked_contained"]
