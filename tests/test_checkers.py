"""Tests for the built-in checkers (evalkit.checkers)."""

from __future__ import annotations

import json
import os
import string
import sys
import time
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evalkit import checkers
from evalkit.checkers import make
from evalkit.core.example import Example
from evalkit.core.scoring import call_with_deadline
from evalkit.core.verdict import Status, Verdict


def ex(reference: str | None = None, **fields) -> Example:
    return Example(id="x", task="t", split="eval", fields=fields, prompt="p", reference=reference)


def passes(check, example: Example, answer: str) -> bool:
    v = check(example, answer)
    assert isinstance(v, Verdict)
    return v.passed


WEIRD = ["", " ", "\x00", "\ud800", "\u202e\x1b[31mred", "🙂" * 50, "x" * 100_000, "[" * 100_000,
         "{" * 100_000, '{"a":' * 50_000, "9" * 100_000, "1e999999999", "-" * 1000, "((((B", "\n" * 1000]


# -- registry ---------------------------------------------------------------------------
def test_registry_has_all_builtins():
    assert {"exact", "regex", "numeric", "choice", "json_schema", "python_tests",
            "all_of", "any_of", "weighted"} <= set(checkers.REGISTRY)


def test_make_unknown_name_lists_known():
    with pytest.raises(KeyError, match="known checkers"):
        make("nope")


# -- exact ------------------------------------------------------------------------------
def test_exact_strip_default():
    check = make("exact")
    assert passes(check, ex("579"), " 579\n")
    v = check(ex("579"), "578")
    assert not v.passed and v.reason == "expected '579', got '578'"


def test_exact_field_and_normalisations():
    check = make({"name": "exact", "field": "city", "normalize": ["casefold", "whitespace", "punctuation"]})
    assert passes(check, ex(city="New  York"), "new york!")
    assert not passes(check, ex(city="New York"), "newyork")
    assert passes(make({"name": "exact", "field": "n"}), ex(n=42), "42")  # str() of the expected value


def test_exact_bad_params():
    with pytest.raises(ValueError, match="normalize"):
        make({"name": "exact", "normalize": ["stripp"]})
    with pytest.raises(TypeError, match="field"):
        make({"name": "exact", "field": 3})


def test_exact_missing_reference_raises_value_error():
    with pytest.raises(ValueError, match="no reference"):
        make("exact")(ex(None), "x")


def test_exact_truncates_long_answers_in_reason():
    v = make("exact")(ex("a"), "b" * 10_000)
    assert not v.passed and len(v.reason) < 200


@given(st.text())
def test_exact_is_reflexive(s):
    for how in (["strip"], ["casefold"], ["whitespace", "punctuation"]):
        assert passes(make({"name": "exact", "normalize": how}), ex(s), s)


@given(st.text(alphabet=string.ascii_letters + string.digits + " "))
def test_exact_casefold_ignores_case(s):
    check = make({"name": "exact", "normalize": ["strip", "casefold"]})
    assert passes(check, ex(s), s.swapcase())


# -- regex ------------------------------------------------------------------------------
def test_regex_fullmatch_and_search():
    check = make({"name": "regex", "pattern": r"\d{3}-\d{4}"})
    assert passes(check, ex(), "555-1234")
    assert not passes(check, ex(), "call 555-1234")
    assert passes(make({"name": "regex", "pattern": r"\d{3}-\d{4}", "mode": "search"}), ex(), "call 555-1234")


def test_regex_flags():
    assert passes(make({"name": "regex", "pattern": "yes", "flags": "i"}), ex(), "YES")
    assert passes(make({"name": "regex", "pattern": "^b$", "mode": "search", "flags": "m"}), ex(), "a\nb\nc")
    assert passes(make({"name": "regex", "pattern": "a.b", "flags": "s"}), ex(), "a\nb")
    assert not passes(make({"name": "regex", "pattern": "a.b"}), ex(), "a\nb")


def test_regex_placeholders_are_escaped():
    check = make({"name": "regex", "pattern": r"The total is {total}\.?"})
    assert passes(check, ex(total="1.5"), "The total is 1.5.")
    assert not passes(check, ex(total="1.5"), "The total is 1x5")  # "." in the field is literal
    assert passes(make({"name": "regex", "pattern": r"{a}\d{2}"}), ex(a="(x)"), "(x)42")


