"""The fine-tuning loop: recipes, data filters, contamination guard, stop at target, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIXTURES

from evalkit import ConfigError
from evalkit.discovery.registry import discover
from evalkit.train.recipe import load_recipe

FT = FIXTURES / "ft"
pytest.importorskip("transformers")


def recipe_file(tmp_path: Path, extra: str = "", base: str = "quick.yaml", **replace: str) -> Path:
    text = (FT / base).read_text()
    for old, new in replace.items():
        text = text.replace(old.replace("_", " ") if old not in text else old, new)
    path = tmp_path / "recipe.yaml"
    path.write_text(text + extra)
    for name in ("tasks.py", "data.jsonl"):
        shutil.copy(FT / name, tmp_path / name)
    return path


def registry():
    return discover([FT / "tasks.py"], entry_points=False)


@pytest.mark.parametrize("edit,field,expect", [
    (("lr: 0.003", "lr: fast"), "train.lr", "expected number"),
    (("max_steps: 120", "max_steps: 0"), "budget.max_steps", ">= 1"),
    (("n: 40", "n: 40\n  colour: red"), "eval.colour", "unknown field"),
    (("threads: 1}", "threads: 1, bf16: yes please}"), "train.bf16", "expected one of true, false, 'auto'"),
    (("{target: 0.9}", "{target: 0.9, on: lower_bound}"), "eval.tasks.initials.True", "unknown field"),
    (("base: scratch", "base: ./no-such-model"), "model.base", "not a local Hugging Face model folder"),
    (("- task: initials", "- jsonl: missing.jsonl"), "data.sources.0.jsonl", "data file not found"),
])
def test_recipe_errors_name_the_field(tmp_path, edit, field, expect):
    path = tmp_path / "r.yaml"
    path.write_text((FT / "quick.yaml").read_text().replace(*edit))
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert f"field '{field}'" in str(info.value) and expect in str(info.value) and "r.yaml" in str(info.value)


def test_filters_mixture_and_contamination(tmp_path):
    from evalkit.train.data import build_training_rows, tokenize_rows

    reg = registry()
    eval_examples = reg.get("initials").examples("eval", n=40)
    leaked = eval_examples[0].prompt
    (tmp_path / "data.jsonl").write_text((FT / "data.jsonl").read_text()
                                         + json.dumps({"prompt": leaked, "completion": "zz"}) + "\n")
    path = tmp_path / "r.yaml"
    path.write_text((FT / "quick.yaml").read_text().replace(
        "    - task: initials\n      n: 400\n",
        "    - task: initials\n      n: 400\n      weight: 3\n    - jsonl: data.jsonl\n      weight: 1\n"))
    recipe = load_recipe(path)
    rows, report = build_training_rows(recipe, reg, eval_examples)
    r = report.to_dict()
    assert r["removed"]["malformed"] == {"data": 2}
    assert r["removed"]["exact duplicate"] == {"data": 1}
    assert r["removed"]["near duplicate"] == {"data": 1}  # "ZAP :" == "zap:" after normalising
    assert r["removed"]["contamination (eval overlap)"] == {"data": 1}
    assert r["contamination_found"] == 1 and r["contamination_left"] == 0
    assert not {row.prompt for row in rows} & {e.prompt for e in eval_examples}
    assert len(rows) == 2000 and 0.7 < r["drawn"]["initials"] / 2000 < 0.8  # weights 3:1
    with pytest.raises(ConfigError, match="match eval examples"):
        path.write_text(path.read_text().replace("  sources:", "  contamination: fail\n  sources:"))
        build_training_rows(load_recipe(path), reg, eval_examples)
    from evalkit.models.tiny import build_char_tokenizer

    tok = build_char_tokenizer()
    [item] = tokenize_rows(rows[:1], tok)
    prompt_len = len(tok(rows[0].prompt)["input_ids"])
    assert item["labels"][:prompt_len] == [-100] * prompt_len
    assert item["labels"][prompt_len:] == item["input_ids"][prompt_len:]
    assert item["input_ids"][-1] == tok.eos_token_id


def test_contamination_guard_drops_reformatted_eval_prompts_not_other_problems(tmp_path):
    """The guard compares prompts in `normalize_prompt` form, the form `evalkit.overlap` reports:
    spacing, case and Unicode form are ignored, punctuation is not (`12+34=` is not `12*34=`)."""
    from evalkit import overlap
    from evalkit.core.example import Example
    from evalkit.train.data import build_training_rows

    reg = registry()
    eval_examples = reg.get("initials").examples("eval", n=40)
    leaked = eval_examples[0].prompt  # e.g. "bal:"
    eval_examples = [*eval_examples, Example("arith", "arith", "eval", {}, "12+34=")]
    rows = [{"prompt": "  " + leaked.upper() + "\n", "completion": "zz"},  # a reformatted copy: dropped
            {"prompt": "\uff11\uff12+\uff13\uff14=", "completion": "46"},  # full-width "12+34=": dropped
            {"prompt": leaked.replace(":", ";"), "completion": "yy"},  # another prompt: kept
            {"prompt": "12*34=", "completion": "408"}]  # another problem: kept
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "r.yaml"
    path.write_text((FT / "quick.yaml").read_text().replace(
        "    - task: initials\n      n: 400\n", "    - jsonl: data.jsonl\n").replace("size: 2000", "size: 20"))
    kept, report = build_training_rows(load_recipe(path), reg, eval_examples)
    assert {r.prompt for r in kept} == {leaked.replace(":", ";"), "12*34="}
    assert report.to_dict()["removed"]["contamination (eval overlap)"] == {"data": 2}
    as_examples = [Example(str(i), "x", "train", {}, r["prompt"]) for i, r in enumerate(rows)]
    assert len(overlap(as_examples, eval_examples).prompts) == 2  # what overlap() reports is what was dropped


@pytest.mark.parametrize("setting,native,bf16,warns", [
    ("auto", True, True, False), ("auto", False, False, False),  # auto: whatever the device does natively
    (True, True, True, False), (True, False, True, True),  # true is obeyed, and warned where only emulated
    (False, True, False, False), (None, True, False, False),  # false, and the default (false)
])
def test_bf16_setting_resolves_against_the_device(setting, native, bf16, warns):
    from evalkit.train.precision import resolve

    p = resolve(setting, native=native, device="CPU")
    assert p.bf16 is bf16 and (p.warning() is not None) is warns


@pytest.mark.parametrize("setting,expect", [("auto", False), ("true", True)])
def test_bf16_reaches_the_trainer_and_the_record(tmp_path, monkeypatch, setting, expect):
    """On a device without native bfloat16 (made so here), `auto` trains in fp32 and `true` in bf16 with a
    warning; the record says which, and why."""
    import warnings

    from evalkit.run.record import load_record
    from evalkit.train import finetune, precision
    from evalkit.train.common import training_arguments

    monkeypatch.setattr(precision, "native_bf16", lambda: (False, "CPU"))
    path = recipe_file(tmp_path, **{"threads: 1}": f"threads: 1, bf16: {setting}}}"})
    assert training_arguments(load_recipe(path), tmp_path / "args", 1).bf16 is expect
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        finetune(path, output=tmp_path / "out", registry=registry(), max_steps=2)
    said = [str(w.message) for w in caught if "bfloat16" in str(w.message)]
    assert len(said) == (1 if expect else 0), said
    assert not said or "train.bf16: true on a CPU without native bfloat16" in said[0]
    meta = load_record(tmp_path / "out").data["meta"]["training"]["precision"]
    assert meta == {"bf16": expect, "setting": True if setting == "true" else "auto", "native": False,
                    "device": "CPU"}


def _history(output: Path) -> list[tuple]:
    record = json.loads((output / "record.json").read_text())
    return [(h["step"], h["loss"] and round(h["loss"], 4), {k: v["rate"] for k, v in h["rates"].items()})
            for h in record["meta"]["training"]["history"]]


def test_trains_until_target_then_gate_passes(tmp_path, run_cli):
    from evalkit.run.record import load_record
    from evalkit.train import finetune

    path = recipe_file(tmp_path)
    result = finetune(path, output=tmp_path / "out", registry=registry())
    assert result.targets_met and result.exit_code == 0, result
    assert "every target met on 2 consecutive" in result.stopped_because
    record = load_record(tmp_path / "out")
    history = record.data["meta"]["training"]["history"]
    assert history[0]["step"] == 0 and history[-1]["step"] < 120  # stopped early
    assert history[-1]["all_met"] and history[-2]["all_met"]
    assert record.rate("initials") >= 0.9
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "report.html").is_file()
    for h in history:  # one run record per evaluation
        assert load_record(tmp_path / "out" / h["record"]).run_id.endswith(f"step-{h['step']:06d}")
    # The exported best model is a plain HF folder: evaluate it again from disk, and gate the record.
    gate = run_cli("gate", str(tmp_path / "out"), "--tasks-dir", str(FT / "tasks.py"), "--task-targets")
    assert gate.returncode == 0, gate.stdout + gate.stderr
    rerun = run_cli("run", "--model", f"hf:{tmp_path / 'out' / 'model'}", "--task", "initials", "-n", "40",
                    "--tasks-dir", str(FT / "tasks.py"), "--reports-dir", str(tmp_path / "r"))
    assert rerun.returncode == 0, rerun.stderr
    assert load_record(next((tmp_path / "r").iterdir())).rate("initials") == record.rate("initials")


def test_budget_ends_with_exit_1_and_names_missed_targets(tmp_path, run_cli):
    path = recipe_file(tmp_path, **{"max_steps: 120": "max_steps: 20",
                                    "{target: 0.9}": "{target: 1.0, use_lower_bound: true}"})
    out = run_cli("finetune", str(path), "--output", str(tmp_path / "out"), "--tasks-dir", str(FT / "tasks.py"))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "target not reached" in out.stdout and "step budget of 20 steps used" in out.stdout
    assert "initials: 95% lower bound" in out.stdout and "short by" in out.stdout
    again = run_cli("finetune", str(path), "--output", str(tmp_path / "out"), "--tasks-dir", str(FT / "tasks.py"))
    assert again.returncode == 2 and "--resume" in again.stderr


def _run_until(args: list[str], env: dict, predicate, timeout: float = 300) -> None:
    proc = subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None and not predicate():
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_sigkill_mid_run_and_mid_save_then_resume_matches_uninterrupted(tmp_path):
    path = recipe_file(tmp_path, **{"{target: 0.9}": "{target: 1.0}", "confirm: 2": "confirm: 3"})
    env = {**os.environ, "COLUMNS": "120"}
    base = [sys.executable, "-m", "evalkit", "finetune", str(path), "--tasks-dir", str(FT / "tasks.py"),
            "--max-steps", "60"]
    # Uninterrupted reference.
    subprocess.run(base + ["--output", str(tmp_path / "a")], env=env, capture_output=True, check=False)
    # Killed mid-run, once checkpoint-20 is complete.
    b = tmp_path / "b"
    _run_until(base + ["--output", str(b)], env, (b / "checkpoints" / "checkpoint-20").is_dir)
    assert not (b / "record.json").exists()
    # Resumed, and killed again in the middle of saving checkpoint-40 (after the weights, before the rename).
    fault = {**env, "EVALKIT_FAULT": "kill-during-save:40"}
    killed = subprocess.run(base + ["--output", str(b), "--resume"], env=fault, capture_output=True, check=False)
    assert killed.returncode == -signal.SIGKILL
    staged = b / "checkpoints" / ".staging" / "checkpoint-40"  # the Trainer's output_dir, its step 40
    assert (staged / "model.safetensors").is_file() and not (b / "checkpoints" / "checkpoint-40").exists()
    # Resumed again: the partial save is ignored, training goes on from checkpoint-30.
    done = subprocess.run(base + ["--output", str(b), "--resume"], env=env, capture_output=True, text=True,
                          check=False)
    assert done.returncode in (0, 1), done.stderr
    assert "resumed from checkpoint-30" in done.stderr
    assert not list((b / "checkpoints").glob(".staging*"))
    assert _history(tmp_path / "a") == _history(b)


@pytest.mark.slow
def test_torchrun_two_processes_data_parallel(tmp_path):
    """The same recipe under `torchrun --nproc_per_node 2` (gloo, CPU): one evaluation per step, rank 0. With the
    pass-rate signals on (evaluations every 5 steps once near the target, the learning-rate anneal), every rank
    follows rank 0's schedule: a rank that evaluated on another schedule would hang the collectives. Adaptive
    evaluations decide the signal's thresholds (marks) on rank 0, and the other ranks act on those decisions."""
    path = recipe_file(tmp_path, **{"every: 10": "every: 10\n  every_near: 5\n  near: 0.9\n  adaptive: true",
                                    "threads: 1}": "threads: 1, anneal: {at: 0.1, steps: 20, to: 0.1}}"})
    torchrun = Path(sys.executable).with_name("torchrun")
    out = subprocess.run([str(torchrun), "--nproc_per_node", "2", "-m", "evalkit", "finetune", str(path),
                          "--output", str(tmp_path / "out"), "--tasks-dir", str(FT / "tasks.py")],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert out.stdout.count("target reached") == 1  # printed once, by rank 0
    record = json.loads((tmp_path / "out" / "record.json").read_text())
    steps = [h["step"] for h in record["meta"]["training"]["history"]]
    assert steps == sorted(set(steps)) and steps[0] == 0
    assert any(s % 10 for s in steps), steps  # every_near's cadence (5) was followed on both ranks
    assert record["tasks"][0]["rate"] >= 0.9
    marked = [h["rates"]["initials"].get("marks") for h in record["meta"]["training"]["history"]]
    assert all([x["at"] for x in m] == [0.09] for m in marked), marked  # anneal.at x target (0.9 - near is 0)
