"""Structured answers: JSON found in the answer, validated against a JSON Schema.

Validation uses the `jsonschema` library: the draft named by the schema's `$schema`, else
Draft 2020-12. `format` is an annotation only (jsonschema's default), so verdicts do not
depend on which optional format packages are installed. `$ref` resolves only within the
schema and to the official meta-schemas: nothing is fetched over the network.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from evalkit.checkers import Check, expected, register
from evalkit.checkers.basic import short_repr
from evalkit.core.example import Example
from evalkit.core.extract import find_json
from evalkit.core.verdict import Verdict, verdict

_MAX_MESSAGE = 120


def _shorten(text: str, limit: int = _MAX_MESSAGE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _validator(schema: Any, where: str) -> Any:
    """A validator for `schema` (a mapping, a bool or JSON text); ValueError if the schema is invalid."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise ValueError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(schema, (Mapping, bool)):
        raise TypeError(f"{where}: must be a JSON Schema object, got {type(schema).__name__}")
    # jsonschema is imported when a schema checker is built, not when evalkit is imported
    # (the pytest plugin loads evalkit in every pytest run).
    import jsonschema
    from jsonschema_specifications import REGISTRY as _METASCHEMAS

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        # types-jsonschema declares dict; jsonschema's own protocol takes `Mapping | bool` (a bool is a schema too).
        cls.check_schema(schema)  # type: ignore[arg-type]
    except jsonschema.SchemaError as exc:
        path = exc.json_path if hasattr(exc, "json_path") else "$"
        raise ValueError(f"{where}: invalid JSON Schema at {path}: {_shorten(exc.message)}") from None
    return cls(schema, registry=_METASCHEMAS)  # the registry has no retriever: no network


def _unresolvable() -> type[Exception]:
    from referencing.exceptions import Unresolvable

    return Unresolvable


@lru_cache(maxsize=256)
def _cached_validator(schema_json: str) -> Any:
    return _validator(json.loads(schema_json), "schema_field")


def _json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: 1 == 1.0, but true != 1 (Python's == would say they are equal)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, Sequence) and isinstance(b, Sequence) and not isinstance(a, str) and not isinstance(b, str):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _first_json(text: str) -> Any:
    """`find_json(text)`, but cut after the last closing bracket first.

    Same result (a JSON object/array ends with "}" or "]", and parsing never looks past the
    end of a value), but an unclosed bomb like "{" * 100_000 is refused at once instead of
    after 100k failed parses.
    """
    end = max(text.rfind("}"), text.rfind("]"))
    if end < 0:
        raise ValueError("no JSON object or array found")
    return find_json(text[: end + 1])


def _expected_object(example: Example) -> Mapping[str, Any]:
    """The reference as a JSON object (ValueError: the example is unusable, an ERROR verdict)."""
    ref = expected(example, None)
    if isinstance(ref, str):
        try:
            ref = json.loads(ref)
        except ValueError:
            ref = find_json(ref)
    if not isinstance(ref, Mapping):
        raise ValueError(f"example {example.id}: the reference is not a JSON object")
    return ref


@register("json_schema")
def json_schema(
    schema: Mapping[str, Any] | bool | str | None = None,
    schema_field: str | None = None,
    equal_fields: Sequence[str] | None = None,
) -> Check:
    """Pass iff the first JSON object/array in the answer is valid (and matches the reference).

    Args:
        schema: a JSON Schema (a mapping, or its JSON text), validated now.
        schema_field: instead of `schema`, the example field holding each example's schema.
        equal_fields: keys whose values must equal those of the reference (the reference
            string parsed as JSON, or the reference itself when it is already a mapping).

    At least one of the three must be given; `schema` and `schema_field` exclude each other.
    The answer's JSON may sit in a code fence or prose (see `evalkit.extract.find_json`).
    """
    if schema is not None and schema_field is not None:
        raise ValueError("json_schema: give either schema or schema_field, not both")
    if schema is None and schema_field is None and equal_fields is None:
        raise ValueError("json_schema: give schema, schema_field or equal_fields")
    if schema_field is not None and not isinstance(schema_field, str):
        raise TypeError(f"schema_field must be a field name (str), got {type(schema_field).__name__}")
    if equal_fields is not None:
        if isinstance(equal_fields, str) or not isinstance(equal_fields, Sequence):
            raise TypeError(f"equal_fields must be a list of keys, got {equal_fields!r}")
        if not equal_fields or not all(isinstance(k, str) for k in equal_fields):
            raise ValueError(f"equal_fields must be a non-empty list of string keys, got {equal_fields!r}")
        equal_fields = tuple(equal_fields)
    fixed = _validator(schema, "schema") if schema is not None else None

    def validator_for(example: Example) -> Any:
        if schema_field is None:
            return fixed
        value = example[schema_field]
        if isinstance(value, str):
            value = json.loads(value)
        # Cached by canonical text: data tasks usually repeat a handful of schemas.
        return _cached_validator(json.dumps(value, sort_keys=True))

    def check(example: Example, answer: str) -> Verdict:
        if not isinstance(answer, str):
            return verdict(False, f"answer is {type(answer).__name__}, not str")
        validator = validator_for(example)
        try:
            instance = _first_json(answer)
        except RecursionError:
            return verdict(False, "JSON nested too deeply")
        except ValueError as exc:
            return verdict(False, f"{_shorten(str(exc), 80)} in {short_repr(answer)}")
        try:
            if validator is not None:
                from jsonschema.exceptions import best_match

                error = best_match(validator.iter_errors(instance))
                if error is not None:
                    return verdict(False, f"{error.json_path}: {_shorten(error.message)}")
            if equal_fields is not None:
                want = _expected_object(example)
                if not isinstance(instance, Mapping):
                    return verdict(False, "expected a JSON object to compare fields")
                for key in equal_fields:
                    if key not in want:
                        raise ValueError(f"example {example.id}: the reference has no key {key!r}")
                    if key not in instance:
                        return verdict(False, f"missing key {key!r}")
                    if not _json_equal(instance[key], want[key]):
                        return verdict(False, f"{key!r}: expected {short_repr(want[key], 40)}, "
                                              f"got {short_repr(instance[key], 40)}")
        except RecursionError:
            return verdict(False, "JSON nested too deeply to validate")
        except _unresolvable() as exc:
            raise ValueError(f"schema has an unresolvable $ref: {_shorten(str(exc), 80)}") from None
        return verdict(True, "valid JSON" + (" with equal fields" if equal_fields else ""))

    return check
