"""Task packs: reasoning-gym's datasets as `rg:` tasks (real reasoning-gym, no mocks).

Loaded only when an `rg:` name is asked for; the dataset's `score_answer` is the checker (PASS only at
1.0); example identity is the question, so the splits never share a prompt; without reasoning-gym an
`rg:` name is a ConfigError that says what to install, and everything else works as before.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import defaultdict

import pytest
from conftest import REPO, TASKS

pytest.importorskip("reasoning_gym", reason="the rg: pack needs the reasoning-gym extra")

import evalkit  # noqa: E402
from evalkit import Status, UnknownTaskError, overlap, split_of  # noqa: E402
from evalkit.core.selftest import assert_selftest  # noqa: E402
from evalkit.discovery.registry import Registry, discover  # noqa: E402
from evalkit.packs import get_pack, pack_prefix  # noqa: E402
from evalkit.packs.jsontypes import decode, encode  # noqa: E402
from evalkit.packs.reasoning_gym import extract_answer, task_version  # noqa: E402


def rg(name: str):
    return Registry().get(f"rg:{name}")


def test_datasets_load_as_tasks_with_levels_tags_and_a_version():
    graph = rg("graph_color")
    assert graph.name == "rg:graph_color" and graph.is_generator
    assert graph.levels == (1, 2, 3)  # the curriculum's 4th level repeats the 3rd: not offered
    assert set(graph.tags) == {"reasoning-gym", "algorithmic"}
    assert graph.version == task_version(evalkit_rg_version()) and graph.version > 100_000_000
    assert graph.spec.identity == ("question",)
    [ex] = graph.examples("eval", n=1, seed=0, level=1)
    assert ex.prompt == ex["question"] and "JSON map of vertices to colors" in ex.prompt
    assert ex.level == 1 and ex.reference and json.loads(ex.reference)
    arithmetic, acre = rg("basic_arithmetic"), rg("acre")
    assert arithmetic.levels and "arithmetic" in arithmetic.tags
    assert acre.levels == ()  # no curriculum: one configuration, no levels
    assert acre.examples("eval", n=2, seed=0)[0].reference is not None
    assert rg("graph_color") is graph  # built once


def evalkit_rg_version() -> str:
    from importlib.metadata import version

    return version("reasoning-gym")


def test_levels_follow_the_curriculum():
    task = rg("graph_color")  # curriculum: vertices 6-10, 6-20, 6-25; colours 5, 4, 3
    for level, (most, colours) in {1: (10, 5), 2: (20, 4), 3: (25, 3)}.items():
        puzzles = [ex.fields["metadata"]["puzzle"] for ex in task.examples("eval", n=30, level=level)]
        assert all(6 <= len(p["vertices"]) <= most and len(p["color_options"]) == colours for p in puzzles)
        assert max(len(p["vertices"]) for p in puzzles) > most // 2 + 2


def test_the_oracle_passes_everything():
    record = evalkit.evaluate(model_spec="oracle", tasks=["rg:graph_color", "rg:basic_arithmetic", "rg:arc_1d"],
                              n=15, seed=0)
    for name in ("rg:graph_color", "rg:basic_arithmetic", "rg:arc_1d"):
        assert record.rate(name) == 1.0, name


def test_the_checker_fails_wrong_answers_with_upstream_score():
    task = rg("graph_color")
    ex = next(e for e in task.examples("eval", n=20, level=1) if json.loads(e.reference or "{}") and
              e.fields["metadata"]["puzzle"]["edges"])
    colouring = json.loads(ex.reference or "")
    [u, v] = ex.fields["metadata"]["puzzle"]["edges"][0]["__tuple__"]
    colouring[str(v)] = colouring[str(u)]  # two neighbours, one colour
    wrong = task.check(ex, json.dumps(colouring))
    assert wrong.status is Status.FAIL and wrong.score == 0.01 and "0.01" in wrong.reason  # upstream: parsable JSON
    assert task.check(ex, "not json").status is Status.FAIL
    assert task.check(ex, ex.reference or "").status is Status.PASS
    sums = rg("basic_arithmetic")
    ex = sums.examples("eval", n=1, level=1)[0]
    assert sums.check(ex, ex.reference or "").status is Status.PASS
    assert sums.check(ex, str(int(ex.reference or "0") + 1)).status is Status.FAIL


def test_answers_in_answer_tags_are_extracted():
    assert extract_answer("thinking... <answer> 42 </answer> more") == "42"
    assert extract_answer("<answer>1</answer> no <answer>2") == "2"  # the last one; the stop cut `</answer>`
    assert extract_answer("  7\n") == "7"
    task = rg("basic_arithmetic")
    ex = task.examples("eval", n=1, level=1)[0]
    assert evalkit.score(task, ex, f"Let me add.\n<answer>{ex.reference}</answer>").verdict.passed


def test_json_fields_keep_the_types_the_scorer_compares():
    value = {"board": ((1, 2), (3, 4)), 3: "int key", "s": {5}, "l": [1.5, None, True]}
    assert decode(json.loads(json.dumps(encode(value)))) == value
    assert decode(encode({"__tuple__": 1})) == {"__tuple__": 1}
    with pytest.raises(TypeError, match="cannot store"):
        encode(object())
    # ARC's scorer compares tuples of tuples: an example rebuilt from its JSON (a rescore) still passes.
    task = rg("arc_agi")
    for ex in task.examples("eval", n=3, level=1):
        stored = json.loads(json.dumps(ex.to_dict()))
        again = task.example(stored["fields"], stored["level"])
        assert again.id == ex.id and task.check(again, ex.reference or "").passed


def test_identity_is_the_question_so_splits_never_share_a_prompt():
    task = rg("basic_arithmetic")  # level 1: one-digit sums, so one question comes from many entries
    eval_, train = task.examples("eval", n=500, seed=0, level=1), task.examples("train", n=500, seed=0, level=1)
    assert len(eval_) == len(train) == 500
    assert overlap(eval_, train).empty
    assert len({e.prompt for e in eval_ + train}) == 1000
    # Not vacuous: entries with one question differ in their other fields, which would split them apart.
    dataset = task.impl.build(1)
    by_question = defaultdict(set)
    for index in random.Random(0).sample(range(100_000), 3000):
        entry = dataset[index]
        fields = {k: encode(v) for k, v in entry.items()}
        by_question[entry["question"]].add(split_of(task.name, fields, 0.5))
    assert any(len(splits) == 2 for splits in by_question.values())


def test_unknown_and_unavailable_names_are_clear_errors():
    registry = Registry()
    with pytest.raises(UnknownTaskError, match=r"unknown task 'rg:graph_colr'; did you mean 'rg:graph_color'\?"):
        registry.get("rg:graph_colr")
    with pytest.raises(UnknownTaskError, match="'rg:composite' is not offered: .*mixes other datasets"):
        registry.get("rg:composite")
    with pytest.raises(UnknownTaskError, match=r"no task matches 'rg:zzz\*'; the rg: pack has \d+ tasks"):
        registry.select(["rg:zzz*"])
    assert "rg:graph_color" in registry and "rg:graph_colr" not in registry and "graph_color" not in registry
    assert pack_prefix("rg:x") == "rg" and pack_prefix("rgx:y") is None and pack_prefix("addition") is None


def test_globs_select_the_pack_and_report_what_it_cannot_offer():
    registry = discover([TASKS], entry_points=False)
    with pytest.warns(UserWarning, match="'rg:composite' is not offered"):
        everything = registry.select(["rg:*"])
    names = [t.name for t in everything]
    assert names == sorted(get_pack("rg").names()) and len(names) > 90 and "rg:composite" not in names
    assert [t.name for t in registry.select(["rg:graph_*", "addition"])] == ["rg:graph_color", "addition"]
    assert len(registry.select()) == 7  # `*` and no pattern: the project's tasks, not the pack
    assert {t.name for t in registry.select(["rg:*_sudoku"], tags=["games"])} == {"rg:mini_sudoku"}


def test_graph_color_solutions_differ_and_the_self_test_passes():
    task = rg("graph_color")
    ex = task.examples("eval", n=1, level=3)[0]
    solutions = task.impl.solutions(ex, random.Random(0))
    assert len(solutions) == 4 and len({json.dumps(json.loads(s), sort_keys=True) for s in solutions}) == 4
    assert all(task.check(ex, s).passed for s in solutions)
    assert_selftest(task, levels=[1], n_examples=4, max_examples=25)


def test_rush_hour_gets_shortest_references_and_a_strict_second_opinion():
    task = rg("rush_hour")
    for ex in task.examples("eval", n=3, level=1):
        moves = (ex.reference or "").split()
        assert len(moves) == ex.fields["metadata"]["min_moves"]  # breadth-first: as short as upstream's optimum
        assert all(task.check(ex, s).passed and task.impl.second_opinion(ex, s)
                   for s in task.impl.solutions(ex, random.Random(0)))
        assert not task.impl.second_opinion(ex, " ".join(moves[:-1]))  # one slide short
        assert not task.impl.second_opinion(ex, ex.reference + " junk")


def test_an_entry_upstream_cannot_make_is_warned_about_and_replaced():
    task = rg("tsumego")  # its generator gives up on some boards
    drawn = r"rg:tsumego level 2: an entry failed \(RuntimeError: .*\) in reasoning-gym; another is drawn"
    with pytest.warns(UserWarning, match=drawn):
        examples = task.examples("eval", n=20, level=2, seed=0)
    assert len(examples) == 20 and task.impl.failures[2] >= 1


def test_what_generators_print_stays_out_of_evalkit_output(capfd):
    task = rg("bf")  # its interpreter prints a dot per program it runs
    task.examples("eval", n=3, level=2, seed=0)
    assert capfd.readouterr().out == ""


def cli(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    argv = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "evalkit", *args]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_cli_selects_rg_names_and_globs_and_suggests_close_names():
    one = cli("tasks", "rg:graph_color", "--json")
    assert one.returncode == 0, one.stderr
    assert [t["name"] for t in json.loads(one.stdout)] == ["rg:graph_color"]
    globbed = cli("tasks", "rg:graph_*", "rg:n_queens", "--json")
    assert globbed.returncode == 0, globbed.stderr
    assert [t["name"] for t in json.loads(globbed.stdout)] == ["rg:graph_color", "rg:n_queens"]
    typo = cli("tasks", "rg:graph_colr")
    assert typo.returncode == 2 and "did you mean 'rg:graph_color'?" in typo.stderr
    selftest = cli("selftest", "rg:graph_color", "--level", "1", "--examples", "3", "--max-examples", "10")
    assert selftest.returncode == 0, selftest.stdout + selftest.stderr


def test_listing_the_project_tasks_never_imports_reasoning_gym():
    probe = ("import sys; from evalkit.discovery.registry import discover; from evalkit.cli import main\n"
             f"assert len(discover([{str(TASKS)!r}]).select()) == 7\n"
             "assert 'reasoning_gym' not in sys.modules, 'imported reasoning_gym'\n")
    result = cli(code=probe)
    assert result.returncode == 0, result.stderr


HIDDEN = "import sys; sys.modules['reasoning_gym'] = None; from evalkit.cli import main; main(sys.argv[1:])"


def test_without_reasoning_gym_an_rg_name_says_what_to_install():
    missing = cli("tasks", "rg:graph_color", code=HIDDEN)
    assert missing.returncode == 2
    assert "reasoning-gym package" in missing.stderr and "pip install 'evalkit[reasoning-gym]'" in missing.stderr
    globbed = cli("selftest", "rg:*", code=HIDDEN)
    assert globbed.returncode == 2 and "evalkit[reasoning-gym]" in globbed.stderr
    others = cli("tasks", "--json", code=HIDDEN)
    assert others.returncode == 0, others.stderr
    assert {t["name"] for t in json.loads(others.stdout)} >= {"addition", "countdown"}
    selftest = cli("selftest", "addition", "--level", "1", "--examples", "2", "--max-examples", "5", code=HIDDEN)
    assert selftest.returncode == 0, selftest.stdout + selftest.stderr
