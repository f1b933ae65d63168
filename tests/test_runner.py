"""The runner: backends over tasks, records, journal + resume after SIGKILL, rescore, locking."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, TASKS

from evalkit import NothingToRun, as_task, task, verdict
from evalkit.discovery.registry import Registry, discover, load_path
from evalkit.models.base import GenerationStats
from evalkit.models.oracle import OracleBackend
from evalkit.models.python import PythonCallableBackend
from evalkit.run import stats
from evalkit.run.journal import Journal, JournalLocked
from evalkit.run.record import load_record
from evalkit.run.runner import environment, evaluate, rescore, size_max_new_tokens

sys.path.insert(0, str(Path(__file__).parent))
from helpers.slow_model import adder  # noqa: E402

ADDITION = load_path(TASKS / "addition.py")[0]


def _strip_volatile(record_dict: dict) -> dict:
    d = json.loads(json.dumps(record_dict))
    for key in ("created_at", "finished_at", "timings", "environment", "journal"):
        d.pop(key, None)
    for t in d["tasks"]:
        t.pop("timings")
    return d


def test_oracle_passes_every_shipped_task(tmp_path):
    registry = discover([TASKS], entry_points=False)
    record = evaluate(tasks=list(registry), backend=OracleBackend(), model_spec="oracle", n=15,
                      reports_dir=tmp_path)
    assert {t["name"] for t in record.tasks} == set(registry.names())
    for t in record.tasks:
        assert t["rate"] == 1.0 and t["errors"] == 0, t["name"]
    loaded = load_record(record.path)  # validated against the schema on read
    assert loaded.data == json.loads((record.path / "record.json").read_text())
    assert len(list(loaded.samples())) == sum(t["n_samples"] for t in record.tasks)


def test_statistics_in_the_record():
    record = evaluate(tasks=[ADDITION], backend=PythonCallableBackend(adder), n=200, seed=1)
    samples = list(record.samples())
    passes = sum(s["status"] == "PASS" for s in samples)
    expected = sum(sum(map(int, s["prompt"][:-1].split("+"))) % 2 == 0 for s in samples)
    t = record.task("addition")
    assert t["passes"] == passes == expected and t["n_samples"] == 200
    assert (t["low"], t["high"]) == stats.wilson_interval(passes, 200)
    assert t["pass_at_k"] == {"1": pytest.approx(passes / 200)}
    assert t["meets_target"] is False
    fail = next(s for s in samples if s["status"] == "FAIL")
    assert fail["reason"] and fail["reference"] != fail["answer"]


@task(name="parity", max_new_tokens=8)
class Parity:
    """Passes even numbers; each check takes a few ms and says which process ran it."""

    def rows(self):
        return [{"n": i} for i in range(200)]

    def prompt(self, ex):
        return str(ex["n"])

    def reference(self, ex):
        return str(ex["n"])

    def check(self, ex, answer):
        # 10 ms: enough work (2 s in all) that the pool grows past one worker even when forks are slow
        # (a loaded machine); it grows only when the remaining work outweighs starting a worker.
        time.sleep(0.01)
        return verdict(answer == str(ex["n"]) and ex["n"] % 2 == 0, f"{answer} in {os.getpid()}")


def test_verdicts_stay_with_their_samples_whatever_the_check_workers():
    """Checks run in worker processes, in chunks, several at once; each verdict still lands on its sample."""
    for workers in (1, 4):
        samples = list(evaluate(tasks=[Parity], model_spec="oracle", n=None, check_workers=workers,
                                batch_size=200).samples())
        assert [s["status"] == "PASS" for s in samples] == [int(s["prompt"]) % 2 == 0 for s in samples]
        assert all(s["reason"].startswith(f"{s['prompt']} in ") for s in samples)
        pids = {s["reason"].split(" in ")[1] for s in samples}
        assert str(os.getpid()) not in pids and (len(pids) == 1 if workers == 1 else len(pids) > 1)


def test_pass_at_k_with_sampling():
    import random

    def noisy(prompt: str, seed: int) -> str:
        a, b = prompt[:-1].split("+")
        rng = random.Random(f"{prompt}/{seed}")
        return str(int(a) + int(b) + (0 if rng.random() < 0.3 else 1))

    record = evaluate(tasks=[ADDITION], backend=PythonCallableBackend(noisy, batched=False), n=100, k=4,
                      temperature=0.8)
    t = record.task("addition")
    by_ex: dict[str, list[bool]] = {}
    for s in record.samples():
        by_ex.setdefault(s["example_id"], []).append(s["status"] == "PASS")
    assert t["n_samples"] == 400 and t["n_examples"] == 100
    assert t["pass_at_k"]["4"] == pytest.approx(stats.mean_pass_at_k([(4, sum(v)) for v in by_ex.values()], 4),
                                                abs=1e-6)
    assert t["pass_at_k"]["4"] > t["pass_at_k"]["1"]


def test_k_without_temperature_is_a_usage_error():
    from evalkit import ConfigError

    with pytest.raises(ConfigError, match="temperature"):
        evaluate(tasks=[ADDITION], backend=OracleBackend(), n=5, k=4)


def test_resume_generates_only_missing_samples(tmp_path):
    calls: list[str] = []

    def counting(prompt: str) -> str:
        calls.append(prompt)
        return adder(prompt)

    backend = PythonCallableBackend(counting, identity="python:counting")
    first = evaluate(tasks=[ADDITION], backend=backend, n=100, run_dir=tmp_path / "run")
    assert len(calls) == 100
    journal = tmp_path / "run" / "journal.jsonl"
    lines = journal.read_text().splitlines()
    # Simulate a kill: keep 37 whole lines and half of the next one.
    journal.write_text("\n".join(lines[:37]) + "\n" + lines[37][: len(lines[37]) // 2])
    calls.clear()
    second = evaluate(tasks=[ADDITION], backend=backend, n=100, run_dir=tmp_path / "run")
    assert len(calls) == 63
    assert _strip_volatile(first.data) == _strip_volatile(second.data)
    keys = [json.loads(line)["key"] for line in journal.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 100


def test_model_identity_is_part_of_the_key(tmp_path):
    evaluate(tasks=[ADDITION], backend=PythonCallableBackend(adder), n=30, run_dir=tmp_path / "r")
    record = evaluate(tasks=[ADDITION], backend=OracleBackend(), n=30, run_dir=tmp_path / "r")
    assert record.rate("addition") == 1.0  # nothing of the other model was reused


def test_two_writers_are_refused(tmp_path):
    with Journal(tmp_path / "run" / "journal.jsonl"):
        with pytest.raises(JournalLocked, match="another evalkit process"):
            evaluate(tasks=[ADDITION], backend=OracleBackend(), n=5, run_dir=tmp_path / "run")


def test_rescore_applies_a_changed_checker_without_generating(tmp_path):
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    source = (TASKS / "addition.py").read_text()
    (tasks_dir / "addition.py").write_text(source)
    [task] = load_path(tasks_dir / "addition.py")
    record = evaluate(tasks=[task], backend=PythonCallableBackend(adder), n=80, run_dir=tmp_path / "run")
    before = record.rate("addition")
    assert before < 1.0
    journal_bytes = (tmp_path / "run" / "journal.jsonl").read_bytes()
    # The "fixed" checker accepts any answer within one of the sum.
    lenient = tasks_dir.parent / "lenient"
    lenient.mkdir()
    (lenient / "addition.py").write_text(source.replace("version=1", "version=2").replace(
        "def check(self, ex, answer):", "def check(self, ex, answer):\n"
        "        if answer.isdigit() and abs(int(answer) - ex['a'] - ex['b']) <= 1:\n"
        "            return verdict(True)\n        return self._strict(ex, answer)\n\n"
        "    def _strict(self, ex, answer):", 1))
    rescored = rescore(tmp_path / "run", registry=discover([lenient], entry_points=False))
    assert rescored.rate("addition") == 1.0 and rescored.task("addition")["version"] == 2
    assert (tmp_path / "run" / "journal.jsonl").read_bytes() == journal_bytes
    assert load_record(tmp_path / "run").rate("addition") == 1.0


def _journal_lines(path: Path) -> int:
    try:
        return path.read_text().count("\n")
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_sigkill_mid_run_then_same_command_finishes_identically(tmp_path, run_cli):
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "SLOW_ADDER_DELAY": "0.01", "COLUMNS": "200"}
    args = [sys.executable, "-m", "evalkit", "run", "--model", "python:helpers.slow_model:slow_adder",
            "--task", "addition", "-n", "320", "--batch-size", "4", "--tasks-dir", str(TASKS)]
    # Uninterrupted reference run: the adder is right on even sums only, so it misses addition's target (exit 1).
    ref = subprocess.run(args + ["--reports-dir", str(tmp_path / "a")], env=env, capture_output=True, text=True)
    assert ref.returncode == 1, ref.stderr
    # Killed run: SIGKILL once some (not all) samples are journaled.
    proc = subprocess.Popen(args + ["--reports-dir", str(tmp_path / "b")], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journals = lambda: list((tmp_path / "b").glob("*/journal.jsonl"))  # noqa: E731
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (journals() and _journal_lines(journals()[0]) >= 64):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    [journal] = journals()
    partial = _journal_lines(journal)
    assert 64 <= partial < 320
    assert not (journal.parent / "record.json").exists()
    out = subprocess.run(args + ["--reports-dir", str(tmp_path / "b")], env=env, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 1, out.stderr  # finished, and the same verdict: the target is missed
    a = load_record(next((tmp_path / "a").iterdir()))
    b = load_record(journal.parent)
    assert a.run_id == b.run_id
    assert _strip_volatile(a.data) == _strip_volatile(b.data)
    assert list(a.samples()) == list(b.samples())
    assert b.task("addition")["timings"]["examples_resumed"] >= partial
    keys = [json.loads(line)["key"] for line in journal.read_text().splitlines()]
    assert len(set(keys)) == 320


def test_cli_run_and_rescore(run_cli, tmp_path):
    out = run_cli("run", "--model", "oracle", "--task", "addition", "--task", "multiple_choice", "-n", "30",
                  "--reports-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "addition" in out.stdout and "100.0%" in out.stdout
    [run] = list(tmp_path.iterdir())
    assert load_record(run).task("multiple_choice")["n_samples"] == 24
    out = run_cli("rescore", str(run))
    assert out.returncode == 0 and "rescored without generating" in out.stdout


@pytest.mark.parametrize("args,code,text", [
    (["--model", "nonsense"], 2, "unknown model spec"),
    (["--model", "hf:/nonexistent/dir"], 2, "not a local Hugging Face model folder"),
    (["--model", "python:no_such_module_xyz:fn"], 2, "cannot import"),
    (["--model", "oracle", "-k", "3"], 2, "temperature"),
    (["--model", "oracle", "--task", "nope"], 2, "unknown task"),
])
def test_cli_run_errors(run_cli, tmp_path, args, code, text):
    out = run_cli("run", *args, "-n", "3", "--reports-dir", str(tmp_path))
    assert out.returncode == code, out.stderr
    assert text in out.stderr and "Traceback" not in out.stderr


def test_compare_records_paired(tmp_path, run_cli):
    from evalkit.run.runner import compare_records

    a = evaluate(tasks=[ADDITION], backend=PythonCallableBackend(adder), n=120, run_dir=tmp_path / "a")
    b = evaluate(tasks=[ADDITION], backend=OracleBackend(), n=120, run_dir=tmp_path / "b")
    [(name, c)] = compare_records(load_record(tmp_path / "a"), load_record(tmp_path / "b")).items()
    assert name == "addition" and c.n_shared == 120 and c.only_a == 0 and c.only_b == 120 - a.task(name)["passes"]
    assert c.verdict == "better" and c.p_value < 1e-6
    assert compare_records(b, b)["addition"].verdict == "no significant difference"
    out = run_cli("compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert out.returncode == 0 and "better" in out.stdout


# -- what evaluate() accepts ----------------------------------------------------------------------


@task(name="double", levels=[2], max_new_tokens=6)
class Double:
    def generate(self, rng, level):
        return {"x": rng.randrange(10**level)}

    def prompt(self, ex):
        return f"2*{ex['x']}="

    def reference(self, ex):
        return str(2 * ex["x"])

    def check(self, ex, answer):
        return verdict(answer == self.reference(ex))


def test_evaluate_takes_task_classes_names_and_paths():
    record = evaluate(tasks=[Double], model_spec="oracle", n=10)
    assert record.rate("double") == 1.0 and record.task("double")["source"] == __file__
    assert evaluate(tasks=Double, model_spec="oracle", n=5).rate("double") == 1.0  # one task, no list
    record = evaluate(tasks=[Double, "reverse", TASKS / "sorting.py"], model_spec="oracle", n=5, tasks_dir=[TASKS])
    assert [t["name"] for t in record.tasks] == ["double", "reverse", "sorting"]


def test_evaluate_refuses_what_is_not_a_task():
    with pytest.raises(TypeError, match=r"tasks\[1\]: expected a task name, glob .* got int 3"):
        evaluate(tasks=[Double, 3], model_spec="oracle", n=5)
    with pytest.raises(NothingToRun):
        evaluate(tasks=[], model_spec="oracle", n=5)


class _NoStats:
    identity = "no-stats"

    def generate(self, prompts, config, *, seed=0, num_samples=1):
        return [[""] * num_samples for _ in prompts]


def test_evaluate_checks_the_backend_contract():
    with pytest.raises(TypeError, match="_NoStats lacks last_stats"):
        evaluate(tasks=[Double], backend=_NoStats(), n=5)


class _Counting(_NoStats):
    last_stats = GenerationStats()
    device = "meta"

    def count_tokens(self, text):
        return 1  # every reference is one token


def test_optional_backend_capabilities_are_used():
    t = as_task(Double)
    examples = t.examples(n=5)
    assert size_max_new_tokens(t, examples, _Counting()) == 1 + 4 + 1  # counted in the backend's tokens
    longest = max(len(e.reference or "") for e in examples)
    assert size_max_new_tokens(t, examples, OracleBackend()) == longest + max(4, longest // 4) + 1
    assert environment(_Counting())["device"] == "meta" and environment(OracleBackend())["device"] is None


# -- durability: every batch on disk before the batch after next is asked for (the next one is generated while
# it is checked) ---------------------------------------------------------------------------------------------------
class _Watching:
    """A batched python model that notes, at each call, how many prompts it got and how many journal lines
    were already on disk; `delay` seconds per prompt."""

    def __init__(self, journal: Path | None, delay: float = 0.0):
        self.journal, self.delay, self.calls = journal, delay, []

    def __call__(self, prompts, config):
        on_disk = len(self.journal.read_bytes().splitlines()) if self.journal and self.journal.exists() else 0
        self.calls.append((len(prompts), on_disk))
        time.sleep(self.delay * len(prompts))
        return [adder(p) for p in prompts]


def test_each_batch_is_on_disk_before_the_batch_after_next_is_asked_for(tmp_path):
    model = _Watching(tmp_path / "run" / "journal.jsonl")
    evaluate(tasks=[ADDITION], backend=PythonCallableBackend(model, identity="python:watching"), n=100,
             batch_size=16, run_dir=tmp_path / "run")
    sizes = [size for size, _ in model.calls]
    assert sum(sizes) == 100 and max(sizes) <= 16 and sizes[0] == 8  # a first small batch, then --batch-size
    # Asked for batch i: batches 0 .. i-2 on disk, batch i-1 being checked.
    assert [on_disk for _, on_disk in model.calls] == [sum(sizes[:max(0, i - 1)]) for i in range(len(sizes))]
    assert len((tmp_path / "run" / "journal.jsonl").read_bytes().splitlines()) == 100


def test_a_slow_backends_batches_shrink_to_a_few_seconds(tmp_path, monkeypatch):
    from evalkit.run import batching

    monkeypatch.setattr(batching, "FLUSH_S", 0.2)
    model = _Watching(None, delay=0.05)  # 0.05 s a prompt (or more, on a busy machine): 4 prompts fill 0.2 s
    evaluate(tasks=[ADDITION], backend=PythonCallableBackend(model, identity="python:slow"), n=40, batch_size=64,
             run_dir=tmp_path / "run")
    sizes = [size for size, _ in model.calls]
    assert sizes[0] == 8 and sum(sizes) == 40 and max(sizes[1:]) <= 4
    model = _Watching(None)  # in memory (nothing journaled): large batches, as the training loop wants
    evaluate(tasks=[ADDITION], backend=PythonCallableBackend(model, identity="python:fast"), n=100, batch_size=16)
    assert [size for size, _ in model.calls] == [64, 36]


# -- journal keys: everything an output depends on; rescore never mixes configurations ---------------------------
def test_rescore_uses_only_the_records_own_configuration(tmp_path, run_cli):
    from helpers.fault_models import by_budget  # right with >= 10 new tokens, "0" with fewer

    backend = PythonCallableBackend(by_budget, identity="python:by_budget")
    run = tmp_path / "shared"
    short = evaluate(tasks=[ADDITION], backend=backend, n=30, max_new_tokens=5, run_dir=run)
    evaluate(tasks=[ADDITION], backend=backend, n=30, max_new_tokens=12, run_dir=run)  # same folder, other outputs
    again = evaluate(tasks=[ADDITION], backend=backend, n=30, max_new_tokens=5, run_dir=run)  # resumed: short's record
    assert short.rate("addition") == again.rate("addition") == 0.0 and again.data["journal"]["resumed"] == 30
    rescored = rescore(run, registry=discover([TASKS], entry_points=False))
    assert rescored.rate("addition") == 0.0  # not the 12-token run's right answers
    assert rescored.data["journal"]["rescored"] == 30 and rescored.data["journal"]["other_configurations"] == 30

    journal = run / "journal.jsonl"  # keep only the 12-token outputs: the record's own are gone
    kept = [line for line in journal.read_text().splitlines() if json.loads(line)["generation"]["max_new_tokens"] == 12]
    journal.write_text("\n".join(kept) + "\n")
    out = run_cli("rescore", str(run), "--tasks-dir", str(TASKS))
    assert out.returncode == 2, out.stderr
    message = " ".join(out.stderr.split())
    assert "the journal holds 0 of the record's 30 samples for its configuration" in message
    assert '"max_new_tokens": 5' in message and "30 outputs for the same samples were made under other " \
        "configurations" in message and '"max_new_tokens": 12' in message and "Traceback" not in out.stderr
    assert load_record(run).rate("addition") == 0.0  # the record is left as it was


def test_chat_wording_is_part_of_the_key(tmp_path):
    def make(system: str):
        @task(name="sum_chat", version=1, max_new_tokens=8, system=system)
        class SumChat:
            def rows(self):
                return [{"a": i, "b": 2 * i} for i in range(6)]

            def prompt(self, ex):
                return f"{ex['a']}+{ex['b']}="

            def reference(self, ex):
                return str(ex["a"] + ex["b"])

            def check(self, ex, answer):
                return verdict(answer == self.reference(ex))

        return SumChat

    seen: list[list[dict]] = []

    def chatbot(messages):
        seen.append(messages)
        a, b = messages[-1]["content"].rstrip("=").split("+")
        return str(int(a) + int(b))

    backend = PythonCallableBackend(chatbot, identity="python:chatbot")
    first = evaluate(tasks=[make("Add.")], backend=backend, n=None, chat=True, run_dir=tmp_path / "run")
    assert len(seen) == 6
    evaluate(tasks=[make("Add.")], backend=backend, n=None, chat=True, run_dir=tmp_path / "run")
    assert len(seen) == 6  # the same wording resumes
    reworded = evaluate(tasks=[make("Add the numbers.")], backend=backend, n=None, chat=True, run_dir=tmp_path / "run")
    assert len(seen) == 12 and seen[-1][0]["content"] == "Add the numbers."  # same version, new wording: asked again
    assert reworded.data["journal"]["resumed"] == 0 and first.data["journal"]["generated"] == 6
    rescored = rescore(tmp_path / "run", registry=Registry([make("Add the numbers.")]))
    assert rescored.rate("sum_chat") == 1.0 and rescored.data["journal"]["rescored"] == 6
