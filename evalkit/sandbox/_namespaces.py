"""The namespaces level: C creates user, mount, PID, network and IPC namespaces; Z, PID 1 in
them, builds a read-only root once and runs jobs one by one (stdlib only).

Part of the supervisor's source (see _supervisor.py). Per job, T gets its own mount and IPC
namespaces with a fresh /tmp and /dev/shm; after it, Z kills every process in the PID
namespace. The user, PID and network namespaces are reused across a supervisor's jobs.
"""

import gc
import json
import os
import signal
import socket
import time

try:  # as part of the package; run as the supervisor's script, these are already defined
    from evalkit.sandbox._syscalls import (CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, MS_RDONLY,
        MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE, MNT_DETACH,
        PR_SET_PDEATHSIG, PR_SET_DUMPABLE, DEV_NODES, _libc, _ok, prctl, mount, make_readonly, setup_error,
        keep_only_fds, reset_signals, wait_child)
    from evalkit.sandbox._harness import run_trusted
except ImportError:
    pass


# -- namespaces ----------------------------------------------------------------------------
def open_sources(binds):
    """O_PATH descriptors of what the new root binds."""
    sources, devs = [], []
    for path, link in binds:
        if link is not None:
            sources.append((path, None, link))
        else:
            try:
                sources.append((path, os.open(path, os.O_PATH), None))
            except OSError:
                pass
    for name in DEV_NODES:
        try:
            devs.append((name, os.open(f"/dev/{name}", os.O_PATH)))
        except OSError:
            pass
    return sources, devs


def build_root(hdr, sources, devs):
    """In Z: a new root of read-only binds, a fresh read-only /proc and a minimal /dev; pivot.

    /tmp and /dev/shm are left as empty mount points: each job mounts fresh ones."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    root = "/tmp"
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    for path, fd, link in sources:
        target = root + path
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if link is not None:
            os.symlink(link, target)
            continue
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.makedirs(target, exist_ok=True)
        else:
            open(target, "w").close()
        mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        make_readonly(target)
    for path in hdr["hide"]:
        target = root + path
        if os.path.isdir(target):
            mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555")
    os.mkdir(root + "/proc")
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
    dev = root + "/dev"
    os.mkdir(dev)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,nr_inodes=64,mode=0755")
    for name, fd in devs:
        open(f"{dev}/{name}", "w").close()
        mount(f"/proc/self/fd/{fd}", f"{dev}/{name}", None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")
    os.mkdir(dev + "/shm")
    mount(None, dev, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)
    os.mkdir(root + "/tmp")
    for fd in [fd for _, fd, _ in sources if fd is not None] + [fd for _, fd in devs]:
        os.close(fd)  # no handle on the outside world survives the pivot
    os.chdir(root)
    _ok(_libc.pivot_root(b".", b"."), "pivot_root")
    _ok(_libc.umount2(b".", MNT_DETACH), "umount the old root")
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def run_job_in_namespace(hdr, fds):
    """T inside Z's namespaces: its own mount and IPC namespaces with a fresh /tmp and
    /dev/shm (nothing a job writes is seen by the next), then the harness."""
    try:
        _ok(_libc.unshare(CLONE_NEWNS | CLONE_NEWIPC), "unshare")
        tmp = hdr["limits"]["tmp"]
        mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp},nr_inodes=8192,mode=1777")
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={max(tmp // 4, 65536)},mode=1777")
    except OSError as exc:
        setup_error(fds[2], f"cannot prepare the job's namespaces: {exc}")
        os._exit(125)
    run_trusted(hdr, fds, True, "/tmp")


def kill_all_in_namespace():
    """As PID 1: SIGKILL every other process of the namespace, until none is left."""
    while True:
        try:
            os.kill(-1, signal.SIGKILL)  # from PID 1: everyone in the namespace but itself
        except ProcessLookupError:
            pass
        try:
            while os.waitpid(-1, 0):
                pass
        except ChildProcessError:
            pass
        try:
            os.kill(-1, 0)
        except ProcessLookupError:
            return


def zygote(hdr, zsock, sources, devs):
    """Z: PID 1 of the namespaces, trusted. Builds the root once, then runs jobs one by one:
    forks T for each, enforces its deadline, and kills everything left after it."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    prctl(PR_SET_DUMPABLE, 0)
    os.setsid()  # a session of our own: the program's killpg(0) cannot reach C, outside
    try:
        build_root(hdr, sources, devs)
    except OSError as exc:
        zsock.send(json.dumps({"setup_error": f"cannot build the sandbox's file system: {exc}"}).encode())
        os._exit(125)
    zsock.send(b'{"ready":true}')
    gc.freeze()  # (as in the supervisor: T and U, forked from here, leave these pages shared)
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(zsock, 1 << 20, 8)
        except InterruptedError:
            continue
        if not msg:
            os._exit(0)
        job = json.loads(msg)
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            try:
                zsock.detach()
                keep_only_fds([0, 1, 2, *fds])
                reset_signals()
                run_job_in_namespace(job, fds)
            except BaseException as exc:  # noqa: BLE001
                setup_error(fds[2], f"harness failed: {type(exc).__name__}: {exc}")
            os._exit(124)
        for fd in fds:
            os.close(fd)
        status, timed_out = wait_child(pid, start + job["timeout"], None)
        kill_all_in_namespace()
        zsock.send(json.dumps({"timed_out": timed_out, "wall": time.monotonic() - start,
                               "status": None if status is None else os.waitstatus_to_exitcode(status)}).encode())



def run_c(hdr, zsock, sync_w, sync_r):
    """C: a new session and new namespaces; waits for its uid map, then forks Z (PID 1)."""
    os.setsid()
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    reset_signals()
    keep_only_fds([0, 1, 2, zsock.fileno(), sync_w, sync_r])
    try:
        _ok(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC), "unshare")
    except OSError as exc:
        zsock.send(json.dumps({"setup_error": f"cannot create namespaces: {exc}"}).encode())
        os._exit(125)
    # Still our own uid on the host (the map comes next): we can walk to the interpreter even
    # where the sandbox's uid could not (e.g. under /root); a bind source must be opened in
    # the new mount namespace.
    sources, devs = open_sources(hdr["binds"])
    os.write(sync_w, b"u")
    os.close(sync_w)
    if os.read(sync_r, 1) != b"g":
        zsock.send(json.dumps({"setup_error": "the supervisor could not write the uid/gid maps"}).encode())
        os._exit(125)
    os.close(sync_r)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    pid = os.fork()
    if pid == 0:
        try:
            zygote(hdr, zsock, sources, devs)
        except BaseException:  # noqa: BLE001
            pass
        os._exit(124)
    zsock.close()
    for fd in [fd for _, fd, _ in sources if fd is not None] + [fd for _, fd in devs]:
        os.close(fd)
    while True:
        try:
            os.waitpid(pid, 0)
            break
        except ChildProcessError:
            break
        except InterruptedError:
            continue
    os._exit(0)


def write_id_maps(pid, ns_uid, ns_gid):
    try:
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny")
    except FileNotFoundError:
        pass
    with open(f"/proc/{pid}/uid_map", "w") as f:
        f.write(f"0 {ns_uid} 1\n")
    with open(f"/proc/{pid}/gid_map", "w") as f:
        f.write(f"0 {ns_gid} 1\n")
