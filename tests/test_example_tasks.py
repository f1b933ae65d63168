"""The example task plugins in tasks/: generators, references, checkers and their reasons."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import evalkit
from evalkit.core.chat import has_chat_settings
from evalkit.core.example import Example
from evalkit.core.task import TASK_MARKER, Task

TASKS_DIR = Path(__file__).resolve().parent.parent / "tasks"
GENERATED = ("addition", "sorting", "reverse", "countdown")
_LOADED: dict[str, tuple[object, Task]] = {}


def load(name: str) -> tuple[object, Task]:
    """Import tasks/<name>.py on its own (as discovery does) and build its one Task."""
    if name not in _LOADED:
        path = TASKS_DIR / f"{name}.py"
        module_name = f"_test_example_tasks_{name}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        found = [obj for obj in vars(module).values() if hasattr(obj, TASK_MARKER)]
        assert len(found) == 1, f"{path} should define exactly one task, found {found}"
        _LOADED[name] = (module, Task.from_decorated(found[0], source=str(path)))
    return _LOADED[name]


def task_of(name: str) -> Task:
    return load(name)[1]


def ok(t: Task, ex: Example, output: str) -> bool:
    return evalkit.score(t, ex, output).verdict.passed


def reason(t: Task, ex: Example, output: str) -> str:
    v = evalkit.score(t, ex, output).verdict
    assert v.status is evalkit.Status.FAIL, f"{output!r} should FAIL, got {v}"
    return v.reason


def ex_of(t: Task, **fields) -> Example:
    """An example built from given fields, through the task's own prompt and reference."""
    return t._make(fields, "eval", None)


LEVELS = [(name, level) for name in GENERATED for level in task_of(name).levels]


# -- every task ------------------------------------------------------------------------

def test_names_levels_and_metadata():
    expected_levels = {"addition": range(1, 8), "sorting": range(1, 6), "reverse": range(1, 6),
                       "countdown": range(1, 5)}
    for name, levels in expected_levels.items():
        t = task_of(name)
        assert t.name == name and t.is_generator
        assert t.levels == tuple(levels)
        assert t.spec.default_level in t.levels
    assert task_of("addition").spec.default_level == 3
    assert task_of("addition").target == 0.95
    for name in (*GENERATED, "python_functions"):
        t = task_of(name)
        assert 0 < t.target <= 1 and t.tags and t.version >= 1
        assert t.spec.description and "\n" not in t.spec.description.strip()
        assert t.generation.max_new_tokens and t.generation.stop
    assert not task_of("python_functions").is_generator


@pytest.mark.parametrize("name,level", LEVELS)
def test_examples_are_deterministic(name, level):
    t = task_of(name)
    a = t.examples("eval", n=20, seed=0, level=level)
    b = t.examples("eval", n=20, seed=0, level=level)
    assert a and [e.to_dict() for e in a] == [e.to_dict() for e in b]
    assert all(e.level == level and e.split == "eval" for e in a)


@pytest.mark.parametrize("name,level", LEVELS)
def test_train_and_eval_are_disjoint(name, level):
    t = task_of(name)
    train = t.examples("train", n=60, seed=1, level=level)
    evals = t.examples("eval", n=60, seed=1, level=level)
    assert train and evals
    assert all(e.split == "train" for e in train) and all(e.split == "eval" for e in evals)
    assert evalkit.overlap(train, evals).empty


@pytest.mark.parametrize("name,level", LEVELS)
def test_references_pass_and_fit_the_generation_settings(name, level):
    t = task_of(name)
    for ex in t.examples("eval", n=40, seed=2, level=level) + t.examples("train", n=40, seed=2, level=level):
        assert ex.reference, ex
        v = evalkit.score(t, ex, ex.reference).verdict
        assert v.passed, (ex.prompt, ex.reference, v)
        # A char-level model needs a token per character: the answer must fit.
        assert len(ex.reference) <= t.generation.max_new_tokens
        assert "\n" not in ex.prompt and "\n" not in ex.reference
        # What a model would write after the prompt, stop string included, passes too.
        assert ok(t, ex, " " + ex.reference + "\n" + "junk on the next line")


