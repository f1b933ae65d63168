"""Code answers: run a HumanEval-style program in a child Python process with limits.

The child gets a fresh temporary working directory (deleted afterwards), its own session
(the whole process group is killed at the deadline and after it exits), a scrubbed
environment, no stdin, and resource limits set before any of the program's code runs:
address space, CPU seconds, file size, open files, no core dumps. Its output goes to files
in the temporary directory; the file-size limit caps them, and only the tail is read back.

This is a *limits* sandbox, not an isolation one: the program can still read files,
use the network, or forge its exit code (e.g. `os._exit(0)` inside `check`). The hardened
anti-forgery sandbox is a later issue.
"""

from __future__ import annotations

import math
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from . import Check, register
from ..example import Example
from ..verdict import Status, Verdict, verdict

OUTPUT_LIMIT = 16 * 1024 * 1024  # RLIMIT_FSIZE: an endless print is killed by SIGXFSZ here
TAIL_BYTES = 64 * 1024  # how much of stderr is read back
OPEN_FILES = 64

# Runs first in the child: the limits are in place before the program's first line. (Setting
# them here rather than in a preexec_fn keeps Popen fork-safe when checks run in threads.)
_LAUNCHER = """\
import resource, runpy, sys
memory, cpu, fsize, nofile = (int(a) for a in sys.argv[1:5])
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
path = sys.argv[5]
sys.argv = [path]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

_SIGNALS = {
    signal.SIGXCPU: "CPU time limit",
    signal.SIGXFSZ: "output/file size limit",
    signal.SIGKILL: "killed",
    signal.SIGSEGV: "segmentation fault",
}


def _interpreter_flags() -> list[str]:
    # Like -I (isolated) but without -E: the environment is scrubbed by us anyway, and -E
    # would drop PYTHONHASHSEED, making set/dict-of-str iteration order vary between runs.
    flags = ["-s", "-B"]
    if sys.version_info >= (3, 11):
        flags.append("-P")  # do not put the script's directory on sys.path
    return flags


def _tail_line(path: Path) -> str:
    """The last non-empty line of a (capped) output file, printable and short."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - TAIL_BYTES))
            data = f.read(TAIL_BYTES)
    except OSError:
        return ""
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    if not lines:
        return ""
    line = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in lines[-1])
    return line if len(line) <= 200 else line[:197] + "..."


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit code, or None at the deadline."""
    # A pidfd wakes us the moment the child exits; Popen.wait(timeout) polls with sleeps
    # that add up to tens of milliseconds per check.
    try:
        fd = os.pidfd_open(proc.pid)  # Linux >= 5.3
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
        finally:
            os.close(fd)
        return proc.wait() if ready else None
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone
    proc.wait()


def _run(program: str, timeout: float, memory_mb: int) -> Verdict:
    with tempfile.TemporaryDirectory(prefix="evalkit-code-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        script = work / "solution.py"
        script.write_text(program, encoding="utf-8")
        env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8", "HOME": tmp, "PYTHONHASHSEED": "0"}
        limits = [str(memory_mb * 1024 * 1024), str(math.ceil(timeout) + 1), str(OUTPUT_LIMIT), str(OPEN_FILES)]
        argv = [sys.executable, *_interpreter_flags(), "-c", _LAUNCHER, *limits, str(script)]
        with (work / "stdout").open("wb") as out, (work / "stderr").open("wb") as err:
            try:
                proc = subprocess.Popen(argv, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=err, start_new_session=True, close_fds=True)
            except OSError as exc:
                return Verdict(Status.ERROR, 0.0, f"could not start {sys.executable}: {exc}")
            try:  # `finally`: a deadline raised by scoring's alarm must not leave the child running
                code = _wait(proc, timeout)
            finally:
                _kill_group(proc)  # also kills grandchildren still in the group
            if code is None:
                return Verdict(Status.TIMEOUT, 0.0, f"timed out after {timeout:g}s")
        if code == 0:
            return verdict(True, "tests passed")  # no timing here: verdicts must be deterministic
        last = _tail_line(work / "stderr")
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            what = f"{name} ({_SIGNALS[-code]})" if -code in _SIGNALS else name
            return verdict(False, f"killed by {what}" + (f": {last}" if last else ""))
        return verdict(False, last or f"exit code {code}")


@register("python_tests")
def python_tests(timeout: float = 10.0, memory_mb: int = 1024) -> Check:
    """Pass iff a HumanEval-style program exits with status 0.

    The example provides `prompt` (signature + docstring), `test` (defines
    `check(candidate)`) and `entry_point`; the answer is the completion. The program is
    `prompt + answer + "\\n\\n" + test + "\\n\\ncheck(entry_point)\\n"`, run by this Python.

    Verdicts: PASS on exit 0; FAIL with the last stderr line (e.g. "AssertionError") or the
    signal that killed it; TIMEOUT past `timeout` seconds of wall time; ERROR if the
    interpreter cannot start. A missing field or a non-identifier entry point raises
    ValueError (an ERROR verdict in scoring).

    Args:
        timeout: wall-clock seconds per run (the CPU limit is ceil(timeout) + 1).
        memory_mb: the address-space limit in MiB.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, got {timeout!r}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a finite number > 0, got {timeout!r}")
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, int):
        raise TypeError(f"memory_mb must be an int, got {memory_mb!r}")
    if memory_mb < 64:
        raise ValueError(f"memory_mb must be at least 64 (the interpreter needs it), got {memory_mb}")
    timeout = float(timeout)

    def check(example: Example, answer: str) -> Verdict:
        if not isinstance(answer, str):
            return verdict(False, f"answer is {type(answer).__name__}, not str")
        try:
            prompt, test, entry = example["prompt"], example["test"], example["entry_point"]
        except KeyError as exc:
            raise ValueError(f"python_tests: example {example.id} has no field {exc}") from None
        if not isinstance(entry, str) or not entry.isidentifier():
            raise ValueError(f"python_tests: entry_point {entry!r} is not an identifier")
        program = f"{prompt}{answer}\n\n{test}\n\ncheck({entry})\n"
        try:
            program.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: no source file can hold them
            return verdict(False, "answer is not valid Unicode text")
        try:
            return _run(program, timeout, memory_mb)
        except OSError as exc:  # temporary directory or files: infrastructure, not the answer
            return Verdict(Status.ERROR, 0.0, f"sandbox I/O error: {exc}")

    return check
