"""The command line a person meets (issue 16): user mistakes are theirs (exit 2), --level over several tasks,
one set of figures everywhere, tables that fit 80 columns, a broken task file that blocks only what needs it,
the project's gate config by default, progress lines in CI logs. Real subprocesses on real files."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, REPO, TASKS
from rich.console import Console

from evalkit.run.record import RunRecord, load_record

LEVELLED = '''
from evalkit import task, verdict

@task(name="count", version=1, target=0.5, levels=[1, 2, 3], tags=("numbers",))
class Count:
    """Repeat a number of `level` digits."""
    def generate(self, rng, level):
        return {"x": rng.randrange(10 ** (level - 1), 10 ** level)}
    def prompt(self, ex):        return f"say {ex['x']}:"
    def reference(self, ex):     return str(ex["x"])
    def check(self, ex, answer): return verdict(answer == str(ex["x"]))
'''

DATA = '''
from evalkit import task, verdict

@task(name="words", version=1, target=0.5, tags=("text",))
class Words:
    """A data task: no levels."""
    def rows(self):
        return [{"w": w} for w in "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()]
    def prompt(self, ex):        return f"echo {ex['w']}:"
    def reference(self, ex):     return ex["w"]
    def check(self, ex, answer): return verdict(answer == ex["w"])
'''

HALF = '''
def answer(prompt):
    """Right on the prompts whose number (or word length) is even: about half."""
    word = prompt.split()[-1].rstrip(":")
    value = int(word) if word.isdigit() else len(word)
    return word if value % 2 == 0 else "no"


def crashy(prompt):
    raise RuntimeError("model crashed")
'''

CRASH_LINE = next(i for i, line in enumerate(HALF.splitlines(), 1) if "raise RuntimeError" in line)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project: pyproject.toml with [tool.evalkit], tasks/ with a levelled and a data task, a model module."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "count.py").write_text(LEVELLED)
    (tmp_path / "tasks" / "words.py").write_text(DATA)
    (tmp_path / "half.py").write_text(HALF)
    (tmp_path / "pyproject.toml").write_text('[tool.evalkit]\ntasks = ["tasks"]\nreports = "reports"\n')
    return tmp_path


def only_run(folder: Path) -> Path:
    [run] = [p for p in folder.iterdir() if p.is_dir()]
    return run


# -- 1. the README's commands run as written ----------------------------------------------------------------

def test_the_readme_says_to_activate_the_venv_before_its_first_bare_evalkit_command():
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    first_bare = min(text.index(line) for block in blocks for line in block.splitlines()
                     if line.startswith("evalkit "))
    assert ". .venv/bin/activate" in text[:first_bare]


# -- 2. the project's gate config by default ----------------------------------------------------------------

def test_gate_uses_the_projects_gate_yaml_unless_told_otherwise(run_cli, project):
    out = run_cli("run", "--model", "python:half:answer", "count", "-n", "40", cwd=project)
    assert out.returncode in (0, 1), out.stdout + out.stderr  # about half right, against a 50 % target
    run = only_run(project / "reports")
    rate = load_record(run).rate("count")
    (project / "gate.yaml").write_text("tasks:\n  count: {min_pass_rate: 0.99}\n")
    by_yaml = run_cli("gate", str(run), cwd=project)
    assert by_yaml.returncode == 1 and "gate.yaml" in by_yaml.stdout, by_yaml.stdout + by_yaml.stderr
    by_targets = run_cli("gate", str(run), "--task-targets", cwd=project)
    assert by_targets.returncode == (0 if rate >= 0.5 else 1), by_targets.stdout + by_targets.stderr
    assert "rules: task targets" in by_targets.stdout
    # [tool.evalkit.gate] comes first, as the help says; --config overrides both.
    (project / "pyproject.toml").write_text('[tool.evalkit]\ntasks = ["tasks"]\nreports = "reports"\n'
                                            '[tool.evalkit.gate.tasks.count]\nmin_pass_rate = 0.01\n')
    by_toml = run_cli("gate", str(run), cwd=project)
    assert by_toml.returncode == 0 and "[tool.evalkit.gate]" in by_toml.stdout, by_toml.stdout + by_toml.stderr
    (project / "strict.yaml").write_text("tasks:\n  count: {min_pass_rate: 0.999}\n")
    assert run_cli("gate", str(run), "--config", "strict.yaml", cwd=project).returncode == 1


def test_the_finetune_hint_names_the_projects_gate_config(project, monkeypatch):
    from evalkit.cli.train_cmds import gate_command

    monkeypatch.chdir(project)
    assert gate_command(project / "reports" / "x") == "evalkit gate reports/x  (rules: the recipe's targets)"
    (project / "gate.yaml").write_text("tasks:\n  count: {min_pass_rate: 0.9}\n")
    assert gate_command(project / "reports" / "x") == "evalkit gate reports/x --config gate.yaml"
    # A recipe that names its gate (`gate:`) is pointed at it, whatever the project's default.
    (project / "gate-small.yaml").write_text("tasks:\n  count: {min_pass_rate: 0.5}\n")
    assert (gate_command(project / "reports" / "x", project / "gate-small.yaml")
            == "evalkit gate reports/x --config gate-small.yaml")


def test_a_recipes_gate_must_exist(tmp_path):
    from evalkit.errors import ConfigError
    from evalkit.train.recipe import load_recipe

    text = (FIXTURES / "ft" / "quick.yaml").read_text()
    (tmp_path / "recipe.yaml").write_text(text + "gate: ../nowhere.yaml\n")
    with pytest.raises(ConfigError, match="recipe.yaml: field 'gate': gate config not found"):
        load_recipe(tmp_path / "recipe.yaml")
    (tmp_path / "gate.yaml").write_text("tasks:\n  initials: {min_pass_rate: 0.5}\n")
    (tmp_path / "recipe.yaml").write_text(text + "gate: gate.yaml\n")
    assert load_recipe(tmp_path / "recipe.yaml").gate == tmp_path / "gate.yaml"


# -- 3. user mistakes are exit 2, with what and where --------------------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["--model", "oracle", "count", "--level", "9"], "task 'count' has no level 9; its levels are 1–3"),
    (["--model", "python:no_such_module_xyz:answer", "count"], "no module named 'no_such_module_xyz'"),
    (["--model", "python:half:nothing", "count"], "half has no callable 'nothing'"),
    (["--model", "python:half:crashy", "count"], f"raised RuntimeError: model crashed (half.py, line {CRASH_LINE})"),
])
def test_user_mistakes_exit_2_not_internal_error(run_cli, project, args, says):
    out = run_cli("run", *args, "-n", "4", cwd=project)
    assert out.returncode == 2, out.stdout + out.stderr
    assert says in out.stderr.replace("\n", " ") and "internal error" not in out.stderr
    assert "Traceback" not in out.stderr


# -- 4. --level over several tasks --------------------------------------------------------------------------

def test_a_level_applies_to_the_tasks_that_have_levels(run_cli, project):
    out = run_cli("run", "--model", "oracle", "--level", "2", "-n", "6", cwd=project)
    assert out.returncode == 0, out.stdout + out.stderr
    run = only_run(project / "reports")
    record = load_record(run)
    assert {s["level"] for s in record.samples() if s["task"] == "count"} == {2}
    assert record.task("words")["n_samples"] == 6 and record.task("count")["n_samples"] == 6


def test_level_all_shares_the_examples_out_over_every_level(run_cli, project):
    out = run_cli("run", "--model", "oracle", "--level", "all", "-n", "7", "count", "words", cwd=project)
    assert out.returncode == 0, out.stdout + out.stderr
    record = load_record(only_run(project / "reports"))
    levels = [s["level"] for s in record.samples() if s["task"] == "count"]
    assert sorted(levels) == [1, 1, 1, 2, 2, 3, 3]  # 7 over 3 levels: the lower levels take the remainder
    assert record.task("count")["level"] == "all" and set(record.task("count")["per_level"]) == {"1", "2", "3"}
    assert record.task("words")["n_samples"] == 7


# -- 5. one set of figures --------------------------------------------------------------------------------

def test_every_format_shows_the_examples_per_second_the_progress_shows(project):
    import evalkit
    from evalkit.reports import render

    record = evalkit.evaluate(model_spec="oracle", tasks=["count"], n=30, tasks_dir=[project / "tasks"])
    tm = record.task("count")["timings"]
    whole = tm["examples_generated"] / (tm["generate_s"] + tm["check_s"])  # generating and checking
    alone = tm["examples_per_s"]  # generation alone: what the reports used to show
    assert alone > 2 * whole  # the oracle generates at once; the checks take the time
    shown = f"{whole:,.0f}" if whole >= 10 else f"{whole:.2f}"
    for fmt in ("terminal", "markdown", "junit", "html"):
        text = render(record, fmt)
        assert shown in text, fmt
        assert f"{alone:,.0f}" not in text, fmt


def test_a_finetune_reports_its_runs_wall_time_not_its_last_evaluations():
    import evalkit
    from evalkit.reports import render

    data = evalkit.evaluate(model_spec="oracle", tasks=["addition"], n=5, tasks_dir=[TASKS]).data
    data["timings"]["total_s"] = 0.3069
    data["meta"] = {"training": {"wall_s": 612.0, "history": [{"step": 800, "loss": 0.4436, "wall_s": 600.0,
                                                                "rates": {}}]}}
    record = RunRecord(data)
    for fmt in ("terminal", "markdown", "html"):
        text = " ".join(re.sub(r"<[^>]+>", " ", render(record, fmt)).split())  # the words, without HTML tags
        assert re.search(r"training wall( time)? 612 s", text), fmt
        assert "this evaluation 306.9 ms" in text, fmt


def test_the_ci_log_prints_the_loss_the_record_holds():
    """The Trainer logs a step's loss just after that step's evaluation, into the same history entry: the
    evaluation's line waits for it, so the log says what record.json and the report say."""
    from evalkit.train.display import TrainingDisplay

    buf = io.StringIO()
    display = TrainingDisplay(Console(file=buf, width=200, color_system=None), every=3600)
    entry = {"step": 800, "loss": 0.324, "wall_s": 40.0, "all_met": False,
             "rates": {"addition": {"rate": 0.5, "low": 0.4, "high": 0.6, "target": 0.95, "on": "rate",
                                    "met": False}}}
    display.progress(790, 3000, 0.324)
    display.evaluation(entry)
    entry["loss"] = 0.4436  # what trainer.EvaluateAndStop.on_log writes into the history entry
    display.progress(800, 3000, 0.4436)
    display.stop()
    lines = [line for line in buf.getvalue().splitlines() if line.startswith("step")]
    assert lines == ["step    800 loss 0.4436 · 40s · addition 50.0% [40.0%–60.0%] below 95%"]


