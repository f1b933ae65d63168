"""The trusted harness T: runs the test (or the calls) against the program's process.

Part of the supervisor's source (see _supervisor.py). T forks U first and only then reads
the job, so the tests, expected values and the nonce are never in U's memory. In the assert
form the test runs here, in T's interpreter; `candidate` is a proxy whose every call is
answered by U with plain data (tagged JSON, see _wire.py).
"""

import builtins
import json
import os
import resource
import signal
import time
import traceback

# As part of the package, import; as the supervisor's script (__main__: the parts concatenated)
# these are defined above. Never import evalkit there: the supervisor and every process forked
# from it (the program's included) must not load the package (see _pool.SUPERVISOR_PARTS).
if __name__ != "__main__":
    # NoReturn is for the type checker only: the annotations naming it are quoted, never evaluated.
    from typing import NoReturn

    from evalkit.sandbox._program import run_untrusted
    from evalkit.sandbox._syscalls import (
        PR_SET_CHILD_SUBREAPER,
        PR_SET_DUMPABLE,
        describe_status,
        kill_descendants,
        no_children,
        prctl,
        read_fd,
        recv_frame,
        reset_signals,
        send_frame,
        write_all,
    )
    from evalkit.sandbox._wire import decode, encode


class CandidateFault(BaseException):
    """The program broke the protocol, died or returned something that is not plain data.

    A BaseException, and remembered: a test's `except Exception` cannot turn it into a pass."""


class HarnessLimit(BaseException):
    """The test did something the sandbox cannot carry (e.g. passed a function as argument)."""


class CandidateError(Exception):
    """An exception raised by the program whose type the test namespace does not know."""


class _Candidate:
    """Stands in for the program's function inside the test: each call crosses to U."""

    def __init__(self, cin, cout, upid, namespace):
        self._in, self._out, self._upid, self._ns = cin, cout, upid, namespace
        self.faults = []
        self.limits = []  # calls the sandbox could not make: the test's verdict would be hollow
        self.calls = 0

    def _died(self):
        status = None
        for _ in range(20):
            pid, status = os.waitpid(self._upid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.005)
        else:
            os.kill(self._upid, signal.SIGKILL)
            _, status = os.waitpid(self._upid, 0)
            return "the program closed its channel to the harness"
        return f"the program {describe_status(status)} before answering"

    def fault(self, message) -> "NoReturn":
        self.faults.append(message)
        raise CandidateFault(message)

    def __call__(self, *args, **kwargs):
        if self.faults:
            raise CandidateFault(self.faults[0])
        try:
            payload = json.dumps({"args": encode(list(args)), "kwargs": encode(kwargs)},
                                 allow_nan=False).encode("ascii")
        except (TypeError, ValueError, RecursionError) as exc:
            self.limits.append(f"the test passed an argument the sandbox cannot send: {exc}")
            raise HarnessLimit(self.limits[-1]) from None
        self.calls += 1
        frame = None
        try:
            send_frame(self._out, payload)
            frame = recv_frame(self._in)
        except BrokenPipeError:
            pass
        except ValueError as exc:  # larger than FRAME_LIMIT
            self.fault(f"the program sent {exc}")
        if frame is None:
            self.fault(self._died())
        try:
            reply = json.loads(frame)
            if not isinstance(reply, dict):
                raise TypeError("not an object")
            if "ok" in reply:
                return decode(reply["ok"])
        except (ValueError, TypeError, RecursionError, AttributeError) as exc:
            self.fault(f"the program sent a malformed answer ({type(exc).__name__})")
        if isinstance(reply.get("exc"), list) and len(reply["exc"]) == 2:
            name, message = (str(x) for x in reply["exc"])
            raise self._exception(name, message)
        if "bad" in reply:
            self.fault(str(reply["bad"])[:500])
        self.fault("the program sent an answer outside the protocol")

    def _exception(self, name, message):
        """The function's exception, rebuilt here from its name (never an object from U)."""
        cls = None
        if name.isidentifier():
            cls = self._ns.get(name)
            if not (isinstance(cls, type) and issubclass(cls, Exception)):
                cls = getattr(builtins, name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException) and not issubclass(cls, Exception):
            self.fault(f"the function raised {name}: {message}"[:500])  # SystemExit, KeyboardInterrupt
        exc = None
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                exc = cls(message)
            except Exception:  # noqa: BLE001 - e.g. UnicodeDecodeError needs 5 arguments
                exc = None
        if exc is None:
            exc = CandidateError(f"{name}: {message}")
        # Markers read back with getattr (run_tests, run_calls). `exc` is of the program's own class
        # (a test's `except ValueError` must catch it), so no subclass can declare them: set them dynamically.
        setattr(exc, "evalkit_from_candidate", True)  # noqa: B010
        setattr(exc, "evalkit_name", name)  # noqa: B010
        return exc


def _wait_ready(cin, candidate):
    try:
        frame = recv_frame(cin)
    except ValueError as exc:
        return f"protocol: {exc}"
    if frame is None:
        return candidate._died().replace("before answering", "while loading")
    try:
        reply = json.loads(frame)
    except ValueError:
        return "the program sent a malformed message"
    if isinstance(reply, dict) and reply.get("ready") is True:
        return None
    if isinstance(reply, dict) and isinstance(reply.get("load_error"), list) and len(reply["load_error"]) == 2:
        name, message = (str(x) for x in reply["load_error"])
        return f"{name}: {message}"
    return "the program sent a message outside the protocol"


def _short(text, limit=300):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _test_line(tb):
    line = None
    for frame in traceback.extract_tb(tb):
        if frame.filename == "<test>":
            line = frame.lineno
    return f" (test line {line})" if line else ""


