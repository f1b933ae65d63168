"""The untrusted process U: set up, then run the program (script) or serve calls to it.

Part of the supervisor's source (see _supervisor.py). Everything here before `exec` is
trusted code running in the process that is about to become the program's: it closes every
descriptor but its own, sets limits, drops privileges, and only then runs the program.
"""

import builtins
import fcntl
import json
import os
import resource
import signal
import sys
import traceback

# As part of the package, import; as the supervisor's script (__main__: the parts concatenated)
# these are defined above. Never import evalkit there: the supervisor and every process forked
# from it (the program's included) must not load the package (see _pool.SUPERVISOR_PARTS).
if __name__ != "__main__":
    # NoReturn is for the type checker only: the annotations naming it are quoted, never evaluated.
    from typing import NoReturn

    from evalkit.sandbox._syscalls import (
        PR_SET_DUMPABLE,
        PR_SET_NO_NEW_PRIVS,
        PR_SET_PDEATHSIG,
        drop_bounding_set,
        drop_capabilities,
        keep_only_fds,
        prctl,
        read_fd,
        recv_frame,
        send_frame,
        write_all,
    )
    from evalkit.sandbox._wire import decode, encode


def run_untrusted(hdr, prog_fd, out_fd, err_fd, cin, cout, in_ns, workdir):
    """Runs in U. Everything before `exec` is trusted code; nothing trusted runs after it."""
    program_spec = json.loads(read_fd(prog_fd))
    devnull = os.open("/dev/null", os.O_RDWR)
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (devnull, out_fd, err_fd, cin, cout)]
    for target, fd in enumerate(moved):
        os.dup2(fd, target)
    keep_only_fds(range(5))  # 0 null, 1 stdout, 2 stderr, 3 calls in, 4 answers out
    os.chdir(workdir)
    os.environ["HOME"] = workdir
    limits = hdr["limits"]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["nofile"], limits["nofile"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["fsize"], limits["fsize"]))
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu"], limits["cpu"] + 1))
    if limits.get("nproc"):
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["nproc"], limits["nproc"]))
    drop_to = hdr.get("drop_to")
    if drop_to is not None and not in_ns:  # root, process level: become an unprivileged user
        drop_bounding_set()
        os.setgroups([])
        os.setresgid(drop_to, drop_to, drop_to)
        os.setresuid(drop_to, drop_to, drop_to)  # clears every capability
    elif in_ns:
        drop_capabilities(bounding=False)  # uid 0 of the user namespace; Z emptied the bounding set
    elif os.geteuid() == 0:
        drop_capabilities()  # root without any capability
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    prctl(PR_SET_DUMPABLE, 1)  # an ordinary process again (its own /proc files); the harness stays 0
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory"], limits["memory"]))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    source = program_spec["program"]
    try:
        fd = os.open("solution.py", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            write_all(fd, source.encode("utf-8"))
        finally:
            os.close(fd)
    except OSError:
        pass
    sys.argv = ["solution.py"]
    sys.path[:] = [p for p in sys.path if p not in ("", ".")]
    if program_spec["mode"] == "script":
        _run_script(source)
    else:
        _serve_calls(source, program_spec["entry_point"])


def _flush_and_exit(code) -> "NoReturn":
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            pass
    os._exit(code)


def _run_script(source):
    module = {"__name__": "__main__", "__builtins__": builtins, "__file__": "solution.py"}
    code = 0
    try:
        exec(compile(source, "solution.py", "exec"), module)
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code & 0xFF
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - like the interpreter: a traceback and status 1
        traceback.print_exc()
        code = 1
    _flush_and_exit(code)


def _describe_exc(exc):
    try:
        text = str(exc)
    except BaseException:  # noqa: BLE001
        text = "?"
    return [type(exc).__name__, text[:2000]]


def _serve_calls(source, entry_point):
    module = {"__name__": "solution", "__builtins__": builtins, "__file__": "solution.py"}
    try:
        exec(compile(source, "solution.py", "exec"), module)
        fn = module.get(entry_point)
        if fn is None:
            raise NameError(f"the program defines no {entry_point!r}")
        if not callable(fn):
            raise TypeError(f"{entry_point!r} is a {type(fn).__name__}, not a function")
    except BaseException as exc:  # noqa: BLE001 - reported to the harness as a load error
        send_frame(4, json.dumps({"load_error": _describe_exc(exc)}).encode())
        _flush_and_exit(1)
    send_frame(4, b'{"ready":true}')
    while True:
        frame = recv_frame(3, 1 << 30)
        if frame is None:
            _flush_and_exit(0)
        request = json.loads(frame)
        if "end" in request:
            _flush_and_exit(0)
        args, kwargs = decode(request["args"]), decode(request["kwargs"])
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the function's exception, reported by name
            reply = {"exc": _describe_exc(exc)}
        else:
            try:
                reply = {"ok": encode(result)}
            except (TypeError, ValueError, RecursionError) as exc:
                reply = {"bad": f"the function returned {str(exc)[:300]}"}
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001
                pass
        send_frame(4, json.dumps(reply, allow_nan=False).encode("ascii"))
