"""Hung checkers are ended, not abandoned (issue 13): the runner checks in worker processes, so a
checker stuck in `while True: pass` costs its sample a TIMEOUT and nothing after it — no thread left
spinning, no process left over, plain Python as fast afterwards as before.

Measured in the same process: in `evalkit.evaluate`, in `evalkit run` (the CLI's main, in a child
Python that reports on itself), after Ctrl-C and kill -9 of a run, and in a fine-tune evaluation.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, REPO

import evalkit
from evalkit import task, verdict
from evalkit.core.checkpool import contained, fork_available
from evalkit.errors import InfrastructureError

pytestmark = pytest.mark.skipif(not fork_available(), reason="checks run in forked workers on Linux only")

TIMEOUT = 0.5

# A checker that spins forever on every number ending in 0 (about 5 of the 50 eval examples).
SPINS = '''
import os

from evalkit import task, verdict


@task(name="spins", levels=range(1, 3), max_new_tokens=4)
class Spins:
    """Echo a number; the checker spins forever on those ending in 0."""

    def generate(self, rng, level):
        return {"a": rng.randrange(100)}

    def prompt(self, ex):
        return f"{ex['a']}="

    def reference(self, ex):
        return str(ex["a"])

    def check(self, ex, answer):
        if ex["a"] % 10 == 0:
            if os.environ.get("SPIN_PIDS"):
                with open(os.environ["SPIN_PIDS"], "a") as f:
                    f.write(f"{os.getpid()}\\n")
            while True:
                pass
        return verdict(answer == str(ex["a"]))
'''

# Plain Python's speed in this process, and what it holds, as seen from inside (also run in child Pythons).
PROBE = '''
import os, threading, time

def loop_time(reps=5):
    """The best of `reps` runs of a fixed CPU-bound loop (~50 ms, ten GIL switch intervals): the CPU time
    this process spends on it, and its wall time. A spinning thread in this process takes the GIL half
    the time, so the process spends about twice the CPU on the loop; other processes on the cores move
    the wall time (2x either way on a shared machine) but not this process's CPU time."""
    cpu = wall = float("inf")
    for _ in range(reps):
        start_cpu, start, total = time.process_time(), time.perf_counter(), 0
        for i in range(1_500_000):
            total += i
        cpu = min(cpu, time.process_time() - start_cpu)
        wall = min(wall, time.perf_counter() - start)
    return cpu, wall

def idle_cpu(seconds=0.3):
    """CPU time this process burns while its main thread sleeps: a spinning thread burns it all."""
    start = time.process_time()
    time.sleep(seconds)
    return time.process_time() - start

def children():
    """Processes whose parent is this one (zombies included)."""
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == os.getpid():
                found.add(int(name))
    return found

def cpu_ticks(pid):
    """User + system CPU ticks of process `pid` (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return 0

def state():
    """Speed (see loop_time), CPU burnt while idle, threads and child processes; the check workers kept for the
    next evaluation (evalkit.core.keptpool) and the CPU ticks they burn while this process is idle."""
    from evalkit.core.keptpool import kept_workers
    cpu, wall = loop_time()
    kept = kept_workers()
    ticks = [cpu_ticks(p) for p in kept]
    idle = idle_cpu()
    return {"loop_cpu_s": cpu, "loop_wall_s": wall, "idle_cpu_s": idle, "threads": threading.active_count(),
            "os_threads": len(os.listdir("/proc/self/task")), "children": sorted(children()), "kept": kept,
            "kept_idle_ticks": sum(cpu_ticks(p) for p in kept) - sum(ticks)}
'''
probe: dict = {}
exec(PROBE, probe)  # one source for this process and the child Pythons


def fresh_loop_cpu_s() -> float:
    """The probe's loop in a fresh Python, now: what plain Python costs on this machine at this moment."""
    out = subprocess.run([sys.executable, "-c", PROBE + "\nprint(loop_time()[0])"], capture_output=True,
                         text=True, timeout=120)
    return float(out.stdout)


