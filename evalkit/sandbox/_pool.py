"""The parent side: a pool of long-lived supervisors, one job at a time each.

A supervisor is a fresh interpreter (`python -s -B -c <_wire + _supervisor source>`), started
with a scrubbed environment in its own session, talking to us over a SOCK_SEQPACKET socket.
Starting one costs an interpreter start-up (~20-40 ms); a job after that costs a few forks,
so checks run at the rate of forks rather than of interpreter starts. Each job gets five
memfds from us — program, job, report, stdout, stderr — so no job data touches a disk path
and the supervisor itself never reads the job (see _supervisor.py).
"""

from __future__ import annotations

import atexit
import hmac
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from evalkit.sandbox._layout import layout
from evalkit.sandbox._types import Isolation, Limits, SandboxResult

GRACE_S = 5.0  # beyond the job's timeout: set-up and teardown; past it the supervisor is killed
REPORT_LIMIT = 32 * 1024 * 1024
MAX_JOBS_PER_SUPERVISOR = 2000
_HERE = Path(__file__).resolve().parent


# The supervisor's program: these stdlib-only modules, in order, as one script (each one's
# relative imports fail there and are skipped: the names are defined by the parts above it).
SUPERVISOR_PARTS = ("_wire.py", "_syscalls.py", "_program.py", "_harness.py", "_namespaces.py", "_supervisor.py")


@lru_cache(maxsize=1)
def supervisor_source() -> str:
    return "\n".join((_HERE / part).read_text(encoding="utf-8") for part in SUPERVISOR_PARTS)


def _interpreter_flags() -> list[str]:
    # -s: no user site; -B: no .pyc writes. Not -I/-E: the environment is scrubbed by us, and -E
    # would drop PYTHONHASHSEED (set/dict-of-str order would vary between runs).
    flags = ["-s", "-B"]
    if sys.version_info >= (3, 11):
        flags.append("-P")
    return flags


def _env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8", "HOME": "/", "PYTHONHASHSEED": "0"}


def _memfd(name: str, data: bytes = b"") -> int:
    try:
        fd = os.memfd_create(f"evalkit-{name}", getattr(os, "MFD_CLOEXEC", 1))
    except (AttributeError, OSError):
        with tempfile.TemporaryFile() as f:
            fd = os.dup(f.fileno())
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return fd


def _pread_all(fd: int, limit: int) -> bytes:
    from evalkit.sandbox._syscalls import read_fd  # the child side's reader (Linux-only module: imported when used)

    return read_fd(fd, limit)


class _Broken(Exception):
    pass


