"""The sandbox's public value types: isolation levels, limits, results, the unavailable error."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evalkit.errors import InfrastructureError


class Isolation(str, enum.Enum):
    """How strongly a program is contained (docs/SECURITY.md says what each guarantees).

    NAMESPACES: new user, mount, PID, network and IPC namespaces; a read-only root of the
        interpreter and system folders; no network; everything dies with PID 1.
    PROCESS: a child process with limits, its own session, a scrubbed environment and an
        unprivileged uid where possible — no file-system or network containment.
    """

    NAMESPACES = "namespaces"
    PROCESS = "process"


class SandboxUnavailable(InfrastructureError):
    """The isolation a run requires is not available here: fail closed (exit code 3).

    An InfrastructureError: scoring lets it through (the run stops) instead of turning it into
    an ERROR verdict for the answer being checked.
    """


@dataclass(frozen=True)
class Limits:
    """Per-run limits. Each of the two processes of a run (the trusted harness and the
    program) gets `memory_mb` of address space; the program also gets the rest.

    Attributes:
        timeout: wall-clock seconds for the whole run (set-up included).
        memory_mb: address-space limit (RLIMIT_AS) in MiB.
        cpu_s: CPU seconds (RLIMIT_CPU); default ceil(timeout) + 1.
        output_bytes: stdout and stderr are each captured up to this size; the program is
            stopped (SIGXFSZ) when it writes more, and the result is marked `truncated`.
            It is also the largest file the program may write.
        open_files: RLIMIT_NOFILE.
        processes: RLIMIT_NPROC (namespaces level: per run; needs a non-root uid, which
            evalkit arranges).
        tmp_mb: size of the private working folder and /tmp, together (namespaces level).
    """

    timeout: float = 10.0
    memory_mb: int = 1024
    cpu_s: int | None = None
    output_bytes: int = 4 * 1024 * 1024
    open_files: int = 64
    processes: int = 64
    tmp_mb: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)):
            raise TypeError(f"timeout must be a number of seconds, got {self.timeout!r}")
        if not math.isfinite(self.timeout) or self.timeout <= 0:
            raise ValueError(f"timeout must be a finite number > 0, got {self.timeout!r}")
        for name in ("memory_mb", "output_bytes", "open_files", "processes", "tmp_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if self.memory_mb < 64:
            raise ValueError(f"memory_mb must be at least 64 (the interpreter needs it), got {self.memory_mb}")
        if self.open_files < 16 or self.processes < 8 or self.output_bytes < 1024 or self.tmp_mb < 1:
            raise ValueError("open_files >= 16, processes >= 8, output_bytes >= 1024 and tmp_mb >= 1 are needed")
        if self.cpu_s is not None and (isinstance(self.cpu_s, bool) or not isinstance(self.cpu_s, int)
                                       or self.cpu_s < 1):
            raise ValueError(f"cpu_s must be an int >= 1, got {self.cpu_s!r}")

    @property
    def cpu_seconds(self) -> int:
        return self.cpu_s if self.cpu_s is not None else math.ceil(self.timeout) + 1


@dataclass(frozen=True)
class SandboxResult:
    """What one sandboxed run produced.

    Attributes:
        status: "ok" (the harness reported), "timeout" (past `Limits.timeout`; everything
            was killed), or "error" (the sandbox could not run it, or no trustworthy report).
        isolation: the level it ran under.
        wall_s: seconds from fork to the end of the run.
        exit_code: script mode: the program's exit status (negative: killed by that signal).
        stdout, stderr: the captured output, at most `Limits.output_bytes` each.
        truncated: whether either stream was cut at that limit.
        report: the trusted harness's report (call/test modes), verified with the run's nonce.
        error: why status is not "ok".
    """

    status: str
    isolation: Isolation
    wall_s: float = 0.0
    exit_code: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    truncated: bool = False
    report: Mapping[str, Any] | None = None
    error: str | None = None
