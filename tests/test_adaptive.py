"""Adaptive evaluation (issue 17): the anytime-valid decision rule, proven by simulation, and its use end to end
(runner, journal and resume, record and gate, the CLI, the pytest plugin, a recipe)."""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path

import pytest
from conftest import FIXTURES
from hypothesis import given, settings
from hypothesis import strategies as st

from evalkit import as_task, task, verdict
from evalkit.errors import ConfigError
from evalkit.gate import GateConfig, Rule, judge
from evalkit.models.oracle import OracleBackend
from evalkit.models.python import PythonCallableBackend
from evalkit.run import sequential as seq
from evalkit.run.journal import load_journal
from evalkit.run.record import load_record
from evalkit.run.runner import evaluate
from evalkit.run.stats import wilson_interval

ALPHA = 0.05
pytest_plugins = ["pytester"]


# -- the statistics ------------------------------------------------------------------------------------------

def _closed_form_log_met(s: int, n: int, m: float) -> float:
    """log of the mean over q ~ U(m, 1) of (q/m)^s ((1-q)/(1-m))^f, by the beta integral written as a binomial
    tail: int_m^1 q^s (1-q)^f dq = s! f! / (n+1)! * P(Binomial(n+1, m) <= s)."""
    f = n - s
    tail = math.fsum(math.comb(n + 1, j) * m**j * (1 - m) ** (n + 1 - j) for j in range(s + 1))
    log_beta = math.lgamma(s + 1) + math.lgamma(f + 1) - math.lgamma(n + 2)
    return log_beta + math.log(tail) - math.log(1 - m) - s * math.log(m) - f * math.log(1 - m)


@pytest.mark.parametrize("s,n,m", [(10, 10, 0.9), (48, 50, 0.95), (30, 60, 0.5), (0, 5, 0.3), (95, 100, 0.8)])
def test_evidence_is_the_uniform_mixture_over_the_alternative(s, n, m):
    # The module averages over a fixed grid of the prior; the integral's closed form agrees to 1 %.
    assert seq.log_evidence_met(s, n, m) == pytest.approx(_closed_form_log_met(s, n, m), abs=0.01)
    # E-(m) is E+ seen from the other side: passes and failures swapped, m -> 1 - m.
    assert seq.log_evidence_missed(s, n, m) == pytest.approx(_closed_form_log_met(n - s, n, 1 - m), abs=0.01)


@pytest.mark.parametrize("target", [0.5, 0.9, 0.95])
def test_thresholds_are_the_decision_rule(target):
    table = seq.thresholds(target, ALPHA, range(1, 61))
    for n, met, missed in table:
        for s in range(n + 1):
            want = "met" if s >= met else "missed" if s <= missed else None
            assert seq.decide(s, n, target, ALPHA) == want, (n, s)
    # 88 straight passes are the fewest that prove a rate >= 95 % at 5 % (1 / (n+1) 0.95^-n... >= 20 needs n = 88)
    assert seq.thresholds(0.95, ALPHA, [87, 88])[1][1] == 88 and seq.thresholds(0.95, ALPHA, [87])[0][1] == 88


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 400), frac=st.floats(0, 1), target=st.floats(0.01, 0.99), alpha=st.floats(0.001, 0.5))
def test_bounds_and_decisions_agree(n, frac, target, alpha):
    s = round(frac * n)
    lo, hi = seq.confidence_bounds(s, n, alpha)
    assert 0 <= lo <= s / n <= hi <= 1
    decision = seq.decide(s, n, target, alpha)
    if decision == "met":
        assert s / n > target and lo >= target - 1e-9
    elif decision == "missed":
        assert s / n < target and hi <= target + 1e-9
    else:
        assert lo <= target + 1e-9 and hi >= target - 1e-9
    lo2, hi2 = seq.confidence_bounds(s, n, min(0.9, alpha * 2))  # a looser level: a narrower interval
    assert lo2 >= lo - 1e-12 and hi2 <= hi + 1e-12


def test_looks_grow_geometrically_to_the_cap():
    assert seq.looks(200) == [8, 12, 18, 27, 41, 62, 93, 140, 200]
    assert seq.looks(5) == [5] and seq.looks(1) == [1] and seq.looks(0) == []


# -- the error rate, by simulation ----------------------------------------------------------------------------