def test_the_live_display_never_shows_step_0_of_0():
    from evalkit.train.display import TrainingDisplay

    buf = io.StringIO()
    display = TrainingDisplay(Console(file=buf, width=200, color_system=None, force_terminal=False))
    text = "".join(str(part) for part in display._render().renderables)
    assert "0/0" not in text and "starting" in text


# -- 6. the HTML says what its failing-samples table leaves out ----------------------------------------------

def test_the_html_table_says_it_lists_the_first_failures_of_many(project, monkeypatch):
    import evalkit
    from evalkit.reports import render

    monkeypatch.chdir(project)  # python:half:answer is the project's module

    record = evalkit.evaluate(model_spec="python:half:answer", tasks=["count"], n=200, level=3,
                              tasks_dir=[project / "tasks"], run_dir=project / "run")
    failing = record.task("count")["n_samples"] - record.task("count")["passes"]
    assert failing > 50
    page = render(load_record(project / "run"), "html", max_failures=5)
    assert page.count("<tr data-task=") == 50
    assert f"50 listed · {failing:,} failing in all" in page
    assert f"The table lists 50 of the {failing:,} failing samples: the first 50 of each task" in page
    assert f"{failing:,} failing (50 listed)" in page
    full = render(load_record(project / "run"), "html", verbosity=2)
    assert full.count("<tr data-task=") == failing and "failing in all" not in full


