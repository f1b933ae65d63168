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
- Jobs go out in chunks (one message each); results come back one by one, so the parent
  knows when each check began. One worker starts first, more only while the work left
  outweighs a fork (see CheckPool).
- Workers never outlive the pool: `close()` ends them (a stop message, then SIGKILL; an error
  or Ctrl-C in `score` kills them at once); they ignore SIGINT (the parent handles Ctrl-C), and
  they die with the parent thread that forked them (PR_SET_PDEATHSIG), so even a `kill -9` of
  the parent leaves no worker spinning. A pool kept between evaluations (`evalkit.core.keptpool`) has its
  idle workers `park`ed: each ends by itself once unused for the time it is told.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import pickle
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, TypeVar

from evalkit.core.scoring import Scored, describe_exception, score
from evalkit.core.verdict import Status, Verdict
from evalkit.errors import InfrastructureError

if TYPE_CHECKING:
    from evalkit.core.example import Example
    from evalkit.core.task import Task

CONTAINED = "__evalkit_contained__"
GRACE_S = 2.0  # beyond twice the deadline (extraction + check): past it, the worker is killed
MAX_CHUNK = 16  # jobs per message to a worker
# Another worker starts when the work left per worker is this many times what a fork takes in the parent
# (the child's start, its exit and the cores it shares cost more than the fork call itself).
GROW_AFTER = 10.0
Job = tuple["Example", str]  # (example, the model's output)
T = TypeVar("T")


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


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


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the thread that forked it ends (Linux; best effort elsewhere)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent:  # the parent ended before the line above ran
        os._exit(0)


def _score_one(task: Task, ex: Example, output: str, timeout: float | None) -> bytes:
    """The pickled reply for one job: ("ok", Scored, seconds) or ("raise", InfrastructureError, seconds)."""
    start = time.perf_counter()
    try:
        reply: tuple[str, Any] = ("ok", score(task, ex, output, timeout=timeout))
    except InfrastructureError as exc:
        reply = ("raise", exc)
    except BaseException as exc:  # noqa: BLE001 - e.g. SystemExit from a checker: ERROR, as a raise would be
        reply = ("ok", Scored("", Verdict(Status.ERROR, 0.0, f"checker raised {describe_exception(exc)}")))
    took = time.perf_counter() - start
    try:
        return pickle.dumps((*reply, took))
    except Exception as exc:  # noqa: BLE001 - what does not cross (e.g. a verdict's odd reason) is described
        if reply[0] == "raise":
            return pickle.dumps(("raise", InfrastructureError(describe_exception(reply[1])), took))
        why = f"the verdict cannot be sent: {describe_exception(exc)}"
        return pickle.dumps(("ok", Scored("", Verdict(Status.ERROR, 0.0, why)), took))


