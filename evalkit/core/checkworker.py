"""A check worker process and the parent's handle on it (`evalkit.core.checkpool` runs a pool of them).

- `serve` is the worker's loop: it scores each job it is sent, in order, and answers one message per job:
  `("ok", Scored, seconds, done)` or `("raise", InfrastructureError, seconds, done)`, where `done` is
  `time.monotonic()` when it finished (CLOCK_MONOTONIC: the same clock in the parent), so the parent knows
  when the next job began even when it reads the answers later.
- It ignores SIGINT (the parent handles Ctrl-C), runs in a process group of its own (killing it ends what a
  checker started too) and dies with the parent thread that forked it (PR_SET_PDEATHSIG).
- `Worker` starts one (fork), sends it jobs, ends it (a stop message, or SIGKILL of its group) and says how it
  died.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import time
from collections import deque
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from evalkit.core.scoring import Scored, describe_exception, score
from evalkit.core.verdict import Status, Verdict
from evalkit.errors import InfrastructureError

if TYPE_CHECKING:
    from evalkit.core.example import Example
    from evalkit.core.task import Task

Job = tuple["Example", str]  # (example, the model's output)
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when the thread that forked it ends (Linux; best effort elsewhere)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent:  # the parent ended before the line above ran
        os._exit(0)


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait while a helper process is forked: raised inside fork's at-fork hooks (logging's
    lock), the KeyboardInterrupt would be printed as "ignored" and lost, and the run would not stop."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def become_helper(parent: int) -> None:
    """First thing in a forked helper (a check worker, a decoding process): Ctrl-C is the parent's to handle,
    SIGTERM is not a handler of the parent's (it may touch torch), the signals held at the fork are let
    through, and the helper dies with the parent thread that forked it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    die_with_parent(parent)


def describe_exit(code: int | None) -> str:
    """How a process ended, from its exit code as `multiprocessing` and `os.waitstatus_to_exitcode` give it
    (negative: the signal that killed it; None: still running)."""
    if code is None:
        return "it stopped answering"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def score_reply(task: Task, ex: Example, output: str, timeout: float | None) -> bytes:
    """The pickled reply for one job (see the module's doc)."""
    start = time.perf_counter()
    try:
        reply: tuple[str, Any] = ("ok", score(task, ex, output, timeout=timeout))
    except InfrastructureError as exc:
        reply = ("raise", exc)
    except BaseException as exc:  # noqa: BLE001 - e.g. SystemExit from a checker: ERROR, as a raise would be
        reply = ("ok", Scored("", Verdict(Status.ERROR, 0.0, f"checker raised {describe_exception(exc)}")))
    took, done = time.perf_counter() - start, time.monotonic()  # CLOCK_MONOTONIC: the parent's clock too
    try:
        return pickle.dumps((*reply, took, done))
    except Exception as exc:  # noqa: BLE001 - what does not cross (e.g. a verdict's odd reason) is described
        if reply[0] == "raise":
            return pickle.dumps(("raise", InfrastructureError(describe_exception(reply[1])), took, done))
        why = f"the verdict cannot be sent: {describe_exception(exc)}"
        return pickle.dumps(("ok", Scored("", Verdict(Status.ERROR, 0.0, why)), took, done))


def serve(conn: Connection, tasks: Sequence[Task], timeout: float | None, parent: int,
           siblings: Sequence[Connection]) -> None:
    """A worker: score each job it is sent, in order, answering one message per job."""
    become_helper(parent)
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
                conn.send_bytes(score_reply(tasks[index], ex, output, timeout))
    except (EOFError, OSError):  # the parent is gone
        pass


class Worker:
    def __init__(self, context: Any, tasks: Sequence[Task], timeout: float | None, siblings: list[Connection]):
        ours, theirs = context.Pipe()
        self.process = context.Process(target=serve, args=(theirs, tasks, timeout, os.getpid(), [*siblings, ours]),
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
        return describe_exit(self.process.exitcode)


__all__ = ["STOP_SIGNALS", "Job", "Worker", "become_helper", "describe_exit", "die_with_parent", "score_reply",
           "serve", "stop_signals_held"]
