"""Verifier-only training: sample filtering, baseline refusal, curriculum, expert iteration, GRPO."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from evalkit import ConfigError, ExitCode
from evalkit.discovery.registry import discover
from evalkit.train.curriculum import Curriculum, LevelRule
from evalkit.train.recipe import load_recipe
from evalkit.train.verify import Baseline, BaselineRefused, build_curriculum, judge_baseline, select_samples

# Checker-only tasks (no reference solver anywhere): the verifier modes need nothing else.
TASKS = textwrap.dedent('''
    from evalkit import task, verdict

    WORDS = [a + b + c for a in "bcdfgh" for b in "aeiou" for c in "lmnrst"]


    @task(name="prefix", target=0.5, levels=(1, 2, 3), default_level=3, max_new_tokens=5)
    class Prefix:
        """'2bat:' -> 'ba': the word's first `level` letters. Checked, never solved."""

        def generate(self, rng, level):
            return {"word": rng.choice(WORDS), "n": level}

        def prompt(self, ex):
            return f"{ex['n']}{ex['word']}:"

        def check(self, ex, answer):
            return verdict(answer == ex["word"][: ex["n"]], f"got {answer[:10]!r}")


    @task(name="anything", target=0.9, max_new_tokens=3)
    class Anything:
        """Every answer passes: a model has nothing to gain here."""

        def generate(self, rng):
            return {"x": rng.randrange(10**6)}

        def prompt(self, ex):
            return f"{ex['x']}?"

        def check(self, ex, answer):
            return verdict(True)
''')

BASE = textwrap.dedent('''
    name: {name}
    seed: 0
    mode: {mode}
    model: {{base: scratch, architecture: llama, hidden: 32, layers: 2, heads: 2, intermediate: 64, max_positions: 32}}
    train: {{batch_size: 32, lr: 0.003, warmup_steps: 5, threads: 1}}
    budget: {{max_steps: 400}}