def test_regex_missing_field_is_value_error():
    with pytest.raises(ValueError, match="nope"):
        make({"name": "regex", "pattern": "{nope}"})(ex(), "x")


def test_regex_bad_params():
    with pytest.raises(ValueError, match="pattern"):
        make({"name": "regex", "pattern": "(unclosed"})
    with pytest.raises(ValueError, match="mode"):
        make({"name": "regex", "pattern": "a", "mode": "match"})
    with pytest.raises(ValueError, match="flags"):
        make({"name": "regex", "pattern": "a", "flags": "x"})
    with pytest.raises(TypeError, match="pattern"):
        make({"name": "regex", "pattern": 3})


@given(st.text())
def test_regex_placeholder_matches_its_own_value(s):
    assert passes(make({"name": "regex", "pattern": "{v}"}), ex(v=s), s)


# -- numeric ----------------------------------------------------------------------------
@pytest.mark.parametrize("ref, answer", [
    ("579", "579"), ("579", " 579 "), ("1234", "1,234"), ("-1234567", "-1,234,567"), ("5", "+5"),
    ("0.5", "1/2"), ("1/2", ".5"), ("-3/4", "-0.75"), ("-3/4", "-3/4"), ("6.02e23", "602000000000000000000000"),
    ("0.001", "1E-3"), ("5", "5."), ("0", "-0"), ("3/4", "6/8"), ("1234.5", "1,234.50"),
])
def test_numeric_equal(ref, answer):
    assert passes(make("numeric"), ex(ref), answer)


@pytest.mark.parametrize("answer, why", [
    ("578", "expected '579', got '578'"), ("abc", "not a number"), ("", "not a number"),
    ("1,23", "not a number"), ("12,3456", "not a number"), ("nan", "not a finite number"),
    ("-inf", "not a finite number"), ("Infinity", "not a finite number"), ("5/0", "zero denominator"),
    ("1e999999999", "exponent"), ("9" * 100_000, "too long"), ("579 apples", "not a number"),
    ("٥٧٩", "not a number"),  # non-ASCII digits are not read as numbers
])
def test_numeric_fail(answer, why):
    v = make("numeric")(ex("579"), answer)
    assert v.status is Status.FAIL and why in v.reason


def test_numeric_tolerances():
    assert passes(make({"name": "numeric", "abs_tol": 0.01}), ex("3.14159"), "3.15")
    assert not passes(make({"name": "numeric", "abs_tol": 0.001}), ex("3.14159"), "3.15")
    assert passes(make({"name": "numeric", "rel_tol": 0.01}), ex("1000"), "1009")
    assert not passes(make({"name": "numeric", "rel_tol": 0.01}), ex("1000"), "1011")
    assert passes(make({"name": "numeric", "abs_tol": 0.1}), ex("0.2"), "0.3")  # exact, no float error


def test_numeric_expected_from_field_and_types():
    check = make({"name": "numeric", "field": "v"})
    assert passes(check, ex(v=0.1), "0.1")  # a float means the decimal it was written as
    assert passes(check, ex(v=7), "7.0")
    assert passes(check, ex(v=Fraction(1, 3)), "1/3")
    with pytest.raises(ValueError, match="expected value"):
        check(ex(v="seven"), "7")


