"""The namespaces level: C creates user, mount, PID, network and IPC namespaces; Z, PID 1 in
them, builds a read-only root once and runs jobs one by one (stdlib only).

Part of the supervisor's source (see _supervisor.py). Per job, T gets its own mount and IPC
namespaces with a fresh /tmp and /dev/shm; after it, Z kills every process in the PID
namespace. The user, PID and network namespaces are reused across a supervisor's jobs.

Where the new root is built, and where the interpreter may live: the root is assembled on a
tmpfs mounted over a staging folder that is neither above nor below any bound folder (every
bind source is an O_PATH descriptor opened before, so nothing mounted over the staging folder
can hide one). The sandbox's own mount points (/proc, /dev, /tmp, /dev/shm and the program's
working folder) are made first; the binds then land in them with their full paths, so an
interpreter (a venv, a checkout) under /tmp or /dev/shm is at its own path inside too. A job's
fresh /tmp and /dev/shm would cover such a folder: T carries the top folder under them (e.g.
/tmp/ci-checkout, read-only, holding only the bound folders) over its fresh tmpfs (see
`carried`). The program's working folder is not /tmp but a folder of its own (`WORK`), so that
what it finds there (only solution.py) does not depend on where the interpreter is.
"""

import errno
import gc
import json
import os
import select
import signal
import socket
import time

# As part of the package, import; as the supervisor's script (__main__: the parts concatenated)
# these are defined above. Never import evalkit there: the supervisor and every process forked
# from it (the program's included) must not load the package (see _pool.SUPERVISOR_PARTS).
if __name__ != "__main__":
    from evalkit.sandbox._harness import run_trusted
    from evalkit.sandbox._syscalls import (
        CLONE_NEWIPC,
        CLONE_NEWNET,
        CLONE_NEWNS,
        CLONE_NEWPID,
        CLONE_NEWUSER,
        DEV_NODES,
        MNT_DETACH,
        MS_BIND,
        MS_NODEV,
        MS_NOEXEC,
        MS_NOSUID,
        MS_PRIVATE,
        MS_RDONLY,
        MS_REC,
        MS_REMOUNT,
        PR_SET_DUMPABLE,
        PR_SET_PDEATHSIG,
        checked,
        drop_bounding_set,
        keep_only_fds,
        libc,
        make_readonly,
        mount,
        oserror_text,
        prctl,
        reset_signals,
        setup_error,
        wait_child,
    )


# -- namespaces ----------------------------------------------------------------------------
def open_sources(binds):
    """O_PATH descriptors of what the new root binds."""
    sources: list[tuple[str, int | None, str | None]] = []  # (path, descriptor or None, symlink target or None)
    devs: list[tuple[str, int]] = []
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


# The sandbox's own mount points; a fresh tmpfs covers the last two for each job.
OWN_MOUNTS = ("/proc", "/dev", "/tmp", "/dev/shm")
PER_JOB = ("/tmp", "/dev/shm")
# The program's working folder (and HOME): the first that is neither above nor below a bound folder.
WORK = ("/sandbox", "/sandbox-work", "/evalkit-sandbox")
# Where the root may be assembled (the first that is usable): any directory will do, since the bind
# sources are descriptors; one unrelated to every bound folder keeps the two from ever mixing.
STAGING = ("/mnt", "/tmp", "/run", "/var/tmp", "/media", "/srv", "/opt", "/home", "/var", "/dev/shm")


def _within(path, top):
    return path == top or path.startswith(top.rstrip("/") + "/")


def check_binds(binds):
    """A bound folder may lie anywhere (/tmp included) except where the sandbox's own mounts are."""
    for path, _link in binds:
        if any(_within(own, path) for own in OWN_MOUNTS) or _within(path, "/proc"):
            raise OSError(errno.EINVAL, f"cannot bind {path} into the sandbox: it is, or contains, one of the "
                          "sandbox's own mount points (/, /proc, /dev, /tmp, /dev/shm); install the interpreter "
                          "in a folder of its own")


