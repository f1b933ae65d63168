"""Declarative tasks: a YAML file naming a data file, a prompt template, extraction and a checker.

    name: json_extract
    data: json_extract.jsonl          # resolved relative to this YAML file, never the cwd
    prompt: "Extract name and age as JSON: {text}\\n"
    reference: "{answer}"
    extract: json
    check: {name: json_schema, schema: {...}, equal_fields: [name, age]}
    target: 0.9
    identity: [text]                  # optional: the fields that define an example (default: all)
    chat:                             # optional: the chat form, for instruct models (runs in chat mode)
      system: "You extract data. Answer with JSON only."
      user: "{text}"                  # a template like prompt (default: the prompt)
      fewshot: [{user: "Bo is 3.", assistant: '{"name": "Bo", "age": 3}'}]
      stop: []                        # chat-mode runs: stop strings, token budget and extraction
      max_new_tokens: 128             #   (default: generation's and extract)
      extract: json

The file is validated against the JSON Schema shipped in evalkit/schemas/task.schema.json;
every error names the file, the field path and what was expected.
"""

from __future__ import annotations

import csv
import json
import string
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from evalkit import checkers
from evalkit.core.chat import ChatSpec
from evalkit.core.checkpool import contained, marked_contained
from evalkit.core.example import Example
from evalkit.core.extract import cut_at_stop, make_extractor
from evalkit.core.task import GenerationConfig, SelftestSpec, Task, TaskSpec
from evalkit.errors import ConfigError
from evalkit.schemas import describe_value, validate


def template_fields(template: str, file: Path, field: str) -> list[str]:
    """The {placeholders} of a template; only plain names are allowed (no attributes, indexes)."""
    names = []
    try:
        for _, name, _spec, _conv in string.Formatter().parse(template):
            if name is None:
                continue
            if not name.isidentifier():
                raise ConfigError(f"placeholder {{{name}}} must be a plain field name", file=file, field=field)
            names.append(name)
    except ValueError as exc:
        raise ConfigError(f"bad template: {exc} (use {{{{ and }}}} for literal braces)", file=file,
                          field=field) from None
    return names


class _AsText(dict):
    """A row's fields as a template reads them: only the placeholders it names are converted."""

    def __getitem__(self, key: str) -> str:
        value = dict.__getitem__(self, key)
        if isinstance(value, str):
            return value
        return str(value) if type(value) is int else json.dumps(value, ensure_ascii=False)  # same text for an int


def render(template: str, fields: dict[str, Any]) -> str:
    """Fill a template: strings as they are, other values as compact JSON."""
    return template.format_map(_AsText(fields))


def _missing_file(path: Path, yaml_file: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"data file not found: {path} (paths are relative to the YAML file)",
                          file=yaml_file, field="data")


def iter_rows(path: Path, yaml_file: Path) -> Iterator[dict[str, Any]]:
    """Rows of a data file one at a time: a JSONL file is read a line at a time (a large file is never
    held in memory), a JSON or CSV file whole (`read_rows`); errors name the file and line."""
    if path.suffix != ".jsonl":
        yield from read_rows(path, yaml_file)
        return
    _missing_file(path, yaml_file)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc}", file=path) from None
    with fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ConfigError(f"cannot read: line {lineno}: {exc}", file=path) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"line {lineno}: not valid JSON: {exc.msg}", file=path) from None
            if not isinstance(row, dict):
                raise ConfigError(f"line {lineno}: expected a JSON object, got {describe_value(row)}", file=path)
            yield row