def test_numeric_bad_params():
    for bad in ({"abs_tol": -1}, {"rel_tol": float("nan")}, {"abs_tol": float("inf")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            make({"name": "numeric", **bad})
    with pytest.raises(TypeError, match="abs_tol"):
        make({"name": "numeric", "abs_tol": "0.1"})


fractions_ = st.fractions(max_denominator=10**6).filter(lambda f: abs(f) < 10**12)


@given(fractions_)
def test_numeric_fraction_text_equals_itself(f):
    check = make("numeric")
    assert passes(check, ex(str(f)), str(f))
    assert passes(check, ex(f"{f.numerator}/{f.denominator}"), f"{f.numerator}/{f.denominator}")


@given(st.integers(-10**15, 10**15), st.integers(0, 30), st.integers(0, 30))
def test_numeric_exact_decimal_equals_fraction(n, twos, fives):
    f = Fraction(n, 2**twos * 5**fives)
    with localcontext() as ctx:
        ctx.prec = 200  # enough digits that the division is exact
        dec = str(Decimal(f.numerator) / Decimal(f.denominator))
    assert passes(make("numeric"), ex(f"{f.numerator}/{f.denominator}"), dec)
    assert passes(make("numeric"), ex(dec), f"{f.numerator}/{f.denominator}")


@given(st.integers(-10**40, 10**40))
def test_numeric_thousands_commas(n):
    assert passes(make("numeric"), ex(str(n)), f"{n:,}")


@given(fractions_, st.fractions(min_value=0, max_value=1, max_denominator=1000))
def test_numeric_within_abs_tol_passes(f, d):
    check = make({"name": "numeric", "abs_tol": 0.5})
    assert passes(check, ex(str(f)), str(f + d / 2)) and passes(check, ex(str(f)), str(f - d / 2))


# -- choice -----------------------------------------------------------------------------
@pytest.mark.parametrize("answer", [
    "B", "b", "(B)", "B)", "B.", "[B]", "B) the text", "(B) the text", "B. the text", "Answer: B", "answer: b",
    "The answer is (B)", "The answer is B.", "The correct answer is B, because", "**B**", "B\n\nBecause ...",
    "I believe the answer is **(B)**", "The best option is B",
])
def test_choice_reads_b(answer):
    assert make("choice")(ex("B"), answer).passed


@pytest.mark.parametrize("answer, why", [
    ("A or B", "ambiguous"), ("(A) or (B)", "ambiguous"), ("The answer is A or B", "ambiguous"),
    ("Answer: A. The answer is B", "ambiguous"), ("BX", "no choice"), ("Banana", "no choice"),
    ("", "no choice"), ("bb", "no choice"), ("The answer is a bit unclear", "no choice"),
    ("B2", "no choice"), ("K", "not one of the choices"),
])
def test_choice_strict_failures(answer, why):
    v = make("choice")(ex("B"), answer)
    assert v.status is Status.FAIL and why in v.reason


def test_choice_wrong_letter():
    v = make("choice")(ex("B"), "C")
    assert not v.passed and v.reason == "expected 'B', got 'C'"


def test_choice_expected_index_and_letters():
    check = make({"name": "choice", "field": "label", "letters": "ABCD"})
    assert passes(check, ex(label=0), "A")
    assert passes(check, ex(label="2"), "(c)")
    assert not passes(check, ex(label=1), "E")
    with pytest.raises(ValueError, match="out of range"):
        check(ex(label=4), "A")
    with pytest.raises(ValueError, match="expected choice"):
        check(ex(label="Z"), "A")


def test_choice_bad_letters():
    for bad in ("", "AAB", "Ab1", "Aa"):
        with pytest.raises(ValueError, match="letters"):
            make({"name": "choice", "letters": bad})


@given(st.sampled_from("ABCDEFGHIJ"), st.sampled_from(
    ["{}", "{l}", "({})", "{})", "{}.", "{}) some text", "Answer: {}", "The answer is ({})", "answer is **{}**"]))
def test_choice_reads_formats(letter, template):
    answer = template.format(letter, l=letter.lower())
    assert make("choice")(ex(letter), answer).passed


# -- json_schema ------------------------------------------------------------------------
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
          "required": ["name", "age"]}


def test_json_schema_valid_in_fence_and_prose():
    check = make({"name": "json_schema", "schema": PERSON})
    assert passes(check, ex(), '{"name": "Ada", "age": 36}')
    assert passes(check, ex(), 'Here you go:\n```json\n{"name": "Ada", "age": 36}\n```\nThanks.')


def test_json_schema_reasons_name_path():
    check = make({"name": "json_schema", "schema": PERSON})
    v = check(ex(), '{"name": "Ada", "age": -1}')
    assert not v.passed and v.reason.startswith("$.age:") and "minimum" in v.reason
    assert "required" in check(ex(), '{"name": "Ada"}').reason
    assert "no JSON" in check(ex(), "no json here").reason
    long = check(ex(), json.dumps({"name": "x" * 10_000, "age": "old" * 10_000}))
    assert len(long.reason) < 200


def test_json_schema_from_field_and_dollar_schema():
    check = make({"name": "json_schema", "schema_field": "schema"})
    assert passes(check, ex(schema={"type": "array", "items": {"type": "integer"}}), "[1, 2, 3]")
    assert not passes(check, ex(schema=json.dumps({"type": "array", "items": {"type": "integer"}})), "[1, 'x']")
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "array", "items": [{"type": "integer"}]}
    assert passes(make({"name": "json_schema", "schema": draft7}), ex(), '[1, "ignored"]')
    with pytest.raises(ValueError, match="invalid JSON Schema"):
        check(ex(schema={"type": "nonsense"}), "[]")


