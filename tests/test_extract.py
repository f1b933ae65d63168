"""Extractors for models that talk: what each returns on real instruct-model phrasings, when it returns ""
(no answer), properties over generated prose, hostile 100 KB outputs, and YAML tasks naming them."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import evalkit
from evalkit import ConfigError, score
from evalkit.core.extract import BY_NAME, make_extractor
from evalkit.core.extractors import (
    choice_letter,
    code_block,
    fenced_blocks,
    first_integer,
    first_number,
    json_value,
    last_number,
    numbers,
)
from evalkit.discovery.yamltask import load_yaml_task
from evalkit.schemas import load_schema

REPO = Path(__file__).resolve().parent.parent

# -- numbers --------------------------------------------------------------------------------
# (output, last_number, first_number, first_integer)
NUMBERS = [
    ("17 + 25 = 42.", "42", "17", "17"),
    ("The answer is 42", "42", "42", "42"),
    ("**42**", "42", "42", "42"),
    ("The answer is: **42**.", "42", "42", "42"),
    ("42\n\nExplanation: 17 + 25 = 42", "42", "42", "42"),
    ("42 apples, since 17 + 25 makes 42.", "42", "42", "42"),
    ("Let's add: 17 + 25 = 42. So the answer is 42!", "42", "17", "17"),
    ("The total is 1,234 dollars.", "1234", "1234", "1234"),
    ("1,234,567", "1234567", "1234567", "1234567"),
    ("$1,234.56", "1234.56", "1234.56", ""),
    ("-7", "-7", "-7", "-7"),
    ("\u22127", "-7", "-7", "-7"),                      # Unicode minus
    ("x = \u22127.", "-7", "-7", "-7"),
    ("+5", "5", "5", "5"),
    ("The temperature dropped to -12.5 degrees.", "-12.5", "-12.5", ""),
    ("5 - 3 = 2", "2", "5", "5"),
    ("5-3=2", "2", "5", "5"),                            # a minus between digits is subtraction, not a sign
    ("3.14", "3.14", "3.14", ""),
    (".5", ".5", ".5", ""),
    ("It is 3/4 of the cake.", "3/4", "3/4", ""),
    ("Avogadro: 6.02e23", "6.02e23", "6.02e23", ""),
    ("I have 3 apples and 2.5 pears", "2.5", "3", "3"),
    ("3.5 or maybe 4", "4", "3.5", ""),                  # first_integer never skips to a later number
    ("42%", "42", "42", "42"),
    ("5km", "5", "5", "5"),                              # a unit glued to a number keeps it
    ("It takes (42) steps", "42", "42", "42"),
    ("3,4", "4", "3", "3"),                              # not a thousands group: two numbers
    ("1,2345", "2345", "1", "1"),
    # Digits inside a longer token are no number.
    ("x2", "", "", ""),
    ("3rd", "", "", ""),
    ("The 1st step: 17 + 25 = 42", "42", "17", "17"),
    ("version v1.2.3", "", "", ""),
    ("1.2.3", "", "", ""),
    ("COVID-19", "", "", ""),
    ("GPT-4 says 7", "7", "7", "7"),
    ("0xFF", "", "", ""),
    ("0x1F", "", "", ""),
    ("H2O", "", "", ""),
    ("var_2", "", "", ""),
    ("12/25/2024", "", "", ""),
    ("2024-01-15", "15", "2024", "2024"),                # a date with hyphens reads as its parts
    ("no digits here", "", "", ""),
    ("", "", "", ""),
    ("\u0664\u0662", "", "", ""),                        # only ASCII digits are read
]


@pytest.mark.parametrize("output,last,first,integer", NUMBERS)
def test_numbers_on_real_phrasings(output, last, first, integer):
    assert last_number(output) == last
    assert first_number(output) == first
    assert first_integer(output) == integer
    found = numbers(output)
    assert (found[-1] if found else "") == last and (found[0] if found else "") == first


PROSE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="0123456789"), max_size=40)
BEFORE = st.sampled_from([" ", "\n", "(", "$", "**", ": ", " = ", " is "])
AFTER = st.sampled_from([" ", ".", "!", "?", ",", ";", ")", "**", "%", "\n", ". "])


@given(PROSE, BEFORE, st.integers(-10**30, 10**30), AFTER, PROSE)
def test_last_number_finds_any_integer_in_prose(prefix, before, n, after, suffix):
    assert last_number(prefix + before + str(n) + after + suffix) == str(n)
    assert first_number(prefix + before + str(n) + after + suffix) == str(n)


@given(st.integers(-10**20, 10**20), PROSE, BEFORE, st.text(max_size=40))
def test_first_integer_takes_the_first_whatever_follows(n, prefix, before, rest):
    assert first_integer(prefix + before + str(n) + " " + rest) == str(n)


@given(st.integers(-10**20, 10**20), st.sampled_from(["-", "\u2212"]))
def test_thousands_separators_and_unicode_minus(n, minus):
    text = f"{n:,}".replace("-", minus)
    assert last_number(f"The result is {text}.") == str(n) == first_integer(text)


@settings(max_examples=300)
@given(st.text(st.sampled_from("0123456789,.-+\u2212eE/ x\n"), max_size=600), st.text(max_size=300))
def test_last_number_reads_the_end_of_long_text_as_a_full_scan_does(noise, head):
    # last_number scans the text's end first; it must agree with reading every number.
    for text in (noise, head + noise, noise * 7):
        found = numbers(text)
        assert last_number(text) == (found[-1] if found else "")


# -- choice letters -------------------------------------------------------------------------
CHOICES = [
    ("B", "B"), ("b", "B"), ("(B)", "B"), ("B.", "B"), ("B)", "B"), ("**B**", "B"), ("`C`", "C"),
    ("Option C", "C"),
    ("The answer is (B)", "B"),
    ("The correct answer is (B) Paris.", "B"),
    ("Answer: C", "C"),
    ("answer: c", "C"),
    ("The answer is: a", "A"),
    ("My final answer is D.", "D"),
    ("The correct answer is: **B) Paris**", "B"),
    ("Sure! The answer is:\n\nC) Paris", "C"),
    ("The best choice is (d)", "D"),
    ("The correct option is C because Paris is the capital.", "C"),
    ("I'd go with C.", "C"),
    ("Option B is correct", "B"),
    ("(B) is the right answer.", "B"),
    ("B) Paris", "B"),
    ("B. Paris", "B"),
    ("B - Paris", "B"),
    ("B) Paris\n\nExplanation: option A is London, the capital of England.", "B"),
    ("C\n\nBecause the others are wrong.", "C"),
    ("A) London\nB) Paris\nThe answer is B.", "B"),       # a listing, then the answer: the phrase decides
    ("Option A is incorrect. The answer is C", "C"),
    ("I'd say (C).", "C"),
    ("The answer is B, Paris", "B"),
    # No answer, or more than one: "" rather than a guess.
    ("A or B", ""),
    ("The answer is A or B", ""),
    ("The answer is B or maybe C", ""),
    ("Either A or C", ""),
    ("The answer is A/B", ""),
    ("The answer would be A and B", ""),
    ("(A) or (B)", ""),
    ("A, B and C are all wrong", ""),
    ("A) London\nB) Paris", ""),                          # the options listed back: no pick
    ("The answer is (B). Wait, no, the answer is (C).", ""),
    ("You can choose A, B, C or D", ""),
    ("The answer is E", ""),                              # not a valid letter (A-D)
    ("The answer is Berlin", ""),
    ("The answer is a bit unclear", ""),
    ("Definitely C", ""),                                 # running prose is not read
    ("A cat sat on the mat.", ""),
    ("Paris", ""),
    ("BX", ""),
    ("", ""),
]


@pytest.mark.parametrize("output,letter", CHOICES)
def test_choice_on_real_phrasings(output, letter):
    assert choice_letter()(output) == letter


def test_choice_letters_are_configurable():
    five = choice_letter("ABCDE")
    assert five("The answer is E") == "E" and choice_letter()("The answer is E") == ""
    assert choice_letter(["a", "b"])("answer: B") == "B"
    assert choice_letter("AB")("The answer is C") == ""
    for bad in ("", "A1", "AA", "Aa", 5, ["AB"]):
        with pytest.raises(ValueError):
            choice_letter(bad)


@given(st.sampled_from("ABCD"), st.sampled_from([
    "{}", "({})", "{})", "**{}**", "Answer: {}", "The answer is ({}).", "The correct answer is {}) Paris.",
    "I think the answer is {} because that is the capital.", "{}) Paris\nThat is the capital.",
    "Sure! The correct option is {}.",
]))
def test_choice_reads_each_letter_in_each_phrasing(letter, template):
    assert choice_letter()(template.format(letter)) == letter
    assert choice_letter()(template.format(letter).lower()) in (letter, "")  # lowercase: read only when set off


@given(st.sampled_from("ABCD"), st.sampled_from("ABCD"), st.sampled_from(["{} or {}", "The answer is {} or {}",
                                                                          "The answer is {} and {}", "{}/{}"]))
def test_choice_refuses_two_letters(a, b, template):
    assert choice_letter()(template.format(a, b)) == ""  # an alternative offered, even "A or A": no pick


# -- JSON -----------------------------------------------------------------------------------
JSON_CASES = [
    ('Sure! Here\'s the JSON:\n```json\n{"name": "Ada", "age": 36}\n```', '{"age": 36, "name": "Ada"}'),
    ('```json\n{\n  "name": "Ada"\n}\n```\nLet me know if you need anything else!', '{"name": "Ada"}'),
    ('{"name": "Ada", "age": 36}', '{"age": 36, "name": "Ada"}'),
    ('The result is {"a": 1} as requested.', '{"a": 1}'),
    ('{"a": "}"} trailing', '{"a": "}"}'),                        # braces inside strings
    ('{"text": "use {braces} and [brackets]"}', '{"text": "use {braces} and [brackets]"}'),
    ('{"x": [1, {"y": "]"}]} and {"z": 1}', '{"x": [1, {"y": "]"}]}'),
    ('[1, 2, 3]', '[1, 2, 3]'),
    ('Use {curly braces} for objects: {"a": 1}', '{"a": 1}'),        # a span that is not JSON is skipped
    ('Input was {"x": 1}.\n```json\n{"y": 2}\n```', '{"y": 2}'),     # a fenced value wins over prose
    ('```json\n// the person\n{"a": 1}\n```', '{"a": 1}'),           # not a whole-JSON fence: the first value
    ('{"name": "Zo\u00eb"}', '{"name": "Zo\u00eb"}'),               # non-ASCII kept
    ('{"a": "\\ud800"}', '{"a": "\\ud800"}'),                        # a lone surrogate stays escaped
    ('{"b":1,"a":2}', '{"a": 2, "b": 1}'),                           # canonical: sorted keys, json.dumps spacing
    # No JSON: "".
    ('{"answer": {"name": "Bo", "age": 3}', ""),                     # cut off: not the nested object
    ('{"a": 1, "b": {"c": 2},}', ""),                                 # trailing comma: not the nested object
    ("{'a': 1}", ""),
    ('{"a": NaN}', ""),
    ('{"a": 1e999}', ""),
    ('{"a": 1} is not {"a": 1', '{"a": 1}'),
    ("I cannot produce JSON for that.", ""),
    ("", ""),
]


@pytest.mark.parametrize("output,expect", JSON_CASES)
def test_json_on_real_phrasings(output, expect):
    assert json_value(output) == expect


JSONABLE = st.recursive(
    st.none() | st.booleans() | st.integers(-10**18, 10**18) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
PLAIN_PROSE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters='{}[]"`~'), max_size=30)


@given(st.dictionaries(st.text(max_size=8), JSONABLE, max_size=5), PLAIN_PROSE, PLAIN_PROSE,
       st.sampled_from(["{}", "```json\n{}\n```", "```\n{}\n```", "Sure! Here it is:\n```json\n{}\n```\nDone."]),
       st.sampled_from([None, 2]), st.booleans())
def test_json_round_trips_any_object_in_prose_and_fences(obj, before, after, wrap, indent, ascii_only):
    text = json.dumps(obj, indent=indent, ensure_ascii=ascii_only)
    out = json_value(before + " " + wrap.format(text) + " " + after)
    assert json.loads(out) == obj
    assert out == json.dumps(obj, sort_keys=True, ensure_ascii=False) or "\\ud" in out.lower()


# -- code blocks ----------------------------------------------------------------------------
PY = "def f(x):\n    return x"
CODE_CASES = [
    ("```python\ndef f(x):\n    return x\n```", PY),
    ("Sure! Here's the code:\n\n```python\ndef f(x):\n    return x\n```\n\nThis returns x.", PY),
    ("```py\ndef f(x):\n    return x\n```", PY),
    ("```Python3\ndef f(x):\n    return x\n```", PY),
    ("```bash\npip install x\n```\nThen:\n```python\ndef f(x):\n    return x\n```", PY),   # the python block
    ("```\ndef f(x):\n    return x\n```", PY),                                            # untagged
    ("Here: ```python\ndef f(x):\n    return x\n```", PY),                                # fence after text
    ("```python\ndef f(x):\n    return x```\nmore prose", PY),                            # closing fence glued on
    ("```python\ndef f(x):\n    return x", PY),                                           # cut off: to the end
    ("  ```python\n  def f(x):\n      return x\n  ```", PY),                              # indented fence
    ("```python\n\n\ndef f(x):\n    return x\n\n\n```", PY),
    ("~~~python\ndef f(x):\n    return x\n~~~", PY),
    ("````markdown\n```python\nx = 1\n```\n````", "```python\nx = 1\n```"),             # nested fences
    ("```python\ns = '```'\n```", "s = '```'"),
    ("```python\n```", ""),                                                               # an empty block
    ("def f(x):\n    return x\n", PY),                                                    # no fence: the output
    ("    return x\n\n", "    return x"),                                                 # completion: indent kept
]


@pytest.mark.parametrize("output,expect", CODE_CASES)
def test_code_block_on_real_phrasings(output, expect):
    assert code_block("python")(output) == expect


def test_code_block_options():
    two = "```bash\npip install x\n```\n```python\nprint(1)\n```"
    assert code_block()(two) == "pip install x" and code_block("python")(two) == "print(1)"
    assert code_block("rust")(two) == "pip install x"             # no rust block: the first block
    assert code_block("sh")(two) == "pip install x"
    assert code_block(fallback=False)("def f(): pass") == ""      # no fence and no fallback: no answer
    assert code_block()("I use ```x``` inline.") == "I use ```x``` inline."
    assert code_block(fallback=False)("I use ```x``` inline.") == ""
    assert list(fenced_blocks("```python\na\n```\ntext\n```\nb\n```")) == [("python", "a"), ("", "b")]
    for bad in ({"language": ""}, {"language": 3}, {"fallback": "yes"}):
        with pytest.raises(ValueError):
            code_block(**bad)


CODE_LINE = st.text(st.characters(blacklist_categories=("Cs", "Zl", "Zp", "Cc"), blacklist_characters="`~"),
                    max_size=30)


@given(st.lists(CODE_LINE, min_size=1, max_size=6), PLAIN_PROSE, PLAIN_PROSE)
def test_code_block_returns_any_fenced_code(lines, before, after):
    code = "\n".join(lines).strip("\n")
    want = re.sub(r"\A(?:[ \t]*\n)+", "", code).rstrip()
    assert code_block("python")(f"{before}\n```python\n{code}\n```\n{after}") == want


# -- every extractor on hostile output ------------------------------------------------------
JUNK = {
    "digits": "9" * 100_000, "commas": "9," * 50_000, "dots": "1." * 50_000, "signs": "-" * 100_000,
    "minus digits": "-1" * 50_000, "letters and digits": "a1" * 50_000, "braces": "{" * 100_000,
    "balanced": "{" * 50_000 + "}" * 50_000, "brackets": "[" * 50_000 + "]" * 50_000, "quotes": '"' * 100_000,
    "escaped quotes": '{"' + '\\"' * 50_000, "keys": '{"a":' * 20_000, "open string": '{"a": "' + "x" * 100_000,
    "backticks": "`" * 100_000, "fences": "```\n" * 25_000, "tildes": "~~~x\n" * 20_000,
    "fence then spaces": "```" + " " * 100_000 + "`", "newlines": "\n" * 100_000, "answer": "the answer is " * 7_000,
    "letters": "A " * 50_000, "options": "A)\n" * 33_000, "alternatives": "B or " * 20_000,
    "choices": "(A) " * 25_000, "prose": "The quick brown fox, 17 + 25 = 42. " * 2_900,
}
EXTRACTORS = {name: make_extractor(name) for name in sorted(BY_NAME) if name != "regex"}


@pytest.mark.parametrize("kind", sorted(JUNK))
def test_every_extractor_is_fast_on_100kb_of_junk(kind):
    text = JUNK[kind]
    for name, extract in EXTRACTORS.items():
        spent = min(_time(extract, text) for _ in range(3))
        # A few ms on an idle core; the bound leaves room for a loaded CI machine while catching
        # anything quadratic (which takes seconds on 100 KB).
        assert spent < 0.25, f"{name} took {spent * 1000:.0f} ms on {kind}"


def _time(extract, text):
    start = time.perf_counter()
    assert isinstance(extract(text), str)
    return time.perf_counter() - start


# -- by name: the registry, the schema, the docs and YAML tasks -----------------------------
NEW = ["last_number", "first_number", "first_integer", "json", "choice", "code_block"]


def test_registry_schema_and_docs_name_the_same_extractors():
    spec = load_schema("task")["properties"]["extract"]
    assert set(spec["then"]["enum"]) == set(BY_NAME) - {"regex"}
    assert set(spec["else"]["properties"]["type"]["enum"]) == set(BY_NAME)
    docs = (REPO / "docs" / "WRITING_TASKS.md").read_text(encoding="utf-8")
    table = set(re.findall(r"^\| `(\w+)` \|", docs.split("## Extractors")[1].split("\n## ")[0], re.MULTILINE))
    assert table == set(BY_NAME)


def test_make_extractor_builds_each_by_name():
    assert make_extractor("last_number")("so 17 + 25 = 42.") == "42"
    assert make_extractor("first_integer")("42, because 17 + 25 = 42") == "42"
    assert make_extractor({"type": "choice", "letters": "ABCDE"})("The answer is (E).") == "E"
    assert make_extractor({"type": "code_block", "language": "python", "fallback": False})("nothing") == ""
    assert make_extractor("json")('Here: {"a": 1}') == '{"a": 1}'


def _task(tmp_path: Path, extract: str, rows: list[dict], check: str = "exact", stop: str = "[]") -> evalkit.Task:
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text(
        f'name: t\ndata: rows.jsonl\nprompt: "{{q}}"\nreference: "{{a}}"\nextract: {extract}\n'
        f"check: {check}\ngeneration: {{stop: {stop}}}\n")
    return load_yaml_task(tmp_path / "t.yaml")


@pytest.mark.parametrize("extract,check,row,passes,fails", [
    ("last_number", "{name: numeric}", {"q": "17+25?", "a": "42"},
     ["Let's add: 17 + 25 = 42.", "The answer is **42**", "42"], ["17 + 25 = 41.", "42 or 43?", "x42"]),
    ("first_number", "{name: numeric}", {"q": "Half of 7?", "a": "3.5"},
     ["3.5, since 7 / 2 = 3.5", "**3.5**"], ["7 / 2 = 3.5", "It is 3.50000001."]),
    ("first_integer", "{name: numeric}", {"q": "Apples?", "a": "1234"},
     ["1,234 apples (1,000 + 234)", "1234\nQ: next question 5"], ["3.5 or 1234", "There are 1233."]),
    ("json", "{name: json_schema, equal_fields: [name]}", {"q": "Who?", "a": {"name": "Ada"}},
     ['Sure! Here\'s the JSON:\n```json\n{"name": "Ada"}\n```'], ['{"name": "Bob"}', '{"name": "Ada"']),
    ("choice", "{name: choice, letters: ABCD}", {"q": "Capital of France?", "a": "B"},
     ["The correct answer is (B) Paris.", "Answer: B", "B) Paris"], ["A or B", "The answer is (C)", "Paris"]),
    ("{type: choice, letters: ABCDE}", "{name: choice, letters: ABCDE}", {"q": "Pick", "a": "E"},
     ["The answer is E."], ["The answer is D.", "D or E"]),
    ("{type: code_block, language: python}", "{name: regex, pattern: '^def f\\(x\\):', mode: search}",
     {"q": "Write f", "a": "def f(x):\n    return x"},
     ["Sure!\n```python\ndef f(x):\n    return x\n```", "def f(x): return x"], ["```python\nf = 1\n```"]),
])
def test_yaml_task_names_each_extractor(tmp_path, extract, check, row, passes, fails):
    t = _task(tmp_path, extract, [row], check=check)
    [ex] = t.examples("eval")
    assert score(t, ex, ex.reference).verdict.passed  # the reference goes through the same extraction
    for output in passes:
        assert score(t, ex, output).verdict.passed, output
    for output in fails:
        assert not score(t, ex, output).verdict.passed, output


def test_yaml_choice_task_passes_its_selftest(tmp_path):
    rows = [{"q": f"Question {i}?", "a": "ABCD"[i % 4]} for i in range(8)]
    t = _task(tmp_path, "choice", rows, check="{name: choice, letters: ABCD}", stop='["\\n"]')
    evalkit.assert_selftest(t, max_examples=20)


@pytest.mark.parametrize("extract,field,expect", [
    ("{type: choice, letters: AB1}", "extract.letters", "expected text matching"),
    ("{type: choice, language: python}", "extract.language", "unknown field; expected one of: letters, type"),
    ("{type: last_number, letters: AB}", "extract.letters", "unknown field; expected one of: type"),
    ("{type: code_block, fallback: 1}", "extract.fallback", "expected boolean"),
    ("choise", "extract", "expected one of"),
    ("{type: choice, letters: AAB}", "extract", "letters must be distinct"),
])
def test_yaml_extractor_errors_name_the_field(tmp_path, extract, field, expect):
    with pytest.raises(ConfigError) as info:
        _task(tmp_path, extract, [{"q": "x", "a": "A"}])
    assert f"field '{field}'" in str(info.value) and expect in str(info.value), str(info.value)
