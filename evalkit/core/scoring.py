"""Scoring one output safely: extraction + check, with ERROR/TIMEOUT instead of a crash.

A checker that raises yields ERROR for that sample; one that runs past the deadline yields
TIMEOUT. In the main thread the deadline is enforced with SIGALRM (interrupts Python-level
loops). Elsewhere the check runs in a helper thread, and at the deadline an asynchronous
exception is raised in it, which ends a Python-level loop too; only a check that ignores it
(stuck in C code, or catching BaseException) is left running. The runner scores many outputs
in worker processes instead (`evalkit.core.checkpool`): each check runs in a worker's main
thread, and a worker whose check ignores the alarm is killed.
Code written by the model never runs here: the python_tests checker runs it in a child
process with its own limits.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from evalkit.core.verdict import Status, Verdict
from evalkit.errors import InfrastructureError

if TYPE_CHECKING:
    from evalkit.core.example import Example
    from evalkit.core.task import Task

DEFAULT_CHECK_TIMEOUT = 30.0
T = TypeVar("T")


@dataclass(frozen=True)
class Scored:
    answer: str
    verdict: Verdict


class _Deadline(BaseException):
    """Raised by the alarm handler; a BaseException so checker `except Exception` can't eat it."""


def call_with_deadline(fn: Callable[[], T], timeout: float | None) -> T:
    """Run `fn()`; raise TimeoutError if it takes longer than `timeout` seconds."""
    if not timeout or timeout <= 0:
        return fn()
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        def on_alarm(signum, frame):
            raise _Deadline()

        previous = signal.signal(signal.SIGALRM, on_alarm)
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                return fn()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Deadline:  # also when the alarm rang between fn's return and the timer's reset
            raise TimeoutError(f"check exceeded {timeout:g}s") from None
        finally:
            signal.signal(signal.SIGALRM, previous)
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True, name="evalkit-check")
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        interrupt_thread(worker)
        worker.join(0.1)
        raise TimeoutError(f"check exceeded {timeout:g}s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def interrupt_thread(thread: threading.Thread) -> bool:
    """Raise a BaseException in `thread` at its next Python instruction (CPython); whether one was set.

    A thread stuck in a Python loop ends with it; one blocked in C code sees it only on return.
    """
    import ctypes

    set_async_exc = getattr(getattr(ctypes, "pythonapi", None), "PyThreadState_SetAsyncExc", None)
    if thread.ident is None or set_async_exc is None:
        return False
    changed = set_async_exc(ctypes.c_ulong(thread.ident), ctypes.py_object(_Deadline))
    if changed > 1:  # never expected: undo rather than hit another thread
        set_async_exc(ctypes.c_ulong(thread.ident), None)
        return False
    return changed == 1


def describe_exception(exc: BaseException) -> str:
    """`Type: message`, at most 300 characters (for a verdict's reason)."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


def score(task: Task, ex: Example, output: str, timeout: float | None = DEFAULT_CHECK_TIMEOUT) -> Scored:
    """Extract the answer from `output` and check it; never raises for a bad output or checker."""
    try:
        answer = call_with_deadline(lambda: task.extract(output), timeout)
    except TimeoutError as exc:
        return Scored("", Verdict(Status.TIMEOUT, 0.0, f"extraction: {exc}"))
    except Exception as exc:  # noqa: BLE001 - a crashing extractor is an ERROR verdict
        return Scored("", Verdict(Status.ERROR, 0.0, f"extraction raised {describe_exception(exc)}"))
    if not isinstance(answer, str):
        return Scored("", Verdict(Status.ERROR, 0.0, f"extraction returned {type(answer).__name__}, not str"))
    try:
        result = call_with_deadline(lambda: task.check(ex, answer), timeout)
    except TimeoutError as exc:
        return Scored(answer, Verdict(Status.TIMEOUT, 0.0, str(exc)))
    except InfrastructureError:
        raise  # e.g. no sandbox for a code check: the run stops (exit 3), the answer is not to blame
    except Exception as exc:  # noqa: BLE001 - a crashing checker is an ERROR verdict
        return Scored(answer, Verdict(Status.ERROR, 0.0, f"checker raised {describe_exception(exc)}"))
    return Scored(answer, result)