def test_json_schema_equal_fields():
    check = make({"name": "json_schema", "schema": PERSON, "equal_fields": ["name"]})
    assert passes(check, ex('{"name": "Ada", "age": 1}'), '{"name": "Ada", "age": 36}')
    assert "'name'" in check(ex('{"name": "Ada", "age": 1}'), '{"name": "Bob", "age": 36}').reason
    flags = make({"name": "json_schema", "equal_fields": ["ok", "n"]})
    assert not passes(flags, ex('{"ok": true, "n": 1}'), '{"ok": 1, "n": 1}')  # true is not 1
    assert passes(flags, ex('{"ok": true, "n": 1}'), '{"ok": true, "n": 1.0}')
    assert "missing key" in flags(ex('{"ok": true, "n": 1}'), '{"ok": true}').reason
    assert not passes(flags, ex('{"ok": true, "n": 1}'), "[1]")
    with pytest.raises(ValueError, match="reference"):
        flags(ex('{"ok": true}'), '{"ok": true, "n": 1}')


def test_json_schema_bad_params():
    with pytest.raises(ValueError, match="invalid JSON Schema at"):
        make({"name": "json_schema", "schema": {"type": "object", "properties": {"a": {"type": 5}}}})
    with pytest.raises(ValueError, match="either schema or schema_field"):
        make({"name": "json_schema", "schema": {}, "schema_field": "s"})
    with pytest.raises(ValueError, match="give schema"):
        make({"name": "json_schema"})
    with pytest.raises(TypeError, match="equal_fields"):
        make({"name": "json_schema", "equal_fields": "name"})


def test_json_schema_never_fetches_remote_refs():
    check = make({"name": "json_schema", "schema": {"$ref": "https://example.invalid/schema.json"}})
    with pytest.raises(ValueError, match="unresolvable"):
        check(ex(), "{}")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_json_schema_round_trip(obj):
    text = json.dumps(obj)
    check = make({"name": "json_schema", "schema": {"type": "object"}, "equal_fields": list(obj) or ["k"]})
    reference = text if obj else '{"k": 1}'
    answer = f"Sure! ```json\n{text}\n```" if obj else '{"k": 1}'
    assert passes(check, ex(reference), answer)


# -- never raise ------------------------------------------------------------------------
SAFE_SPECS = [
    "exact", {"name": "exact", "normalize": ["casefold", "whitespace", "punctuation"]},
    {"name": "regex", "pattern": r"\d+(\.\d+)?"}, {"name": "regex", "pattern": "{v}", "mode": "search"},
    {"name": "numeric", "field": "n"}, {"name": "choice", "field": "v"},
    {"name": "json_schema", "schema": PERSON, "equal_fields": ["name"]},
    {"name": "all_of", "checks": [{"name": "numeric", "field": "n"}, "exact"]},
    {"name": "any_of", "checks": [{"name": "choice", "field": "v"}, {"name": "numeric", "field": "n"}]},
]
REF_EX = ex('{"name": "B", "age": 1}', v="B", n="-1,234.5")


@pytest.mark.parametrize("spec", SAFE_SPECS, ids=str)
@pytest.mark.parametrize("answer", WEIRD, ids=range(len(WEIRD)))
def test_checkers_survive_weird_answers(spec, answer):
    start = time.monotonic()
    v = make(spec)(REF_EX, answer)
    assert v.status in (Status.PASS, Status.FAIL) and len(v.reason) < 400
    assert time.monotonic() - start < 1.0


@settings(max_examples=60)
@given(st.text())
def test_checkers_never_raise_on_text(answer):
    for spec in SAFE_SPECS:
        assert make(spec)(REF_EX, answer).status in (Status.PASS, Status.FAIL)


