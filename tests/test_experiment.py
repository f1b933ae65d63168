"""Experiments: the ladder's stop rule, ablation verdicts, schema errors, resume, parallel and Ray trials."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIXTURES
from rich.console import Console

from evalkit import ConfigError
from evalkit.discovery.registry import discover
from evalkit.errors import EvalkitError
from evalkit.experiment import measure
from evalkit.experiment import trials as rx
from evalkit.experiment.plan import (
    HELPS,
    HURTS,
    NO_DIFFERENCE,
    LadderPoint,
    StopRule,
    TrialPlan,
    ablation_verdicts,
    decide_ladder,
    load_experiment,
)
from evalkit.experiment.runner import run_experiment

FT = FIXTURES / "ft"
TASKS = rx.TaskSource((str(FT / "tasks.py"),), entry_points=False)

LADDER = """\
name: tiny-ladder
recipe: quick.yaml
output: {out}
overrides: {{budget: {{max_steps: {steps}}}}}
ladder:
  axis: model size
  trials:
    - {{name: a, overrides: {{model: {{hidden: 16, layers: 1, heads: 2, intermediate: 32}}}}}}
    - {{name: b, overrides: {{model: {{hidden: 32, layers: 2, heads: 2, intermediate: 64}}}}}}
    - {{name: c, overrides: {{model: {{hidden: 48, layers: 2, heads: 2, intermediate: 96}}}}}}
  stop: {{min_gain_per_doubling: 0.05}}
"""

ABLATION = """\
name: tiny-ablation
recipe: quick.yaml
output: {out}
overrides:
  budget: {{max_steps: {steps}}}
  data:
    sources:
      - {{task: initials, n: 400}}
      - {{jsonl: data.jsonl, name: zap}}
ablation:
  weights:
    - {{name: less-zap, weights: {{zap: 0.25}}}}
