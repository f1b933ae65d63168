"""The loop acting on the checker's signal: evaluation cadence near the target (eval.every_near) and a learning
rate that anneals once the pass rate moves (train.anneal), on real Trainer runs of the quick recipe."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES

from evalkit import ConfigError
from evalkit.discovery.registry import discover
from evalkit.train.recipe import load_recipe
from evalkit.train.signal import anneal_start, due, from_values, lr_scale, marks, reached, to_values

FT = FIXTURES / "ft"
pytest.importorskip("transformers")


def recipe_file(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    text = (FT / "quick.yaml").read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    shutil.copy(FT / "tasks.py", tmp_path / "tasks.py")
    return path


def entry(step: int, rate: float, target: float = 0.9) -> dict:
    return {"step": step, "rates": {"initials": {"rate": rate, "target": target}}}


def test_cadence_is_every_far_from_the_target_and_every_near_close_to_it(tmp_path):
    recipe = load_recipe(recipe_file(tmp_path, ("every: 10", "every: 100\n  every_near: 25\n  near: 0.1")))
    assert recipe.eval_every == 100 and recipe.eval_every_near == 25
    due_at = lambda history: [s for s in range(1, 201) if due(recipe, history, s)]  # noqa: E731
    assert due_at([]) == [100, 200]
    assert due_at([entry(0, 0.0)]) == [100, 200]                    # far below 90 %
    assert due_at([entry(0, 0.79)]) == [100, 200]                   # 11 points below: not near
    assert due_at([entry(0, 0.81)]) == [25, 50, 75, 100, 125, 150, 175, 200]  # within 10 points
    assert due_at([entry(0, 0.95)]) == [25, 50, 75, 100, 125, 150, 175, 200]  # above the target
    assert due_at([entry(0, 0.95), entry(25, 0.5)]) == [100, 200]   # the last evaluation decides
    plain = load_recipe(recipe_file(tmp_path, ("every: 10", "every: 100")))
    assert [s for s in range(1, 201) if due(plain, [entry(0, 0.95)], s)] == [100, 200]


def test_anneal_follows_a_cosine_from_the_first_evaluation_that_reaches_at(tmp_path):
    recipe = load_recipe(recipe_file(tmp_path, ("warmup_steps: 5,", "warmup_steps: 5, anneal: {at: 0.5, steps: 100, "
                                                "to: 0.2},")))
    history = [entry(0, 0.1), entry(10, 0.44), entry(20, 0.46), entry(30, 0.2)]  # 0.46 >= 0.5 x 0.9 = 0.45
    assert anneal_start(recipe, history[:2]) is None and anneal_start(recipe, history) == 20
    assert lr_scale(recipe, history[:2], 500) == 1.0
    assert lr_scale(recipe, history, 20) == 1.0
    assert lr_scale(recipe, history, 70) == pytest.approx((1 + 0.2) / 2)  # half way: the cosine's midpoint
    assert lr_scale(recipe, history, 120) == pytest.approx(0.2) and lr_scale(recipe, history, 10_000) == 0.2
    scales = [lr_scale(recipe, history, s) for s in range(20, 130)]
    assert all(a >= b for a, b in zip(scales, scales[1:]))
    assert lr_scale(load_recipe(recipe_file(tmp_path)), history, 70) == 1.0  # no anneal: the schedule as is


def test_an_adaptive_evaluation_decides_the_marks_the_signal_reads(tmp_path):
    """The signal's thresholds (anneal.at x target, target - near) are marks an adaptive evaluation decides; where
    it decided one, the signal reads that decision, not the rate of the few samples it took to decide the target."""
    recipe = load_recipe(recipe_file(tmp_path, ("every: 10", "every: 100\n  every_near: 25\n  near: 0.1"),
                                     ("warmup_steps: 5,", "warmup_steps: 5, anneal: {at: 0.5, steps: 100, to: 0.2},")))
    assert marks(recipe, 0.9) == [0.45, 0.8]
    assert marks(load_recipe(recipe_file(tmp_path)), 0.9) == []  # no anneal, no every_near: nothing to decide

    def said(rate: float, first: str | None, second: str | None) -> dict:
        return {"rate": rate, "target": 0.9,
                "marks": [{"at": 0.45, "decision": first}, {"at": 0.8, "decision": second}]}

    assert reached(said(0.25, "above", "below"), 0.45) and not reached(said(0.25, "above", "below"), 0.8)
    assert not reached(said(0.5, "below", "below"), 0.45)   # 4 of 8 samples, but decided below
    assert reached(said(0.5, None, None), 0.45)              # undecided at the cap: the measured rate
    history = [{"step": 0, "rates": {"initials": said(0.25, "below", "below")}},
               {"step": 100, "rates": {"initials": said(0.25, "above", "below")}}]  # 2 of 8, but above 45 %
    assert anneal_start(recipe, history) == 100
    assert [s for s in range(1, 201) if due(recipe, history, s)] == [100, 200]
    near = [*history, {"step": 200, "rates": {"initials": said(0.625, "above", "above")}}]
    assert [s for s in range(201, 301) if due(recipe, near, s)] == [225, 250, 275, 300]
    # What rank 0 broadcasts to the other ranks carries the decisions: they follow the same schedule.
    targets = {"initials": 0.9}
    for entry in near:
        back = from_values(recipe, targets, to_values(recipe, targets, entry["rates"]))
        assert back == entry["rates"]
    assert from_values(recipe, targets, to_values(recipe, targets, {}))["initials"]["marks"][0]["decision"] is None


def test_rise_climbs_until_the_pass_rate_moves_then_the_anneal_starts_from_the_schedule(tmp_path):
    recipe = load_recipe(recipe_file(tmp_path, ("warmup_steps: 5,", "warmup_steps: 5, rise: {to: 3, steps: 200}, "
                                                "anneal: {at: 0.5, steps: 100, to: 0.2},")))
    flat = [entry(0, 0.0), entry(100, 0.1)]
    assert [lr_scale(recipe, flat, s) for s in (0, 50, 100, 200, 300)] == pytest.approx([1.0, 1.5, 2.0, 3.0, 3.0])
    moved = [*flat, entry(150, 0.6)]  # 0.6 >= 0.5 x 0.9: the rise ends at step 150 (at 1 + 2 x 150 / 200 = 2.5)
    assert lr_scale(recipe, moved, 150) == pytest.approx(2.5)
    assert lr_scale(recipe, moved, 151) == pytest.approx(1.0, abs=0.001)  # back to the schedule's rate, then down
    assert lr_scale(recipe, moved, 200) == pytest.approx(0.2 + (1.0 - 0.2) / 2)  # the cosine's midpoint
    assert lr_scale(recipe, moved, 250) == pytest.approx(0.2) == lr_scale(recipe, moved, 5000)
    scales = [lr_scale(recipe, moved, s) for s in range(150, 260)]
    assert all(a >= b for a, b in zip(scales, scales[1:]))


@pytest.mark.parametrize("edit,field,expect", [
    (("every: 10", "every: 10\n  near: 0.1"), "eval.near", "set eval.every_near too"),
    (("every: 10", "every: 10\n  every_near: 0"), "eval.every_near", ">= 1"),
    (("warmup_steps: 5,", "warmup_steps: 5, anneal: {steps: 100},"), "train.anneal.at", "required field is missing"),
    (("warmup_steps: 5,", "warmup_steps: 5, anneal: {at: 0.5, to: 2},"), "train.anneal.to", "<= 1"),
    (("warmup_steps: 5,", "warmup_steps: 5, rise: {to: 2},"), "train.rise", "set train.anneal too"),
    (("warmup_steps: 5,", "warmup_steps: 5, rise: {to: 1}, anneal: {at: 0.5},"), "train.rise.to",
     "less than or equal to the minimum of 1"),
    (("warmup_steps: 5,", "warmup_steps: 5, rise: {steps: 9}, anneal: {at: 0.5},"), "train.rise.to",
     "required field is missing"),
])
def test_recipe_errors_name_the_field(tmp_path, edit, field, expect):
    with pytest.raises(ConfigError) as info:
        load_recipe(recipe_file(tmp_path, edit))
    assert f"field '{field}'" in str(info.value) and expect in str(info.value), str(info.value)


def test_finetune_evaluates_every_near_steps_once_near_the_target(tmp_path):
    from evalkit.run.record import load_record
    from evalkit.train import finetune

    # near: 1.0 makes every rate near its target, so from the first evaluation on the cadence is every_near.
    # The target (a lower bound of 100 %) is never met, so the run goes to its step budget.
    path = recipe_file(tmp_path, ("every: 10", "every: 10\n  every_near: 4\n  near: 1.0"),
                       ("max_steps: 120", "max_steps: 14"), ("{target: 0.9}", "{target: 1.0, use_lower_bound: true}"))
    result = finetune(path, output=tmp_path / "out", registry=discover([FT / "tasks.py"], entry_points=False))
    steps = [h["step"] for h in load_record(tmp_path / "out").data["meta"]["training"]["history"]]
    assert not result.targets_met and steps == [0, 4, 8, 12, 14]  # 14: the last step is always evaluated


def test_the_optimizer_steps_at_the_annealed_rate(tmp_path):
    from transformers import TrainerCallback

    from evalkit.train.common import build_model, prepare
    from evalkit.train.data import build_training_rows
    from evalkit.train.trainer import sft_trainer

    path = recipe_file(tmp_path, ("warmup_steps: 5,", "warmup_steps: 0, anneal: {at: 0.5, steps: 8, to: 0.25},"),
                       ("every: 10", "every: 100"))
    run = prepare(path, output=tmp_path / "out", registry=discover([FT / "tasks.py"], entry_points=False))
    rows, _ = build_training_rows(run.recipe, run.registry, run.eval_examples(), count_tokens=lambda s: len(s) + 1)
    run.model, run.tokenizer = build_model(run.recipe, run.output, rows, resume=False)
    run.state.history.append(entry(0, 0.9))  # as if step 0's evaluation had met the target: anneal from step 0
    seen: list[tuple[int, float, float]] = []

    class Record(TrainerCallback):
        def on_optimizer_step(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
            seen.append((state.global_step + 1, optimizer.param_groups[0]["lr"], lr_scheduler.get_last_lr()[0]))

    trainer = sft_trainer(run, run.model, run.tokenizer, rows, max_steps=12)
    trainer.add_callback(Record())
    trainer.train()
    assert [s for s, _, _ in seen] == list(range(1, 13))
    lr = run.recipe.train["lr"]
    assert all(scheduled == pytest.approx(lr) for _, _, scheduled in seen)  # constant_with_warmup, no warmup
    expected = {1: 0.25 + 0.75 * (1 + math.cos(math.pi / 8)) / 2, 4: (1 + 0.25) / 2, 8: 0.25, 12: 0.25}
    for step, used, _ in seen:
        if step in expected:
            assert used == pytest.approx(lr * expected[step]), step


def test_the_optimizer_steps_at_the_risen_rate_while_the_pass_rate_is_flat(tmp_path):
    from transformers import TrainerCallback

    from evalkit.train.common import build_model, prepare
    from evalkit.train.data import build_training_rows
    from evalkit.train.trainer import sft_trainer

    path = recipe_file(tmp_path, ("warmup_steps: 5,", "warmup_steps: 0, rise: {to: 3, steps: 10}, "
                                  "anneal: {at: 0.5, steps: 8, to: 0.25},"), ("every: 10", "every: 100"))
    run = prepare(path, output=tmp_path / "out", registry=discover([FT / "tasks.py"], entry_points=False))
    rows, _ = build_training_rows(run.recipe, run.registry, run.eval_examples(), count_tokens=lambda s: len(s) + 1)
    run.model, run.tokenizer = build_model(run.recipe, run.output, rows, resume=False)
    run.state.history.append(entry(0, 0.0))  # step 0's evaluation: nothing has moved
    seen: list[tuple[int, float]] = []

    class Record(TrainerCallback):
        def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            seen.append((state.global_step + 1, optimizer.param_groups[0]["lr"]))

    trainer = sft_trainer(run, run.model, run.tokenizer, rows, max_steps=12)
    trainer.add_callback(Record())
    trainer.train()
    lr = run.recipe.train["lr"]
    assert [s for s, _ in seen] == list(range(1, 13))
    for step, used in seen:  # 1 + 2 x step / 10, up to 3
        assert used == pytest.approx(lr * min(3.0, 1 + 2 * step / 10)), step