def _limit(runs: int, p: float = ALPHA, sds: float = 4.0) -> float:
    """At most this many wrong decisions of `runs` when each is wrong with probability <= p (4 binomial SDs)."""
    return runs * p + sds * math.sqrt(runs * p * (1 - p))


def _simulate(streams: list[list[bool]], at: list[int], met: dict[int, int], missed: dict[int, int],
              used: list[int] | None = None) -> list[str]:
    """The decision of each stream of outcomes under a table of thresholds looked at after `at` samples (and the
    samples each used, appended to `used`)."""
    out = []
    for stream in streams:
        decision, passes, done = "cap", 0, 0
        for n in at:
            passes += sum(stream[done:n])
            done = n
            if passes >= met[n] or passes <= missed[n]:
                decision = "met" if passes >= met[n] else "missed"
                break
        out.append(decision)
        if used is not None:
            used.append(done)
    return out


def _sequential_table(target: float, at: list[int]) -> tuple[dict[int, int], dict[int, int]]:
    table = seq.thresholds(target, ALPHA, at)
    return {n: met for n, met, _ in table}, {n: missed for n, _, missed in table}


def _wilson_table(target: float, at: list[int]) -> tuple[dict[int, int], dict[int, int]]:
    """Peeking at the 95 % Wilson interval after each look: met when its low end >= target, missed when its high
    end < target — the rule that is not valid under repeated looks."""
    met = {n: next((s for s in range(n + 1) if wilson_interval(s, n)[0] >= target), n + 1) for n in at}
    missed = {n: next((s for s in range(n, -1, -1) if wilson_interval(s, n)[1] < target), -1) for n in at}
    return met, missed


def _wrong(decisions: list[str], rate: float, target: float) -> int:
    """Decisions the anytime-valid rule vouches for that are wrong (a cap decision is the fixed-n rule's)."""
    return sum((d == "met" and rate < target) or (d == "missed" and rate >= target) for d in decisions)


def _bernoulli(rate: float, runs: int, length: int, seed: int) -> list[list[bool]]:
    rng = random.Random(seed)
    return [[rng.random() < rate for _ in range(length)] for _ in range(runs)]


@pytest.mark.parametrize("target", [0.5, 0.8, 0.95])
def test_wrong_decisions_stay_below_alpha_at_every_look(target):
    """Many simulated runs at true rates just below, at and just above the target, looked at as the runner looks
    (cap 200) and after every sample (cap 600): wrong met/missed decisions <= alpha, whatever the looks. Peeking
    at a Wilson interval after each look of the same runs is wrong far more often than alpha."""
    for at, runs in ((seq.looks(200), 2000), (list(range(1, 601)), 600)):
        table, wilson_table = _sequential_table(target, at), _wilson_table(target, at)
        for i, rate in enumerate((target - 0.03, target, target + 0.03)):
            streams = _bernoulli(rate, runs, at[-1], seed=1000 * i + len(at) + round(100 * target))
            decisions = _simulate(streams, at, *table)
            assert _wrong(decisions, rate, target) <= _limit(runs), (rate, len(at))
            if rate == target:  # the same runs, judged by peeking at Wilson: the simulation can see an excess
                wilson = _simulate(streams, at, *wilson_table)
                assert _wrong(wilson, rate, target) > _limit(runs), (rate, len(at))


@pytest.mark.parametrize("target", [0.8, 0.95])
def test_finite_example_sets_in_a_random_order(target):
    """The runner's case: a fixed set of 200 examples with an exact pass rate, evaluated in a random order."""
    runs = 2000
    rng = random.Random(7)
    for passing in (round(200 * target) - 4, round(200 * target), round(200 * target) + 4):
        rate = passing / 200
        population = [True] * passing + [False] * (200 - passing)
        streams = [rng.sample(population, 200) for _ in range(runs)]
        decisions = _simulate(streams, seq.looks(200), *_sequential_table(target, seq.looks(200)))
        assert _wrong(decisions, rate, target) <= _limit(runs), rate


def test_far_from_the_target_decides_early():
    # 3-digit addition early in training (1.5 %) and late (99 %) against 95 %: the learning curve's two ends.
    table = _sequential_table(0.95, seq.looks(200))
    for rate, decision, share, samples in ((0.015, "missed", 1.0, 8), (0.99, "met", 0.7, 160)):
        used: list[int] = []
        decisions = _simulate(_bernoulli(rate, 500, 200, seed=3), seq.looks(200), *table, used=used)
        assert decisions.count(decision) >= share * 500 and set(decisions) <= {decision, "cap"}
        assert sum(used) / len(used) <= samples, rate  # the fixed-n loop takes 200 every time


