"""Fault injection, end to end: real `evalkit run` processes stopped by SIGINT, SIGTERM and SIGKILL, a real
misbehaving HTTP server on 127.0.0.1 (trickling bytes, malformed bodies, surrogate content, a hang), and
corrupted journal files. Whatever happens, finished work stays on disk, the user is told what was kept, and
bad data becomes data (a verdict, a dropped-and-counted line), never a crash.

Processes are watched through their journal (a hang guard bounds every wait; nothing here asserts a duration).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import REPO, TASKS

from evalkit.discovery.registry import load_path
from evalkit.models.openai import OpenAIBackend
from evalkit.models.python import PythonCallableBackend
from evalkit.run.batching import MAX_OUTPUT_CHARS
from evalkit.run.journal import Journal, load_journal
from evalkit.run.record import load_record
from evalkit.run.runner import evaluate

sys.path.insert(0, str(Path(__file__).parent))
from helpers.fault_server import FaultServer  # noqa: E402
from helpers.slow_model import adder  # noqa: E402

ADDITION = load_path(TASKS / "addition.py")[0]
GUARD = 60.0  # seconds: a hang guard, far beyond what any case needs
ENV = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def evalkit_run(reports: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "evalkit", "run", "--task", "addition", "--tasks-dir", str(TASKS),
                             "--reports-dir", str(reports), *args], env=env or ENV, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=GUARD)
    return proc.returncode, out, err


def journal_of(reports: Path) -> Path | None:
    found = list(reports.glob("*/journal.jsonl"))
    return found[0] if found else None


def lines(journal: Path | None) -> int:
    return len(load_journal(journal).entries) if journal and journal.exists() else 0


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + GUARD
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended first (exit {proc.returncode}): {proc.communicate()[1][-2000:]}")
        assert time.monotonic() < deadline, "hang guard: the condition never held"
        time.sleep(0.02)


@pytest.fixture
def server() -> Iterator[Callable[..., FaultServer]]:
    servers: list[FaultServer] = []

    def start(fault: Callable[[str, int], str | None] | None = None, delay: float = 0.0) -> FaultServer:
        servers.append(FaultServer(fault, delay))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


# -- stopping a run: Ctrl-C, SIGTERM, kill -9 ------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_run_exits_4_says_what_it_saved_and_the_rerun_resumes_it(tmp_path, sig):
    slow = {**ENV, "SLOW_ADDER_DELAY": "0.05"}  # 300 prompts: 15 s, stopped after the first batches
    args = ("--model", "python:helpers.slow_model:slow_adder", "-n", "300", "--batch-size", "16")
    proc = evalkit_run(tmp_path, *args, env=slow)
    wait_for(lambda: lines(journal_of(tmp_path)) >= 16, proc)
    proc.send_signal(sig)
    code, _, err = finish(proc)
    journal = journal_of(tmp_path)
    assert journal is not None
    saved = lines(journal)
    assert code == 4, err
    assert f"interrupted: {saved} samples saved in {journal}" in " ".join(err.split())
    assert 16 <= saved < 300 and "Traceback" not in err
    assert not (journal.parent / "record.json").exists()

    code, _, err = finish(evalkit_run(tmp_path, *args, env={**slow, "SLOW_ADDER_DELAY": "0"}))
    assert code in (0, 1), err  # 1: the adder misses the task's target
    assert f"journal: {saved} samples resumed, {300 - saved} generated" in err
    resumed = [(s["example_id"], s["output"], s["status"]) for s in load_record(journal.parent).samples()]
    whole = evaluate(tasks=[ADDITION], backend=PythonCallableBackend(adder), n=300)
    assert resumed == [(s["example_id"], s["output"], s["status"]) for s in whole.samples()]


def test_kill_9_keeps_every_finished_batch(tmp_path):
    args = ("--model", "python:helpers.slow_model:slow_adder", "-n", "300", "--batch-size", "16")
    proc = evalkit_run(tmp_path, *args, env={**ENV, "SLOW_ADDER_DELAY": "0.05"})
    wait_for(lambda: lines(journal_of(tmp_path)) >= 24, proc)
    proc.kill()
    finish(proc)
    saved = lines(journal_of(tmp_path))
    assert saved >= 24
    code, _, err = finish(evalkit_run(tmp_path, *args, env={**ENV, "SLOW_ADDER_DELAY": "0"}))
    assert code in (0, 1) and f"journal: {saved} samples resumed, {300 - saved} generated" in err, err


def test_a_server_run_killed_midway_loses_at_most_the_batches_in_flight(tmp_path, server):
    """The issue's case: killed after many answers, nothing was journaled and the rerun asked for all again."""
    srv = server(delay=0.1)  # 120 answers, 4 at a time: 3 s, killed after 48
    args = ("--model", f"openai:{srv.url}", "--model-name", "m", "-n", "120", "--batch-size", "16",
            "--concurrency", "4")
    proc = evalkit_run(tmp_path, *args)
    wait_for(lambda: srv.count >= 48, proc)
    proc.kill()
    finish(proc)
    asked = srv.count
    saved = lines(journal_of(tmp_path))
    assert asked < 120 and saved >= asked - 2 * 16  # lost: at most the batch being answered and one being checked
    code, _, err = finish(evalkit_run(tmp_path, *args))
    assert code == 0, err
    assert f"journal: {saved} samples resumed, {120 - saved} generated" in err
    assert srv.count == asked + 120 - saved <= 120 + 2 * 16