# -- 7. tables at 80 columns ------------------------------------------------------------------------------

def test_tasks_and_reports_fit_80_columns_without_cutting_names(run_cli, tmp_path):
    env_cols = {"COLUMNS": "80"}
    out = run_cli_with(env_cols, "tasks")
    assert out.returncode == 0, out.stderr
    names = ["addition", "countdown", "json_extract", "multiple_choice", "python_functions", "reverse", "sorting"]
    starts = [line.split()[0] for line in out.stdout.splitlines() if line and not line.startswith((" ", "─"))]
    assert [n for n in starts if n in names] == names  # each name whole, at the start of its row
    assert "…" not in out.stdout and max(map(len, out.stdout.splitlines())) <= 80
    wide = run_cli_with({"COLUMNS": "160"}, "tasks")
    flat = " ".join(wide.stdout.split())
    assert "Reach a target from level+2 numbers with + - * / ( ), using each given number at most once." in flat
    run = run_cli_with(env_cols, "run", "--model", "oracle", "-n", "5", "--reports-dir", str(tmp_path))
    assert run.returncode == 0, run.stderr
    table = run.stdout.split("\n\n")[0]
    assert "…" not in table and "errors, timeouts" in " ".join(table.split())
    assert max(map(len, table.splitlines())) <= 80
    folder = str(only_run(tmp_path))
    compared = run_cli_with(env_cols, "compare", folder, folder)
    assert compared.returncode == 0, compared.stderr
    assert "…" not in compared.stdout and max(map(len, compared.stdout.splitlines())) <= 80
    assert compared.stdout.count("significant") == 7 and "python_functions" in compared.stdout


