"""Code answers, checked in the sandbox (evalkit.sandbox): the program never grades itself.

Two forms:

- `python_tests` — the HumanEval assert form. The program (prompt + completion) runs in its
  own process; the example's test (`def check(candidate)`) runs in a separate, trusted
  harness process, where `candidate` is a proxy: each call crosses to the program's process
  and comes back as plain data (tagged JSON, never pickle). So an object whose `__eq__` is
  always True, an early `exit(0)`, a printed "tests passed", a patched `builtins`, or a walk
  up the frames finds nothing to fool: the comparisons, the test and the verdict are all in
  another interpreter. Limits of the form: docs/SECURITY.md.
- `python_io` — the input/output form. The program's function is called on each case's
  input; its results come back as plain data and THIS process compares them with the
  expected outputs, type-strictly. The expected outputs never enter the sandbox.

Both run at the isolation level resolved by `evalkit.sandbox.resolve_isolation`: the
checker's `isolation=` parameter, overridden by EVALKIT_SANDBOX, else `[tool.evalkit]
sandbox`, else "auto" (the namespaces level). Where the namespaces level is unavailable and
the weaker "process" level was not chosen explicitly, the first check raises SandboxUnavailable
(exit code 3; the run stops): code checks refuse to run rather than run less contained.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from evalkit.checkers import Check, register
from evalkit.core.checkpool import contained
from evalkit.core.example import Example
from evalkit.core.verdict import Status, Verdict, verdict
from evalkit.sandbox import (
    Isolation,
    Limits,
    SandboxResult,
    call_sandboxed,
    configured,
    decode_value,
    describe,
    resolve_isolation,
    strict_equal,
    test_sandboxed,
)


class _Level:
    """The isolation level. The setting is validated when the checker is built (a bad value is a
    usage error); the level is resolved at the first check, so that discovering or listing a
    code task costs no sandbox probe and a project that never runs one never needs a sandbox.
    An unavailable level then stops the run (SandboxUnavailable, an InfrastructureError: exit
    code 3), never a per-answer ERROR verdict."""

    def __init__(self, isolation: Isolation | str | None):
        if isolation is not None and not isinstance(isolation, (Isolation, str)):
            raise TypeError(f"isolation must be 'auto', 'namespaces' or 'process', got {isolation!r}")
        configured(isolation)  # ConfigError for an unknown setting, before any probe
        self._requested = isolation
        self._level: Isolation | None = None
        self._lock = threading.Lock()

    def get(self) -> Isolation:
        with self._lock:
            if self._level is None:
                self._level = resolve_isolation(self._requested)
            return self._level


def _limits(timeout: float, memory_mb: int) -> Limits:
    return Limits(timeout=timeout, memory_mb=memory_mb)


def _field(example: Example, name: str, checker: str) -> Any:
    try:
        return example[name]
    except KeyError:
        raise ValueError(f"{checker}: example {example.id} has no field {name!r}") from None


def _entry(example: Example, checker: str) -> str:
    entry = _field(example, "entry_point", checker)
    if not isinstance(entry, str) or not entry.isidentifier():
        raise ValueError(f"{checker}: entry_point {entry!r} is not an identifier")
    return entry


def _program(example: Example, answer: str, checker: str) -> str | Verdict:
    if not isinstance(answer, str):
        return verdict(False, f"answer is {type(answer).__name__}, not str")
    prompt = _field(example, "prompt", checker) if checker == "python_tests" else example.get("prompt", "")
    if not isinstance(prompt, str):
        raise ValueError(f"{checker}: example {example.id}: field 'prompt' must be text")
    program = f"{prompt}{answer}\n"
    try:
        program.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: no source file can hold them
        return verdict(False, "answer is not valid Unicode text")
    return program


def _not_run(result: SandboxResult, timeout: float) -> Verdict | None:
    """The verdict when the sandbox itself ended the run (timeout) or could not run it."""
    if result.status == "timeout":
        return Verdict(Status.TIMEOUT, 0.0, f"timed out after {timeout:g}s")
    if result.status != "ok":
        return Verdict(Status.ERROR, 0.0, f"sandbox: {result.error}")
    return None


@register("python_tests")
def python_tests(timeout: float = 10.0, memory_mb: int = 1024, isolation: Isolation | str | None = None) -> Check:
    """Pass iff the example's HumanEval-style test passes against the completion.

    The example provides `prompt` (signature + docstring), `test` (defines
    `check(candidate)`) and `entry_point`; the answer is the completion. The program
    `prompt + answer` runs in the sandbox; `test` runs in the trusted harness, which also
    runs `prompt` for helpers the test may use (e.g. HumanEval's `poly`). Candidates must
    take and return plain data (None, bool, int, float, complex, str, bytes, list, tuple,
    dict, set): a function returning anything else fails.

    Verdicts: PASS "tests passed"; FAIL with the reason (an assertion and its test line,
    the function's exception, a load error such as a SyntaxError, or the signal that killed
    the program); TIMEOUT past `timeout` seconds of wall time; ERROR if the sandbox could
    not run (or the test cannot run in it). A missing field or a non-identifier entry point
    raises ValueError (an ERROR verdict in scoring).

    Args:
        timeout: wall-clock seconds per run (the CPU limit is ceil(timeout) + 1).
        memory_mb: the address-space limit in MiB (each of the harness and the program).
        isolation: "namespaces", "process", "auto" or None (the project's setting, else auto).
    """
    limits = _limits(timeout, memory_mb)
    level = _Level(isolation)

    def check(example: Example, answer: str) -> Verdict:
        program = _program(example, answer, "python_tests")
        if isinstance(program, Verdict):
            return program
        test = _field(example, "test", "python_tests")
        entry = _entry(example, "python_tests")
        result = test_sandboxed(program, entry, test, prompt=example.get("prompt", ""), limits=limits,
                                isolation=level.get())
        stopped = _not_run(result, limits.timeout)
        if stopped is not None:
            return stopped
        report = result.report or {}
        status, reason = report.get("status"), str(report.get("reason", ""))
        if status == "pass":
            return verdict(True, "tests passed")  # no timing here: verdicts must be deterministic
        if status == "error":
            return Verdict(Status.ERROR, 0.0, reason)
        return verdict(False, reason or "tests failed")

    return contained(check)  # the sandbox bounds the code's time: checked on threads in this process


def _case(case: Any, i: int) -> tuple[list[Any], dict[str, Any], Any]:
    if not isinstance(case, Mapping) or "input" not in case or "output" not in case:
        raise ValueError(f"python_io: case {i} must be an object with 'input' and 'output'")
    given = decode_value(case["input"])
    if isinstance(given, Mapping):
        args, kwargs = given.get("args", []), given.get("kwargs", {})
    else:
        args, kwargs = given, {}
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, Mapping):
        raise ValueError(f"python_io: case {i}: input must be a list of arguments or "
                         "{'args': [...], 'kwargs': {...}}")
    return list(args), dict(kwargs), decode_value(case["output"])


def _call_text(entry: str, args: list[Any], kwargs: dict[str, Any]) -> str:
    parts = [describe(a).rsplit(" (", 1)[0] for a in args]
    parts += [f"{k}={describe(v).rsplit(' (', 1)[0]}" for k, v in kwargs.items()]
    text = f"{entry}({', '.join(parts)})"
    return text if len(text) <= 120 else text[:117] + "..."


@register("python_io")
def python_io(timeout: float = 10.0, memory_mb: int = 1024, isolation: Isolation | str | None = None,
              cases_field: str = "cases", abs_tol: float = 0.0, rel_tol: float = 0.0) -> Check:
    """Pass iff the function returns the expected output for every case, type for type.

    The example provides `entry_point`, the cases (field `cases_field`: a list of
    {"input": [args...] or {"args": [...], "kwargs": {...}}, "output": expected}), and
    optionally `prompt` (prepended to the answer). Values are JSON; tuples, sets, bytes,
    non-finite floats and dicts with non-string keys use the sandbox's tagged JSON (`evalkit.sandbox.decode_value`),
    e.g. {"$tuple": [1, 2]}. The sandbox only ever sees the inputs; the results come back as
    plain data and are compared here with exact types (True is not 1, 1 is not 1.0, a
    tuple is not a list); floats may differ by `abs_tol`/`rel_tol`.

    Verdicts: PASS; FAIL with the first wrong case and a score = the fraction of cases
    right; TIMEOUT; ERROR if the sandbox could not run. Bad cases raise ValueError.
    """
    limits = _limits(timeout, memory_mb)
    level = _Level(isolation)
    for name, tol in (("abs_tol", abs_tol), ("rel_tol", rel_tol)):
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {tol!r}")
    if not isinstance(cases_field, str) or not cases_field:
        raise TypeError(f"cases_field must be a field name, got {cases_field!r}")

    def check(example: Example, answer: str) -> Verdict:
        program = _program(example, answer, "python_io")
        if isinstance(program, Verdict):
            return program
        entry = _entry(example, "python_io")
        raw_cases = _field(example, cases_field, "python_io")
        if not isinstance(raw_cases, list) or not raw_cases:
            raise ValueError(f"python_io: field {cases_field!r} must be a non-empty list of cases")
        cases = [_case(c, i) for i, c in enumerate(raw_cases)]
        result = call_sandboxed(program, entry, [{"args": a, "kwargs": k} for a, k, _ in cases], limits=limits,
                                isolation=level.get())
        stopped = _not_run(result, limits.timeout)
        if stopped is not None:
            return stopped
        report = result.report or {}
        if "load_error" in report:
            return verdict(False, str(report["load_error"]))
        results = report.get("results")
        if not isinstance(results, list):
            return Verdict(Status.ERROR, 0.0, "sandbox: no results in the harness's report")
        right, first_wrong = 0, None
        for i, (args, kwargs, expected) in enumerate(cases):
            got = results[i] if i < len(results) else None
            why = None
            if not isinstance(got, Mapping):
                why = "not run (the program died earlier)"
            elif "ok" in got:
                try:
                    value = decode_value(got["ok"])
                except (ValueError, TypeError, RecursionError):
                    value, why = None, "a malformed result"
                if why is None and not strict_equal(expected, value, abs_tol, rel_tol):
                    why = f"returned {describe(value)}, expected {describe(expected)}"
            elif "exc" in got and isinstance(got["exc"], list) and len(got["exc"]) == 2:
                why = f"raised {got['exc'][0]}: {got['exc'][1]}"
            else:
                why = str(got.get("fault", "no result"))
            if why is None:
                right += 1
            elif first_wrong is None:
                first_wrong = f"case {i + 1}/{len(cases)}: {_call_text(entry, args, kwargs)} {why}"
        if first_wrong is None:
            return verdict(True, f"{len(cases)} cases right")
        return verdict(False, first_wrong if len(first_wrong) <= 300 else first_wrong[:297] + "...",
                       score=right / len(cases))

    return contained(check)  # the sandbox bounds the code's time: checked on threads in this process
