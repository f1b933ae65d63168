"""Checks overlap generation: a batch is checked (in worker processes) while the next one is generated, and a
batch being checked still reaches the journal when generating the next one fails or is interrupted."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest

from evalkit import as_task, task, verdict
from evalkit.core.checkpool import fork_available
from evalkit.models.python import PythonCallableBackend
from evalkit.run.batching import RunInterrupted
from evalkit.run.journal import JOURNAL_FILE
from evalkit.run.runner import evaluate

pytestmark = pytest.mark.skipif(not fork_available(), reason="check workers need fork (Linux)")

LOG = Path()  # where the checks write when they ran (set by each test; the forked workers inherit it)


@task(name="slow_echo", max_new_tokens=8)
class SlowEcho:
    """Passes an output equal to the number asked; each check takes 20 ms and writes when it ran."""

    def rows(self):
        return [{"n": i} for i in range(24)]

    def prompt(self, ex):
        return f"{ex['n']}?"

    def reference(self, ex):
        return str(ex["n"])

    def check(self, ex, answer):
        start = time.monotonic()
        time.sleep(0.02)
        with open(LOG, "a", encoding="utf-8") as f:  # one short line per write: appends do not interleave
            f.write(json.dumps([ex["n"], start, time.monotonic()]) + "\n")
        return verdict(answer == str(ex["n"]))


def test_a_batch_is_checked_while_the_next_one_is_generated(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "LOG", tmp_path / "checks.jsonl")
    asked: dict[int, tuple[float, float]] = {}

    def solver(prompt: str) -> str:
        start = time.monotonic()
        time.sleep(0.03)  # a batch of 8 takes 0.24 s: room for the first batch's checks (a fork, then 20 ms each)
        n = int(prompt[:-1])
        asked[n] = (start, time.monotonic())
        return str(n) if n % 5 else "no"

    record = evaluate(tasks=[SlowEcho], backend=PythonCallableBackend(solver), n=24, batch_size=8,
                      run_dir=tmp_path / "run", check_workers=1)
    assert record.task("slow_echo")["passes"] == sum(1 for n in range(24) if n % 5)
    checks = {n: (a, b) for n, a, b in map(json.loads, (tmp_path / "checks.jsonl").read_text().splitlines())}
    assert sorted(checks) == list(range(24))
    # Batches of 8 (the journaled run's first batch size, and its batch_size): the second batch's generation
    # ran from its first prompt to its last; some of the first batch's checks ran within that time.
    gen2 = (min(asked[n][0] for n in range(8, 16)), max(asked[n][1] for n in range(8, 16)))
    during = [n for n in range(8) if checks[n][0] < gen2[1] and checks[n][1] > gen2[0]]
    assert during, (gen2, {n: checks[n] for n in range(8)})
    assert record.data["timings"]["check_s"] < sum(b - a for a, b in checks.values())


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_a_batch_being_checked_is_journaled_when_generating_the_next_fails(tmp_path, monkeypatch, error):
    monkeypatch.setattr(sys.modules[__name__], "LOG", tmp_path / "checks.jsonl")

    def solver(prompt: str) -> str:
        n = int(prompt[:-1])
        if n == 16:  # the first prompt of the third batch: the second is being checked
            raise error("stop here")
        return str(n)

    expected = RunInterrupted if error is KeyboardInterrupt else RuntimeError
    with pytest.raises(expected) as caught:
        evaluate(tasks=[SlowEcho], backend=PythonCallableBackend(solver), n=24, batch_size=8,
                 run_dir=tmp_path / "run", check_workers=1)
    lines = [json.loads(line) for line in (tmp_path / "run" / JOURNAL_FILE).read_text().splitlines()]
    samples = [e for e in lines if "verdict" in e]
    assert sorted(e["example"]["fields"]["n"] for e in samples) == list(range(16))
    assert all(e["verdict"]["status"] == "PASS" for e in samples)
    if error is KeyboardInterrupt:
        assert caught.value.saved == 16


@task(name="deaf_row", max_new_tokens=8)
class DeafRow:
    """Quick checks, and one (row 1) that ignores the alarm: only a kill ends it. A first submission sends rows
    0 and 1 ahead (a chunk: a quarter of the jobs); one whose checks are known to be quick sends them all."""

    def rows(self):
        return [{"i": i} for i in range(8)]

    def prompt(self, ex):
        return str(ex["i"])

    def reference(self, ex):
        return str(ex["i"])

    def check(self, ex, answer):
        if ex["i"] == 1:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            while True:
                pass
        return verdict(True)


@pytest.mark.parametrize("warm", [False, True], ids=["first-submit", "known-quick-checks"])
def test_a_check_past_its_deadline_while_the_caller_was_busy_is_ended_from_when_it_began(warm):
    from evalkit.core.checkpool import CheckPool

    deaf = as_task(DeafRow)
    jobs = [(ex, ex.reference) for ex in deaf.examples("eval", n=None, seed=0)]
    with CheckPool([deaf], workers=1, timeout=0.3) as pool:
        if warm:  # checks measured quick: each worker is sent its whole share at once
            assert all(s.verdict.passed for s in pool.score(deaf, [j for j in jobs if j[1] != "1"]))
        pending = pool.submit(deaf, jobs)
        time.sleep(pool.limit + 0.5)  # the caller generates the next batch meanwhile
        start = time.monotonic()
        got = {ex.reference: s.verdict.status.value for (ex, _), s in zip(jobs, pool.collect(pending))}
        waited = time.monotonic() - start
    assert got == {str(i): "TIMEOUT" if i == 1 else "PASS" for i in range(8)}
    assert pool.kills == 1
    # Ended at once: the deadline counts from when the check began (stamped by the worker), not from when
    # the results were read (that would wait the whole limit, 2.6 s, again).
    assert waited < pool.limit / 2