def run_cli_with(env: dict[str, str], *args: str, cwd: Path | None = None):
    """run_cli with some environment variables set for the subprocess only."""
    full = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", **env}
    return subprocess.run([sys.executable, "-m", "evalkit", *args], cwd=cwd or REPO, env=full, capture_output=True,
                          text=True, timeout=300)


# -- 8. one way to name tasks, and tags that say what they matched ------------------------------------------

def test_run_takes_task_names_as_tasks_and_selftest_do(run_cli, project):
    out = run_cli("run", "--model", "oracle", "count", "-n", "3", cwd=project)
    assert out.returncode == 0, out.stdout + out.stderr
    assert [t["name"] for t in load_record(only_run(project / "reports")).tasks] == ["count"]


def test_tasks_quiet_prints_only_names(run_cli, project):
    out = run_cli("tasks", "-q", cwd=project)
    assert out.returncode == 0 and out.stdout.split() == ["count", "words"], out.stdout + out.stderr


def test_a_tag_that_matches_nothing_is_named(run_cli, project):
    unknown = run_cli("run", "--model", "oracle", "--tag", "number", cwd=project)
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
    assert "no task has tag 'number'; did you mean 'numbers'?" in unknown.stderr
    disjoint = run_cli("run", "--model", "oracle", "words", "--tag", "numbers", cwd=project)
    assert disjoint.returncode == 5 and "'words'" in disjoint.stderr and "'numbers'" in disjoint.stderr


# -- 9. warnings as one line, once -----------------------------------------------------------------------

def test_a_warning_is_one_plain_line_shown_once(run_cli, project):
    (project / "tasks" / "noisy.py").write_text(
        "import warnings\n" + LEVELLED.replace('"count"', '"noisy"').replace(
            "        return {", "        warnings.warn('this generator is deprecated')\n        return {"))
    out = run_cli("show", "noisy", "-n", "3", cwd=project)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr.count("this generator is deprecated") == 1
    assert "warning: this generator is deprecated" in out.stderr and "warnings.warn(" not in out.stderr


# -- 10. init: documented, and no `cd .` ---------------------------------------------------------------

def test_init_is_documented_and_says_the_next_step_from_where_you_are(run_cli, tmp_path):
    assert "evalkit init" in (REPO / "README.md").read_text()
    assert "evalkit init" in (REPO / "docs" / "WRITING_TASKS.md").read_text()
    here = run_cli("init", cwd=tmp_path)
    assert here.returncode == 0 and "next: evalkit selftest" in here.stdout and "cd ." not in here.stdout
    there = run_cli("init", "sub", cwd=tmp_path)
    assert "next: cd sub && evalkit selftest" in there.stdout


# -- 11. leftovers ------------------------------------------------------------------------------------------

def test_a_run_leaves_no_lock_file_and_a_second_writer_is_still_refused(tmp_path):
    from evalkit.run.journal import Journal, JournalLocked

    path = tmp_path / "journal.jsonl"
    with Journal(path):
        assert (tmp_path / "journal.jsonl.lock").exists()
        with pytest.raises(JournalLocked):
            Journal(path).__enter__()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.jsonl"]
    with Journal(path):  # and the next writer takes it again
        pass
    assert not (tmp_path / "journal.jsonl.lock").exists()


def test_the_readme_names_evaluation_folders_as_they_are_written():
    text = (REPO / "README.md").read_text()
    assert "evals/step-000100/" in text and "evals/step-N/" not in text