def test_ctrl_c_ends_requests_in_flight(tmp_path, server):
    """Ctrl-C while the server trickles an answer: the run stops at once, not at the 60 s request deadline."""
    srv = server(lambda prompt, index: "trickle")
    proc = evalkit_run(tmp_path, "--model", f"openai:{srv.url}", "--model-name", "m", "-n", "8",
                       "--request-timeout", "600")
    wait_for(lambda: srv.count >= 1, proc)
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc)  # without the cancel, this waits for the 600 s deadline (past the guard)
    assert code == 4 and "interrupted: 0 samples saved" in " ".join(err.split()), err


# -- a misbehaving server ------------------------------------------------------------------------------------
def test_a_trickling_server_ends_at_the_deadline_keeping_the_first_batch(tmp_path, server):
    srv = server(lambda prompt, index: None if index < 8 else "trickle")
    proc = evalkit_run(tmp_path, "--model", f"openai:{srv.url}", "--model-name", "m", "-n", "40", "--batch-size",
                       "8", "--concurrency", "4", "--request-timeout", "1")
    code, _, err = finish(proc)
    err = " ".join(err.split())
    assert code == 3, err
    assert "no complete answer within the 1 s request deadline (--request-timeout)" in err
    assert "8 samples are saved in" in err and "Traceback" not in err
    assert lines(journal_of(tmp_path)) == 8


def test_surrogate_content_gives_a_record(tmp_path, server):
    srv = server(lambda prompt, index: "surrogate" if index % 2 == 0 else None)
    args = ("--model", f"openai:{srv.url}", "--model-name", "m", "-n", "12")
    code, out, err = finish(evalkit_run(tmp_path, *args))
    assert code in (0, 1), err
    journal = journal_of(tmp_path)
    assert journal is not None
    samples = list(load_record(journal.parent).samples())
    assert len(samples) == 12 and (journal.parent / "report.html").is_file()
    marked = [s for s in samples if s["output"].endswith("\ufffd")]
    assert len(marked) == 6 and all(s["output"][:-1] == s["reference"] for s in marked)
    code, _, err = finish(evalkit_run(tmp_path, *args))  # and every rerun reads it back
    assert code in (0, 1) and "journal: 12 samples resumed, 0 generated" in err, err


def test_surrogate_nul_and_huge_outputs_become_data(tmp_path):
    code, _, err = finish(evalkit_run(tmp_path, "--model", "python:helpers.fault_models:bad_text", "-n", "9"))
    assert code in (0, 1), err
    journal = journal_of(tmp_path)
    assert journal is not None
    outputs = [s["output"] for s in load_record(journal.parent).samples()]
    assert any(o.endswith("\ufffd") for o in outputs) and any(o.endswith("\x00") for o in outputs)
    assert max(len(o) for o in outputs) == MAX_OUTPUT_CHARS  # the huge one, cut
    assert journal.read_bytes().decode("utf-8")  # the journal is UTF-8 throughout


