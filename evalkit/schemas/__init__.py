"""The JSON Schemas shipped with evalkit (tasks, recipes, gates, experiments, run records) and their validation.

    validate(data, "record", file)     # ConfigError naming the file, the field and what was expected

Reading a record or a gate config needs only this module (and jsonschema), not the checkers or the sandbox.
A "number" in every schema is a finite one: NaN and ±Infinity (which JSON readers, YAML's `.nan` / `.inf` and
TOML's `nan` / `inf` all produce) fail validation, so no bound (`minimum`, `maximum`) is ever bypassed by them.
"""

from __future__ import annotations

import json
import math
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


def is_finite_number(value: Any) -> bool:
    """An int or a finite float (never a bool, NaN or ±Infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
        if isinstance(inst, float) and not math.isfinite(inst):
            types = ["a finite number" if t == "number" else t for t in types]
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
        # spelled as in the YAML / JSON the user writes: true, false, null; text quoted
        spell = {True: "true", False: "false", None: "null"}
        shown = [spell[o] if o is None or isinstance(o, bool) else repr(o) for o in options]
        message = f"expected one of {', '.join(shown)}, got {describe_value(inst)}"
    elif v in ("minimum", "maximum"):
        message = f"expected a number {'>=' if v == 'minimum' else '<='} {expected}, got {describe_value(inst)}"
    elif v == "pattern":
        message = f"expected text matching {expected!r}, got {describe_value(inst)}"
    else:
        message = error.message
    return path, message


@cache
def _validator_class() -> Any:
    """Draft 2020-12 whose "number" is finite: `minimum`/`maximum` cannot be bypassed by NaN (NaN < 0 is false)."""
    import jsonschema

    base = jsonschema.Draft202012Validator

    def is_number(checker: Any, value: Any) -> bool:
        return bool(base.TYPE_CHECKER.is_type(value, "number")) and is_finite_number(value)

    return jsonschema.validators.extend(base, type_checker=base.TYPE_CHECKER.redefine("number", is_number))


def validate(data: Any, schema_name: str, file: Path) -> None:
    """Validate `data` against a shipped schema; ConfigError naming file, field and expectation."""
    schema = load_schema(schema_name)
    validator = _validator_class()(schema)
    errors = list(validator.iter_errors(data))
    if errors:
        import jsonschema

        error = jsonschema.exceptions.best_match(errors)
        path, message = schema_error(error)
        raise ConfigError(message, file=file, field=path)


__all__ = ["describe_value", "is_finite_number", "load_schema", "schema_error", "validate"]