@pytest.mark.parametrize("name", GENERATED)
def test_generated_tasks_reject_empty_echo_and_huge_outputs(name):
    t = task_of(name)
    for ex in t.examples("eval", n=10, seed=3):
        for output in ("", ex.prompt, "9" * 50_000, "\x00", "1e99999", "\u202e" + ex.reference[::-1]):
            v = evalkit.score(t, ex, output).verdict
            if output.strip() != ex.reference:
                assert v.status is evalkit.Status.FAIL, (output[:50], v)


@pytest.mark.parametrize("name", GENERATED)
def test_generated_tasks_pass_the_selftest(name):
    from evalkit.core.selftest import selftest_task

    report = selftest_task(task_of(name), max_examples=25, n_examples=10)
    assert report.passed, report.failures() or report.error


# -- addition --------------------------------------------------------------------------

def test_addition_operands_have_the_level_digits():
    t = task_of("addition")
    for level in t.levels:
        for ex in t.examples("eval", n=30, seed=0, level=level):
            a, b = ex["a"], ex["b"]
            assert ex.prompt == f"{a}+{b}=" and ex.reference == str(a + b)
            assert len(str(a)) == len(str(b)) == level or (level == 1 and a < 10 and b < 10)


def test_addition_wrong_answers_fail_with_reasons():
    t = task_of("addition")
    ex = ex_of(t, a=123, b=456)
    assert ok(t, ex, "579") and ok(t, ex, " 579\n") and ok(t, ex, "0579")  # integer equality
    assert reason(t, ex, "578") == "expected 579, got '578'"
    for wrong in ("", "57", "5790", "-579", "579.0", "5 79", "five hundred", "579+0", "٥٧٩", "9" * 10_000):
        assert "expected 579" in reason(t, ex, wrong)


# -- sorting ---------------------------------------------------------------------------

def test_sorting_lengths_and_prompt():
    t = task_of("sorting")
    for level in t.levels:
        ex = t.examples("eval", n=1, seed=0, level=level)[0]
        assert len(ex["numbers"]) == 2 * level + 1
        assert all(0 <= x < 100 for x in ex["numbers"])
        assert ex.prompt == "sort: " + " ".join(map(str, ex["numbers"])) + " ="


def test_sorting_wrong_answers_fail_with_reasons():
    t = task_of("sorting")
    ex = ex_of(t, numbers=[5, 3, 9, 3])
    assert ex.prompt == "sort: 5 3 9 3 =" and ex.reference == "3 3 5 9"
    assert ok(t, ex, "3 3 5 9") and ok(t, ex, "  3  3 5\t9 ")
    assert reason(t, ex, "3 5 3 9") == "not sorted ascending: 5 before 3"
    assert reason(t, ex, "3 5 9") == "not a permutation of the input: missing 3"
    assert reason(t, ex, "3 3 4 5 9") == "not a permutation of the input: extra 4"
    assert reason(t, ex, "3 3 5 8") == "not a permutation of the input: missing 9, extra 8"
    assert reason(t, ex, "3, 3, 5, 9").startswith("not a list of integers")
    assert reason(t, ex, "3 3 5 nine").startswith("not a list of integers")
    assert reason(t, ex, "") == "empty answer"
    assert "not a permutation" in reason(t, ex, "3 " * 30_000)


# -- reverse ---------------------------------------------------------------------------

def test_reverse_lengths_and_checks():
    t = task_of("reverse")
    for level in t.levels:
        ex = t.examples("eval", n=1, seed=0, level=level)[0]
        assert len(ex["text"]) == 2 * level + 1 and ex["text"].isalpha() and ex["text"].islower()
        assert ex.prompt == f"reverse: {ex['text']} ="
    ex = ex_of(t, text="abc")
    assert ex.prompt == "reverse: abc =" and ok(t, ex, "cba")
    assert reason(t, ex, "abc") == "expected 'cba', got 'abc'"
    assert reason(t, ex, "CBA") == "expected 'cba', got 'CBA'"
    assert reason(t, ex, "c b a") == "expected 'cba', got 'c b a'"
    assert len(reason(t, ex, "z" * 10_000)) < 80  # the reason quotes a short piece only


# -- countdown -------------------------------------------------------------------------