def assert_no_slowdown_or_leftovers(before: dict, after: dict, native_threads: bool = True) -> None:
    # A leaked spinning thread takes the GIL half the time (plain Python then costs ~2x) and burns a core
    # while the process sleeps; a leaked worker is a child process.
    # The bound leaves room for noise on shared cores (a process that has just trained a model measured
    # 1.53x once, with nothing spinning: idle CPU 4e-5 s); a spinning thread measured 2-3.9x, and the idle
    # and thread checks below catch it directly. A host whose cores slow down between the two measurements
    # (a cloud host measured the same loop's CPU time 1.85x apart within minutes, no thread leaked) slows a
    # fresh Python alike: slower than before *and* than a fresh Python now is what a leak looks like.
    slowdown = after["loop_cpu_s"] / before["loop_cpu_s"]
    if slowdown >= 1.8:
        slowdown = min(slowdown, after["loop_cpu_s"] / fresh_loop_cpu_s())
    assert slowdown < 1.8, (before, after)
    assert after["idle_cpu_s"] < 0.1, (before, after)
    assert after["threads"] == before["threads"], (before, after)
    if native_threads:  # torch starts native threads of its own as training needs them
        assert after["os_threads"] <= before["os_threads"], (before, after)
    # The only children left are the idle workers kept for the next evaluation, and they burn nothing.
    assert set(after["children"]) <= set(before["children"]) | set(after["kept"]), (before, after)
    assert len(after["kept"]) <= 8 and after["kept_idle_ticks"] <= 2, (before, after)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# The same task in memory, as a notebook cell defines it: the workers inherit it (nothing of it is pickled).
spins_cell: dict = {}
exec(SPINS, spins_cell)
Spins = spins_cell["Spins"]


def test_a_spinning_checker_is_ended_and_the_process_keeps_its_speed():
    before = probe["state"]()
    start = time.monotonic()
    record = evalkit.evaluate(model_spec="oracle", tasks=[Spins], n=None, check_timeout=TIMEOUT)
    elapsed = time.monotonic() - start
    after = probe["state"]()
    samples = list(record.samples())
    spun = [s for s in samples if int(s["answer"]) % 10 == 0]
    assert len(samples) > 40 and 3 <= len(spun) < len(samples)
    assert all(s["status"] == "TIMEOUT" and s["reason"] == f"check exceeded {TIMEOUT:g}s" for s in spun), spun
    assert all(s["status"] == "PASS" for s in samples if s not in spun)
    assert record.task("spins")["timeouts"] == len(spun)
    assert elapsed < 30
    assert_no_slowdown_or_leftovers(before, after)


@task(name="misbehaves", max_new_tokens=8)
class Misbehaves:
    """One row per way a checker can go wrong."""

    started = ""  # where the deaf check writes the pid of the process it starts (set before the run)

    def rows(self):
        return [{"kind": k} for k in ("fine", "deaf", "raises", "exits", "dies")]

    def prompt(self, ex):
        return ex["kind"]

    def reference(self, ex):
        return ex["kind"]

    def check(self, ex, answer):
        kind = ex["kind"]
        if kind == "deaf":  # never sees the alarm: only killing its process ends it (and what it started)
            sleeper = subprocess.Popen(["sleep", "600"])
            Path(Misbehaves.started).write_text(str(sleeper.pid))
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            while True:
                pass
        if kind == "raises":
            raise ValueError("bad checker")
        if kind == "exits":
            sys.exit(5)
        if kind == "dies":
            os._exit(3)
        return verdict(True)