# -- the runner ------------------------------------------------------------------------------------------------

@task(name="coin", version=1, target=0.95, max_new_tokens=4)
class Coin:
    """A task whose pass rate is whatever the model's is: the answer is always "yes"."""

    def generate(self, rng):
        return {"i": rng.randrange(10**9)}

    def prompt(self, ex):
        return f"coin {ex['i']}:"

    def reference(self, ex):
        return "yes"

    def check(self, ex, answer):
        return verdict(answer == "yes")


@task(name="untargeted", version=1, max_new_tokens=4)
class Untargeted(Coin):
    pass


def _unit(prompt: str) -> float:
    return int(hashlib.sha256(prompt.encode()).hexdigest()[:12], 16) / 16**12


def rated(rate: float) -> PythonCallableBackend:
    """A model right on a prompt when the prompt's hash falls below `rate`: a known pass rate, per prompt."""
    return PythonCallableBackend(lambda prompt: "yes" if _unit(prompt) < rate else "no",
                                 identity=f"python:rated-{rate}")


def _strip(record) -> dict:
    d = json.loads(json.dumps(record.data))
    for key in ("created_at", "finished_at", "timings", "environment", "journal"):
        d.pop(key, None)
    for t in d["tasks"]:
        t.pop("timings")
    return d


def _check_entry(record, name: str) -> dict:
    """The task entry's numbers are those of the samples used, in the order they were looked at."""
    t = record.task(name)
    samples = [s for s in record.samples() if s["task"] == name]
    passes = sum(s["status"] == "PASS" for s in samples)
    a = t["adaptive"]
    assert len(samples) == t["n_samples"] == a["used"] and t["passes"] == passes
    assert (t["low"], t["high"]) == wilson_interval(passes, a["used"])
    assert a["used"] in seq.looks(a["cap"])
    prefix = [sum(s["status"] == "PASS" for s in samples[:n]) for n in seq.looks(a["cap"]) if n < a["used"]]
    assert all(seq.decide(p, n, a["target"], a["alpha"]) is None for p, n in zip(prefix, seq.looks(a["cap"])))
    return t


def test_weak_model_stops_at_the_first_look_and_the_gate_judges_it(tmp_path):
    record = evaluate(tasks=[Coin], backend=rated(0.3), n=200, adaptive=True, reports_dir=tmp_path)
    t = _check_entry(record, "coin")
    assert t["adaptive"]["decision"] == "missed" and t["adaptive"]["used"] == 8
    assert t["adaptive"]["bound"][1] < 0.95 and "upper bound" in t["adaptive"]["reason"]
    assert t["meets_target"] is False and record.data["settings"]["adaptive"] == {"alpha": ALPHA}
    loaded = load_record(record.path)  # the schema accepts it
    result = judge(loaded, GateConfig({"coin": Rule()}), [Coin])
    assert not result.passed and "pass rate" in result.outcomes[0].reasons[0]  # judged, not "inconsistent"


def test_the_gate_refuses_an_adaptive_block_that_does_not_match_its_counts(tmp_path):
    import copy

    from evalkit.run.record import RunRecord

    record = evaluate(tasks=[Coin], backend=OracleBackend(), n=200, adaptive=True, reports_dir=tmp_path)
    data = load_record(record.path).data
    assert judge(RunRecord(data), GateConfig({"coin": Rule(min_pass_rate=0.5)}), [Coin]).passed
    for field, value, says in [("decision", "missed", "is not what"), ("used", 150, "does not add up")]:
        spoiled = copy.deepcopy(data)
        spoiled["tasks"][0]["adaptive"][field] = value
        result = judge(RunRecord(spoiled), GateConfig({"coin": Rule(min_pass_rate=0.5)}), [Coin])
        assert not result.passed and says in result.outcomes[0].reasons[0], result.outcomes[0].reasons


