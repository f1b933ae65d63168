"""System calls and small helpers for the sandbox's child side (stdlib only).

Part of the supervisor's source (see _supervisor.py): ctypes wrappers for what the os module
lacks (prctl, mount, mount_setattr, unshare, pivot_root, capset), framed pipes, and the
process-tree sweeps that make sure nothing a job started outlives it.
"""

import ctypes
import errno
import json
import os
import select
import signal
import struct
import time

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = 1024, 2048, 4096, 16384, 1 << 18, 1 << 21
MNT_DETACH, AT_FDCWD, AT_RECURSIVE = 2, -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 1, 2, 4
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP = 1, 4, 24
PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 36, 38, 47, 4
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (new system calls are unified)
DEV_NODES = ("null", "zero", "full", "random", "urandom")
FRAME_LIMIT = 16 * 1024 * 1024  # the largest message the harness accepts from the program
FRAME_HEAD = struct.Struct(">I")  # (compiled once, in the template: not again in every fork)
SIGNAL_NOTES: dict[int, str] = {signal.SIGXCPU: "CPU time limit", signal.SIGXFSZ: "output/file size limit",
                signal.SIGKILL: "killed", signal.SIGSEGV: "segmentation fault"}

libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.unshare.argtypes = [ctypes.c_int]
libc.syscall.restype = ctypes.c_long
try:
    _CAP_LAST = int(open("/proc/sys/kernel/cap_last_cap").read())
except (OSError, ValueError):
    _CAP_LAST = 40


def checked(ret, what):
    """`ret` of a libc call, or OSError naming the call and its errno when it is -1."""
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what} failed with {errno.errorcode.get(err, err)} ({os.strerror(err)})")
    return ret


def oserror_text(exc):
    """An OSError as `ENAME (message): path`, so a setup error names the errno, not just its text."""
    name = errno.errorcode.get(exc.errno, "") if isinstance(exc.errno, int) else ""
    text = exc.strerror or str(exc)
    if name and name not in text:
        text = f"{name} ({text})"
    for path in (exc.filename, exc.filename2):
        if path is not None:
            text += f": {os.fsdecode(path) if isinstance(path, bytes) else path}"
    return text


def prctl(option, arg=0):
    return checked(libc.prctl(option, arg, 0, 0, 0), f"prctl({option})")


def mount(source, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    checked(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def make_readonly(path):
    """Read-only, nosuid, nodev, recursively: mount_setattr (Linux >= 5.12), else a remount per mount."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
    ret = libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, os.fsencode(path), AT_RECURSIVE,
                        ctypes.byref(attr), ctypes.sizeof(attr))
    if ret == 0:
        return
    if ctypes.get_errno() not in (errno.ENOSYS, errno.EINVAL):
        checked(-1, f"mount_setattr {path}")
    targets = [path]
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(path.rstrip("/") + "/"):
                targets.append(point)
    for target in targets:  # keep the flags a user namespace may not clear (nosuid, nodev, ...)
        st = os.statvfs(target).f_flag
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
        for st_flag, ms_flag in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
                                 (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
                                 (os.ST_RELATIME, MS_RELATIME)):
            if st & st_flag:
                flags |= ms_flag
        mount(None, target, None, flags)


def drop_bounding_set():
    """Empty the bounding set: no execve can bring a capability back."""
    for cap in range(_CAP_LAST + 1):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == -1 and ctypes.get_errno() not in (errno.EINVAL,):
            raise OSError(ctypes.get_errno(), "cannot drop the capability bounding set")
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)


_CapHeader, _CapData = ctypes.c_uint32 * 2, ctypes.c_uint32 * 6  # made once: forks find them ready


def drop_capabilities(bounding=True):
    """No capability left (permitted, effective, inheritable), none regained by execve.
    `bounding=False` where an ancestor already emptied the bounding set (it is inherited)."""
    if bounding:
        drop_bounding_set()
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    checked(libc.capset(header, _CapData()), "capset")


# -- small I/O helpers -------------------------------------------------------------------
def read_fd(fd, limit=1 << 30):
    try:
        size = os.fstat(fd).st_size  # (a hint: reads go on to the end of file whatever it says)
    except OSError:
        size = 0
    chunks, offset = [], 0
    while offset < limit:
        chunk = os.pread(fd, min(1 << 20, limit - offset, max(size - offset, 0) + 4096), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def send_frame(fd, payload):
    write_all(fd, FRAME_HEAD.pack(len(payload)) + payload)


def recv_exact(fd, n):
    parts, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def recv_frame(fd, limit=FRAME_LIMIT):
    """One length-prefixed frame; None at end of file; ValueError if larger than `limit`."""
    head = recv_exact(fd, 4)
    if head is None:
        return None
    (size,) = FRAME_HEAD.unpack(head)
    if size > limit:
        raise ValueError(f"a message of {size} bytes (the limit is {limit})")
    return recv_exact(fd, size)


def setup_error(report_fd, message):
    try:
        write_all(report_fd, json.dumps({"setup_error": message}).encode() + b"\n")
    except OSError:
        pass


def describe_status(status):
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        note = SIGNAL_NOTES.get(sig)
        return f"killed by {name}" + (f" ({note})" if note else "")
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def keep_only_fds(keep):
    last = -1
    for fd in sorted(set(keep)):
        if fd > last + 1:
            os.closerange(last + 1, fd)
        last = fd
    os.closerange(last + 1, 1 << 20)


def reset_signals():
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGALRM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def descendants(root):
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], [root]
    while todo:
        for kid in children.get(todo.pop(), ()):
            found.append(kid)
            todo.append(kid)
    return found


def no_children():
    """True if this process has no child at all (so no descendant either)."""
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return False


def kill_descendants(root, patience=3.0):
    """SIGKILL every descendant (repeatedly: a fork loop keeps making more) and reap them."""
    end = time.monotonic() + patience
    while time.monotonic() < end:
        kids = descendants(root)
        if not kids:
            reap()
            return
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        reap()
        time.sleep(0.002)


def wait_child(pid, deadline, sock):
    """(status, timed_out); raises SystemExit if `sock` (the parent) becomes readable: gone."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status, False
            left = deadline - time.monotonic()
            if left <= 0:
                return None, True
            watch = ([sock] if sock is not None else []) + ([pidfd] if pidfd is not None else [])
            ready, _, _ = select.select(watch, [], [], min(left, 0.02 if pidfd is None else left))
            if sock is not None and sock in ready:
                raise SystemExit(0)  # end of file from the parent: it is gone
    finally:
        if pidfd is not None:
            os.close(pidfd)