def test_checkers_that_ignore_the_alarm_raise_exit_or_die(tmp_path):
    Misbehaves.started = str(tmp_path / "sleeper")  # the workers, forked later, inherit it
    before = probe["state"]()
    record = evalkit.evaluate(model_spec="oracle", tasks=[Misbehaves], n=None, check_timeout=TIMEOUT,
                              check_workers=2)
    after = probe["state"]()
    got = {s["prompt"]: (s["status"], s["reason"], s["answer"]) for s in record.samples()}
    assert got["fine"][0] == "PASS"
    assert got["deaf"] == ("TIMEOUT", f"check exceeded {TIMEOUT:g}s", "")  # killed: the answer went with it
    assert got["raises"] == ("ERROR", "checker raised ValueError: bad checker", "raises")
    assert got["exits"][:2] == ("ERROR", "checker raised SystemExit: 5")
    assert got["dies"][:2] == ("ERROR", "the check's worker process died (exit code 3)")
    assert not alive(int((tmp_path / "sleeper").read_text()))  # killed with the worker's process group
    assert_no_slowdown_or_leftovers(before, after)


@task(name="deaf_in_a_chunk", max_new_tokens=8)
class DeafInAChunk:
    """Twelve quick checks and one (row 5) that only a kill ends: one worker gets them three to a message, so
    rows 3 and 4 are done, their results not yet sent, when row 5 stops answering."""

    def rows(self):
        return [{"i": i} for i in range(12)]

    def prompt(self, ex):
        return str(ex["i"])

    def reference(self, ex):
        return str(ex["i"])

    def check(self, ex, answer):
        if ex["i"] == 5:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            while True:
                pass
        return verdict(True)


def test_only_the_check_that_stopped_answering_is_blamed_and_those_done_beside_it_keep_their_verdicts():
    record = evalkit.evaluate(model_spec="oracle", tasks=[DeafInAChunk], n=None, check_timeout=TIMEOUT,
                              check_workers=1)
    got = {s["prompt"]: s["status"] for s in record.samples()}
    assert got == {str(i): "TIMEOUT" if i == 5 else "PASS" for i in range(12)}
    assert record.task("deaf_in_a_chunk")["timeouts"] == 1


@task(name="no_sandbox")
class NoSandbox:
    def rows(self):
        return [{"q": str(i)} for i in range(20)]

    def prompt(self, ex):
        return ex["q"]

    def reference(self, ex):
        return ex["q"]

    def check(self, ex, answer):
        if ex["q"] == "7":
            raise InfrastructureError("the sandbox this check needs is not available")
        if ex["q"] == "3":
            while True:
                pass
        return verdict(True)


def test_an_infrastructure_error_stops_the_run_and_leaves_no_worker():
    before = probe["state"]()
    with pytest.raises(InfrastructureError, match="sandbox this check needs"):
        evalkit.evaluate(model_spec="oracle", tasks=[NoSandbox], n=None, check_timeout=30)
    assert_no_slowdown_or_leftovers(before, probe["state"]())


class Unpicklable:
    """A task holding a lock and a lambda: it reaches the workers only because they are forked."""

    def __init__(self):
        self.lock = threading.Lock()
        self.judge = lambda ex, answer: verdict(answer == ex["q"])

    def rows(self):
        return [{"q": str(i)} for i in range(150)]

    def prompt(self, ex):
        return ex["q"]

    def check(self, ex, answer):
        with self.lock:
            return self.judge(ex, answer)


def test_in_memory_tasks_reach_the_workers_and_a_failing_run_leaves_none():
    from evalkit.models.python import PythonCallableBackend

    unpicklable = task(name="unpicklable")(Unpicklable)
    before = probe["state"]()
    record = evalkit.evaluate(backend=PythonCallableBackend(lambda p: p), tasks=[unpicklable], n=None)
    assert record.task("unpicklable")["passes"] == 150
    calls = []

    def fails_later(prompt):  # the second batch fails, after the workers have checked the first
        calls.append(prompt)
        if len(calls) > 64:
            raise RuntimeError("the model server went away")
        return prompt

    with pytest.raises(RuntimeError, match="went away"):
        evalkit.evaluate(backend=PythonCallableBackend(fails_later), tasks=[unpicklable], n=None, batch_size=1)
    assert_no_slowdown_or_leftovers(before, probe["state"]())