def test_countdown_instances_and_solver():
    module, t = load("countdown")
    slowest = 0.0
    for level in t.levels:
        for split in ("eval", "train"):
            for ex in t.examples(split, n=40, seed=5, level=level):
                numbers, target = ex["numbers"], ex["target"]
                assert len(numbers) == level + 2
                assert all(n in module.SMALL or n in module.LARGE for n in numbers)
                assert isinstance(target, int) and 0 < target <= module.MAX_TARGET and target not in numbers
                assert str(target) in ex.prompt and " ".join(map(str, numbers)) in ex.prompt
                start = time.perf_counter()
                solution = module.solve(numbers, target)
                slowest = max(slowest, time.perf_counter() - start)
                assert solution is not None and solution == ex.reference
                assert ok(t, ex, solution), (numbers, target, solution)
                assert module._independent_is_solution(solution, numbers, target)
    assert slowest < 0.5, f"slowest solve took {slowest:.3f}s"


def test_countdown_solver_finds_short_solutions_and_reports_none():
    module, _ = load("countdown")
    assert module.solve([3, 7, 25], 21) == "7*3"
    assert module.solve([2, 3, 100], 100 + 2 * 3) in ("100+3*2", "3*2+100")
    assert module.solve([1, 1], 5) is None


def test_countdown_checker_rules():
    module, t = load("countdown")
    ex = ex_of(t, numbers=[2, 3, 3, 7, 25], target=21)
    for good in ("7*3", "3*7", "(7*3)", " 7 * 3 ", "(25-7)+3", "25-7+3", "(3+3)/2*7", "(25+2)/3*7/3", "7/2*(3+3)",
                 "25-(7-3)"):
        assert ok(t, ex, good), good
    # Not all numbers need be used, but none more often than given.
    assert reason(t, ex, "3*3*7/3") == "uses 3 more often than given (3 > 2)"
    assert reason(t, ex, "7*3*1") == "uses 1, which is not one of the given numbers"
    assert reason(t, ex, "21") == "uses 21, which is not one of the given numbers"
    assert reason(t, ex, "7+3") == "evaluates to 10, not 21"
    assert reason(t, ex, "7/2") == "evaluates to 7/2, not 21"
    assert reason(t, ex, "7/(3-3)") == "division by zero"
    assert reason(t, ex, "") == "empty answer"


@pytest.mark.parametrize("attack", [
    "__import__('os')", "__import__('os').system('true')", "2**100000", "3**2*7/3", "7//3*7",
    "x", "a+b", "abs(21)", "int('21')", "(7).__class__", "7 .real*3", "[21][0]", "{21}",
    "lambda: 21", "21 if 1 else 0", "7*3 and 21", "7*3==21", "7%3", "7<<3", "7|3", "7^3", "7@3",
    "-3+24", "3--2+25-7", "+21", "~-22", "7*3.0", "21.", "0x15", "1_0+11", "0o25", "21j",
    "7*3=21", "7*3;", "7 3", "07*3", "((7*3)", "7*3)", "()", "'21'", "b'21'", "\\x37*3",
    "(" * 150 + "7*3" + ")" * 150, "1+" * 120 + "1", "٧*٣",
])
def test_countdown_parser_rejects(attack):
    module, t = load("countdown")
    ex = ex_of(t, numbers=[2, 3, 3, 7, 25], target=21)
    assert not ok(t, ex, attack)
    assert not t.equivalent(ex, ex.reference, attack)
    with pytest.raises(ValueError):
        module.parse_expression(attack)


def test_countdown_parser_limits_size():
    module, _ = load("countdown")
    with pytest.raises(ValueError, match="longer than"):
        module.parse_expression("1+" * 150 + "1")
    with pytest.raises(ValueError, match="parts"):
        module.parse_expression("+".join(["1"] * 40))


def test_countdown_equivalent_uses_an_independent_judge():
    _, t = load("countdown")
    ex = ex_of(t, numbers=[2, 3, 3, 7, 25], target=21)
    assert t.equivalent(ex, ex.reference, "3*7")
    assert t.equivalent(ex, ex.reference, "(25-7)+3")
    assert not t.equivalent(ex, ex.reference, "3*8")
    assert not t.equivalent(ex, ex.reference, "3*3*7/3")
    assert not t.equivalent(ex, ex.reference, "7*3*1")
    assert not t.equivalent(ex, ex.reference, "-3+24")
    assert not t.equivalent(ex, ex.reference, "7/(3-3)")
    assert not t.equivalent(ex, ex.reference, "7*3)")