def test_perfect_model_is_met_after_88_straight_passes(tmp_path):
    record = evaluate(tasks=[Coin], backend=OracleBackend(), n=200, adaptive=True, reports_dir=tmp_path)
    t = _check_entry(record, "coin")
    # 88 passes in a row prove >= 95 % at 5 %; the first look at or after 88 samples is at 93.
    assert t["adaptive"]["decision"] == "met" and t["adaptive"]["used"] == 93
    assert t["adaptive"]["bound"][0] >= 0.95 and t["meets_target"] is True
    assert judge(load_record(record.path), GateConfig({"coin": Rule(use_lower_bound=True)}), [Coin]).passed


def test_near_the_target_runs_to_the_cap_and_decides_as_fixed_n():
    record = evaluate(tasks=[Coin], backend=rated(0.95), n=200, adaptive=True)
    t = _check_entry(record, "coin")
    assert t["adaptive"]["decision"] == "cap" and t["n_samples"] == 200
    assert t["meets_target"] == (t["rate"] >= 0.95) and "cap reached" in t["adaptive"]["reason"]
    fixed = evaluate(tasks=[Coin], backend=rated(0.95), n=200)
    assert fixed.task("coin")["passes"] == t["passes"]  # the same 200 examples


def test_each_task_stops_on_its_own():
    def model(prompt: str) -> str:
        return "yes" if prompt.startswith("coin") else "no"
    loose = task(name="loose", version=1, target=0.5, max_new_tokens=4)(
        type("Loose", (Coin,), {"prompt": lambda self, ex: f"loose {ex['i']}:"}))
    record = evaluate(tasks=[Coin, loose], backend=PythonCallableBackend(model), n=300, adaptive=True)
    assert record.task("coin")["adaptive"]["decision"] == "met"
    assert record.task("loose")["adaptive"]["decision"] == "missed" and record.task("loose")["n_samples"] == 8


def test_journal_keys_do_not_depend_on_adaptivity_and_resume_is_exact(tmp_path):
    evaluate(tasks=[Coin], backend=rated(0.6), n=200, run_dir=tmp_path / "fixed")
    first = evaluate(tasks=[Coin], backend=rated(0.6), n=200, adaptive=True, run_dir=tmp_path / "adaptive")
    used = first.task("coin")["n_samples"]
    fixed_keys = set(load_journal(tmp_path / "fixed" / "journal.jsonl").entries)
    adaptive_keys = set(load_journal(tmp_path / "adaptive" / "journal.jsonl").entries)
    assert len(adaptive_keys) == used and adaptive_keys <= fixed_keys  # the same sample is the same sample
    again = evaluate(tasks=[Coin], backend=rated(0.6), n=200, adaptive=True, run_dir=tmp_path / "adaptive")
    assert again.data["journal"]["resumed"] == used and again.data["journal"]["generated"] == 0
    assert _strip(again) == _strip(first)
    # An adaptive run in a folder a fixed run of 120 began: what it finds it reuses, and the record is the same.
    evaluate(tasks=[Coin], backend=rated(0.6), n=120, run_dir=tmp_path / "mixed")
    mixed = evaluate(tasks=[Coin], backend=rated(0.6), n=200, adaptive=True, run_dir=tmp_path / "mixed")
    first_120 = {e.id for e in as_task(Coin).examples("eval", n=120)}
    reused = sum(s["example_id"] in first_120 for s in mixed.samples())
    assert mixed.data["journal"]["resumed"] == reused > 0 and mixed.data["journal"]["generated"] == used - reused
    assert {**_strip(mixed), "run_id": None} == {**_strip(first), "run_id": None}


def test_rescore_keeps_the_samples_used_and_drops_the_decision(tmp_path):
    from evalkit.discovery.registry import Registry
    from evalkit.run.runner import rescore

    record = evaluate(tasks=[Coin], backend=rated(0.6), n=200, adaptive=True, run_dir=tmp_path / "run")
    rescored = rescore(tmp_path / "run", registry=Registry([Coin]))
    before, after = record.task("coin"), rescored.task("coin")
    assert (after["n_samples"], after["passes"]) == (before["n_samples"], before["passes"])
    assert "adaptive" not in after  # the decision was made on the old verdicts; the counts stand on their own


@pytest.mark.parametrize("kwargs,field", [({"k": 2, "temperature": 1.0}, "k"), ({"alpha": 0.0}, "alpha"),
                                          ({"alpha": 1.0}, "alpha"), ({"tasks": [Untargeted]}, "target"),
                                          ({"task_settings": {"coin": {"marks": [1.5]}}}, "marks"),
                                          ({"task_settings": {"coin": {"marks": 0.5}}}, "marks")])
