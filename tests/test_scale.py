"""Scale: a large data-task run streams (peak memory does not grow with its examples), its journal resumes with
nothing generated and the same record; and the pieces that make it stream: exact running counts, the compact
hash index, the journal's index of keys, examples read one at a time."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evalkit.core.hashindex import HashIndex
from evalkit.discovery.yamltask import load_yaml_task
from evalkit.models.python import PythonCallableBackend
from evalkit.run import stats
from evalkit.run.counts import ExactSum, TaskCounts
from evalkit.run.journal import Journal, load_journal
from evalkit.run.runner import evaluate

SOLVER = '''\
import re


def answer(prompt):
    a, b = map(int, re.findall(r"\\d+", prompt.rsplit("Question:", 1)[1])[:2])
    return " " + str(a + b + (1 if (a + b) % 9 == 0 else 0))
'''
TASK = """\
name: qa
data: qa.jsonl
prompt: "{passage}\\nQuestion: {question}\\nAnswer:"
reference: " {answer}"
generation: {max_new_tokens: 16, stop: ["\\n"]}
check: {name: exact}
target: 0.5
"""


def build(folder: Path, n: int) -> list[tuple[int, int]]:
    """A data task of n rows with ~1 kB passages and the solver; returns each row's (a, b)."""
    (folder / "tasks").mkdir(parents=True)
    (folder / "tasks" / "qa.yaml").write_text(TASK)
    (folder / "solver.py").write_text(SOLVER)
    rng = random.Random(7)
    pairs = []
    with open(folder / "tasks" / "qa.jsonl", "w", encoding="utf-8") as fh:
        for i in range(n):
            a, b = rng.randrange(10**6), i
            pairs.append((a, b))
            passage = " ".join(f"word{rng.randrange(1000)}" for _ in range(120))
            fh.write(json.dumps({"passage": passage, "question": f"What is {a} plus {b}?", "answer": str(a + b)})
                     + "\n")
    return pairs


# Peak RSS is read by a small launcher that forks and execs evalkit and waits for it: a process spawned straight
# from pytest starts with pytest's own (large) resident set on its high-water mark, which exec keeps.
LAUNCHER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    json.dump({"maxrss_kib": usage.ru_maxrss}, fh)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_evalkit(folder: Path, n: int) -> tuple[int, float, str]:
    """`python -m evalkit run` in a subprocess: exit code, peak RSS in bytes (wait4: the largest of the process
    and its check workers), and its stderr + stdout."""
    env = {**os.environ, "PYTHONPATH": str(folder), "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    cmd = [sys.executable, "-m", "evalkit", "run", "qa", "--model", "python:solver:answer", "-n", str(n),
           "--tasks-dir", "tasks", "--reports-dir", "reports"]
    usage = folder / "usage.json"
    with open(folder / "out.txt", "wb") as out:
        code = subprocess.run([sys.executable, "-c", LAUNCHER, str(usage), *cmd], cwd=folder, env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=600).returncode
    return code, json.loads(usage.read_text())["maxrss_kib"] * 1024, (folder / "out.txt").read_text(errors="replace")


def run_folder(folder: Path) -> Path:
    [record] = (folder / "reports").glob("*/record.json")
    return record.parent


@pytest.fixture(scope="module")
def scale_runs(tmp_path_factory):
    """A 2,000- and a 20,000-example run, and the 20,000 one again (all resumed)."""
    out = {}
    for n in (2_000, 20_000):
        folder = tmp_path_factory.mktemp(f"n{n}")
        pairs = build(folder, n)
        code, rss, text = run_evalkit(folder, n)
        assert code == 0, text[-3000:]
        out[n] = {"folder": folder, "pairs": pairs, "rss": rss, "text": text}
    folder = out[20_000]["folder"]
    first = run_folder(folder)
    out["before"] = {"record": json.loads((first / "record.json").read_text()),
                     "samples": (first / "samples.jsonl").read_bytes(),
                     "journal": (first / "journal.jsonl").stat().st_size}
    code, rss, text = run_evalkit(folder, 20_000)
    assert code == 0, text[-3000:]
    out["resume"] = {"rss": rss, "text": text}
    return out


def test_peak_memory_does_not_grow_with_the_examples(scale_runs):
    small, large = scale_runs[2_000], scale_runs[20_000]
    folder = run_folder(large["folder"])
    # What holding the samples would cost: at least their journal lines' bytes (a Python dict of an entry takes
    # more than its JSON text). Streaming may grow by a small fraction of it (the ids' hash index, allocator noise).
    per_sample = (folder / "journal.jsonl").stat().st_size / 20_000
    assert per_sample > 1000  # the rows are as large as built: ~1 kB passages
    bound = 0.25 * (20_000 - 2_000) * per_sample
    growth = large["rss"] - small["rss"]
    assert growth < bound, f"peak RSS grew {growth / 2**20:.1f} MiB from 2k to 20k (bound {bound / 2**20:.1f} MiB)"
    resumed_growth = scale_runs["resume"]["rss"] - small["rss"]
    assert resumed_growth < bound, f"the resume's peak RSS is {resumed_growth / 2**20:.1f} MiB above the 2k run's"
    # and the record counts what the solver did: wrong exactly when a + b is a multiple of 9
    record = json.loads((folder / "record.json").read_text())
    [t] = record["tasks"]
    wrong = sum((a + b) % 9 == 0 for a, b in large["pairs"])
    assert (t["n_examples"], t["n_samples"], t["passes"]) == (20_000, 20_000, 20_000 - wrong)
    assert sum(1 for _ in open(folder / "samples.jsonl", encoding="utf-8")) == 20_000