# -- compose ----------------------------------------------------------------------------
def fixed(status: Status, score: float | None = None, reason: str = ""):
    v = Verdict(status, score if score is not None else (1.0 if status is Status.PASS else 0.0), reason or status.value)
    return lambda example, answer: v


P, F, E, T = (fixed(s) for s in (Status.PASS, Status.FAIL, Status.ERROR, Status.TIMEOUT))


def test_all_of():
    check = make({"name": "all_of", "checks": [{"name": "numeric"}, {"name": "regex", "pattern": r"\d+"}]})
    assert passes(check, ex("42"), "42")
    v = check(ex("42"), "42.0")
    assert v.status is Status.FAIL and "regex" in v.reason and "numeric" not in v.reason
    assert make({"name": "all_of", "checks": [P, F, E]})(ex(), "").status is Status.FAIL  # decided by FAIL
    assert make({"name": "all_of", "checks": [P, T]})(ex(), "").status is Status.TIMEOUT
    assert make({"name": "all_of", "checks": [fixed(Status.PASS, 0.7), P]})(ex(), "").score == 0.7


def test_any_of():
    check = make({"name": "any_of", "checks": ["numeric", {"name": "exact", "normalize": ["casefold"]}]})
    assert passes(check, ex("Seven"), "seven") and passes(check, ex("7"), "7.0")
    assert not passes(check, ex("7"), "eight")
    assert make({"name": "any_of", "checks": [E, P]})(ex(), "").status is Status.PASS  # decided by PASS
    assert make({"name": "any_of", "checks": [F, E]})(ex(), "").status is Status.ERROR
    assert make({"name": "any_of", "checks": [fixed(Status.FAIL, 0.3), F]})(ex(), "").score == 0.3


def test_compose_sub_check_that_raises_is_error():
    def boom(example, answer):
        raise RuntimeError("bug")

    assert make({"name": "any_of", "checks": [boom, P]})(ex(), "").passed
    v = make({"name": "all_of", "checks": [boom, P]})(ex(), "")
    assert v.status is Status.ERROR and "RuntimeError" in v.reason


def test_weighted():
    half = [{"check": P, "weight": 1}, {"check": F, "weight": 1}]
    v = make({"name": "weighted", "checks": half, "threshold": 0.5})(ex(), "")
    assert v.passed and v.score == 0.5
    assert not make({"name": "weighted", "checks": half})(ex(), "").passed
    thirds = [{"check": P, "weight": 0.1}, {"check": P, "weight": 0.2}]
    assert make({"name": "weighted", "checks": thirds})(ex(), "").passed
    mixed = [{"check": P, "weight": 3}, {"check": T, "weight": 1}]
    assert make({"name": "weighted", "checks": mixed, "threshold": 0.7})(ex(), "").passed  # 0.75 anyway
    assert make({"name": "weighted", "checks": mixed, "threshold": 0.9})(ex(), "").status is Status.TIMEOUT
    lost = [{"check": F, "weight": 3}, {"check": E, "weight": 1}]
    assert make({"name": "weighted", "checks": lost, "threshold": 0.5})(ex(), "").status is Status.FAIL


def test_compose_bad_params():
    with pytest.raises(ValueError, match="empty"):
        make({"name": "all_of", "checks": []})
    with pytest.raises(TypeError, match="list"):
        make({"name": "any_of", "checks": "exact"})
    with pytest.raises(KeyError, match=r"checks\[1\]"):
        make({"name": "all_of", "checks": ["exact", "nope"]})
    with pytest.raises(ValueError, match=r"checks\[0\].*normalize"):
        make({"name": "all_of", "checks": [{"name": "exact", "normalize": ["bad"]}]})
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="weight"):
            make({"name": "weighted", "checks": [{"check": "exact", "weight": bad}]})
    with pytest.raises(ValueError, match="threshold"):
        make({"name": "weighted", "checks": [{"check": "exact", "weight": 1}], "threshold": 1.5})
    with pytest.raises(ValueError, match="unknown keys"):
        make({"name": "weighted", "checks": [{"check": "exact", "wieght": 1}]})


# -- python_tests -----------------------------------------------------------------------
ADD = {"prompt": 'def add(a, b):\n    """Return a + b."""\n', "entry_point": "add",
       "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"}