def read_rows(path: Path, yaml_file: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL, JSON (list of objects) or CSV file; errors name the file and line."""
    _missing_file(path, yaml_file)
    rows: list[dict[str, Any]] = []
    if path.suffix == ".jsonl":
        rows = list(iter_rows(path, yaml_file))
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read: {exc}", file=path) from None
        if path.suffix == ".json":
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
        self.user_template = (spec.get("chat") or {}).get("user")
        self.reference_template = spec.get("reference")
        self.level_field = spec.get("level_field")
        self.stop = tuple(spec.get("generation", {}).get("stop", ["\n"]))
        try:
            self._extract = make_extractor(spec.get("extract", "strip"))
        except Exception as exc:  # noqa: BLE001 - a bad regex etc.
            raise ConfigError(f"bad extractor: {exc}", file=file, field="extract") from None
        chat = spec.get("chat") or {}
        if "stop" in chat or "extract" in chat:
            chat_stop = tuple(chat.get("stop", self.stop))
            try:
                chat_extractor = make_extractor(chat.get("extract", spec.get("extract", "strip")))
            except Exception as exc:  # noqa: BLE001 - a bad regex etc.
                raise ConfigError(f"bad extractor: {exc}", file=file, field="chat.extract") from None
            # Only tasks that read chat-mode output their own way have it (Task.for_chat).
            self.chat_extract = lambda output: chat_extractor(cut_at_stop(output, chat_stop))
        self.chat_solution_templates = list(spec.get("selftest", {}).get("chat_solutions", []))
        if self.chat_solution_templates:
            self.chat_solutions = lambda ex, rng: [render(t, dict(ex.fields)) for t in self.chat_solution_templates]
        check_spec = spec["check"]
        try:
            self._check = checkers.make(check_spec)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0]), file=file, field="check.name") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad checker parameters: {exc}", file=file, field="check") from None
        if marked_contained(self._check):
            contained(self)  # a sandboxed code check: scored on threads in the runner's process
        # A JSONL file is read again each time its rows are asked for, never kept; JSON and CSV are read whole.
        self._rows = None if self.data_path.suffix == ".jsonl" else read_rows(self.data_path, file)
        needed = template_fields(self.prompt_template, file, "prompt")
        if self.reference_template is not None:
            needed += template_fields(self.reference_template, file, "reference")
        if self.user_template is not None:
            needed += template_fields(self.user_template, file, "chat.user")
        for i, template in enumerate(self.chat_solution_templates):
            needed += template_fields(template, file, f"selftest.chat_solutions.{i}")
        if self.level_field:
            needed.append(self.level_field)
        self.identity = self._identity(spec.get("identity"))
        self.levels = self._validate(needed)

    def _stored_rows(self) -> Iterator[dict[str, Any]]:
        return iter(self._rows) if self._rows is not None else iter_rows(self.data_path, self.file)

    def _validate(self, needed: list[str]) -> list[int]:
        """One pass over the rows: each has the fields the templates need, an integer level and the identity
        fields. Returns the levels found, sorted."""
        levels: set[int] = set()
        count = 0
        for count, row in enumerate(self._stored_rows(), 1):
            missing = [n for n in needed if n not in row]
            if missing:
                raise ConfigError(f"row {count} has no field {missing[0]!r} (needed by the templates); "
                                  f"its fields: {', '.join(row)}", file=self.data_path)
            if self.level_field:
                if not isinstance(row[self.level_field], int):
                    raise ConfigError(f"row {count}: field {self.level_field!r} must be an integer level",
                                      file=self.data_path)
                levels.add(row[self.level_field])
            for name in self.identity or ():
                if name not in row:
                    raise ConfigError(f"{name!r} is not a field of row {count} of {self.data_path.name} "
                                      f"(its fields: {', '.join(row)})", file=self.file, field="identity")
        if not count:
            raise ConfigError("the data file has no rows", file=self.data_path)
        return sorted(levels)

    def _identity(self, names: list[str] | None) -> tuple[str, ...] | None:
        """The `identity:` field names (not the level field); `_validate` checks each row has them."""
        if names is None:
            return None
        for name in names:
            if name == self.level_field:
                raise ConfigError(f"{name!r} is the level field, not part of an example's fields",
                                  file=self.file, field="identity")
        return tuple(names)

    def rows(self):
        for stored in self._stored_rows():
            row = dict(stored)
            if self.level_field:
                row["level"] = row.pop(self.level_field)
            yield row

    def prompt(self, ex: Example) -> str:
        return render(self.prompt_template, dict(ex.fields))

    def chat(self, ex: Example) -> str:
        """The chat form's user message: `chat.user` filled in, else the prompt."""
        return render(self.user_template or self.prompt_template, dict(ex.fields))

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
    from evalkit._yaml import read_yaml

    file = Path(file)
    spec = read_yaml(file, "task file")
    validate(spec, "task", file)
    impl = YamlTask(spec, file)
    if spec.get("reference") is not None:
        template = spec["reference"]
        impl.reference = lambda ex: render(template, dict(ex.fields))  # type: ignore[attr-defined]
    gen = spec.get("generation", {})
    levels = impl.levels
    st = spec.get("selftest", {})
    chat = spec.get("chat") or {}
    task_spec = TaskSpec(
        name=spec["name"],
        version=spec.get("version", 1),
        target=spec.get("target"),
        levels=tuple(levels),
        tags=tuple(spec.get("tags", [])),
        description=spec.get("description", ""),
        generation=GenerationConfig(max_new_tokens=gen.get("max_new_tokens"), stop=tuple(gen.get("stop", ["\n"]))),
        eval_fraction=spec.get("eval_fraction", 1.0),
        selftest=SelftestSpec(tuple(st.get("normalize", ["strip"])), tuple(st.get("skip", [])),
                              tuple(st.get("chat_skip", []))),
        identity=impl.identity,
        chat=ChatSpec(chat.get("system"), tuple((t["user"], t["assistant"]) for t in chat.get("fewshot", [])),
                      tuple(chat["stop"]) if "stop" in chat else None, chat.get("max_new_tokens"))
        if {"system", "stop", "max_new_tokens"} & set(chat) or chat.get("fewshot") else None,
    )
    return Task(task_spec, impl, source=str(file))
