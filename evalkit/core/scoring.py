"""Scoring one output safely: extraction + check, with ERROR/TIMEOUT instead of a crash.

A checker that raises yields ERROR for that sample; one that runs past the deadline yields
TIMEOUT. In the main thread the deadline is enforced with SIGALRM (interrupts Python-level
loops); elsewhere the check runs in a daemon thread that is abandoned at the deadline.
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
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            return fn()
        except _Deadline:
            raise TimeoutError(f"check exceeded {timeout:g}s") from None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
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
        raise TimeoutError(f"check exceeded {timeout:g}s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


def score(task: Task, ex: Example, output: str, timeout: float | None = DEFAULT_CHECK_TIMEOUT) -> Scored:
    """Extract the answer from `output` and check it; never raises for a bad output or checker."""
    try:
        answer = call_with_deadline(lambda: task.extract(output), timeout)
    except TimeoutError as exc:
        return Scored("", Verdict(Status.TIMEOUT, 0.0, f"extraction: {exc}"))
    except Exception as exc:  # noqa: BLE001 - a crashing extractor is an ERROR verdict
        return Scored("", Verdict(Status.ERROR, 0.0, f"extraction raised {_describe(exc)}"))
    if not isinstance(answer, str):
        return Scored("", Verdict(Status.ERROR, 0.0, f"extraction returned {type(answer).__name__}, not str"))
    try:
        result = call_with_deadline(lambda: task.check(ex, answer), timeout)
    except TimeoutError as exc:
        return Scored(answer, Verdict(Status.TIMEOUT, 0.0, str(exc)))
    except InfrastructureError:
        raise  # e.g. no sandbox for a code check: the run stops (exit 3), the answer is not to blame
    except Exception as exc:  # noqa: BLE001 - a crashing checker is an ERROR verdict
        return Scored(answer, Verdict(Status.ERROR, 0.0, f"checker raised {_describe(exc)}"))
    return Scored(answer, result)