def test_the_rerun_resumes_everything_and_writes_the_same_record(scale_runs):
    before, text = scale_runs["before"], scale_runs["resume"]["text"]
    assert "journal: 20000 samples resumed, 0 generated" in text
    folder = run_folder(scale_runs[20_000]["folder"])
    after = json.loads((folder / "record.json").read_text())
    assert (folder / "journal.jsonl").stat().st_size == before["journal"]  # nothing appended
    assert (folder / "samples.jsonl").read_bytes() == before["samples"]  # the same samples, in the same order
    for old, new in zip(before["record"]["tasks"], after["tasks"], strict=True):
        assert {k: v for k, v in new.items() if k != "timings"} == {k: v for k, v in old.items() if k != "timings"}
    assert after["journal"]["resumed"] == 20_000 and after["journal"]["generated"] == 0


# -- the pieces ------------------------------------------------------------------------------------------------

scores = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300)))
def test_exact_sum_is_fsum(values):
    total = ExactSum()
    for v in values:
        total.add(v)
    assert total.value() == math.fsum(values)


@settings(max_examples=60)
@given(st.lists(st.tuples(st.sampled_from([None, 1, 2, 3]),
                          st.lists(st.tuples(st.sampled_from(["PASS", "FAIL", "ERROR", "TIMEOUT"]), scores),
                                   min_size=3, max_size=3)), min_size=1, max_size=40))
def test_running_counts_equal_the_statistics_of_the_whole_list(examples):
    counts = TaskCounts()
    for level, samples in examples:
        counts.add_example(level, samples)
    flat = [(lv, s, sc) for lv, samples in examples for s, sc in samples]
    whole = stats.summarize((s, sc) for _, s, sc in flat)
    assert counts.summary() == whole
    for kk in (1, 2, 3):
        expected = stats.mean_pass_at_k(((3, sum(s == "PASS" for s, _ in samples)) for _, samples in examples), kk)
        assert counts.pass_at_k()[str(kk)] == round(expected, 6)
    levels = stats.per_level((lv, s) for lv, s, _ in flat)
    assert counts.per_level() == {("none" if lv is None else str(lv)): r.to_dict() for lv, r in levels.items()}


@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(-(2**63), 2**63 - 1))),
       st.lists(st.integers(0, 2**64 - 1)))
def test_hash_index_is_a_dict_of_64_bit_keys(pairs, probes):
    index, model = HashIndex(values=True), {}
    for key, value in [(0, 5), *pairs]:
        index.put(key, value)
        model[key] = value
    assert len(index) == len(model)
    for key in [*model, *probes]:
        assert index.get(key) == model.get(key)
        assert (key in index) == (key in model)
    seen = HashIndex()
    assert [seen.add(k) for k in (3, 3, 0, 0, 2**64 - 1)] == [True, False, True, False, True]


def _entry(key: str, output: str, failed: bool = False) -> dict:
    entry = {"key": key, "model": "m", "task": "t", "task_version": 1, "sample_index": 0, "seed": 0,
             "example": {"id": "e", "split": "eval", "level": None, "fields": {}, "prompt": "p", "reference": None},
             "generation": {}, "output": output, "answer": output,
             "verdict": {"status": "ERROR" if failed else "PASS", "score": 0.0 if failed else 1.0, "reason": ""}}
    if failed:
        entry["failed"] = "no answer"
    return entry


def test_the_journal_index_reads_the_latest_line_back(tmp_path):
    path = tmp_path / "journal.jsonl"
    a, b, odd = "a" * 32, "0123456789abcdef" * 2, "not a hex key"
    lines = [_entry(a, "first"), _entry(b, "", failed=True), _entry(a, "second"), _entry(odd, "x"),
             _entry(b, "made again")]
    path.write_text("".join(json.dumps(e) + "\n" for e in lines) + "not json\n" + '{"torn": ')
    with Journal(path) as j:
        assert j.dropped == 2 and len(j) == 3 and j.saved == 3
        assert j.get(a)["output"] == "second" and j.get(b)["output"] == "made again" and j.get(odd)["output"] == "x"
        assert j.get("f" * 32) is None and "f" * 32 not in j
        j.append([_entry("c" * 32, "new"), _entry("d" * 32, "", failed=True)])
        assert j.saved == 4 and j.appended == 2
    assert set(load_journal(path).entries) == {a, b, odd, "c" * 32, "d" * 32}  # the torn line was cut off


