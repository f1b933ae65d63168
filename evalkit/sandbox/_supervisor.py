"""The supervisor: one per pool slot, long-lived and trusted; runs jobs one at a time.

Stdlib only. The parent starts the source of _wire, _syscalls, _program, _harness,
_namespaces and this file, concatenated, as `python -s -B -P -c SOURCE FD`; it never imports
evalkit. Jobs arrive on FD (a SOCK_SEQPACKET socket): a JSON header (limits, isolation,
layout) plus five file descriptors — program, job, report, stdout, stderr (memfds the parent
made). The supervisor never reads the job (tests, inputs, nonce), so none of it is in the
memory of any process forked from here.

Processes per job:

    namespaces:  supervisor ─ C ─ Z (PID 1, long-lived) ─ T (harness) ─ U (program)
    process:     supervisor ─ T (harness; new session, subreaper) ─ U (program)

C creates the namespaces (the supervisor, outside them, writes C's uid/gid maps); Z builds
the root once and then, per job, forks T, enforces the deadline and kills every process in
its PID namespace. At the process level this process enforces the deadline and sweeps the
process tree (it is a child subreaper: orphans come back to it). T forks U, then reads the
job and reports to the parent with the nonce; U never holds the report descriptor.
"""

import gc
import json
import os
import select
import signal
import socket
import sys
import time
import traceback

# As part of the package, import; as the supervisor's script (__main__: the parts concatenated)
# these are defined above. Never import evalkit there: the supervisor and every process forked
# from it (the program's included) must not load the package (see _pool.SUPERVISOR_PARTS).
if __name__ != "__main__":
    from evalkit.sandbox._harness import run_trusted
    from evalkit.sandbox._namespaces import run_c, write_id_maps
    from evalkit.sandbox._syscalls import (
        PR_SET_CHILD_SUBREAPER,
        PR_SET_DUMPABLE,
        PR_SET_PDEATHSIG,
        keep_only_fds,
        kill_descendants,
        no_children,
        oserror_text,
        prctl,
        setup_error,
        wait_child,
    )


