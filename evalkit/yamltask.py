"""Declarative tasks: a YAML file naming a data file, a prompt template, extraction and a checker.

    name: json_extract
    data: json_extract.jsonl          # resolved relative to this YAML file, never the cwd
    prompt: "Extract name and age as JSON: {text}\\n"
    reference: "{answer}"
    extract: json
    check: {name: json_schema, schema: {...}, equal_fields: [name, age]}
    target: 0.9

The file is validated against the JSON Schema shipped in evalkit/schemas/task.schema.json;
every error names the file, the field path and what was expected.
"""

from __future__ import annotations

import csv
import json
import string
from dataclasses import replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any


from . import checkers
from .errors import ConfigError
from .example import Example
from .extract import cut_at_stop, make_extractor
from .task import GenerationConfig, SelftestSpec, Task, TaskSpec


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    """A JSON Schema shipped in the package (evalkit/schemas/NAME.schema.json)."""
    text = resources.files("evalkit").joinpath("schemas", f"{name}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def _describe(value: Any) -> str:
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
        message = f"expected {' or '.join(types)}, got {_describe(inst)}"
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
        message = f"expected one of {', '.join(map(repr, options))}, got {_describe(inst)}"
    elif v in ("minimum", "maximum"):
        message = f"expected a number {'>=' if v == 'minimum' else '<='} {expected}, got {_describe(inst)}"
    elif v == "pattern":
        message = f"expected text matching {expected!r}, got {_describe(inst)}"
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


def template_fields(template: str, file: Path, field: str) -> list[str]:
    """The {placeholders} of a template; only plain names are allowed (no attributes, indexes)."""
    names = []
    try:
        for _, name, spec, conv in string.Formatter().parse(template):
            if name is None:
                continue
            if not name.isidentifier():
                raise ConfigError(f"placeholder {{{name}}} must be a plain field name", file=file, field=field)
            names.append(name)
    except ValueError as exc:
        raise ConfigError(f"bad template: {exc} (use {{{{ and }}}} for literal braces)", file=file, field=field) from None
    return names


def render(template: str, fields: dict[str, Any]) -> str:
    """Fill a template: strings as they are, other values as compact JSON."""
    values = {k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in fields.items()}
    return template.format_map(values)


def read_rows(path: Path, yaml_file: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL, JSON (list of objects) or CSV file; errors name the file and line."""
    if not path.is_file():
        raise ConfigError(f"data file not found: {path} (paths are relative to the YAML file)",
                          file=yaml_file, field="data")
    rows: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=path) from None
    if path.suffix == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"line {lineno}: not valid JSON: {exc.msg}", file=path) from None
            if not isinstance(row, dict):
                raise ConfigError(f"line {lineno}: expected a JSON object, got {_describe(row)}", file=path)
            rows.append(row)
    elif path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not valid JSON: {exc}", file=path) from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ConfigError("expected a JSON list of objects", file=path)
        rows = data
    else:
        rows = [dict(r) for r in csv.DictReader(text.splitlines())]
    if not rows:
        raise ConfigError("the data file has no rows", file=path)
    return rows


class YamlTask:
    """The implementation behind a declarative task (what the @task classes provide by hand)."""

    def __init__(self, spec: dict[str, Any], file: Path):
        self.file = file
        self.data_path = (file.parent / spec["data"]).resolve()
        self.prompt_template = spec["prompt"]
        self.reference_template = spec.get("reference")
        self.level_field = spec.get("level_field")
        self.stop = tuple(spec.get("generation", {}).get("stop", ["\n"]))
        try:
            self._extract = make_extractor(spec.get("extract", "strip"))
        except Exception as exc:  # noqa: BLE001 - a bad regex etc.
            raise ConfigError(f"bad extractor: {exc}", file=file, field="extract") from None
        check_spec = spec["check"]
        try:
            self._check = checkers.make(check_spec)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0]), file=file, field="check.name") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad checker parameters: {exc}", file=file, field="check") from None
        self._rows = read_rows(self.data_path, file)
        needed = template_fields(self.prompt_template, file, "prompt")
        if self.reference_template is not None:
            needed += template_fields(self.reference_template, file, "reference")
        if self.level_field:
            needed.append(self.level_field)
        for i, row in enumerate(self._rows, 1):
            missing = [n for n in needed if n not in row]
            if missing:
                raise ConfigError(f"row {i} has no field {missing[0]!r} (needed by the templates); "
                                  f"its fields: {', '.join(row)}", file=self.data_path)
            if self.level_field and not isinstance(row[self.level_field], int):
                raise ConfigError(f"row {i}: field {self.level_field!r} must be an integer level",
                                  file=self.data_path)

    def rows(self):
        for row in self._rows:
            row = dict(row)
            if self.level_field:
                row["level"] = row.pop(self.level_field)
            yield row

    def prompt(self, ex: Example) -> str:
        return render(self.prompt_template, dict(ex.fields))

    def extract(self, output: str) -> str:
        return self._extract(cut_at_stop(output, self.stop))

    def check(self, ex: Example, answer: str):
        # The reference is an output (what a perfect model writes); checkers compare answers,
        # so they see the reference through the same extraction as the model's output.
        if ex.reference is not None:
            ex = replace(ex, reference=self.extract(ex.reference))
        return self._check(ex, answer)


def load_yaml_task(file: Path) -> Task:
    """Load and validate one declarative task file."""
    from ._yaml import read_yaml

    file = Path(file)
    spec = read_yaml(file, "task file")
    validate(spec, "task", file)
    impl = YamlTask(spec, file)
    if spec.get("reference") is not None:
        template = spec["reference"]
        impl.reference = lambda ex: render(template, dict(ex.fields))  # type: ignore[attr-defined]
    gen = spec.get("generation", {})
    levels = sorted({r[impl.level_field] for r in impl._rows}) if impl.level_field else []
    st = spec.get("selftest", {})
    task_spec = TaskSpec(
        name=spec["name"],
        version=spec.get("version", 1),
        target=spec.get("target"),
        levels=tuple(levels),
        tags=tuple(spec.get("tags", [])),
        description=spec.get("description", ""),
        generation=GenerationConfig(max_new_tokens=gen.get("max_new_tokens"), stop=tuple(gen.get("stop", ["\n"]))),
        eval_fraction=spec.get("eval_fraction", 1.0),
        selftest=SelftestSpec(tuple(st.get("normalize", ["strip"])), tuple(st.get("skip", []))),
    )
    return Task(task_spec, impl, source=str(file))
