"""The real-model path as a user walks it (slow): SmolLM2-135M-Instruct from the cache, evaluated in chat
mode through the CLI, and the shipped LoRA recipe run for a few steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def test_chat_run_of_the_shipped_tasks_has_no_answer_cut_by_a_stop_string(smollm2, run_cli, tmp_path):
    """The issue's check: `--chat` on addition and json_extract gives replies, not empty strings cut at a
    leading newline; the record says chat mode and names the cached folder's identity."""
    result = run_cli("run", "--model", "hf:smollm2-135m-instruct", "--chat", "--task", "addition",
                     "--task", "json_extract", "-n", "12", "--reports-dir", str(tmp_path), timeout=900)
    assert result.returncode in (0, 1), result.stderr  # 1: a 135M model misses the targets; never 2 or 3
    record = json.loads(next(tmp_path.glob("*/record.json")).read_text())
    assert record["settings"]["chat"] is True
    assert {t["name"]: t["n_samples"] for t in record["tasks"]} == {"addition": 12, "json_extract": 12}
    samples = [json.loads(line) for line in next(tmp_path.glob("*/samples.jsonl")).read_text().splitlines()]
    assert len(samples) == 24
    assert all(s["output"].strip() for s in samples), [s["output"] for s in samples if not s["output"].strip()]
    assert all(s["messages"][-1]["role"] == "user" for s in samples)


def test_the_smollm2_recipe_trains_and_evaluates_in_chat_form(smollm2, tmp_path):
    """finetune/smollm2-addition.yaml as shipped (its base resolved from the cache), cut to a few steps: LoRA
    trains, the evaluations run in chat mode, the output folder holds a loadable model."""
    from evalkit.run.record import load_record
    from evalkit.train import finetune

    result = finetune(REPO / "finetune" / "smollm2-addition.yaml", output=tmp_path / "out", max_steps=4,
                      overrides={"eval": {"every": 2, "n": 8}, "data": {"size": 200, "sources": [
                          {"task": "addition", "levels": {"2": 1.0}, "n": 200}]}})
    record = load_record(tmp_path / "out")
    history = record.data["meta"]["training"]["history"]
    assert [h["step"] for h in history] == [0, 2, 4], result
    assert result.stopped_because == "step budget of 4 steps used", result
    for h in history:
        assert load_record(tmp_path / "out" / h["record"]).data["settings"]["chat"] is True
    model = Path(tmp_path / "out" / "model")
    assert (model / "config.json").is_file() and (model / "tokenizer.json").is_file()