_NUMBERS = [2, 3, 3, 7, 25, 100]


@st.composite
def _expressions(draw, depth=0):
    """Random arithmetic over _NUMBERS (or other small numbers), with random parentheses."""
    if depth >= 3 or draw(st.booleans()):
        text = str(draw(st.sampled_from(_NUMBERS + [0, 1, 4])))
    else:
        left, right = draw(_expressions(depth + 1)), draw(_expressions(depth + 1))
        text = f"{left}{draw(st.sampled_from('+-*/'))}{right}"
    return f"({text})" if draw(st.booleans()) else text


@settings(max_examples=300, deadline=None, database=None)
@given(_expressions())
def test_countdown_checker_agrees_with_the_independent_judge(text):
    module, t = load("countdown")
    try:
        value = Fraction(eval(text, {"__builtins__": {}}))  # test data built from digits and + - * / ( )
    except ZeroDivisionError:
        value = None
    target = int(value) if value is not None and value.denominator == 1 and value > 0 else 21
    ex = ex_of(t, numbers=_NUMBERS, target=target)
    assert ok(t, ex, text) == module._independent_is_solution(text, _NUMBERS, target), text


# -- python_functions ------------------------------------------------------------------

@pytest.fixture(scope="module")
def pf_examples():
    t = task_of("python_functions")
    return t, t.examples("eval")


def test_python_functions_rows(pf_examples):
    t, examples = pf_examples
    assert len(examples) >= 12 and t.examples("train") == []
    assert len({e["entry_point"] for e in examples}) == len(examples)
    assert len({e["task_id"] for e in examples}) == len(examples)
    for ex in examples:
        assert set(ex.fields) == {"task_id", "prompt", "canonical_solution", "test", "entry_point"}
        assert ex.prompt == ex["prompt"] and ex.prompt.startswith(f"def {ex['entry_point']}(")
        assert ex.prompt.endswith('"""\n')
        assert ex["canonical_solution"].startswith("    ") and ex["test"].startswith("def check(candidate):")
        assert ex["test"].count("assert") >= 6
        assert ex.reference == ex["canonical_solution"].rstrip()
        assert len(ex.reference) < t.generation.max_new_tokens  # fits even one token per character


def test_python_functions_data_is_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, t = load("python_functions")
    fresh = Task(t.spec, type(t.impl)(), t.source)
    assert len(fresh.examples("eval")) >= 12


def test_python_functions_canonical_solutions_pass(pf_examples):
    t, examples = pf_examples
    for ex in examples:
        v = evalkit.score(t, ex, ex.reference).verdict
        assert v.passed, (ex["entry_point"], v)


def test_python_functions_wrong_completions_fail(pf_examples):
    t, examples = pf_examples
    for ex in examples:
        lines = ex.reference.splitlines()
        for wrong in ("    return None\n", "\n".join(lines[:-1]) or "    pass", ex.reference + "x"):
            v = evalkit.score(t, ex, wrong).verdict
            assert v.status is evalkit.Status.FAIL, (ex["entry_point"], wrong, v)
            assert v.reason


def test_python_functions_extract_keeps_indentation_and_cuts_at_the_next_definition():
    _, t = load("python_functions")
    body = "    x = 1\n    return x\n"
    assert t.extract(body) == body.rstrip()
    assert t.extract(body + "\n\ndef other():\n    pass\n") == body.rstrip()
    assert t.extract(body + "\nprint(f(1))\n") == body.rstrip()
    assert t.extract(body + "\nif __name__ == '__main__':\n    main()") == body.rstrip()


def test_python_functions_equivalent_is_the_same_program(pf_examples):
    t, examples = pf_examples
    ex = next(e for e in examples if e["entry_point"] == "digit_sum")
    ref = ex.reference
    assert t.equivalent(ex, ref, ref + "  # done")
    assert t.equivalent(ex, ref, ref.replace("total = 0", "total = 0."))  # a literal's spelling
    assert t.equivalent(ex, ref, ref + ";junk")  # dead code after the return
    assert not t.equivalent(ex, ref, ref.replace("% 10", "% 9"))
    assert not t.equivalent(ex, ref, ref.replace("n > 0", "n > 1"))
    assert not t.equivalent(ex, ref, ref[:-1])
    assert not t.equivalent(ex, ref, "    return None")