''')


@pytest.fixture
def project(tmp_path):
    (tmp_path / "tasks.py").write_text(TASKS)
    return tmp_path


def registry(folder: Path):
    return discover([folder / "tasks.py"], entry_points=False)


def write_recipe(folder: Path, body: str, *, name: str = "v", mode: str = "expert_iteration") -> Path:
    path = folder / "recipe.yaml"
    path.write_text(BASE.format(name=name, mode=mode) + textwrap.dedent(body))
    return path


def warm_data(folder: Path, n: int = 600) -> None:
    """A little SFT data for 'prefix' at every level (the checker's answers, written by the test)."""
    task = registry(folder).get("prefix")
    rows = [{"prompt": ex.prompt, "completion": ex.fields["word"][: ex.fields["n"]]}
            for level in (1, 2, 3) for ex in task.examples("train", n=n // 3, seed=1, level=level)]
    (folder / "warm.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


# -- pure pieces ---------------------------------------------------------------------------

def _s(prompt, output, status="PASS", i=0):
    return {"task": "t", "example_id": prompt, "sample_index": i, "prompt": prompt, "output": output,
            "status": status}


def test_select_samples_keeps_only_passing_dedups_and_caps():
    samples = [_s("a:", "x"), _s("a:", "x", i=1), _s("a:", "y", i=2), _s("a:", "z", i=3),  # dup, cap 2
               _s("b:", "q", "FAIL"), _s("b:", "r", "ERROR"), _s("b:", "s", "TIMEOUT"), _s("b:", "t"),
               _s("HELD out", "u")]
    rows, removed = select_samples(samples, cap_per_prompt=2, exclude_prompts={"held out"})
    assert [(r.prompt, r.completion) for r in rows] == [("a:", "x"), ("a:", "y"), ("b:", "t")]
    assert removed == Counter({"failed the checker": 3, "duplicate": 1, "over the per-prompt cap": 1,
                               "held-out prompt": 1})
    assert all(r.source == "t" and r.example_id for r in rows)
    rows, _ = select_samples(samples, cap_per_prompt=1)
    assert Counter(r.prompt for r in rows) == {"a:": 1, "b:": 1, "HELD out": 1}


def test_baseline_refuses_at_zero_and_has_nothing_to_gain_at_hundred():
    low = Baseline("prefix", 3, 64, 8, 0.0, 0.0)
    some = Baseline("other", None, 64, 8, 0.25, 0.05)
    with pytest.raises(BaselineRefused) as info:
        judge_baseline([some, low], "expert iteration", file="r.yaml")
    msg = str(info.value)
    assert "prefix passes none of 64 training prompts with 8 samples each (pass@8 = 0 % at level 3)" in msg
    assert "nothing to reinforce" in msg and "warm_start.steps" in msg and "eval.tasks.prefix.level" in msg
    assert info.value.exit_code == ExitCode.USAGE
    with pytest.raises(BaselineRefused, match=r"curriculum\.prefix\.start"):
        judge_baseline([low], "GRPO", curriculum=True)
    assert judge_baseline([some], "GRPO") is None
    full = [Baseline("a", None, 10, 4, 1.0, 1.0), Baseline("b", 2, 5, 4, 1.0, 1.0)]
    assert judge_baseline(full, "GRPO") == ("nothing to gain: all 60 completions sampled on training prompts "
                                            "already pass the checkers (pass@k 100 %); no GRPO training done")


def test_curriculum_rises_falls_and_stays_in_bounds():
    c = Curriculum({"t": LevelRule(start=1, min_level=1, max_level=3)})
    assert c.update("t", 0.69, step=10) is None and c.level("t") == 1
    assert c.update("t", 0.7, step=20).new == 2  # reaching rise is enough
    assert c.update("t", 0.95, step=30).new == 3
    assert c.update("t", 1.0, step=40) is None and c.level("t") == 3  # max_level holds
    change = c.update("t", 0.29, step=50)
    assert (change.old, change.new, change.step) == (3, 2, 50) and "< fall 30%" in change.reason
    assert c.update("t", 0.3, step=60) is None  # 0.3 is not below fall
    c.update("t", 0.0, step=70)
    assert c.update("t", 0.0, step=80) is None and c.level("t") == 1  # min_level holds
    d = c.to_dict()
    assert [(x["old"], x["new"]) for x in d["changes"]] == [(1, 2), (2, 3), (3, 2), (2, 1)]
    assert d["levels"] == {"t": 1} and d["rules"]["t"]["rise"] == 0.7
    gaps = LevelRule(start=2, min_level=2, max_level=8, levels=(2, 4, 8), rise=0.5, fall=0.1)
    assert gaps.next_level(2, 0.6) == 4 and gaps.next_level(8, 0.05) == 4 and gaps.next_level(4, 0.2) == 4
    with pytest.raises(ValueError, match="fall"):
        LevelRule(start=1, min_level=1, max_level=2, rise=0.3, fall=0.3)
    with pytest.raises(ValueError, match="outside"):
        LevelRule(start=5, min_level=1, max_level=2)


@pytest.mark.parametrize("body,field,expect", [
    ("eval: {tasks: {prefix: null}}\ngrpo: {steps: 3}\n", "grpo", "only read with mode: grpo"),
    ("eval: {tasks: {prefix: null}}\nexpert_iteration: {k: 0}\n", "expert_iteration.k", ">= 1"),
    ("eval: {tasks: {prefix: null}}\nexpert_iteration: {temperature: 0}\n", "expert_iteration.temperature",
     "less than or equal to the minimum"),
    ("eval: {tasks: {prefix: null}}\nexpert_iteration: {roundz: 3}\n", "expert_iteration.roundz", "unknown field"),
    ("eval: {tasks: {prefix: null}}\ncurriculum: {prefix: {rise: 0.3, fall: 0.5}}\n", "curriculum.prefix.fall",
     "must be below rise"),
    ("eval: {tasks: {prefix: null}}\ncurriculum: {other: {}}\n", "curriculum.other", "not in eval.tasks"),
    ("eval: {tasks: {prefix: null}}\ncurriculum: {prefix: {min_level: 3, max_level: 1}}\n",
     "curriculum.prefix.min_level", "min_level 3 > max_level 1"),
    ("eval: {tasks: {prefix: null}}\nwarm_start: {steps: 5}\n", "warm_start.steps", "need data.sources"),
    ("eval: {tasks: {prefix: null}}\nwarm_start: {model: ./nope}\n", "warm_start.model", "not a local Hugging"),
    ("eval: {tasks: {prefix: null}, checkers: {prefix: {name: exactish}}}\n", "eval.checkers.prefix",
     "unknown checker 'exactish'"),
    ("eval: {tasks: {prefix: null}, checkers: {other: exact}}\n", "eval.checkers.other", "not in eval.tasks"),
])
def test_recipe_errors_name_the_field(project, body, field, expect):
    path = write_recipe(project, body)
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert f"field '{field}'" in str(info.value) and expect in str(info.value), str(info.value)


@pytest.mark.parametrize("mode,body,field,expect", [
    ("grpo", "eval: {tasks: {prefix: null}}\nexpert_iteration: {k: 4}\n", "expert_iteration", "only read with"),
    ("sft", "eval: {tasks: {prefix: null}}\n", "data", "required field is missing"),
    ("sft", "eval: {tasks: {prefix: null}}\ndata: {sources: [{task: prefix}]}\ncurriculum: {prefix: {}}\n",
     "curriculum", "verifier-only modes"),
    ("dpo", "eval: {tasks: {prefix: null}}\n", "mode", "expected one of 'sft', 'expert_iteration', 'grpo'"),
])
def test_mode_errors_name_the_field(project, mode, body, field, expect):
    path = write_recipe(project, body, mode=mode)
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert f"field '{field}'" in str(info.value) and expect in str(info.value), str(info.value)


def test_curriculum_levels_are_checked_against_the_task(project):
    reg = registry(project)
    recipe = load_recipe(write_recipe(project, "eval: {tasks: {prefix: {level: 3}}}\ncurriculum: {prefix: {}}\n"))
    rule = build_curriculum(recipe, reg).rules["prefix"]
    assert (rule.start, rule.min_level, rule.max_level, rule.rise, rule.fall) == (1, 1, 3, 0.7, 0.3)
    recipe = load_recipe(write_recipe(project, "eval: {tasks: {prefix: null}}\ncurriculum: {prefix: {max_level: 9}}\n"))
    with pytest.raises(ConfigError, match=r"field 'curriculum.prefix.max_level'.*level 9 is not one of"):
        build_curriculum(recipe, reg)
    recipe = load_recipe(write_recipe(project, "eval: {tasks: {anything: null}}\ncurriculum: {anything: {}}\n"))
    with pytest.raises(ConfigError, match="has no difficulty levels"):
        build_curriculum(recipe, reg)


# -- with a model ----------------------------------------------------------------------------

pytest.importorskip("transformers")


def _finetune(path: Path, project: Path, **kw):
    from evalkit.train import finetune

    return finetune(path, output=project / "out", registry=registry(project), **kw)


def test_untrained_model_is_refused_before_any_training(project):
    path = write_recipe(project, """
        eval: {every: 10, n: 40, tasks: {prefix: {level: 2}}}
        expert_iteration: {k: 4, prompts_per_round: 32}
    """)
    with pytest.raises(BaselineRefused, match=r"prefix passes none of 32 training prompts with 4 samples each "
                                              r"\(pass@4 = 0 % at level 2\)"):
        _finetune(path, project)
    assert not (project / "out" / "checkpoints").exists()  # so a fixed recipe simply runs again


@pytest.mark.parametrize("checkers,met", [("", True),
                                          (", checkers: {anything: {name: regex, pattern: 'z{9}'}}", False)])
def test_nothing_to_gain_when_every_sample_passes(project, checkers, met):
    """Training (the task's checker) has nothing to learn; evaluation may use its own, stricter checker."""
    path = write_recipe(project, f"""
        eval: {{every: 10, n: 40, tasks: {{anything: null}}{checkers}}}
        expert_iteration: {{k: 2, prompts_per_round: 16}}
    """)
    result = _finetune(path, project)
    assert result.stopped_because.startswith("nothing to gain: all 32 completions sampled")
    assert result.targets_met is met and result.exit_code == (ExitCode.OK if met else ExitCode.FAILED)
    record = json.loads((project / "out" / "record.json").read_text())
    training = record["meta"]["training"]
    assert [h["step"] for h in training["history"]] == [0] and training["mode"] == "expert_iteration"
    assert record["tasks"][0]["rate"] == (1.0 if met else 0.0)
    assert (project / "out" / "model" / "model.safetensors").is_file()
    if not met:
        assert training["eval_checkers"] == {"anything": {"name": "regex", "pattern": "z{9}"}}
        assert "anything: pass rate 0.0%" in result.missed[0]


def test_expert_iteration_with_curriculum_on_a_task_without_reference(project):
    """Warm start on a little JSONL, then expert iteration alone; the curriculum moves the level up."""
    import torch

    torch.set_num_threads(1)
    warm_data(project)
    path = write_recipe(project, """
        data: {sources: [{jsonl: warm.jsonl}]}
        warm_start: {steps: 60}
        expert_iteration: {rounds: 8, k: 6, prompts_per_round: 96, cap_per_prompt: 2, steps_per_round: 15}
        curriculum: {prefix: {start: 1}}
        eval: {every: 15, n: 60, confirm: 2, tasks: {prefix: {level: 2, target: 0.8}}}
    """)
    result = _finetune(path, project)
    record = json.loads((project / "out" / "record.json").read_text())
    training = record["meta"]["training"]
    history, rounds = training["history"], training["rounds"]
    assert {h["phase"] for h in history} == {"warm_start", "expert_iteration"}
    warm_end = max(h["step"] for h in history if h["phase"] == "warm_start")
    assert warm_end == 60 and rounds[0]["step"] == 60
    for r in rounds:  # each round: prompts tried, pass@k, kept, held-out, and the level it trained at
        prompts = r["prompts"]["prefix"]  # level 1 has fewer than 96 training prompts
        assert 60 <= prompts <= 96 and r["kept"] > 0 and 0 < r["pass_at_k"]["prefix"] <= 1
        assert r["kept"] + sum(r["removed"].values()) == prompts * 6 and r["kept"] <= prompts * 2
        assert set(r["held_out"]) == {"prefix"} and (project / "out" / r["record"] / "record.json").is_file()
    changes = training["curriculum"]["changes"]
    assert changes and changes[0]["old"] == 1 and changes[0]["new"] == 2 and changes[0]["rate"] >= 0.7
    levels_seen = [r["levels"]["prefix"] for r in rounds]
    assert levels_seen[0] == 1 and max(levels_seen) >= 2
    assert any("curriculum" in h and h["curriculum"]["prefix"]["new_level"] == 2 for h in history)
    start = next(h for h in history if h["step"] == warm_end)["rates"]["prefix"]["rate"]
    best = max(h["rates"]["prefix"]["rate"] for h in history)
    assert best > start, (start, best)
    assert result.best_step is not None and result.best_step > warm_end
    assert (project / "out" / "report.html").read_text().count("Learning curves") == 1
    assert record["tasks"][0]["target"] == 0.8  # the recipe's target (the task's own is 0.5): what a gate judges
    ckpts = sorted(p.name for p in (project / "out" / "checkpoints").iterdir())
    assert f"checkpoint-{result.best_step}" in ckpts  # checkpoints are named by the run's step


def test_grpo_smoke_few_steps_on_a_tiny_model(project):
    pytest.importorskip("trl")
    import torch

    torch.set_num_threads(1)
    warm_data(project)
    path = write_recipe(project, """
        data: {sources: [{jsonl: warm.jsonl}]}
        warm_start: {steps: 60}
        grpo: {steps: 4, num_generations: 4, prompts_per_step: 4, lr: 0.0005, format_reward: 0.2}
        eval: {every: 2, n: 40, tasks: {prefix: {level: 2, target: 1.0, use_lower_bound: true}}}
    """, mode="grpo")
    result = _finetune(path, project)
    assert result.stopped_because == "grpo.steps budget of 4 steps used" and not result.targets_met
    record = json.loads((project / "out" / "record.json").read_text())
    training = record["meta"]["training"]
    grpo = [h for h in training["history"] if h["phase"] == "grpo"]
    assert [h["step"] for h in grpo] == [62, 64]  # the same evaluation callback, counting the run's steps
    assert all(isinstance(h.get("reward"), float) and h.get("loss") is not None for h in grpo)
    assert training["baseline"][0]["pass_at_k"] > 0 and [x["step"] for x in training["rewards"]] == [61, 62, 63, 64]
    assert training["rounds"][0]["steps"] == 4 and training["rounds"][0]["levels"] == {"prefix": 2}
    assert (project / "out" / "model" / "model.safetensors").is_file() and result.best_step is not None
    assert (project / "out" / "report.html").is_file()


@pytest.mark.parametrize("weight", [0.0, 0.2, 0.5, 1.0])
def test_grpo_reward_format_is_a_factor_never_a_bonus(weight):
    """A wrong but well-formatted completion earns no more than a wrong badly-formatted one (both 0);
    only a right answer earns reward. An additive format bonus would pay the first `weight`."""
    pytest.importorskip("trl")
    import evalkit
    from evalkit.core.example import canonical
    from evalkit.train.grpo import checker_reward

    repo = Path(__file__).resolve().parent.parent
    addition = evalkit.load_tasks("addition", tasks_dir=repo / "tasks")[0]
    ex = addition.examples("train", n=1, seed=0, level=2)[0]
    right = addition.reference(ex)
    wrong = str(int(right) + 1)
    reward = checker_reward({"addition": addition}, format_weight=weight)
    completions = [right, wrong, "\n" + wrong, "", "the answer"]  # right, wrong, wrong/empty after the stop, ...
    got = reward(prompts=[ex.prompt] * 5, completions=completions, task=["addition"] * 5,
                 fields=[canonical(ex.fields)] * 5, level=[ex.level] * 5)
    assert got[0] == 1.0
    assert got[1] == got[2] == got[3] == got[4] == 0.0  # well formed or not, wrong earns nothing


def test_grpo_reward_reads_chat_replies_as_chat_evaluation_does():
    """In chat mode TRL hands the reward the assistant's messages; they are read with the chat view's
    extractor (a sentence around the sum is fine, a wrong sum or a second number is not)."""
    pytest.importorskip("trl")
    import evalkit
    from evalkit.core.example import canonical
    from evalkit.train.grpo import checker_reward

    repo = Path(__file__).resolve().parent.parent
    addition = evalkit.load_tasks("addition", tasks_dir=repo / "tasks")[0]
    ex = addition.examples("train", n=1, seed=0, level=2)[0]
    a, b = ex.fields["a"], ex.fields["b"]
    replies = [f"The answer is {a + b}.", f"{a} + {b} = {a + b}", f"The answer is {a + b + 1}.", f"{a + b} or {a}"]
    completions = [[{"role": "assistant", "content": r}] for r in replies]
    reward = checker_reward({"addition": addition.for_chat()})
    got = reward(prompts=[addition.messages(ex)] * 4, completions=completions, task=["addition"] * 4,
                 fields=[canonical(ex.fields)] * 4, level=[ex.level] * 4)
    assert got == [1.0, 1.0, 0.0, 0.0]
    raw = checker_reward({"addition": addition})  # the raw form reads the bare sum only
    assert raw(prompts=[ex.prompt], completions=[replies[0]], task=["addition"], fields=[canonical(ex.fields)],
               level=[ex.level]) == [0.0]


def test_grpo_format_reward_must_be_a_weight_in_0_1(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(BASE.format(name="r", mode="grpo") + "grpo: {format_reward: 1.5}\n"
                    "eval: {tasks: {prefix: {target: 0.5}}}\n")
    with pytest.raises(ConfigError, match="format_reward"):
        load_recipe(path)