@task(name="where")
class Where:
    def rows(self):
        return [{"q": str(i)} for i in range(4)]

    def prompt(self, ex):
        return ex["q"]

    def reference(self, ex):
        return ex["q"]

    def check(self, ex, answer):
        return verdict(True, str(os.getpid()))


@contained
@task(name="where_contained")
class WhereContained(Where):
    """Checks that bound their own time (code in the sandbox) stay on threads in this process."""


def test_contained_tasks_are_checked_here_others_in_workers():
    record = evalkit.evaluate(model_spec="oracle", tasks=[Where, WhereContained], n=None)
    pids = {t: {s["reason"] for s in record.samples() if s["task"] == t} for t in ("where", "where_contained")}
    assert pids["where_contained"] == {str(os.getpid())}
    assert str(os.getpid()) not in pids["where"] and len(pids["where"]) >= 1


def test_off_the_main_thread_a_single_check_past_its_deadline_is_interrupted_too():
    """`score` outside the runner, on a thread: no SIGALRM there, so the deadline raises an exception in
    the checker's thread, which ends a Python loop (only a check that ignores it is left running)."""
    t = evalkit.as_task(Spins)
    ex = next(e for e in t.examples("eval", n=None) if e["a"] % 10 == 0)
    before = probe["state"]()
    box = {}
    caller = threading.Thread(target=lambda: box.update(v=evalkit.score(t, ex, ex.reference, timeout=TIMEOUT)))
    caller.start()
    caller.join(30)
    assert box["v"].verdict.status is evalkit.Status.TIMEOUT and box["v"].verdict.reason == "check exceeded 0.5s"
    assert_no_slowdown_or_leftovers(before, probe["state"]())


def _spins_file(tmp_path: Path) -> Path:
    path = tmp_path / "spins.py"
    path.write_text(SPINS)
    return path


