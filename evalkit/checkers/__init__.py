"""Built-in checkers, by name, for Python tasks and declarative (YAML) tasks.

A checker is a pure, deterministic callable `(example, answer) -> Verdict`, built by a
factory registered under a name:

    from evalkit import checkers
    check = checkers.make({"name": "numeric", "abs_tol": 1e-6})
    check(example, "3.14159")

Factories and their parameters (the expected value is `example.reference` unless `field`
names one of the example's fields):

- exact(field=None, normalize=["strip"])            normalisations: strip, casefold, whitespace, punctuation
- regex(pattern, mode="fullmatch"|"search", flags="")  the pattern may use {field} placeholders
- numeric(field=None, abs_tol=0.0, rel_tol=0.0)     ints, decimals, fractions "3/4", "1,234"
- choice(field=None, letters="ABCDEFGHIJ")          multiple-choice letters: "B", "(B)", "B) text", "Answer: B"
- json_schema(schema=None, schema_field=None, equal_fields=None)   parse JSON out of the answer, validate
- python_tests(timeout=10.0, memory_mb=1024, isolation=None)   HumanEval format: fields prompt, test, entry_point
- python_io(timeout=10.0, memory_mb=1024, isolation=None, cases_field="cases", abs_tol=0.0, rel_tol=0.0)
                                                    fields entry_point, cases [{input, output}], prompt (optional)
- all_of(checks), any_of(checks), weighted(checks=[{"check": spec, "weight": w}], threshold=1.0)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from evalkit.core.example import Example
from evalkit.core.verdict import Verdict


class Check(Protocol):
    def __call__(self, example: Example, answer: str) -> Verdict: ...


Factory = Callable[..., Check]
REGISTRY: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    """Register a checker factory under `name` (usable from YAML as `check: {name: ...}`)."""

    def decorate(factory: Factory) -> Factory:
        REGISTRY[name] = factory
        return factory

    return decorate


def make(spec: str | Mapping[str, Any] | Check) -> Check:
    """Build a checker from a name, a mapping `{"name": ..., **params}` or an existing callable.

    Raises:
        KeyError: unknown checker name (message lists the known ones).
        TypeError / ValueError: bad parameters.
    """
    if callable(spec) and not isinstance(spec, (str, Mapping)):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    params = dict(spec)
    name = params.pop("name", None)
    if name not in REGISTRY:
        raise KeyError(f"unknown checker {name!r}; known checkers: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**params)


def expected(example: Example, field: str | None) -> Any:
    """The expected value: `example[field]` when a field is named, else the reference."""
    if field is not None:
        return example[field]
    if example.reference is None:
        raise ValueError(f"example {example.id} has no reference answer and no expected field was named")
    return example.reference


# Import the built-in checkers so they register themselves.
from evalkit.checkers import basic, code, compose, structured  # noqa: E402,F401
from evalkit.checkers.basic import choice, exact, numeric, regex  # noqa: E402
from evalkit.checkers.code import python_io, python_tests  # noqa: E402
from evalkit.checkers.compose import all_of, any_of, weighted  # noqa: E402
from evalkit.checkers.structured import json_schema  # noqa: E402

__all__ = [
    "Check", "REGISTRY", "register", "make", "expected",
    "exact", "regex", "numeric", "choice", "json_schema", "python_tests", "python_io",
    "all_of", "any_of", "weighted",
]