def test_a_malformed_body_is_an_error_verdict_and_the_rerun_asks_again(tmp_path, server):
    bad = {"prompt": ""}

    def fault(prompt: str, index: int) -> str | None:
        if not bad["prompt"]:
            bad["prompt"] = prompt
        return "malformed" if prompt == bad["prompt"] else None

    srv = server(fault)
    backend = OpenAIBackend(srv.url, "m", max_retries=2, backoff=0.01, concurrency=4)
    record = evaluate(tasks=[ADDITION], backend=backend, n=20, run_dir=tmp_path / "run")
    errors = [s for s in record.samples() if s["status"] == "ERROR"]
    assert [s["prompt"] for s in errors] == [bad["prompt"]] and "answer is not JSON" in errors[0]["reason"]
    assert record.task("addition")["passes"] == 19 and record.data["journal"]["failed"] == 1
    assert srv.requests.count(bad["prompt"]) == 3  # the first attempt and two retries

    bad["prompt"] = "no longer"  # the server recovers: the rerun asks for that one sample only
    asked = srv.count
    again = evaluate(tasks=[ADDITION], backend=backend, n=20, run_dir=tmp_path / "run")
    assert srv.count == asked + 1 and again.task("addition")["passes"] == 20
    assert again.data["journal"] == {"file": "journal.jsonl", "resumed": 19, "generated": 1, "failed": 0,
                                     "dropped_lines": 0}


# -- corrupted journals ----------------------------------------------------------------------------------------
def test_bad_journal_lines_are_dropped_counted_and_regenerated(tmp_path, run_cli):
    args = ("--model", "oracle", "-n", "20")
    code, _, err = finish(evalkit_run(tmp_path, *args))
    assert code == 0, err
    journal = journal_of(tmp_path)
    assert journal is not None
    rows = journal.read_bytes().splitlines(keepends=True)
    no_verdict = json.loads(rows[9])
    del no_verdict["verdict"]
    rows[1] = b"\xff\xfe{not utf-8}\n"
    rows[3] = b'{"key": "only a key"}\n'
    rows[5] = b"[1, 2, 3]\n"
    rows[7] = b"{" * 100_000 + b"\n"  # deeper than the JSON reader goes
    rows[9] = json.dumps(no_verdict).encode() + b"\n"
    journal.write_bytes(b"".join(rows) + rows[11][:40])  # and a torn last line
    code, _, err = finish(evalkit_run(tmp_path, *args))
    assert code == 0, err
    assert "journal: 15 samples resumed, 5 generated; 6 unreadable journal lines dropped" in err
    record = load_record(journal.parent)
    assert record.data["journal"]["dropped_lines"] == 6 and record.rate("addition") == 1.0
    out = run_cli("rescore", str(journal.parent), "--tasks-dir", str(TASKS))
    assert out.returncode == 0, out.stderr
    assert "rescored 20 samples of this record's configuration" in out.stderr
    assert "5 unreadable journal lines dropped" in out.stderr  # the torn line was cut off by the rerun
    assert load_record(journal.parent).data["journal"]["dropped_lines"] == 5


def test_a_lone_surrogate_anywhere_in_an_entry_is_written_and_read_back(tmp_path):
    entry = {"key": "k" * 32, "model": "m", "task": "addition", "task_version": 2, "sample_index": 0, "seed": 0,
             "example": {"id": "e1", "split": "eval", "level": None, "fields": {"a": 12, "b": 30},
                         "prompt": "12+30=\udc80", "reference": "42"},
             "generation": {"max_new_tokens": 10, "stop": ["\n"], "temperature": 0.0, "top_p": 1.0},
             "output": "42", "answer": "42", "verdict": {"status": "PASS", "score": 1.0, "reason": ""}}
    with Journal(tmp_path / "journal.jsonl") as j:
        j.append([entry])
    raw = (tmp_path / "journal.jsonl").read_bytes()
    assert raw.isascii() and b"\\udc80" in raw
    with Journal(tmp_path / "journal.jsonl") as j:
        assert j.get(entry["key"]) == entry and j.dropped == 0