def carried(binds):
    """The top folders under /tmp and /dev/shm that hold bound folders (e.g. /tmp/ci-checkout for a
    venv in /tmp/ci-checkout/.venv): each job carries them over its fresh /tmp and /dev/shm."""
    tops = set()
    for path, _link in binds:
        for top in PER_JOB:
            if path.startswith(top + "/"):
                tops.add(top + "/" + path[len(top) + 1:].split("/")[0])
    return sorted(tops)


def work_dir(binds):
    for candidate in WORK:
        if not any(_within(candidate, path) or _within(path, candidate) for path, _link in binds):
            return candidate
    raise OSError(errno.EEXIST, "no name left for the working folder: " + ", ".join(WORK) + " are all bound")


def stage_root(binds):
    """Mount the new root's tmpfs over a staging folder unrelated to every bound folder."""
    tried = []
    for candidate in STAGING:
        if any(_within(candidate, path) or _within(path, candidate) for path, _link in binds):
            continue
        if not os.path.isdir(candidate) or os.path.islink(candidate):
            continue
        try:
            mount("tmpfs", candidate, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
            return candidate
        except OSError as exc:
            tried.append(f"{candidate}: {oserror_text(exc)}")
    raise OSError(errno.ENOENT, "no folder to assemble the new root on (" + ("; ".join(tried) or
                  "none of " + ", ".join(STAGING) + " exists apart from the bound folders") + ")")


def build_root(hdr, sources, devs):
    """In Z: a new root of read-only binds, a fresh read-only /proc and a minimal /dev; pivot.

    /tmp, /dev/shm and the working folder are left as mount points: each job mounts fresh
    ones (and carries over them what was bound below them). Returns the working folder."""
    check_binds(hdr["binds"])
    work = work_dir(hdr["binds"])
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    root = stage_root(hdr["binds"])
    # First the sandbox's own mount points, so that no bind can take their place...
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
    os.mkdir(root + "/tmp")
    os.mkdir(root + work)
    # ...then the binds, each at its own path (under /tmp and /dev/shm too: see `carried`).
    for path, fd, link in sources:
        target = root + path
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if link is not None:
            os.symlink(link, target)
            continue
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.makedirs(target, exist_ok=True)
        else:
            open(target, "a").close()
        mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        make_readonly(target)
    for path in hdr["hide"]:
        target = root + path
        if os.path.isdir(target):
            mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555")
    mount(None, dev, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)
    for fd in [fd for _, fd, _ in sources if fd is not None] + [fd for _, fd in devs]:
        os.close(fd)  # no handle on the outside world survives the pivot
    os.chdir(root)
    checked(libc.pivot_root(b".", b"."), "pivot_root")
    checked(libc.umount2(b".", MNT_DETACH), "umount the old root")
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return work


def run_job_in_namespace(hdr, fds, done_fd):
    """T inside Z's namespaces: its own mount and IPC namespaces with a fresh working folder,
    /tmp and /dev/shm (nothing a job writes is seen by the next), then the harness (which
    tells Z on `done_fd` once its report is written)."""
    try:
        checked(libc.unshare(CLONE_NEWNS | CLONE_NEWIPC), "unshare(CLONE_NEWNS|CLONE_NEWIPC)")
        # What was bound under /tmp or /dev/shm (an interpreter in a checkout under /tmp): held
        # before the fresh mounts cover it, then bound back over them, read-only.
        held: list[tuple[str, int | None, str | None]] = []  # (path, descriptor or None, symlink target or None)
        for path in hdr.get("carry", ()):
            if os.path.islink(path):
                held.append((path, None, os.readlink(path)))
            else:
                held.append((path, os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW), None))
        # One tmpfs (one size limit) for the working folder and /tmp: two folders in it are bound
        # to those places, the second over the tmpfs's own root, which nothing can reach then.
        tmp, work = hdr["limits"]["tmp"], hdr["work"]
        mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp},nr_inodes=8192,mode=0755")
        for name, mode in (("work", 0o755), ("tmp", 0o1777)):
            os.mkdir(f"/tmp/{name}")
            os.chmod(f"/tmp/{name}", mode)
        mount("/tmp/work", work, None, MS_BIND)
        mount("/tmp/tmp", "/tmp", None, MS_BIND)
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={max(tmp // 4, 65536)},mode=1777")
        for path, fd, link in held:
            if link is not None:
                os.symlink(link, path)
                continue
            if fd is None:  # (never: an entry without a symlink target has a descriptor)
                continue
            os.mkdir(path, 0o755)
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            make_readonly(path)
            os.close(fd)
    except OSError as exc:
        setup_error(fds[2], f"cannot prepare the job's namespaces: {oserror_text(exc)}")
        os._exit(125)
    run_trusted(hdr, fds, True, work, done_fd)


def wait_reported(pid, deadline, done_r):
    """(status, timed_out) of the job's harness T: as soon as T says its report is written
    (status 0; T is then ended with the rest), or when T exits, or at the deadline."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, True
            watch = [done_r] + ([pidfd] if pidfd is not None else [])
            ready, _, _ = select.select(watch, [], [], left if pidfd is not None else min(left, 0.02))
            if done_r in ready:
                if os.read(done_r, 1) == b"d":
                    return 0, False
                return wait_child(pid, deadline, None)  # T closed it without reporting: its exit status
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status, False
    finally:
        if pidfd is not None:
            os.close(pidfd)


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
        work = build_root(hdr, sources, devs)
    except OSError as exc:
        zsock.send(json.dumps({"setup_error": f"cannot build the sandbox's file system: {oserror_text(exc)}"
                               }).encode())
        os._exit(125)
    carry = carried(hdr["binds"])
    drop_bounding_set()  # inherited by every T and U: no execve can gain a capability (U drops the rest)
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
        job["carry"], job["work"] = carry, work
        start = time.monotonic()
        done_r, done_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                zsock.detach()
                keep_only_fds([0, 1, 2, *fds, done_w])
                run_job_in_namespace(job, fds, done_w)
            except BaseException as exc:  # noqa: BLE001
                setup_error(fds[2], f"harness failed: {type(exc).__name__}: {exc}")
            os._exit(124)
        for fd in (*fds, done_w):
            os.close(fd)
        try:
            status, timed_out = wait_reported(pid, start + job["timeout"], done_r)
        finally:
            os.close(done_r)
        # Every process of the job is sent SIGKILL before the verdict goes out, and all are gone
        # (reaped) before the next job is read: the harness's exit and the kills overlap the reply.
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        zsock.send(json.dumps({"timed_out": timed_out, "wall": time.monotonic() - start,
                               "status": None if status is None else os.waitstatus_to_exitcode(status)}).encode())
        kill_all_in_namespace()



def run_c(hdr, zsock, sync_w, sync_r):
    """C: a new session and new namespaces; waits for its uid map, then forks Z (PID 1)."""
    os.setsid()
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    reset_signals()
    keep_only_fds([0, 1, 2, zsock.fileno(), sync_w, sync_r])
    try:
        checked(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC),
            "unshare(CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWNET|CLONE_NEWPID|CLONE_NEWIPC)")
    except OSError as exc:
        zsock.send(json.dumps({"setup_error": f"cannot create namespaces: {oserror_text(exc)}"}).encode())
        os._exit(125)
    # Still our own uid on the host (the map comes next): we can walk to the interpreter even
    # where the sandbox's uid could not (e.g. under /root); a bind source must be opened in
    # the new mount namespace.
    sources, devs = open_sources(hdr["binds"])
    # The supervisor is not dumpable, nor are we (its fork): our /proc files would then belong
    # to root, and a supervisor not running as root could not write our uid/gid maps. Dumpable
    # only until they are written (nothing of a job is in this process; the programs come later,
    # in namespaces from which this process cannot be seen).
    prctl(PR_SET_DUMPABLE, 1)
    os.write(sync_w, b"u")
    os.close(sync_w)
    if os.read(sync_r, 1) != b"g":
        zsock.send(json.dumps({"setup_error": "the supervisor could not write the uid/gid maps"}).encode())
        os._exit(125)
    os.close(sync_r)
    prctl(PR_SET_DUMPABLE, 0)
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