def _serve(conn: Connection, tasks: Sequence[Task], timeout: float | None, parent: int,
           siblings: Sequence[Connection]) -> None:
    """A worker: score each job it is sent, in order, answering one message per job."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not a handler of the parent's (it may touch torch)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by the parent around the fork
    _die_with_parent(parent)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # a group of its own: killing it ends what a checker started too
    for other in siblings:  # the parent's ends of the pipes (its own too), inherited by the fork
        other.close()
    parked: float | None = None  # kept between evaluations: end after this many idle seconds
    try:
        while True:
            if parked is not None and not conn.poll(parked):
                break  # unused: end, and let go of the parent's memory that this fork still shares
            message = pickle.loads(conn.recv_bytes())
            if message is None:
                break
            if isinstance(message[0], str):  # ("park", seconds)
                parked = message[1]
                continue
            parked = None
            index, jobs = message
            for ex, output in jobs:
                conn.send_bytes(_score_one(tasks[index], ex, output, timeout))
    except (EOFError, OSError):  # the parent is gone
        pass


class _Worker:
    def __init__(self, context: Any, tasks: Sequence[Task], timeout: float | None, siblings: list[Connection]):
        ours, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(theirs, tasks, timeout, os.getpid(), [*siblings, ours]),
                                       name="evalkit-check", daemon=False)
        self.process.start()
        theirs.close()
        self.conn: Connection = ours
        self.queue: deque[int] = deque()  # jobs sent and not yet answered; the first is running
        self.since = 0.0  # when the running job began
        self.answered = False  # whether it has answered yet (before that, `since` includes its start-up)

    def send(self, index: int, jobs: list[int], payload: list[Job]) -> None:
        try:
            data = pickle.dumps((index, payload))
        except Exception as exc:  # noqa: BLE001 - say what examples must be
            raise TypeError(f"an example cannot be sent to a check worker (fields must be plain data): "
                            f"{describe_exception(exc)}") from exc
        self.conn.send_bytes(data)
        if not self.queue:
            self.since = time.monotonic()
        self.queue.extend(jobs)

    def end(self, kill: bool) -> None:
        with contextlib.suppress(OSError, ValueError):
            if not kill:
                self.conn.send_bytes(pickle.dumps(None))  # stop
            self.conn.close()
        if not kill:
            self.process.join(1.0)
        if self.process.is_alive() or kill:
            self.kill()
        self.process.join()
        with contextlib.suppress(ValueError, OSError):
            self.process.close()

    def kill(self) -> None:
        """SIGKILL its process group (processes a checker started included), else the worker alone."""
        pid = self.process.pid
        try:
            if pid is None or os.getpgid(pid) != pid:  # not yet in a group of its own
                raise ProcessLookupError
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            self.process.kill()

    def how_it_died(self) -> str:
        self.process.join(1.0)
        code = self.process.exitcode
        if code is None:
            return "it stopped answering"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"


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
        self._workers: list[_Worker] = []
        self._fork_s = 0.0  # what the last fork took
        self._check_s = 0.0  # a moving average of a check's time, as the workers measure it
        self.created = time.monotonic()
        self.forks = 0  # workers started, replacements included
        self.kills = 0  # workers killed for a check past its deadline

    def __enter__(self) -> CheckPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(kill=exc[0] is not None)

    def close(self, kill: bool = False) -> None:
        """End every worker: idle ones stop when told; busy or stubborn ones are killed."""
        workers, self._workers = self._workers, []
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

    def _spawn(self) -> _Worker:
        self.forks += 1
        start = time.monotonic()
        # Ctrl-C and SIGTERM wait until the fork is done: raised inside fork's at-fork hooks (logging's lock),
        # the KeyboardInterrupt would be printed as "ignored" and lost, and the run would not stop.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            worker = _Worker(self._context, self.tasks, self.timeout, [w.conn for w in self._workers])
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self._fork_s = time.monotonic() - start
        return worker

    def score(self, task: Task, jobs: Sequence[Job]) -> list[Scored]:
        """Score `jobs` of `task` (one of the pool's tasks) in the workers; results in job order.

        Raises what a checker's InfrastructureError was; any error (or Ctrl-C) here kills the workers
        (the next call starts new ones).
        """
        if id(task) not in self._index:
            raise ValueError(f"task {task.name!r} is not one of this pool's tasks")
        if not jobs:
            return []
        try:
            return self._score(self._index[id(task)], list(jobs))
        except BaseException:
            self.close(kill=True)
            raise

    def _score(self, index: int, jobs: list[Job]) -> list[Scored]:
        results: list[Scored | None] = [None] * len(jobs)
        todo = deque(range(len(jobs)))
        most = min(self.size, len(jobs))
        chunk = max(1, min(MAX_CHUNK, math.ceil(len(jobs) / (4 * most))))
        idle_deaths: list[str] = []
        if not self._workers:
            self._workers.append(self._spawn())

        def feed(w: _Worker) -> None:
            if todo and not w.queue:
                ids = [todo.popleft() for _ in range(min(chunk, len(todo)))]
                try:
                    w.send(index, ids, [jobs[i] for i in ids])
                except OSError:  # it died idle (e.g. the OOM killer): the jobs go to a new one
                    todo.extendleft(reversed(ids))
                    idle_deaths.append(w.how_it_died())
                    if len(idle_deaths) > 3:
                        raise RuntimeError(f"check worker processes keep dying ({idle_deaths[-1]})") from None
                    replace(w, None)

        def replace(w: _Worker, verdict: Verdict | None) -> None:
            if verdict is not None:  # for the job it was on; the jobs behind it are innocent: again
                results[w.queue.popleft()] = Scored("", verdict)
            todo.extendleft(reversed(w.queue))
            w.queue.clear()
            w.end(kill=True)
            self._workers[self._workers.index(w)] = self._spawn()

        def grow() -> float | None:
            """Start another worker if the work left per worker outweighs a fork; when to look again."""
            if len(self._workers) >= most or not todo:
                return None
            now = time.monotonic()
            running = max((now - w.since for w in self._workers if w.queue and w.answered), default=0.0)
            if max(self._check_s, running) * len(todo) / len(self._workers) > GROW_AFTER * self._fork_s:
                self._workers.append(self._spawn())
                return 0.0
            return max(0.01, self._fork_s)  # a long check may make it worth it: look again

        while todo or any(w.queue for w in self._workers):
            look_again = grow()
            for w in self._workers:
                feed(w)
            busy = {w.conn: w for w in self._workers if w.queue}
            waits = [look_again] if look_again is not None else []
            if self.limit is not None:
                waits.append(max(0.0, min(w.since for w in busy.values()) + self.limit - time.monotonic()))
            for conn in wait(list(busy), timeout=min(waits) if waits else None):
                w = busy[conn]  # type: ignore[index]
                try:
                    kind, payload, took = pickle.loads(w.conn.recv_bytes())
                except (EOFError, OSError):
                    replace(w, Verdict(Status.ERROR, 0.0, f"the check's worker process died ({w.how_it_died()})"))
                    continue
                if kind == "raise":
                    raise payload
                results[w.queue.popleft()] = payload
                self._check_s = 0.8 * self._check_s + 0.2 * took if w.answered or self._check_s else took
                w.since, w.answered = time.monotonic(), True
                feed(w)
            if self.limit is not None:
                now = time.monotonic()
                for w in [w for w in self._workers if w.queue and now - w.since > self.limit]:
                    self.kills += 1
                    replace(w, Verdict(Status.TIMEOUT, 0.0, f"check exceeded {self.timeout:g}s"))
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]


__all__ = ["CONTAINED", "GRACE_S", "CheckPool", "contained", "fork_available", "is_contained", "marked_contained"]