def test_what_adaptive_cannot_do_is_a_config_error(kwargs, field):
    with pytest.raises(ConfigError) as info:
        evaluate(**{"tasks": [Coin], "backend": OracleBackend(), "n": 20, "adaptive": True, **kwargs})
    assert info.value.field == field


# -- marks: further thresholds, decided on the way ----------------------------------------------------------------

def _first_decided(passes_at: dict[int, int], tables: list[tuple[dict[int, int], dict[int, int]]]) -> int:
    """The first look at which every table (target and marks) has decided, else the last look."""
    for n, p in passes_at.items():
        if all(p >= met[n] or p <= missed[n] for met, missed in tables):
            return n
    return max(passes_at)


def test_marks_keep_sampling_until_each_is_decided_and_are_recorded(tmp_path):
    """A 75 % model against 95 %: "missed" at an early look, but whether it is above half the target (47.5 %)
    and below 90 % takes more: the run samples on until both are decided too, and records them; the gate accepts
    it. A 60 % model leaves 47.5 % undecided at the cap (recorded as null)."""
    plain = evaluate(tasks=[Coin], backend=rated(0.75), n=200, adaptive=True)
    assert "marks" not in plain.task("coin")["adaptive"]
    record = evaluate(tasks=[Coin], backend=rated(0.75), n=200, adaptive=True, reports_dir=tmp_path,
                      task_settings={"coin": {"marks": [0.475, 0.9]}})
    t = record.task("coin")
    a, samples = t["adaptive"], [s["status"] == "PASS" for s in record.samples()]
    at = seq.looks(200)
    passes_at = {n: sum(samples[:n]) for n in at if n <= len(samples)}
    tables = [_sequential_table(m, at) for m in (0.95, 0.475, 0.9)]
    assert a["used"] == len(samples) == _first_decided(passes_at, tables) > plain.task("coin")["adaptive"]["used"]
    assert a["decision"] == "missed" == seq.decide(t["passes"], a["used"], 0.95, ALPHA)
    said = {"met": "above", "missed": "below", None: None}
    assert a["marks"] == [{"at": m, "decision": said[seq.decide(t["passes"], a["used"], m, ALPHA)]}
                          for m in (0.475, 0.9)]
    assert [m["decision"] for m in a["marks"]] == ["above", "below"]
    assert judge(load_record(record.path), GateConfig({"coin": Rule(min_pass_rate=0.5)}), [Coin]).passed
    spoiled = load_record(record.path).data
    spoiled["tasks"][0]["adaptive"]["marks"][1]["decision"] = "above"
    from evalkit.run.record import RunRecord

    result = judge(RunRecord(spoiled), GateConfig({"coin": Rule(min_pass_rate=0.5)}), [Coin])
    assert not result.passed and "mark 90.0% says 'above'" in result.outcomes[0].reasons[0]
    undecided = evaluate(tasks=[Coin], backend=rated(0.6), n=200, adaptive=True,
                         task_settings={"coin": {"marks": [0.475]}}).task("coin")["adaptive"]
    assert undecided["used"] == 200 and undecided["decision"] == "missed" and undecided["marks"][0]["decision"] is None


@pytest.mark.parametrize("mark", [0.3, 0.6])
def test_wrong_mark_decisions_stay_below_alpha(mark):
    """Simulated runs at rates just around a mark, looked at as the runner looks, with the target far away (so
    the target is decided early and sampling goes on for the mark): wrong above/below decisions <= alpha."""
    at, runs = seq.looks(200), 1000
    for i, rate in enumerate((mark - 0.03, mark + 0.03)):
        wrong = 0
        for stream in _bernoulli(rate, runs, 200, seed=50 + i + round(100 * mark)):
            s = seq.Sequential(0.95, ALPHA, cap=200, marks=(mark,))
            next(n for n in at if s.look(sum(stream[:n]), n))
            decision = s.marked()[mark]
            wrong += (decision == "above" and rate < mark) or (decision == "below" and rate >= mark)
        assert wrong <= _limit(runs), rate


# -- the faces: CLI, gate, pytest plugin, recipe ------------------------------------------------------------------