def test_python_functions_tests_are_strict(pf_examples):
    """Every row's tests catch a typical off-by-one: each digit in the solution, bumped."""
    t, examples = pf_examples
    for ex in examples:
        ref = ex.reference
        for i, ch in enumerate(ref):
            if ch.isdigit():
                corrupted = ref[:i] + str((int(ch) + 1) % 10) + ref[i + 1:]
                if t.equivalent(ex, ref, corrupted):
                    continue
                v = evalkit.score(t, ex, corrupted).verdict
                assert not v.passed, (ex["entry_point"], corrupted)


@pytest.mark.slow
def test_python_functions_pass_the_selftest():
    from evalkit.core.selftest import selftest_task

    report = selftest_task(task_of("python_functions"))
    assert report.passed, report.failures() or report.error


# -- chat forms: what instruct models are sent, and how their answers are read ------------------------
SHIPPED = ("addition", "sorting", "reverse", "countdown", "json_extract", "multiple_choice", "python_functions")
MODEL_DIR = Path("/root/.cache/evalkit/models/smollm2-135m-instruct")


def shipped(name: str) -> Task:
    [t] = evalkit.load_tasks([name], tasks_dir=[TASKS_DIR], entry_points=False)
    return t


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_task_has_a_chat_form(name):
    t = shipped(name)
    ex = t.examples("eval", n=1)[0]
    messages = t.messages(ex)
    assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"
    assert messages[-1]["content"] != ex.prompt  # worded for a conversation, not the raw continuation
    assert has_chat_settings(t) and t.for_chat() is not t and t.for_chat().for_chat() is t.for_chat()
    assert t.for_chat() is t.for_chat()  # one chat view per task
    # The chat view changes generation and extraction only: same examples, ids, references, version.
    chat = t.for_chat()
    assert chat.examples("eval", n=3) == t.examples("eval", n=3) and chat.version == t.version
    assert ex.reference is not None and chat.check(ex, chat.extract(ex.reference)).passed


# The raw forms are what runs, journals and the scratch-model recipe (finetune/addition.yaml) were made with.
RAW = {"addition": (("\n",), 10), "sorting": (("\n",), 40), "reverse": (("\n",), 16), "countdown": (("\n",), 48),
       "json_extract": (("\n",), 64), "multiple_choice": (("\n",), 8),
       "python_functions": (("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert "), 384)}
CHAT = {"addition": (("\n",), 24), "sorting": (("\n",), 64), "reverse": (("\n",), 32), "countdown": (("\n",), 48),
        "json_extract": ((), 96), "multiple_choice": ((), 32), "python_functions": ((), 384)}


@pytest.mark.parametrize("name", SHIPPED)
def test_raw_settings_are_unchanged_and_chat_runs_get_their_own(name):
    t = shipped(name)
    assert (t.generation.stop, t.generation.max_new_tokens) == RAW[name]
    assert (t.for_chat().generation.stop, t.for_chat().generation.max_new_tokens) == CHAT[name]
    assert not t.generation.chat and t.generation.to_dict() == {"max_new_tokens": RAW[name][1],
                                                                "stop": list(RAW[name][0]),
                                                                "temperature": 0.0, "top_p": 1.0}


def test_raw_prompts_and_ids_are_unchanged():
    t = shipped("addition")
    ex = t.example({"a": 123, "b": 456}, level=3)
    assert ex.prompt == "123+456=" and ex.reference == "579"
    assert t.messages(ex)[-1] == {"role": "user", "content": "What is 123 + 456?"}
    # Raw extraction never reads prose: a base model's "579 apples" stays wrong.
    assert t.extract("The answer is 579.") == "The answer is 579." and not ok(t, ex, "The answer is 579.")
    assert t.extract(" 579\n") == "579" and ok(t, ex, " 579")


def _fields(name: str) -> dict:
    return {"addition": {"a": 123, "b": 456}, "sorting": {"numbers": [42, 7, 93, 15, 8]},
            "reverse": {"text": "qwertyu"}, "countdown": {"numbers": [3, 7, 25], "target": 46}}[name]