def test_a_broken_task_file_blocks_only_the_commands_that_need_it(run_cli, project):
    (project / "tasks" / "typo.yaml").write_text("name: typo\nprompt: 'x {a}'\ndata: nope.jsonl\ncheck: exact\n"
                                                 "generation: {max_new_tokens: lots}\n")
    one = run_cli("run", "--model", "oracle", "count", "-n", "3", cwd=project)
    assert one.returncode == 0, one.stdout + one.stderr
    assert run_cli("show", "words", "-n", "1", cwd=project).returncode == 0
    every = run_cli("run", "--model", "oracle", "-n", "3", cwd=project)
    assert every.returncode == 2 and "typo.yaml" in every.stderr and "max_new_tokens" in every.stderr
    named = run_cli("run", "--model", "oracle", "typo", "-n", "3", cwd=project)
    assert named.returncode == 2 and "typo.yaml" in named.stderr
    listed = run_cli("tasks", cwd=project)
    assert listed.returncode == 2 and "BROKEN" in listed.stdout and "typo.yaml" in listed.stderr
    assert "count" in listed.stdout and "words" in listed.stdout
    as_json = json.loads(run_cli("tasks", "--json", cwd=project).stdout)
    assert [(t["name"], t["kind"]) for t in as_json] == [("count", "generator"), ("words", "data"),
                                                          ("typo", "broken")]


# -- 12. progress in a CI log -----------------------------------------------------------------------------

def test_a_log_gets_progress_lines_with_rate_and_eta(run_cli, project):
    out = run_cli_with({"EVALKIT_PROGRESS_SECONDS": "0"}, "run", "--model", "python:half:answer",
                       "count", "-n", "40", "--batch-size", "8", cwd=project)
    assert out.returncode in (0, 1), out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("count: ")]
    assert len(lines) >= 5, out.stderr  # a line per batch of 8 at a 0 s interval, and the last
    assert re.fullmatch(r"count: 8/40 \(20%\) · [\d,.]+ ex/s · ETA \d+:\d\d:\d\d", lines[0]), lines[0]
    assert re.fullmatch(r"count: 40/40 \(100%\) · [\d,.]+ ex/s · done in \d+:\d\d:\d\d", lines[-1]), lines[-1]
    assert "━" not in out.stderr  # no progress bar drawn into the log


def test_a_finetune_log_says_what_its_record_says(tmp_path):
    """A real (tiny) fine-tune with its output in a log: each evaluation's line carries the loss record.json
    holds for that step, progress lines come between evaluations, the folders are evals/step-000010/..."""
    pytest.importorskip("transformers")
    ft = Path(__file__).parent / "fixtures" / "ft"
    for name in ("tasks.py", "data.jsonl"):
        (tmp_path / name).write_text((ft / name).read_text())
    (tmp_path / "recipe.yaml").write_text((ft / "quick.yaml").read_text().replace("max_steps: 120", "max_steps: 20"))
    out = run_cli_with({"EVALKIT_PROGRESS_SECONDS": "0"}, "finetune", "recipe.yaml", "--tasks-dir", "tasks.py",
                       "--output", "out", cwd=tmp_path)
    assert out.returncode in (0, 1), out.stdout[-2000:] + out.stderr[-3000:]
    history = load_record(tmp_path / "out").data["meta"]["training"]["history"]
    logged = dict(re.findall(r"^step +(\d+) loss (\S+) ·", out.stderr, re.M))
    assert {int(step): loss for step, loss in logged.items()} == {
        h["step"]: f"{h['loss']:.4g}" for h in history if h.get("loss") is not None}
    assert len(logged) >= 2
    assert re.search(r"^step 15/20 · loss \S+ \(step 10\) · [\d.]+ steps/s · ETA \d+:\d\d to the step budget$",
                     out.stderr, re.M), out.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "evals").iterdir()) == [
        f"step-{h['step']:06d}" for h in history]
    assert "gate it:     evalkit gate out  (rules: the recipe's targets)" in out.stdout


def test_the_eta_is_to_whichever_budget_ends_first():
    """A 20-minute recipe with 1,500 steps at 0.2 steps/s ends by the clock: the line's ETA says so."""
    import io
    import time

    from rich.console import Console

    from evalkit.train.display import TrainingDisplay

    buf = io.StringIO()
    display = TrainingDisplay(Console(file=buf, width=200), every=0)
    display.max_minutes = 0.5  # 30 s of budget, 10 of it spent
    display.started = time.monotonic() - 10
    display.progress(0, 1_000_000, None)
    time.sleep(0.05)
    display.progress(1, 1_000_000, None)  # ~20 steps/s: a million steps would take ~14 hours
    line = buf.getvalue().strip().splitlines()[-1]
    assert re.search(r"ETA 0:(19|20) to the time budget$", line), line
    display.max_minutes = None
    display.progress(2, 1_000_000, None)
    assert buf.getvalue().strip().splitlines()[-1].endswith("to the step budget")