TASKS_PY = '''
from evalkit import task, verdict

@task(name="coin", version=1, target=0.95, max_new_tokens=4)
class Coin:
    def generate(self, rng):      return {"i": rng.randrange(10**9)}
    def prompt(self, ex):         return f"coin {ex['i']}:"
    def reference(self, ex):      return "yes"
    def check(self, ex, answer):  return verdict(answer == "yes")

@task(name="untargeted", version=1, max_new_tokens=4)
class Untargeted(Coin):
    pass
'''
MODEL_PY = '''
import hashlib

def weak(prompt):
    return "yes" if int(hashlib.sha256(prompt.encode()).hexdigest()[:12], 16) / 16**12 < 0.3 else "no"
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "coin.py").write_text(TASKS_PY)
    (tmp_path / "weak_model.py").write_text(MODEL_PY)
    return tmp_path


def test_cli_run_adaptive(project, run_cli):
    weak = run_cli("run", "--model", "python:weak_model:weak", "--task", "coin", "-n", "200", "--adaptive",
                   "--reports-dir", "r", cwd=project)
    assert weak.returncode == 1, weak.stdout + weak.stderr
    assert "adaptive: coin: missed after 8 of 200 samples: upper bound" in " ".join(weak.stdout.split())
    [folder] = (project / "r").iterdir()
    assert load_record(folder).task("coin")["adaptive"]["decision"] == "missed"
    oracle = run_cli("run", "--model", "oracle", "--task", "coin", "-n", "200", "--adaptive", "--alpha", "0.01",
                     "--reports-dir", "r", cwd=project)
    assert oracle.returncode == 0 and "adaptive: coin: met after" in oracle.stdout and "alpha 0.01" in oracle.stdout
    for args, expect in ((["--task", "coin", "--adaptive", "--alpha", "1.5"], "expected a number in (0, 1)"),
                         (["--task", "untargeted", "--adaptive"], "decides against a target"),
                         (["--task", "coin", "--alpha", "0.01"], "--alpha is the level of --adaptive")):
        bad = run_cli("run", "--model", "oracle", *args, "--reports-dir", "r", cwd=project)
        assert bad.returncode == 2 and expect in " ".join(bad.stderr.split()), bad.stderr


def test_cli_gate_adaptive(project, run_cli):
    passed = run_cli("gate", "--model", "oracle", "--task", "coin", "-n", "200", "--adaptive", "--reports-dir", "r",
                     cwd=project)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    [folder] = (project / "r").iterdir()
    assert load_record(folder).task("coin")["adaptive"]["used"] == 93
    (project / "gate.yaml").write_text("tasks:\n  coin: {min_pass_rate: 0.2}\nalpha: 0.05\n")
    failed = run_cli("gate", "--model", "python:weak_model:weak", "--config", "gate.yaml", "-n", "200", "--adaptive",
                     "--reports-dir", "r2", cwd=project)
    assert failed.returncode == 0, failed.stdout  # 30 % against the gate's 20 %: decided met, not the task's 95 %
    [folder] = (project / "r2").iterdir()
    assert load_record(folder).task("coin")["adaptive"]["target"] == 0.2
    # The same from the config: `adaptive: true` in run: (n the cap), no flag.
    (project / "gate.yaml").write_text("tasks:\n  coin: {min_pass_rate: 0.1}\nrun: {n: 200, adaptive: true}\n")
    configured = run_cli("gate", "--model", "python:weak_model:weak", "--config", "gate.yaml", "--reports-dir", "r3",
                         cwd=project)
    assert configured.returncode == 0, configured.stdout + configured.stderr
    [folder] = (project / "r3").iterdir()
    block = load_record(folder).task("coin")["adaptive"]
    assert block["target"] == 0.1 and block["cap"] == 200 and block["used"] < 200  # 30 % vs 10 %: decided early
    (project / "gate.yaml").write_text("tasks:\n  coin: {min_pass_rate: 0.2}\nrun: {adaptive: yes please}\n")
    bad = run_cli("gate", "--model", "oracle", "--config", "gate.yaml", "--reports-dir", "r4", cwd=project)
    assert bad.returncode == 2 and "run.adaptive" in " ".join(bad.stderr.split()), bad.stderr


def test_pytest_plugin_adaptive(pytester: pytest.Pytester):
    pytester.makepyfile(weak_model=MODEL_PY)
    (pytester.path / "tasks").mkdir()
    (pytester.path / "tasks" / "coin.py").write_text(TASKS_PY.split("@task(name=\"untargeted\"")[0])

    def run(model: str):
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--evalkit-model", model, "--evalkit-n", "200",
                                             "--evalkit-adaptive", "--evalkit-reports-dir", "reports",
                                             str(pytester.path / "tasks"), timeout=120)
    passed = run("oracle")
    passed.assert_outcomes(passed=1)
    passed.stdout.fnmatch_lines(["evalkit: model oracle*adaptive (alpha 0.05)*", "PASS coin *n=93*adaptive: met"])
    failed = run("python:weak_model:weak")
    failed.assert_outcomes(failed=1)
    failed.stdout.fnmatch_lines(["*adaptive   missed after 8 of 200 samples: upper bound*"])


def test_recipe_adaptive_fields(tmp_path):
    from evalkit.train.recipe import load_recipe

    base = (FIXTURES / "ft" / "quick.yaml").read_text()
    path = tmp_path / "r.yaml"
    path.write_text(base.replace("  n: 40\n", "  n: 40\n  adaptive: true\n  alpha: 0.01\n"))
    recipe = load_recipe(path)
    assert recipe.eval_adaptive is True and recipe.eval_alpha == 0.01
    for text, field in (("  n: 40\n  alpha: 0.01\n", "eval.alpha"), ("  n: 40\n  adaptive: true\n  alpha: 1.5\n",
                                                                       "eval.alpha")):
        path.write_text(base.replace("  n: 40\n", text))
        with pytest.raises(ConfigError) as info:
            load_recipe(path)
        assert info.value.field == field


def test_finetune_with_adaptive_evaluation(tmp_path):
    """tests/fixtures/ft/quick.yaml with eval.adaptive: every evaluation stops once its target is decided; the
    loop stops on the decisions and says how many samples each evaluation used."""
    pytest.importorskip("transformers")
    import shutil

    from evalkit.discovery.registry import discover
    from evalkit.train import finetune

    ft = FIXTURES / "ft"
    path = tmp_path / "recipe.yaml"
    path.write_text((ft / "quick.yaml").read_text().replace("  n: 40\n", "  n: 200\n  adaptive: true\n"))
    shutil.copy(ft / "tasks.py", tmp_path / "tasks.py")
    result = finetune(path, output=tmp_path / "out", registry=discover([ft / "tasks.py"], entry_points=False))
    history = load_record(tmp_path / "out").data["meta"]["training"]["history"]
    assert result.targets_met, result
    used = [h["rates"]["initials"]["n"] for h in history]
    assert used[0] == 8 and history[0]["rates"]["initials"]["decision"] == "missed"  # an untrained model: 8 samples
    assert sum(used) < 200 * len(history)  # fewer evaluation samples than the fixed-n loop's
    for h in history:  # each evaluation's record says how many samples it used and why it stopped
        entry = load_record(tmp_path / "out" / h["record"]).task("initials")
        assert entry["adaptive"]["used"] == entry["n_samples"] == h["rates"]["initials"]["n"]
        decision = entry["adaptive"]["decision"]
        assert h["rates"]["initials"]["met"] == (decision == "met" or (decision == "cap" and entry["rate"] >= 0.9))
    assert history[-1]["all_met"] and history[-2]["all_met"]


def test_every_report_format_says_how_many_samples_an_adaptive_task_used_and_why(tmp_path):
    import io

    from rich.console import Console

    from evalkit.reports import render_html, render_junit, render_markdown, render_terminal

    record = evaluate(tasks=[Coin], backend=rated(0.3), n=200, adaptive=True, reports_dir=tmp_path)
    # 0.3 against a 95 % target is missed at the first look, 8 samples (the test above).
    said = "missed after 8 of 200 samples: upper bound"
    console = Console(file=io.StringIO(), width=300, color_system=None)
    render_terminal(record, console, verbosity=1)
    rendered = {"terminal": console.file.getvalue(), "markdown": render_markdown(record),  # type: ignore[attr-defined]
                "html": render_html(record), "junit": render_junit(record)}
    for fmt, text in rendered.items():
        assert said in text, fmt
        assert "alpha 0.05" in text, fmt
    plain = evaluate(tasks=[Coin], backend=rated(0.3), n=20, reports_dir=tmp_path / "plain")
    assert "anytime-valid" not in render_markdown(plain) + render_html(plain) + render_junit(plain)