def test_evalkit_run_with_a_spinning_checker_then_plain_python_is_as_fast(tmp_path):
    """`evalkit run` in a child Python, which then measures its own speed, threads and children."""
    driver = PROBE + textwrap.dedent(f'''
        import json, sys
        from evalkit.cli import main
        before = state()
        try:
            main(["run", "--model", "oracle", "--tasks-dir", {str(_spins_file(tmp_path))!r}, "--task", "spins",
                  "-n", "100", "--check-timeout", "{TIMEOUT}", "--reports-dir", {str(tmp_path / "r")!r}])
        except SystemExit as exc:
            code = exc.code
        print(json.dumps({{"code": code, "before": before, "after": state()}}))
    ''')
    out = subprocess.run([sys.executable, "-c", driver], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, out.stdout + out.stderr
    assert_no_slowdown_or_leftovers(result["before"], result["after"])
    [run] = (tmp_path / "r").iterdir()
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    statuses = {s["status"] for s in samples if int(s["answer"]) % 10 == 0}
    assert statuses == {"TIMEOUT"} and sum(s["status"] == "PASS" for s in samples) > 30


@pytest.mark.parametrize("how", ["ctrl-c", "kill -9"])
def test_no_worker_outlives_an_interrupted_or_killed_run(tmp_path, how):
    pids = tmp_path / "pids"
    proc = subprocess.Popen([sys.executable, "-m", "evalkit", "run", "--model", "oracle", "--tasks-dir",
                             str(_spins_file(tmp_path)), "--task", "spins", "--check-timeout", "120",
                             "--reports-dir", str(tmp_path / "r")], cwd=REPO, start_new_session=True,
                            env={**os.environ, "SPIN_PIDS": str(pids)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (pids.exists() and pids.read_text().strip()):
            time.sleep(0.05)
        spinning = [int(p) for p in pids.read_text().split()]
        assert spinning and all(alive(p) for p in spinning)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends: the whole foreground group
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 4 and "interrupted" in err, err
        else:
            os.kill(proc.pid, signal.SIGKILL)  # the parent alone: its workers must not outlive it
            proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(p) for p in spinning):
            time.sleep(0.05)
        assert not any(alive(p) for p in spinning)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


INITIALS_THAT_SPIN = '''
from evalkit import task, verdict

WORDS = [a + b + c for a in "abcdefgh" for b in "aeiou" for c in "lmnrst"]


@task(name="initials", target=0.9, max_new_tokens=4)
class Initials:
    """The fine-tune fixture's task, with a checker that spins on some wrong answers."""

    def generate(self, rng):
        return {"word": rng.choice(WORDS)}

    def prompt(self, ex):
        return f"{ex['word']}:"

    def reference(self, ex):
        return ex["word"][0] * 2

    def check(self, ex, answer):
        if answer != ex["word"][0] * 2 and ex.id[0] in "01":
            while True:
                pass
        return verdict(answer == ex["word"][0] * 2)
'''


def test_a_spinning_checker_in_fine_tune_evaluations(tmp_path):
    pytest.importorskip("transformers")
    from evalkit.discovery.registry import discover
    from evalkit.train import sft
    from evalkit.train.common import prepare

    (tmp_path / "tasks.py").write_text(INITIALS_THAT_SPIN)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text((FIXTURES / "ft" / "quick.yaml").read_text())
    shutil.copy(FIXTURES / "ft" / "data.jsonl", tmp_path / "data.jsonl")
    run = prepare(recipe, output=tmp_path / "out", registry=discover([tmp_path / "tasks.py"], entry_points=False))
    run.check_timeout = TIMEOUT
    before = probe["state"]()
    result = sft.train(run, max_steps=10)
    after = probe["state"]()
    evals = sorted((tmp_path / "out" / "evals").iterdir())
    assert len(evals) >= 2 and result.record_path is not None
    first = [json.loads(line) for line in (evals[0] / "samples.jsonl").read_text().splitlines()]
    spun = [s for s in first if s["status"] == "TIMEOUT"]
    assert spun and all(s["reason"] == f"check exceeded {TIMEOUT:g}s" for s in spun)
    assert_no_slowdown_or_leftovers(before, after, native_threads=False)


def test_a_ctrl_c_that_lands_while_a_check_worker_is_forked_still_stops_the_run():
    """Ctrl-C delivered while the pool forks a worker (inside fork's at-fork hooks, where Python prints an
    exception as "ignored" and drops it) must still stop the run: the pool blocks it until the fork is done."""
    driver = textwrap.dedent('''
        import os, signal, time
        from evalkit import evaluate, task, verdict
        from evalkit.models.oracle import OracleBackend

        @task(name="slow", version=1, max_new_tokens=4)
        class Slow:
            def generate(self, rng):
                return {"i": rng.randrange(10**6)}
            def prompt(self, ex):
                return f"{ex['i']}:"
            def reference(self, ex):
                return "ok"
            def check(self, ex, answer):
                time.sleep(0.05)
                return verdict(answer == "ok")

        armed = [True]
        def ctrl_c_during_the_fork():
            if armed[0]:
                armed[0] = False
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.3)  # where the handler would raise, were the signal not blocked

        os.register_at_fork(after_in_parent=ctrl_c_during_the_fork)
        try:
            evaluate(tasks=[Slow], backend=OracleBackend(), n=40)
            print("RAN TO THE END")
        except KeyboardInterrupt:
            print("STOPPED")
        except BaseException as exc:
            print("STOPPED", type(exc).__name__)
    ''')
    out = subprocess.run([sys.executable, "-c", driver], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("STOPPED"), out.stdout + out.stderr[-2000:]
    assert "ignored" not in out.stderr, out.stderr[-2000:]