# (task, output as an instruct model writes it, passes in chat mode). The first rows of each task are
# what SmolLM2-135M-Instruct wrote.
CHAT_OUTPUTS = [
    ("addition", "579", True), ("addition", "579.", True), ("addition", "123 + 456 = 579", True),
    ("addition", "The answer is 579.", True), ("addition", "The sum of 123 and 456 is 579.", True),
    ("addition", "\n123+456=579\n\nI added them.", True),
    ("addition", "123 + 456 = 579\n\nThis is a classic...", True),
    ("addition", "123 + 456 = 199", False), ("addition", "1729", False), ("addition", "5791", False),
    ("addition", "579a", False), ("addition", "57 9", False), ("addition", "The answer is 579 or 580.", False),
    ("addition", "579 apples", False), ("addition", "579..", False), ("addition", "123 + 456", False),
    ("addition", "123 + 456 = 579 + 1", False), ("addition", "The answer is 5.79", False),
    ("addition", "", False), ("addition", "\n\n", False), ("addition", "=579", False), ("addition", ": 579", False),
    ("sorting", "7 8 15 42 93", True), ("sorting", "7, 8, 15, 42, 93", True), ("sorting", "[7, 8, 15, 42, 93]", True),
    ("sorting", "Sort in ascending order: 7 8 15 42 93", False), ("sorting", "\n7 8 15 42 93\n\nDone.", True),
    ("sorting", "42 7 93 15 8", False), ("sorting", "7 8 15 42", False), ("sorting", "7 8 15 42 93 93", False),
    ("sorting", "7 8 15 42 93 and more", False), ("sorting", "7; 8; 15; 42; 93", False),
    ("sorting", "78 15 42 93", False),
    ("reverse", "uytrewq", True), ('reverse', '"uytrewq"', True), ("reverse", 'The reversed text is "uytrewq".', True),
    ("reverse", "Reversed: uytrewq", True), ("reverse", "qwerty", False), ("reverse", "uytrewq uytrewq", False),
    ("reverse", "Uytrewq", False), ('reverse', 'Reverse the letters of "qwertyu" is "qwertyu".', False),
    ("reverse", '"uytrewq', False),
    ("countdown", "3*7+25", True), ("countdown", "3*7+25 = 46", True), ("countdown", "`3 * 7 + 25`", True),
    ("countdown", "(25+3*7).", True), ("countdown", "3*7+25 = 47", False), ("countdown", "46", False),
    ("countdown", "3*7+25+3", False), ("countdown", "To solve this problem, we need 3*7+25", False),
    ("countdown", "3*7+25 = 46 = 46", False),
]


@pytest.mark.parametrize("name,output,passes", CHAT_OUTPUTS)
def test_chat_extraction_reads_prose_strictly(name, output, passes):
    t = shipped(name)
    ex = t.example(_fields(name))
    chat = t.for_chat()
    assert chat.check(ex, chat.extract(output)).passed is passes, (output, chat.extract(output))


def test_json_and_multiple_choice_chat_extraction():
    js, mc = shipped("json_extract"), shipped("multiple_choice")
    ex = js.examples("eval", n=1)[0]
    person = ex.fields["answer"]
    pretty = json.dumps(person, indent=2)
    chat = js.for_chat()
    for output in (pretty, f"```json\n{pretty}\n```", f"Here is the JSON:\n\n{pretty}\n\nDone."):
        assert chat.check(ex, chat.extract(output)).passed, output
    # Raw mode cuts at "\n" as it always did: the multi-line JSON is no answer there.
    assert not js.check(ex, js.extract(pretty)).passed
    wrong = pretty.replace(str(person["age"]), str(person["age"] + 1))
    assert not chat.check(ex, chat.extract(wrong)).passed
    q = next(e for e in mc.examples("eval") if e.reference == "B")
    chat = mc.for_chat()
    for output, passes in [("B", True), ("B) " + q.fields["B"], True), ("The correct answer is:\n\n(B)", True),
                           ("The answer is B.", True), ("C) " + q.fields["C"], False), ("A or B", False),
                           ("A) x\nB) y\nC) z\nD) w", False), ("", False)]:
        assert chat.check(q, chat.extract(output)).passed is passes, output