class Supervisor:
    """One job at a time. Namespace jobs go to a long-lived zygote Z (PID 1 of its own
    namespaces, made on first use); process jobs are forked here, one T per job."""

    def __init__(self, sock):
        self.sock = sock
        self.job_group = None
        self.base = None
        self.zygote = None  # (C's pid, our socket to Z, the layout it was built with)

    # -- process level
    def workdir(self, hdr):
        import shutil
        import tempfile
        if self.base is None:
            self.base = tempfile.mkdtemp(prefix="evalkit-sandbox-")
            os.chmod(self.base, 0o711)  # U may enter its own folder, not list or write this one
        work = tempfile.mkdtemp(dir=self.base)
        if hdr.get("drop_to") is not None:
            os.chown(work, hdr["drop_to"], hdr["drop_to"])
        return work, lambda: shutil.rmtree(work, ignore_errors=True)

    def run_process(self, hdr, fds):
        start = time.monotonic()
        workdir, cleanup = self.workdir(hdr)
        pid = os.fork()
        if pid == 0:
            try:
                self.sock.detach()
                os.setsid()
                prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                keep_only_fds([0, 1, 2, *fds])
                run_trusted(hdr, fds, False, workdir)
            except BaseException as exc:  # noqa: BLE001
                setup_error(fds[2], f"harness failed: {type(exc).__name__}: {exc}")
            finally:
                os._exit(124)
        self.job_group = pid
        status, timed_out = None, True
        try:
            status, timed_out = wait_child(pid, start + hdr["timeout"], self.sock)
        finally:
            self.finish(pid)
            cleanup()
        return {"timed_out": timed_out, "wall": time.monotonic() - start,
                "status": None if status is None else os.waitstatus_to_exitcode(status)}

    def finish(self, pid):
        """Kill the job's session and every descendant, and reap them."""
        try:
            os.killpg(pid, signal.SIGKILL)  # T leads the job's session and group
        except (ProcessLookupError, PermissionError):
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        if not no_children():  # something outlived its group: kill the whole tree
            kill_descendants(os.getpid())
        self.job_group = None

    # -- namespaces level
    def make_zygote(self, hdr):
        """Start C and Z; (None, setup error) or (the zygote, None)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        up_r, up_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                self.sock.detach()
                ours.detach()
                os.close(up_r)
                os.close(go_w)
                run_c(hdr, theirs, up_w, go_r)
            finally:
                os._exit(125)
        theirs.close()
        os.close(up_w)
        os.close(go_r)
        try:
            ready, _, _ = select.select([up_r], [], [], 10.0)
            if ready and os.read(up_r, 1) == b"u":
                try:
                    write_id_maps(pid, hdr["ns_uid"], hdr["ns_gid"])
                    os.write(go_w, b"g")
                except OSError as exc:
                    self.kill_zygote((pid, ours, None))
                    return None, f"cannot write the uid/gid maps: {oserror_text(exc)}"
        finally:
            os.close(up_r)
            os.close(go_w)
        ours.settimeout(20.0)
        try:
            first = ours.recv(1 << 16)
        except OSError:
            first = b""
        ours.settimeout(None)
        reply = json.loads(first) if first else {"setup_error": "the sandbox's PID 1 did not start"}
        if not reply.get("ready"):
            self.kill_zygote((pid, ours, None))
            return None, str(reply.get("setup_error"))
        return (pid, ours, (hdr["binds"], hdr["hide"], hdr["ns_uid"])), None

    def kill_zygote(self, zyg):
        pid, ours = zyg[0], zyg[1]
        try:
            os.killpg(pid, signal.SIGKILL)  # C's session: C and Z (Z's death ends the namespace)
        except (ProcessLookupError, PermissionError):
            pass
        ours.close()
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        kill_descendants(os.getpid(), patience=1.0)  # Z's zombie is reparented to us
        if self.zygote is zyg:
            self.zygote = None

    def run_namespaces(self, hdr, fds):
        start = time.monotonic()
        key = (hdr["binds"], hdr["hide"], hdr["ns_uid"])
        if self.zygote is not None and (self.zygote[2] != key or not self.zygote_alive()):
            self.kill_zygote(self.zygote)
        if self.zygote is None:
            self.zygote, problem = self.make_zygote(hdr)
            if problem is not None:
                setup_error(fds[2], problem)
                return {"timed_out": False, "wall": time.monotonic() - start, "status": None}
        zyg = self.zygote
        self.job_group = zyg[0]
        job = {"timeout": hdr["timeout"], "limits": hdr["limits"], "drop_to": None}
        try:
            socket.send_fds(zyg[1], [json.dumps(job).encode()], fds)
            # Z enforces the deadline; we wait a little longer, then end the namespace ourselves.
            ready, _, _ = select.select([zyg[1], self.sock], [], [], hdr["timeout"] + 3.0)
            if self.sock in ready:
                raise SystemExit(0)
            reply = zyg[1].recv(1 << 16) if ready else b""
        except OSError:
            reply = b""
        if not reply:  # past the deadline, or the namespace died under the job
            self.kill_zygote(zyg)
            wall = time.monotonic() - start
            return {"timed_out": wall >= hdr["timeout"], "wall": wall, "status": None}
        self.job_group = None
        out = json.loads(reply)
        out["wall"] = time.monotonic() - start
        return out

    def zygote_alive(self):
        if self.zygote is None:
            return False
        try:
            done, _ = os.waitpid(self.zygote[0], os.WNOHANG)
        except ChildProcessError:
            return False
        return done == 0

    def serve(self):
        while True:
            try:
                msg, fds, _, _ = socket.recv_fds(self.sock, 1 << 20, 8)
            except InterruptedError:
                continue
            if not msg:
                return
            reply: dict[str, object]
            try:
                hdr = json.loads(msg)
                if hdr.get("op") == "ping":
                    reply = {"pong": os.getpid()}
                elif hdr["isolation"] == "namespaces":
                    reply = self.run_namespaces(hdr, fds)
                else:
                    reply = self.run_process(hdr, fds)
            except SystemExit:
                raise
            except BaseException as exc:  # noqa: BLE001 - report, keep serving
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                for fd in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self.sock.send(json.dumps(reply).encode())

    def shutdown(self):
        if self.job_group is not None and self.zygote is None:
            self.finish(self.job_group)
        if self.zygote is not None:
            self.kill_zygote(self.zygote)
        if self.base is not None:
            import shutil
            shutil.rmtree(self.base, ignore_errors=True)


def preload():
    """Modules programs and tests commonly import (HumanEval: typing in 21 of 164 prompts, math,
    random, copy, string, collections, re, hashlib), loaded once: every fork shares them. And what
    each run would otherwise initialise for itself on first use: the first compile() in a process
    builds the ast module's ~120 classes (~1 ms, in both the harness and the program's process),
    and the first traceback walk (the harness's, on a failed assert) sets up its helpers."""
    for name in ("typing", "math", "random", "copy", "string", "collections", "re", "hashlib", "itertools",
                 "functools", "heapq", "bisect"):
        try:
            __import__(name)
        except ImportError:
            pass
    try:
        exec(compile("def warm():\n    assert False\nwarm()\n", "<warm>", "exec"), {})
    except AssertionError as exc:
        traceback.extract_tb(exc.__traceback__)


def main():
    preload()
    gc.freeze()  # what is here now is never collected: forks don't copy pages for the GC to walk them
    sock = socket.socket(fileno=int(sys.argv[1]))
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    prctl(PR_SET_DUMPABLE, 0)
    sup = Supervisor(sock)

    def on_term(signum, frame):  # noqa: ARG001 - the parent gave up on a job: leave nothing behind
        sup.shutdown()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        sup.serve()
    except SystemExit:
        pass
    finally:
        sup.shutdown()


if __name__ == "__main__":
    main()
