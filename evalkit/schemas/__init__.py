"""The JSON Schemas shipped with evalkit (tasks, recipes, gates, experiments, run records) and their validation.

    validate(data, "record", file)     # ConfigError naming the file, the field and what was expected

Reading a record or a gate config needs only this module (and jsonschema), not the checkers or the sandbox.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from evalkit.errors import ConfigError


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A JSON Schema shipped in the package (evalkit/schemas/NAME.schema.json)."""
    text = resources.files("evalkit").joinpath("schemas").joinpath(f"{name}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def describe_value(value: Any) -> str:
    kind = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)
    shown = repr(value)
    return kind if len(shown) > 40 else f"{kind} {shown}"


def schema_error(error: Any) -> tuple[str, str]:
    """(field path, message saying what was expected) for a jsonschema ValidationError."""
    path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    v, expected, inst = error.validator, error.validator_value, error.instance
    if v == "type":
        types = expected if isinstance(expected, list) else [expected]
        message = f"expected {' or '.join(types)}, got {describe_value(inst)}"
    elif v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        path = ".".join([*map(str, error.absolute_path), missing])
        message = "required field is missing"
    elif v == "additionalProperties":
        extra = sorted(map(str, set(inst) - set(error.schema.get("properties", {}))))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        path = ".".join([*map(str, error.absolute_path), extra[0]]) if extra else path
        message = f"unknown field; expected one of: {allowed}"
    elif v in ("enum", "const"):
        options = expected if isinstance(expected, list) else [expected]
        message = f"expected one of {', '.join(map(repr, options))}, got {describe_value(inst)}"
    elif v in ("minimum", "maximum"):
        message = f"expected a number {'>=' if v == 'minimum' else '<='} {expected}, got {describe_value(inst)}"
    elif v == "pattern":
        message = f"expected text matching {expected!r}, got {describe_value(inst)}"
    else:
        message = error.message
    return path, message


def validate(data: Any, schema_name: str, file: Path) -> None:
    """Validate `data` against a shipped schema; ConfigError naming file, field and expectation."""
    import jsonschema

    schema = load_schema(schema_name)
    validator = jsonschema.Draft202012Validator(schema)
    errors = list(validator.iter_errors(data))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        path, message = schema_error(error)
        raise ConfigError(message, file=file, field=path)


__all__ = ["describe_value", "load_schema", "schema_error", "validate"]