"""


def project(tmp_path: Path, text: str, name: str = "exp.yaml", **fmt) -> Path:
    for f in ("quick.yaml", "tasks.py", "data.jsonl"):
        shutil.copy(FT / f, tmp_path / f)
    path = tmp_path / name
    path.write_text(text.format(out=tmp_path / "out", **{"steps": 60, **fmt}))
    return path


def registry():
    return discover([FT / "tasks.py"], entry_points=False)


# -- the stop rule -----------------------------------------------------------------------------------------

RULE = StopRule(min_gain_per_doubling=0.05)


def pts(*specs):
    return [LadderPoint(f"t{i}", *s) if isinstance(s, tuple) else s for i, s in enumerate(specs)]


def test_ladder_stops_when_the_gain_per_doubling_falls_under_the_threshold():
    # 4x the FLOPs (2 doublings) for +60 points: 30 per doubling; then 4x for +2 points: 1 per doubling.
    d = decide_ladder(pts((0.2, 1e12), (0.8, 4e12), (0.82, 1.6e13), (0.99, 6.4e13)), RULE, planned=4)
    assert d.stop and d.recommended == "t1"
    assert "from t1 to t2" in d.reason and "+1.0 points per doubling" in d.reason and "5.0 points" in d.reason
    assert [round(s["gain_per_doubling"], 4) for s in d.steps] == [0.3, 0.01]  # t3 is never considered


def test_ladder_stops_at_the_first_trial_meeting_every_target():
    d = decide_ladder(pts((0.3, 1e12), (0.97, 2e12, True), (0.99, 4e12, True)), RULE, planned=3)
    assert d.stop and d.recommended == "t1" and "smallest trial that meets every target" in d.reason
    assert decide_ladder(pts((0.97, 1e12, True)), RULE, planned=3).recommended == "t0"


def test_ladder_keeps_climbing_while_steps_pay_and_recommends_the_last_when_none_flattens():
    going = decide_ladder(pts((0.2, 1e12), (0.6, 2e12)), RULE, planned=3)
    assert not going.stop and going.recommended == "t1"
    done = decide_ladder(pts((0.2, 1e12), (0.6, 2e12), (0.9, 4e12)), RULE, planned=3)
    assert done.stop and done.recommended == "t2" and "has not flattened" in done.reason


@pytest.mark.parametrize("second,why", [
    ((0.5, 4e12), "did no better"),  # no gain
    ((0.45, 4e12), "did no better"),  # a loss
])
def test_ladder_stops_without_gain(second, why):
    d = decide_ladder(pts((0.5, 1e12), second, (0.9, 1e13)), RULE, planned=3)
    assert d.stop and d.recommended == "t0" and why in d.reason


def test_ladder_cheaper_and_better_is_always_taken_and_failures_stop():
    # A bigger trial that met more examples while stopping earlier (less compute) is a free gain.
    d = decide_ladder(pts((0.5, 4e12), (0.6, 3e12)), RULE, planned=3)
    assert not d.stop and d.steps[0]["gain_per_doubling"] is None
    failed = decide_ladder([LadderPoint("t0", 0.5, 1e12), LadderPoint("t1", 0, 0, failed="out of memory")], RULE)
    assert failed.stop and failed.recommended == "t0" and "t1 failed: out of memory" in failed.reason


def test_ladder_can_require_a_significant_gain_and_measure_the_lower_bound():
    rule = StopRule(0.01, require_significant=True, alpha=0.05)
    d = decide_ladder([LadderPoint("a", 0.5, 1e12), LadderPoint("b", 0.6, 2e12, better=False, p_value=0.2)], rule)
    assert d.stop and d.recommended == "a" and "not significant (paired test p = 0.2" in d.reason
    d = decide_ladder([LadderPoint("a", 0.5, 1e12), LadderPoint("b", 0.6, 2e12, better=True, p_value=0.01)], rule,
                      planned=3)
    assert not d.stop


class FakePool:
    """Trials finish in the order `finish` says; records what was in flight."""

    def __init__(self, jobs):
        self.jobs, self.running, self.log = jobs, [], []

    def submit(self, spec, slot):
        self.running.append(spec["name"])
        self.log.append(("start", spec["name"], slot, len(self.running)))
        return spec["name"]

    def wait_any(self, handles):
        return [max(handles)]  # the latest-started finishes first

    def result(self, handle):
        self.running.remove(handle)
        return {"status": "done", "name": handle}

    def close(self, cancel=False):
        pass


def test_schedule_keeps_jobs_in_flight_and_starts_nothing_once_stopped():
    pool, done = FakePool(jobs=2), []
    items = [(TrialPlan(n, {}), {"name": n}) for n in "abcde"]
    rx.schedule(items, pool, may_start=lambda: "c" not in done, on_done=lambda plan, r: done.append(plan.name))
    starts = [e for e in pool.log if e[0] == "start"]
    assert max(e[3] for e in starts) == 2 and {e[2] for e in starts} == {0, 1}
    # b finishes first (a, b in flight), c starts; c finishes: the stop holds, d and e never start.
    assert [e[1] for e in starts] == ["a", "b", "c"] and done == ["b", "c", "a"]


# -- synthetic records -------------------------------------------------------------------------------------

def _h(prompt: str) -> float:
    return int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) / 16**8


def synthetic_record(folder: Path | None, share: float, *, n: int = 120, history: list | None = None):
    """A real run record (the runner's) of a model that answers the `share` of prompts with the lowest hash.

    Shares nest: a larger share passes a superset of the examples, so the paired test sees only
    discordant pairs in one direction.
    """
    from evalkit.models.python import PythonCallableBackend
    from evalkit.run.runner import evaluate

    def answer(prompt: str) -> str:
        return prompt[0] * 2 if _h(prompt) < share else "??"

    meta = {"training": {"history": history or [{"step": 10, "all_met": False, "wall_s": 1.0, "rates": {}}],
                         "targets": {"initials": {"target": 0.9, "on": "rate"}}, "best_step": 10,
                         "stopped_because": "step budget of 10 steps used"}}
    return evaluate(backend=PythonCallableBackend(answer, identity=f"share-{share}"),
                    tasks=[registry().get("initials")],
                    n=n, run_dir=folder, meta=meta)


def test_ablation_verdicts_from_the_paired_test():
    full = synthetic_record(None, 0.5)
    def without(source):
        return TrialPlan(f"without-{source}", {}, role="without", source=source)

    variants = {"without-good": (without("good"), synthetic_record(None, 0.1)),
                "without-bad": (without("bad"), synthetic_record(None, 0.9)),
                "without-meh": (without("meh"), synthetic_record(None, 0.52)),
                "reweighted": (TrialPlan("reweighted", {}, role="weights"), synthetic_record(None, 0.2))}
    out = {v["trial"]: v for v in ablation_verdicts(full, variants)}
    assert out["without-good"]["verdict"] == HELPS and out["without-bad"]["verdict"] == HURTS
    assert out["without-meh"]["verdict"] == NO_DIFFERENCE and out["reweighted"]["verdict"] == "worse"
    c = out["without-bad"]["comparisons"]["initials"]
    assert c["method"] == "mcnemar-exact" and c["only_a"] == 0 and c["only_b"] > 0 and c["p_value"] < 0.05


def test_compute_estimate_counts_parameters_from_safetensors_headers(tmp_path):
    header = {"a.weight": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
              "b.bias": {"dtype": "F32", "shape": [5], "data_offsets": [48, 68]}, "__metadata__": {"format": "pt"}}
    raw = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(68))
    assert measure.count_params(tmp_path) == 17
    assert measure.training_flops(17, 17, 1000) == 6 * 17 * 1000  # full fine-tuning: 6 N T
    assert measure.training_flops(100, 10, 1000) == (4 * 100 + 2 * 10) * 1000  # LoRA: backward weight grads of 10


# -- experiment files ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("edit,field,expect", [
    (("recipe: quick.yaml\n", ""), "recipe", "required field is missing"),
    (("min_gain_per_doubling: 0.05", "min_gain_per_doubling: lots"), "ladder.stop.min_gain_per_doubling",
     "expected number"),
    (("axis: model size", "axis: model size\n  colour: red"), "ladder.colour", "unknown field"),
    (("{name: b,", "{name: b b,"), "ladder.trials.1.name", "expected text matching"),
    (("hidden: 32,", "hidden: big,"), "ladder.trials.1.overrides.model.hidden", "expected integer"),
    (("max_steps: 60", "max_step: 60"), "overrides.budget.max_step", "unknown field"),
    (("{name: c,", "{name: a,"), "ladder.trials", "two trials share the name 'a'"),
    (("stop: {min_gain_per_doubling: 0.05}", "stop: {min_gain_per_doubling: 0.05, cost: axis}"),
     "ladder.stop.cost", "numeric value per trial"),
    (("recipe: quick.yaml", "recipe: nope.yaml"), "recipe", "recipe not found"),
    (("ladder:", "ablation: {}\nladder:"), "ablation", "exactly one of 'ladder' or 'ablation'"),
])
def test_experiment_errors_name_the_field(tmp_path, edit, field, expect):
    path = project(tmp_path, LADDER)
    path.write_text(path.read_text().replace(*edit))
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert f"field '{field}'" in str(info.value) and expect in str(info.value) and "exp.yaml" in str(info.value)


@pytest.mark.parametrize("edit,field,expect", [
    (("ablation:", "ablation:\n  leave_one_out: [initials, nope]"), "ablation.leave_one_out.1",
     "no data source 'nope'"),
    (("{zap: 0.25}", "{zapp: 0.25}"), "ablation.weights.0.weights.zapp", "no data source 'zapp'"),
    (("{zap: 0.25}", "{zap: 0}"), "ablation.weights.0.weights.zap", "less than or equal to the minimum of 0"),
])
def test_ablation_errors_name_the_field(tmp_path, edit, field, expect):
    path = project(tmp_path, ABLATION)
    path.write_text(path.read_text().replace(*edit))
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert f"field '{field}'" in str(info.value) and expect in str(info.value)


def test_ablation_plan_leaves_each_source_out_with_the_same_budget(tmp_path):
    exp = load_experiment(project(tmp_path, ABLATION))
    assert [(t.name, t.role, t.source) for t in exp.trials] == [
        ("full", "full", None), ("without-initials", "without", "initials"), ("without-zap", "without", "zap"),
        ("less-zap", "weights", None)]
    for t in exp.trials:  # fixed budget: no early stop at target (confirm past the evaluations), no patience
        assert t.overrides["eval"] == {"confirm": 60 // 10 + 2, "patience": None}
        assert t.overrides["budget"] == {"max_steps": 60} and t.overrides["name"] == f"tiny-ablation.{t.name}"
    assert [s.get("name", s.get("task")) for s in exp.trials[1].overrides["data"]["sources"]] == ["zap"]
    assert exp.trials[3].overrides["data"]["sources"][1]["weight"] == 0.25
    assert [t.change for t in exp.trials] == ["all sources", "without initials", "without zap", "zap weight 0.25"]


def test_ladder_from_param_and_values(tmp_path):
    path = project(tmp_path, LADDER)
    text = path.read_text()
    start = text.index("  trials:")
    path.write_text(text[:start] + "  param: train.lora.r\n  values: [4, 8]\n  stop: {min_gain_per_doubling: 0.05, "
                    "cost: axis}\n")
    exp = load_experiment(path)
    assert [(t.name, t.value, t.overrides["train"]) for t in exp.trials] == [
        ("r-4", 4.0, {"lora": {"r": 4}}), ("r-8", 8.0, {"lora": {"r": 8}})]


# -- resume, with trials simulated ------------------------------------------------------------------------

SHARES = {"a": 0.3, "b": 0.8, "c": 0.82}


def fake_trial(calls):
    """Stands in for a fine-tune run: writes a synthetic record and a trial.json with 4x the FLOPs per step."""
    def run(spec, registry=None, display=None):
        calls.append(spec["name"])
        folder = Path(spec["output"])
        synthetic_record(folder, SHARES[spec["name"]], n=200)
        i = "abc".index(spec["name"])
        info = {"config_hash": measure.config_hash(Path(spec["recipe"]), spec["overrides"]), "params": 1000 * 4**i,
                "trainable_params": 1000 * 4**i, "tokens": 10_000, "flops": 6e7 * 4**i, "wall_s": 1.0 + i,
                "targets_met": False}
        (folder / measure.TRIAL_FILE).write_text(json.dumps(info))
        return measure.trial_result(folder, info)
    return run


def test_resume_runs_only_the_missing_trials_and_the_ladder_stops_when_growth_stops_paying(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(rx, "run_trial", fake_trial(calls))
    path = project(tmp_path, LADDER)
    exp = load_experiment(path)
    # Half-finished: trial a is complete, b was killed before writing its record.
    fake_trial([])({"name": "a", "output": str(tmp_path / "out" / "trials" / "a"), "recipe": str(exp.recipe),
                    "overrides": exp.trials[0].overrides})
    (tmp_path / "out" / "trials" / "b" / "evals").mkdir(parents=True)
    before = (tmp_path / "out" / "trials" / "a" / "record.json").read_bytes()
    with pytest.raises(ConfigError, match="--resume"):
        run_experiment(path, registry=registry(), tasks=TASKS)
    summary = run_experiment(path, registry=registry(), tasks=TASKS, resume=True)
    assert calls == ["b", "c"]  # a was not re-run; c ran because a -> b paid (+50 points for 4x)
    assert (tmp_path / "out" / "trials" / "a" / "record.json").read_bytes() == before
    d = summary["ladder"]["decision"]
    assert d["stop"] and d["recommended"] == "b" and "from b to c" in d["reason"]
    assert [t["status"] for t in summary["trials"]] == ["done"] * 3
    assert summary["trials"][0]["record"] == "trials/a/record.json"
    steps = {s["to"]: s for s in d["steps"]}
    assert steps["b"]["cost_ratio"] == pytest.approx(4) and steps["b"]["gain_per_doubling"] > 0.05
    assert "initials" in summary["trials"][1]["paired_vs_previous"]
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["ladder"]["decision"]["recommended"] == "b"
    html = (tmp_path / "out" / "summary.html").read_text()
    assert 'href="trials/a/record.json"' in html and 'href="trials/b/report.html"' in html and "<svg" in html
    assert "[record](trials/c/record.json)" in (tmp_path / "out" / "summary.md").read_text()
    # Nothing left to do: resuming again runs nothing; a changed trial is refused, not silently reused.
    run_experiment(path, registry=registry(), tasks=TASKS, resume=True)
    assert calls == ["b", "c"]
    path.write_text(path.read_text().replace("hidden: 16, layers: 1", "hidden: 24, layers: 1"))
    with pytest.raises(ConfigError, match="trial 'a' finished with a different configuration"):
        run_experiment(path, registry=registry(), tasks=TASKS, resume=True)


def test_ladder_stop_skips_the_rest(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(rx, "run_trial", fake_trial(calls))
    monkeypatch.setitem(SHARES, "b", 0.31)  # a -> b buys one point for 4x the compute: stop, keep a
    summary = run_experiment(project(tmp_path, LADDER), registry=registry(), tasks=TASKS)
    assert calls == ["a", "b"]
    assert summary["ladder"]["decision"]["recommended"] == "a"
    assert [t["status"] for t in summary["trials"]] == ["done", "done", "pending"]
    from evalkit.experiment.report import render_terminal

    console = Console(file=io.StringIO(), width=100)
    render_terminal(summary, console)
    text = console.file.getvalue()
    assert "not run (ladder stopped)" in text and "recommended: a" in text
    plot = [line for line in text.splitlines() if line[5:6] == "|"]
    assert plot[0].startswith("100% |") and plot[-1].startswith("  0% |") and len(plot) == 12


# -- real trials (slow) -----------------------------------------------------------------------------------

def _cli(*args, env=None, cwd=None, timeout=600):
    env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "evalkit", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout, check=False)


def _check_compute(trial: dict) -> None:
    assert trial["params"] > 1000 and trial["tokens"] == round(trial["steps"] * 32 * trial["mean_tokens_per_row"])
    assert trial["flops"] == pytest.approx(6 * trial["params"] * trial["tokens"], rel=1e-3)


@pytest.mark.slow
def test_ablation_in_parallel_processes_finds_the_useful_source(tmp_path):
    path = project(tmp_path, ABLATION, steps=50)
    out = _cli("experiment", str(path), "--jobs", "2", "--tasks-dir", str(tmp_path / "tasks.py"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "2 trials at a time in their own processes, 1 torch thread(s) each" in summary["executor"]
    trials = {t["name"]: t for t in summary["trials"]}
    for t in trials.values():
        assert t["status"] == "done" and t["steps"] == 50 and t["threads"] == 1  # same budget: no early stop
        _check_compute(t)
        assert (tmp_path / "out" / t["record"]).is_file() and (tmp_path / "out" / t["report"]).is_file()
    verdicts = {v["trial"]: v for v in summary["ablation"]["verdicts"]}
    assert verdicts["without-initials"]["verdict"] == HELPS  # the only source of the task's words
    assert set(verdicts) == {"without-initials", "without-zap", "less-zap"}
    assert "source initials: helps" in out.stdout and "pass rate [95% CI]" in out.stdout


@pytest.mark.slow
def test_killed_experiment_resumes_without_rerunning_finished_trials(tmp_path):
    path = project(tmp_path, LADDER, steps=40)
    path.write_text(path.read_text().replace("min_gain_per_doubling: 0.05", "min_gain_per_doubling: 0.0"))
    b_ckpt = tmp_path / "out" / "trials" / "b" / "checkpoints" / "checkpoint-20"
    args = [sys.executable, "-m", "evalkit", "experiment", str(path), "--tasks-dir", str(tmp_path / "tasks.py")]
    proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline and proc.poll() is None and not b_ckpt.is_dir():
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    a_record = tmp_path / "out" / "trials" / "a" / "record.json"
    assert a_record.is_file() and not (tmp_path / "out" / "trials" / "b" / "record.json").exists()
    stamp = (a_record.stat().st_mtime_ns, a_record.read_bytes())
    again = _cli("experiment", str(path), "--tasks-dir", str(tmp_path / "tasks.py"))
    assert again.returncode == 2 and "--resume" in again.stderr
    done = _cli("experiment", str(path), "--resume", "--tasks-dir", str(tmp_path / "tasks.py"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "3 trials (1 finished before)" in done.stderr and "resumed from checkpoint-" in done.stderr
    assert (a_record.stat().st_mtime_ns, a_record.read_bytes()) == stamp
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    b = next(t for t in summary["trials"] if t["name"] == "b")
    assert b["status"] == "done" and b["steps"] == 40
    _check_compute(b)
    assert summary["ladder"]["decision"]["recommended"] in ("a", "b", "c")


@pytest.mark.slow
def test_trials_run_as_ray_tasks_on_a_local_ray_instance(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'evalkit[ray]')")
    # Everything on the loopback interface; no token file needed for a throwaway local instance.
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    from ray._private import ray_constants

    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)  # read at import; ray is imported already
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024**2, logging_level="WARNING")
    try:
        address = ray.get_runtime_context().gcs_address
        assert address.startswith("127.0.0.1:")
        path = project(tmp_path, LADDER, steps=30)
        path.write_text(path.read_text().replace("min_gain_per_doubling: 0.05", "min_gain_per_doubling: 0.0"))
        out = _cli("experiment", str(path), "--ray", address, "--jobs", "2", "--tasks-dir", str(tmp_path / "tasks.py"),
                   env=env)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    finally:
        ray.shutdown()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["executor"].startswith(f"Ray at {address} (2 CPUs): 2 trials at a time, 1 CPU(s) each")
    done = [t for t in summary["trials"] if t["status"] == "done"]
    assert len(done) >= 2 and all(t["threads"] == 1 for t in done)
    for t in done:
        _check_compute(t)
        assert (tmp_path / "out" / t["record"]).is_file()
    assert math.isfinite(summary["trials"][1]["flops"])


def test_ablation_summary_and_reports_with_trials_simulated(tmp_path, monkeypatch):
    shares = {"full": 0.5, "without-initials": 0.1, "without-zap": 0.85, "less-zap": 0.5}

    def run(spec, registry=None, display=None):
        folder = Path(spec["output"])
        synthetic_record(folder, shares[spec["name"]], n=200)
        info = {"config_hash": measure.config_hash(Path(spec["recipe"]), spec["overrides"]), "params": 1000,
                "trainable_params": 1000, "tokens": 10_000, "flops": 6e7, "wall_s": 1.0,
                "steps": 40 if spec["name"] == "less-zap" else 60, "targets_met": False}
        (folder / measure.TRIAL_FILE).write_text(json.dumps(info))
        return measure.trial_result(folder, info)

    monkeypatch.setattr(rx, "run_trial", run)
    summary = run_experiment(project(tmp_path, ABLATION), registry=registry(), tasks=TASKS)
    verdicts = {v["trial"]: v["verdict"] for v in summary["ablation"]["verdicts"]}
    assert verdicts == {"without-initials": HELPS, "without-zap": HURTS, "less-zap": NO_DIFFERENCE}
    warning = summary["ablation"]["warning"]
    assert "different numbers of steps" in warning and "less-zap 40" in warning
    from evalkit.experiment.report import render_terminal

    console = Console(file=io.StringIO(), width=100)
    render_terminal(summary, console)
    text = console.file.getvalue()
    assert "source initials: helps" in text and "source zap: hurts" in text and "warning: the trials" in text
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "initials **helps**" in md and "[report](trials/without-zap/report.html)" in md
    html = (tmp_path / "out" / "summary.html").read_text()
    assert "source zap: hurts" in html and 'href="trials/full/record.json"' in html


def test_a_trial_finds_its_tasks_beside_an_unrelated_broken_task_file(tmp_path):
    """As the command line: a broken file blocks only the trials that need a task it declares."""
    shutil.copy(FT / "tasks.py", tmp_path / "tasks.py")
    (tmp_path / "wip.py").write_text('from evalkit import task\n\n@task(name="wip")\nclass Wip:\n    oops(\n')
    found = rx.TaskSource((str(tmp_path),), entry_points=False).registry()
    assert found.get("initials").name == "initials"
    with pytest.raises(EvalkitError, match="wip.py"):
        found.get("wip")
