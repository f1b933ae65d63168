"""Check workers kept between evaluations (evalkit.core.keptpool): reused by the next evaluation of the same
tasks, replaced when killed for a deadline or dead, never reused for other task objects or on another thread,
ending by themselves when unused, and at interpreter exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import REPO

import evalkit
from evalkit import task, verdict
from evalkit.core import keptpool
from evalkit.core.checkpool import fork_available
from evalkit.core.task import as_task

pytestmark = pytest.mark.skipif(not fork_available(), reason="checks run in forked workers on Linux only")


@task(name="whochecks", max_new_tokens=8)
class WhoChecks:
    """Each verdict says which process checked it; a check of a number ending in 7 spins when `spin` is set."""

    spin = False

    def rows(self):
        return [{"q": str(i)} for i in range(30)]

    def prompt(self, ex):
        return ex["q"]

    def reference(self, ex):
        return ex["q"]

    def check(self, ex, answer):
        if WhoChecks.spin and ex["q"].endswith("7"):
            while True:
                pass
        return verdict(answer == ex["q"], f"pid {os.getpid()}")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def checked_by(record) -> set[int]:
    return {int(s["reason"].split()[1]) for s in record.samples() if s["status"] == "PASS"}


def run(t, **kw):
    return evalkit.evaluate(model_spec="oracle", tasks=[t], n=None, check_workers=2, **kw)


@pytest.fixture(autouse=True)
def fresh():
    keptpool.close_kept()
    WhoChecks.spin = False
    yield
    keptpool.close_kept()


def test_the_next_evaluation_of_the_same_tasks_reuses_the_workers():
    t = as_task(WhoChecks)
    first = run(t)
    kept = keptpool.kept_workers()
    assert kept and all(alive(p) for p in kept)
    assert checked_by(first) <= set(kept) and os.getpid() not in checked_by(first)
    second = run(t)
    assert second.rate("whochecks") == 1.0
    assert checked_by(second) <= set(kept)  # no new fork: the same processes checked
    assert keptpool.kept_workers() == kept


def test_other_task_objects_or_settings_get_new_workers_and_the_old_ones_end():
    t = as_task(WhoChecks)
    run(t)
    old = keptpool.kept_workers()
    other = run(as_task(WhoChecks))  # the same class, another Task object: never run from the old fork
    assert not checked_by(other) & set(old)
    assert not any(alive(p) for p in old)
    mid = keptpool.kept_workers()
    run(t, check_timeout=7)  # another deadline: the workers were forked with the old one
    assert not set(keptpool.kept_workers()) & set(mid) and not any(alive(p) for p in mid)


def test_a_worker_killed_for_a_deadline_or_from_outside_is_replaced():
    t = as_task(WhoChecks)
    WhoChecks.spin = True  # the workers, forked later, inherit it
    first = run(t, check_timeout=0.5)
    spun = [s for s in first.samples() if s["prompt"].endswith("7")]
    assert spun and all(s["status"] == "TIMEOUT" for s in spun)
    assert all(s["status"] == "PASS" for s in first.samples() if s not in spun)
    kept = keptpool.kept_workers()
    assert kept and all(alive(p) for p in kept)  # the killed ones were replaced
    os.kill(kept[0], signal.SIGKILL)  # a kept worker dies while idle (the OOM killer, a user)
    deadline = time.monotonic() + 10
    while alive(kept[0]) and time.monotonic() < deadline:
        time.sleep(0.01)
    WhoChecks.spin = False  # the kept workers still spin (they hold the task as forked): new ones do not
    second = run(t, check_timeout=0.5)
    statuses = {s["prompt"]: s["status"] for s in second.samples()}
    assert all(statuses[q] == "PASS" for q in statuses if not q.endswith("7")), statuses
    assert kept[0] not in checked_by(second)


def test_unused_workers_end_by_themselves(monkeypatch):
    monkeypatch.setattr(keptpool, "KEEP_S", 0.6)
    monkeypatch.setattr(keptpool, "MARGIN_S", 0.3)
    t = as_task(WhoChecks)
    run(t)
    kept = keptpool.kept_workers()
    deadline = time.monotonic() + 30
    while any(alive(p) for p in kept) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in kept)
    again = run(t)  # past its time the kept pool is not used: new workers check, and every verdict holds
    assert again.rate("whochecks") == 1.0 and not checked_by(again) & set(kept)


def test_a_pool_past_its_age_is_not_reused(monkeypatch):
    """A fork holds the parent's memory as it was: a loop evaluating every few seconds forks afresh that often."""
    t = as_task(WhoChecks)
    run(t)
    old = keptpool.kept_workers()
    monkeypatch.setattr(keptpool, "MAX_AGE_S", 0.0)
    again = run(t)
    assert again.rate("whochecks") == 1.0 and not checked_by(again) & set(old)
    assert not any(alive(p) for p in old)


def test_an_evaluation_on_another_thread_does_not_reuse_them():
    t = as_task(WhoChecks)
    run(t)
    kept = keptpool.kept_workers()
    out = {}
    thread = threading.Thread(target=lambda: out.update(record=run(t)))
    thread.start()
    thread.join()
    assert out["record"].rate("whochecks") == 1.0 and not checked_by(out["record"]) & set(kept)
    # Workers die with the thread that forked them: the ones that thread kept are gone with it.
    deadline = time.monotonic() + 10
    while any(alive(p) for p in keptpool.kept_workers()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run(t).rate("whochecks") == 1.0


def test_kept_workers_end_at_interpreter_exit():
    """KEEP_S is long here: were they not ended at exit, the child would wait for them (multiprocessing joins
    its children) and the subprocess below time out."""
    driver = textwrap.dedent('''
        import json
        import evalkit
        from evalkit import task, verdict
        from evalkit.core import keptpool
        keptpool.KEEP_S = 3600.0

        @task(name="echo", max_new_tokens=4)
        class Echo:
            def rows(self):
                return [{"q": str(i)} for i in range(10)]
            def prompt(self, ex):
                return ex["q"]
            def reference(self, ex):
                return ex["q"]
            def check(self, ex, answer):
                return verdict(answer == ex["q"])

        evalkit.evaluate(model_spec="oracle", tasks=[Echo], n=None)
        print(json.dumps(keptpool.kept_workers()))
    ''')
    out = subprocess.run([sys.executable, "-c", driver], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    kept = json.loads(out.stdout.strip().splitlines()[-1])
    assert kept
    deadline = time.monotonic() + 10
    while any(alive(p) for p in kept) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in kept)