@pytest.fixture(scope="module")
def run_code():
    return make({"name": "python_tests", "timeout": 1.0, "memory_mb": 512})


def test_python_tests_pass_and_fail(run_code):
    assert run_code(ex(**ADD), "    return a + b\n").passed
    v = run_code(ex(**ADD), "    return a - b\n")
    assert v.status is Status.FAIL and "AssertionError" in v.reason
    v = run_code(ex(**ADD), "    return undefined_name\n")
    assert v.status is Status.FAIL and "NameError" in v.reason
    assert "SyntaxError" in run_code(ex(**ADD), "    return (\n").reason
    assert not run_code(ex(**ADD), "\ud800").passed


def test_python_tests_infinite_loop_times_out(run_code):
    start = time.monotonic()
    v = run_code(ex(**ADD), "    while True:\n        pass\n")
    assert v.status is Status.TIMEOUT and time.monotonic() - start < 3.0


def test_python_tests_memory_hog_fails(run_code):
    v = run_code(ex(**ADD), "    x = bytearray(4 * 1024**3)\n    return a + b\n")
    assert v.status is Status.FAIL and "MemoryError" in v.reason


def test_python_tests_endless_output_is_capped(run_code):
    start = time.monotonic()
    v = run_code(ex(**ADD), "    while True:\n        print('x' * 10000)\n")
    assert v.status in (Status.FAIL, Status.TIMEOUT) and time.monotonic() - start < 3.0


def test_python_tests_runs_in_a_temporary_directory(run_code, tmp_path, monkeypatch):
    # The sandbox cannot write outside its own folder (docs/SECURITY.md): the program checks
    # its working folder itself, at load time; a second run must find a fresh one.
    monkeypatch.chdir(tmp_path)
    answer = ("    return a + b\nimport os\n"
              "assert not os.path.exists('marker.txt')\n"
              "open('marker.txt', 'w').write('x')\n"
              f"assert os.getcwd() != {str(tmp_path)!r} and os.environ['HOME'] == os.getcwd()\n")
    assert run_code(ex(**ADD), answer).passed
    assert run_code(ex(**ADD), answer).passed  # a fresh folder each run: no marker.txt left
    assert not (tmp_path / "marker.txt").exists()


def test_python_tests_environment_is_scrubbed(run_code, monkeypatch):
    monkeypatch.setenv("EVALKIT_SECRET", "s3cret")
    answer = ("    import os, sys\n    assert set(os.environ) == {'PATH', 'LANG', 'HOME', 'PYTHONHASHSEED'}, "
              "sorted(os.environ)\n    assert sys.flags.hash_randomization == 0\n    return a + b\n")
    assert run_code(ex(**ADD), answer).reason == "tests passed"


def test_python_tests_killed_at_scoring_deadline_leaves_no_process():
    # The program names itself with a random marker; it must be seen running, then gone.
    import threading
    import uuid

    marker = "evk" + uuid.uuid4().hex[:12]
    answer = (f"    import ctypes\n    ctypes.CDLL(None).prctl(15, {marker!r}.encode(), 0, 0, 0)\n"
              "    while True:\n        pass\n")

    def alive() -> bool:
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and marker in open(f"/proc/{entry}/comm").read():
                    return True
            except OSError:
                pass
        return False

    seen, stop = [], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(alive())
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    check = make({"name": "python_tests", "timeout": 30.0})
    try:
        with pytest.raises(TimeoutError):
            call_with_deadline(lambda: check(ex(**ADD), answer), 3.0)
    finally:
        stop.set()
        watcher.join()
    assert any(seen) and not alive()


def test_python_tests_interpreter_missing_is_error(run_code, monkeypatch):
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    assert run_code(ex(**ADD), "    return a + b\n").status is Status.ERROR


def test_python_tests_bad_example_and_params(run_code):
    with pytest.raises(ValueError, match="entry_point"):
        run_code(ex(**{**ADD, "entry_point": "add; import os"}), "    return a + b\n")
    with pytest.raises(ValueError, match="test"):
        run_code(ex(prompt="def f():\n", entry_point="f"), "    pass\n")
    with pytest.raises(ValueError, match="timeout"):
        make({"name": "python_tests", "timeout": 0})
    with pytest.raises(TypeError, match="memory_mb"):
        make({"name": "python_tests", "memory_mb": "1G"})