def run_tests(job, cin, cout, upid):
    """The assert form: run the dataset's test in THIS (trusted) process against a proxy."""
    namespace = {"__name__": "__test__", "__builtins__": builtins}
    candidate = _Candidate(cin, cout, upid, namespace)
    # While the program loads in U: the prompt's helpers (e.g. HumanEval's poly) and the compiled test.
    prompt = job.get("prompt") or ""
    for variant in (prompt, prompt + "\n    pass\n"):
        try:
            exec(compile(variant, "<prompt>", "exec"), namespace)
            break
        except SyntaxError:
            continue
        except BaseException:  # noqa: BLE001 - a prompt that cannot run leaves what it defined
            break
    test, bad_test = None, None
    try:
        test = compile(job["test"], "<test>", "exec")
    except BaseException as exc:  # noqa: BLE001 - reported as the test's own failure, after U is ready
        bad_test = exc
    problem = _wait_ready(cin, candidate)
    if problem is not None:
        return {"status": "fail", "reason": _short(problem)}
    namespace[job["entry_point"]] = candidate
    try:
        if test is None:
            raise bad_test or ValueError("no test")
        exec(test, namespace)
        check = namespace.get("check")
        if not callable(check):
            return {"status": "error", "reason": "the test defines no check(candidate)"}
        check(candidate)
    except CandidateFault as exc:
        return {"status": "fail", "reason": _short(exc)}
    except HarnessLimit as exc:
        return {"status": "error", "reason": _short(exc)}
    except AssertionError as exc:
        if candidate.faults:
            return {"status": "fail", "reason": _short(candidate.faults[0])}
        message = f": {exc}" if str(exc) else ""
        return {"status": "fail", "reason": _short(f"AssertionError{message}{_test_line(exc.__traceback__)}")}
    except BaseException as exc:  # noqa: BLE001 - an exception from the function or the test
        if candidate.faults:
            return {"status": "fail", "reason": _short(candidate.faults[0])}
        who = " (raised by the function)" if getattr(exc, "evalkit_from_candidate", False) else ""
        return {"status": "fail", "reason": _short(f"{type(exc).__name__}: {exc}{who}")}
    if candidate.faults:  # the test swallowed a fault: still a failure
        return {"status": "fail", "reason": _short(candidate.faults[0])}
    if candidate.limits:  # ...and a call that could not be made is no pass either
        return {"status": "error", "reason": _short(candidate.limits[0])}
    return {"status": "pass", "reason": "tests passed", "calls": candidate.calls}


def run_calls(job, cin, cout, upid):
    """The input/output form: call the function on each input; the PARENT compares."""
    candidate = _Candidate(cin, cout, upid, {})
    problem = _wait_ready(cin, candidate)
    if problem is not None:
        return {"load_error": _short(problem)}
    results = []
    for call in job["calls"]:
        args, kwargs = decode(call[0]), decode(call[1])
        try:
            value = candidate(*args, **kwargs)
            results.append({"ok": encode(value)})
        except (CandidateFault, HarnessLimit) as exc:
            results.append({"fault": _short(exc)})
            break
        except Exception as exc:  # noqa: BLE001 - the function raised
            results.append({"exc": [getattr(exc, "evalkit_name", type(exc).__name__), _short(exc)]})
    return {"results": results}


def run_trusted(hdr, fds, in_ns, workdir, done_fd=None):
    """The harness T: fork U first, only then read the job; report with the nonce (then say so
    on `done_fd`: Z ends the job's processes without waiting for ours to exit)."""
    prog_fd, job_fd, report_fd, out_fd, err_fd = fds
    reset_signals()
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    prctl(PR_SET_DUMPABLE, 0)  # U may not ptrace us or open /proc/<T>/{mem,fd}
    if not in_ns:
        prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of U's tree come back to us, to be killed
    t2u_r, t2u_w = os.pipe()
    u2t_r, u2t_w = os.pipe()
    upid = os.fork()
    if upid == 0:
        try:
            run_untrusted(hdr, prog_fd, out_fd, err_fd, t2u_r, u2t_w, in_ns, workdir)
        except BaseException as exc:  # noqa: BLE001 - set-up of U failed: say so, then die
            try:
                os.write(2, f"sandbox: {type(exc).__name__}: {exc}\n".encode())
            except OSError:
                pass
        os._exit(126)
    for fd in (t2u_r, u2t_w, prog_fd, out_fd, err_fd):
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    mem = hdr["limits"]["memory"]
    resource.setrlimit(resource.RLIMIT_AS, (max(mem, 256 << 20), max(mem, 256 << 20)))
    job = json.loads(read_fd(job_fd))
    os.close(job_fd)
    if job["mode"] == "test":
        report = run_tests(job, u2t_r, t2u_w, upid)
    elif job["mode"] == "call":
        report = run_calls(job, u2t_r, t2u_w, upid)
    else:
        _, status = os.waitpid(upid, 0)
        report = {"exit": os.waitstatus_to_exitcode(status)}
    report["nonce"] = job["nonce"]
    if not in_ns:  # (in the namespaces, Z kills everything left once we exit)
        try:
            os.kill(upid, signal.SIGKILL)
            os.waitpid(upid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        if not no_children():  # orphans were reparented to us: find and kill the whole tree
            kill_descendants(os.getpid())
    write_all(report_fd, json.dumps(report, allow_nan=False).encode("ascii") + b"\n")
    if done_fd is not None:
        os.write(done_fd, b"d")
    os._exit(0)