def test_a_large_data_file_is_read_a_row_at_a_time_with_the_same_examples(tmp_path):
    rows = [{"q": f"{i % 1500}+1=", "a": str(i % 1500 + 1)} for i in range(2000)]  # rows 1500.. repeat earlier ones
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text('name: sums\ndata: d.jsonl\nprompt: "{q}"\nreference: "{a}"\n'
                                     "check: {name: exact}\n")
    task = load_yaml_task(tmp_path / "t.yaml")
    streamed = list(task.iter_examples("eval", n=None))
    assert [e.id for e in streamed] == [e.id for e in task.examples("eval", n=None)]
    assert len(streamed) == 1500 and [e.prompt for e in streamed[:3]] == ["0+1=", "1+1=", "2+1="]
    assert [e.id for e in task.iter_examples("eval", n=7)] == [e.id for e in streamed[:7]]
    assert list(task.iter_examples("train")) == [] and list(task.iter_examples("eval", n=0)) == []


@pytest.mark.parametrize("max_new_tokens", [None, 8])
def test_a_streamed_task_with_fewer_rows_than_n_counts_its_rows(tmp_path, max_new_tokens):
    rows = [{"q": f"{i}+1=", "a": str(i + 1)} for i in range(1500)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    gen = f"generation: {{max_new_tokens: {max_new_tokens}}}\n" if max_new_tokens else ""
    (tmp_path / "t.yaml").write_text('name: sums\ndata: d.jsonl\nprompt: "{q}"\nreference: "{a}"\n'
                                     f"check: {{name: exact}}\n{gen}")
    task = load_yaml_task(tmp_path / "t.yaml")
    calls: list[tuple[int, int]] = []
    backend = PythonCallableBackend(lambda p: str(int(p.split("+")[0]) + 1) if int(p.split("+")[0]) % 3 else "x")
    record = evaluate(tasks=[task], backend=backend, n=5000, run_dir=tmp_path / "run",
                      progress=lambda name, done, total: calls.append((done, total)))
    t = record.task("sums")
    assert (t["n_examples"], t["passes"]) == (1500, 1000)
    assert t["generation"]["max_new_tokens"] == (max_new_tokens or 4 + 4 + 1)  # longest reference "1500"
    assert calls[-1] == (1500, 1500)
    assert sum(1 for _ in open(tmp_path / "run" / "samples.jsonl", encoding="utf-8")) == 1500


@given(st.text(), st.text(), st.integers(0, 10**6), st.text(min_size=1), st.dictionaries(st.text(), st.integers()),
       st.integers(0, 2**40), st.integers(0, 1000), st.one_of(st.none(), st.text()))
def test_the_fixed_part_key_maker_gives_sample_key(model, task_name, version, example_id, gen, seed, index, form):
    from evalkit.run.journal import sample_key, sample_keys

    expected = sample_key(model, task_name, version, example_id, gen, seed, index, form)
    assert sample_keys(model, task_name, version, gen, seed)(example_id, index, form) == expected


def test_a_streamed_run_stopped_part_way_resumes_to_the_uninterrupted_record(tmp_path):
    from evalkit.run.batching import RunInterrupted

    rows = [{"q": f"{i}+2=", "a": str(i + 2)} for i in range(3000)]  # more than a run holds: it streams
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text('name: sums\ndata: d.jsonl\nprompt: "{q}"\nreference: "{a}"\n'
                                     "generation: {max_new_tokens: 8}\ncheck: {name: exact}\n")
    task = load_yaml_task(tmp_path / "t.yaml")
    calls = {"n": 0}

    def solver(prompt: str) -> str:
        calls["n"] += 1
        if calls["n"] == 1234 and stop:
            raise KeyboardInterrupt
        a = int(prompt.split("+")[0])
        return str(a + 2) if a % 7 else "?"

    stop = True
    with pytest.raises(RunInterrupted) as caught:
        evaluate(tasks=[task], backend=PythonCallableBackend(solver), n=5000, run_dir=tmp_path / "run")
    saved = caught.value.saved
    assert 0 < saved < 1234
    stop = False
    resumed = evaluate(tasks=[task], backend=PythonCallableBackend(solver), n=5000, run_dir=tmp_path / "run")
    assert resumed.data["journal"]["resumed"] == saved and resumed.data["journal"]["generated"] == 3000 - saved
    whole = evaluate(tasks=[task], backend=PythonCallableBackend(solver), n=5000, run_dir=tmp_path / "whole")
    assert whole.data["journal"]["generated"] == 3000
    strip = {"timings"}
    assert [{k: v for k, v in t.items() if k not in strip} for t in resumed.tasks] == \
           [{k: v for k, v in t.items() if k not in strip} for t in whole.tasks]
    assert (tmp_path / "run" / "samples.jsonl").read_bytes() == (tmp_path / "whole" / "samples.jsonl").read_bytes()
    assert resumed.task("sums")["passes"] == sum(1 for i in range(3000) if i % 7)
