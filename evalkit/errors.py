"""Errors with the CLI exit codes (as the README lists them; like pytest's ExitCode)."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes of the `evalkit` CLI."""

    OK = 0
    FAILED = 1  # a gate, threshold or self-test failed
    USAGE = 2  # bad flag, bad YAML, unknown task
    INTERNAL = 3  # model failed to load, sandbox unavailable, I/O
    INTERRUPTED = 4
    NO_TESTS = 5  # nothing selected to run


class EvalkitError(Exception):
    """Base class: an error the CLI reports as one clear line, never a traceback."""

    exit_code: ExitCode = ExitCode.INTERNAL


class ConfigError(EvalkitError):
    """Bad user input: a task file, recipe, flag or pyproject setting.

    The message names the file, the field and what was expected.
    """

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, *, file: object | None = None, field: str | None = None):
        self.file = str(file) if file is not None else None
        self.field = field
        where = ""
        if self.file:
            where = self.file
            if field:
                where += f": field '{field}'"
            where += ": "
        elif field:
            where = f"field '{field}': "
        super().__init__(where + message)


class UnknownTaskError(ConfigError):
    """A task name that no plugin registers; the message lists close matches."""


class PluginImportError(ConfigError):
    """A task plugin (file or entry point) that fails to import."""


class InfrastructureError(EvalkitError):
    """What a run needs is missing (e.g. the sandbox a code check requires): the run stops with exit
    code 3. Scoring never turns it into a per-sample ERROR verdict, which would blame the model."""

    exit_code = ExitCode.INTERNAL


class NothingToRun(EvalkitError):
    """The selection matched no tasks or examples."""

    exit_code = ExitCode.NO_TESTS