def test_python_functions_chat_extraction_takes_the_fenced_function(pf_examples):
    t = shipped("python_functions")
    chat = t.for_chat()
    ex = pf_examples[1][0]
    whole = f"Here you go:\n\n```python\n{ex.prompt}{ex.reference}\n```\n\nIt passes the examples."
    assert chat.extract(whole).startswith("def ") and chat.check(ex, chat.extract(whole)).passed
    assert chat.check(ex, chat.extract(f"```python\n{ex.reference}\n```")).passed   # the body alone
    assert not chat.check(ex, chat.extract(f"```python\n{ex.prompt}    return None\n```")).passed


@pytest.mark.parametrize("name", SHIPPED)
def test_selftest_proves_the_chat_reading_sound(name):
    report = evalkit.assert_selftest(shipped(name), levels=[1], n_examples=3, max_examples=30)
    chat = {r.name: r for r in report.by_property() if r.name.startswith("chat: ")}
    assert {"chat: soundness", "chat: accepts solutions", "chat: rejects corruptions",
            "chat: rejects wrong answers in prose"} <= set(chat)
    assert chat["chat: accepts solutions"].passed and chat["chat: accepts solutions"].tried > 0
    prose = chat["chat: rejects wrong answers in prose"]
    assert prose.passed and prose.tried > 0


def test_selftest_chat_pass_catches_a_loose_chat_extractor():
    from evalkit.core.extractors import last_number

    module, _ = load("addition")

    class Loose(module.Addition):
        def chat_extract(self, output):
            return last_number(output)  # "579a" is 579: a wrong answer made right

    loose = Task(task_of("addition").spec, Loose())
    assert loose.for_chat().extract("The answer is 579a.") == "579"
    with pytest.raises(AssertionError, match="chat: "):
        evalkit.assert_selftest(loose, levels=[3], n_examples=5, max_examples=100)


def test_chat_runs_use_the_chat_reading_and_rescore_keeps_it(tmp_path):
    from evalkit.models import PythonCallableBackend
    from evalkit.run.posthoc import rescore

    def talker(prompt):
        if isinstance(prompt, str):
            return "The answer is " + str(eval(prompt.rstrip("=")))  # noqa: S307 - "a+b" of our own prompts
        a, b = prompt[-1]["content"].removeprefix("What is ").rstrip("?").split(" + ")
        return f"\n{a} + {b} = {int(a) + int(b)}\n\nI added the two numbers."

    t = shipped("addition")
    chat = evalkit.evaluate(tasks=[t], backend=PythonCallableBackend(talker), n=10, chat=True,
                            reports_dir=tmp_path)
    assert chat.rate("addition") == 1.0
    generation = chat.task("addition")["generation"]
    assert generation["stop"] == ["\n"] and generation["max_new_tokens"] == 24 and generation["chat"]
    assert rescore(chat.path, registry=_Registry(t)).rate("addition") == 1.0
    raw = evalkit.evaluate(tasks=[t], backend=PythonCallableBackend(talker), n=10)
    assert raw.rate("addition") == 0.0 and raw.task("addition")["generation"]["max_new_tokens"] == 10


class _Registry:
    def __init__(self, task: Task):
        self.task = task

    def get(self, name: str) -> Task:
        return self.task


@pytest.mark.slow
def test_smollm2_understands_every_chat_form():
    """SmolLM2-135M-Instruct in chat mode, 5 examples per task: every answer is there to read (no stop
    string cuts one to nothing). Skipped, loudly, without the cached model."""
    if not (MODEL_DIR / "config.json").is_file():
        pytest.skip(f"SKIPPED LOUDLY: the SmolLM2-135M-Instruct model is not cached at {MODEL_DIR} "
                    "(evalkit models get smollm2-135m-instruct)")
    record = evalkit.evaluate(model_spec=f"hf:{MODEL_DIR}", tasks=[shipped(n) for n in SHIPPED], n=5, seed=0,
                              chat=True, keep_samples=True, batch_size=8)
    samples = list(record.samples())
    assert len(samples) == 5 * len(SHIPPED)
    empty = [(s["task"], s["output"]) for s in samples if not s["output"].strip()]
    assert not empty, f"outputs cut to nothing: {empty}"
    for name in ("addition", "sorting", "json_extract", "multiple_choice", "python_functions"):
        answers = [s["answer"] for s in samples if s["task"] == name]
        assert sum(bool(a) for a in answers) >= 3, (name, [s["output"] for s in samples if s["task"] == name])