class _Supervisor:
    def __init__(self, executable: str):
        self.executable = executable
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        debug = bool(os.environ.get("EVALKIT_SANDBOX_DEBUG"))
        try:
            self.proc = subprocess.Popen(
                [executable, *_interpreter_flags(), "-c", supervisor_source(), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=None if debug else subprocess.DEVNULL, start_new_session=True, close_fds=True, cwd="/")
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        self.jobs = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def call(self, header: dict[str, Any], fds: list[int], wait: float) -> dict[str, Any]:
        self.jobs += 1
        socket.send_fds(self.sock, [json.dumps(header).encode()], fds)
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            raise _Broken(f"the sandbox supervisor did not answer within {wait:g}s") from None
        except OSError as exc:
            raise _Broken(f"lost the sandbox supervisor: {exc}") from None
        if not data:
            self.proc.poll()
            raise _Broken(f"the sandbox supervisor died (exit status {self.proc.returncode})")
        return json.loads(data)

    def close(self, kill: bool = False) -> None:
        """End of file makes the supervisor clean up and exit; `kill` first asks with SIGTERM."""
        try:
            if kill and self.alive():
                self.proc.terminate()
            self.sock.close()
            try:
                self.proc.wait(2.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        except BaseException:  # noqa: BLE001 - never leave it running, whatever interrupted us
            self.proc.kill()
            raise


@dataclass(frozen=True)
class Job:
    """One sandbox run. mode: "script" | "call" | "test"."""

    mode: str
    program: str
    isolation: Isolation
    limits: Limits
    entry_point: str | None = None
    test: str | None = None
    prompt: str | None = None
    calls: list[list[Any]] | None = None  # [[encoded args, encoded kwargs], ...]
    executable: str | None = None  # default: sys.executable at run time


def default_size() -> int:
    """Two runs per CPU. A run is a chain of hand-offs between processes (parent, supervisor, Z,
    harness, program: forks, pipes, the report) in which each waits for the last, so one run per
    CPU leaves the CPUs idle about half the time (bench/code_checks.py measures both sizes)."""
    return 2 * (os.cpu_count() or 1)


class SandboxPool:
    """Supervisors for parallel checks: at most `size` jobs at once (default: `default_size()`,
    twice the CPU count).

    Thread-safe: `run` blocks until a supervisor is free. Memory is bounded by `size` times
    the per-job limits (each of the harness and the program: `memory_mb` of address space;
    plus `tmp_mb` of private /tmp and twice `output_bytes` of captured output). Supervisors
    start lazily and are reused; one that misbehaves is killed and replaced.
    """

    def __init__(self, size: int | None = None, *, hide: tuple[str, ...] = ()):
        self.size = max(1, int(size or default_size()))
        self.hide = tuple(str(h) for h in hide)
        self._idle: list[_Supervisor] = []
        self._busy = 0
        self._cond = threading.Condition()
        self._closed = False
        self._pid = os.getpid()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        if os.getpid() != self._pid:
            return  # a forked copy: those supervisors are our parent's to close
        for sup in idle:
            sup.close()

    def _acquire(self, executable: str) -> _Supervisor:
        evict: list[_Supervisor] = []
        try:
            with self._cond:
                if os.getpid() != self._pid:  # a forked copy: the supervisors belong to our parent
                    self._idle, self._busy, self._pid = [], 0, os.getpid()
                    self._cond = threading.Condition()
                while True:
                    if self._closed:
                        raise RuntimeError("the sandbox pool is closed")
                    for i, sup in enumerate(self._idle):
                        if sup.executable == executable and sup.alive():
                            self._busy += 1
                            return self._idle.pop(i)
                    stale = [s for s in self._idle if s.executable != executable or not s.alive()]
                    if stale:  # room for a supervisor of the interpreter asked for
                        self._idle.remove(stale[0])
                        evict.append(stale[0])
                        continue
                    if self._busy + len(self._idle) < self.size:
                        self._busy += 1
                        break
                    self._cond.wait()
        finally:
            for sup in evict:
                sup.close()
        try:
            return _Supervisor(executable)
        except BaseException:
            with self._cond:
                self._busy -= 1
                self._cond.notify()
            raise

    def _release(self, sup: _Supervisor, healthy: bool) -> None:
        keep = healthy and sup.alive() and sup.jobs < MAX_JOBS_PER_SUPERVISOR and os.getpid() == self._pid
        with self._cond:
            self._busy -= 1
            if keep and not self._closed:
                self._idle.append(sup)
                keep_it = True
            else:
                keep_it = False
            self._cond.notify()
        if not keep_it:
            sup.close(kill=not healthy)

    def run(self, job: Job) -> SandboxResult:
        """Run one job; never raises for what the program does (see SandboxResult.status)."""
        lim = job.limits
        lay = layout(self.hide)
        nonce = secrets.token_hex(16)
        header = {
            "isolation": job.isolation.value, "timeout": lim.timeout,
            "limits": {"memory": lim.memory_mb << 20, "cpu": lim.cpu_seconds, "fsize": lim.output_bytes + 1,
                       "nofile": lim.open_files, "tmp": lim.tmp_mb << 20,
                       "nproc": (lim.processes if job.isolation is Isolation.NAMESPACES else
                                 (max(1024, lim.processes) if lay.drop_to is not None else 0))},
            "binds": lay.binds, "hide": lay.hide, "ns_uid": lay.ns_uid, "ns_gid": lay.ns_gid,
            "drop_to": lay.drop_to,
        }
        program = json.dumps({"mode": job.mode, "program": job.program, "entry_point": job.entry_point})
        work = json.dumps({"mode": job.mode, "nonce": nonce, "test": job.test, "prompt": job.prompt,
                           "entry_point": job.entry_point, "calls": job.calls})
        fds: list[int] = []
        executable = job.executable or sys.executable
        try:
            fds = [_memfd("program", program.encode()), _memfd("job", work.encode()), _memfd("report"),
                   _memfd("stdout"), _memfd("stderr")]
            try:
                sup = self._acquire(executable)
            except OSError as exc:
                return SandboxResult("error", job.isolation, 0.0, error=f"could not start {executable}: {exc}")
            healthy = False
            try:
                reply = sup.call(header, fds, lim.timeout + GRACE_S)
                healthy = "error" not in reply
            except _Broken as exc:
                return SandboxResult("error", job.isolation, 0.0, error=str(exc))
            finally:
                self._release(sup, healthy)
            return self._result(job, reply, fds, nonce)
        finally:
            for fd in fds:
                os.close(fd)

    @staticmethod
    def _result(job: Job, reply: dict[str, Any], fds: list[int], nonce: str) -> SandboxResult:
        cap = job.limits.output_bytes
        sizes = [os.fstat(fds[3]).st_size, os.fstat(fds[4]).st_size]
        stdout, stderr = _pread_all(fds[3], cap), _pread_all(fds[4], cap)
        truncated = any(size > cap for size in sizes)
        wall = float(reply.get("wall", 0.0))

        def result(status: str, *, exit_code: int | None = None, report: dict[str, Any] | None = None,
                   error: str | None = None) -> SandboxResult:
            return SandboxResult(status, job.isolation, wall_s=wall, exit_code=exit_code, stdout=stdout,
                                 stderr=stderr, truncated=truncated, report=report, error=error)

        if "error" in reply:
            return result("error", error=f"sandbox supervisor: {reply['error']}")
        report: dict[str, Any] | None = None
        problems: list[str] = []
        for line in _pread_all(fds[2], REPORT_LIMIT).splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                problems.append("a malformed report line")
                continue
            if not isinstance(item, dict):
                problems.append("a malformed report line")
            elif "setup_error" in item:
                problems.append(str(item["setup_error"]))
            elif hmac.compare_digest(str(item.get("nonce", "")), nonce) and report is None:
                report = item
            else:
                problems.append("a report without the run's nonce")
        if report is not None and not problems:
            exit_code = report.get("exit") if job.mode == "script" else None
            return result("ok", exit_code=exit_code, report=report)
        if reply.get("timed_out") and report is None:
            return result("timeout", error=f"timed out after {job.limits.timeout:g}s")
        why = "; ".join(problems) or f"the harness ended without a report (status {reply.get('status')})"
        return result("error", error=why)


_default: SandboxPool | None = None
_default_lock = threading.Lock()


def default_pool() -> SandboxPool:
    """The process-wide pool (size: `default_size()`, twice the CPU count), closed at exit."""
    global _default
    with _default_lock:
        if _default is None or _default._closed:
            _default = SandboxPool()
            atexit.register(_default.close)
        return _default
