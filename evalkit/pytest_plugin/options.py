"""The plugin's command-line options and its per-process state (options parsed once, plus caches).

Nothing heavy at import time: configuration, discovery and backends load inside the methods that
need them.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import pytest

from evalkit.argtypes import positive_int, significance, unit_float

NO_MODEL = ("evalkit: no model to evaluate — run pytest with --evalkit-model SPEC (oracle, hf:PATH, "
            "openai:URL, python:MODULE:FUNCTION) or mark the test @pytest.mark.evalkit(model=SPEC)")
TASK_SUFFIXES = (".py", ".yaml", ".yml")
SKIP_DIRS = {"data", "__pycache__"}  # as evalkit.discovery: data files and caches are not tasks


def add_options(parser: pytest.Parser) -> None:
    """The --evalkit-* options, in their own group of `pytest --help`."""
    group = parser.getgroup("evalkit", "evalkit: evals as tests")
    group.addoption("--evalkit-model", metavar="SPEC", default=None,
                    help="evaluate task files as tests with this model (oracle, hf:PATH, openai:URL, "
                         "python:MODULE:FUNCTION); also the default model of the evalkit_run fixture")
    group.addoption("--evalkit-n", type=positive_int, default=100, metavar="N",
                    help="examples per task (default 100)")
    group.addoption("--evalkit-seed", type=int, default=0, metavar="SEED", help="example/sampling seed")
    group.addoption("--evalkit-level", type=int, default=None, metavar="LEVEL",
                    help="difficulty level; tasks without that level are skipped")
    group.addoption("--evalkit-chat", action="store_true", default=False,
                    help="chat mode: the tasks' chat forms and the model's chat template (as `evalkit run --chat`)")
    group.addoption("--evalkit-batch-size", type=positive_int, default=64, metavar="N")
    group.addoption("--evalkit-threshold", type=unit_float, default=None, metavar="FLOAT",
                    help="minimum pass rate for every task, overriding the tasks' targets")
    group.addoption("--evalkit-lower-bound", action="store_true", default=False,
                    help="compare the 95%% interval's lower end (not the rate) with the threshold")
    group.addoption("--evalkit-adaptive", action="store_true", default=False,
                    help="stop each task as soon as its threshold is decided met or missed at level "
                         "--evalkit-alpha, valid however often it looks (--evalkit-n is the cap; as "
                         "`evalkit run --adaptive`)")
    group.addoption("--evalkit-alpha", type=significance, default=0.05, metavar="ALPHA",
                    help="with --evalkit-adaptive: the chance of a wrong decision allowed (default 0.05)")
    group.addoption("--evalkit-reports-dir", metavar="DIR", default=None,
                    help="where task items write run records (default: [tool.evalkit] reports, else ./reports)")
    group.addoption("--evalkit-tasks-dir", metavar="DIR", action="append", default=[],
                    help="a task folder (repeatable), besides [tool.evalkit] tasks")
    group.addoption("--evalkit-show-failures", type=int, default=5, metavar="N",
                    help="failing samples shown per failed task (default 5)")


class PluginState:
    """Per-process plugin state (each xdist worker has its own): options and caches."""

    def __init__(self, config: pytest.Config):
        self.config = config
        opt = config.getoption
        self.model: str | None = opt("evalkit_model")
        self.n: int = opt("evalkit_n")
        self.seed: int = opt("evalkit_seed")
        self.level: int | None = opt("evalkit_level")
        self.batch_size: int = opt("evalkit_batch_size")
        self.chat: bool = opt("evalkit_chat")
        self.threshold: float | None = opt("evalkit_threshold")
        self.lower_bound: bool = opt("evalkit_lower_bound")
        self.adaptive: bool = opt("evalkit_adaptive")
        self.alpha: float = opt("evalkit_alpha")
        self.show_failures: int = opt("evalkit_show_failures")
        self._reports_dir: str | None = opt("evalkit_reports_dir")
        self._tasks_dirs = [Path(p).resolve() for p in opt("evalkit_tasks_dir")]
        self._roots: list[Path] | None = None
        self._backends: dict[str, Any] = {}
        self._registry: Any = None

    def roots(self) -> list[Path]:
        """Task folders: the project's `[tool.evalkit] tasks` (at the rootdir and the cwd) + --evalkit-tasks-dir."""
        if self._roots is None:
            from evalkit.config import load_config
            from evalkit.errors import ConfigError

            roots = list(self._tasks_dirs)
            for start in (self.config.rootpath, self.config.invocation_params.dir):
                try:
                    roots.extend(load_config(Path(start)).tasks)
                except ConfigError as exc:  # a broken [tool.evalkit] is a usage error, like a bad flag
                    raise pytest.UsageError(f"evalkit: {exc}") from None
            self._roots = list(dict.fromkeys(roots))
        return self._roots

    def reports_dir(self) -> Path:
        if self._reports_dir:
            return Path(self._reports_dir).resolve()
        from evalkit.config import load_config

        return load_config(Path(self.config.invocation_params.dir)).reports

    def backend(self, spec: str) -> Any:
        """The backend for `spec`, loaded once per process; a failed load is remembered and re-raised."""
        if spec not in self._backends:
            from evalkit.errors import EvalkitError
            from evalkit.models.spec import load_backend

            try:
                self._backends[spec] = load_backend(spec, batch_size=self.batch_size, chat=self.chat)
            except EvalkitError as exc:
                self._backends[spec] = exc
        value = self._backends[spec]
        if isinstance(value, BaseException):
            raise value
        return value

    def registry(self) -> Any:
        """Tasks by name for the fixtures: --evalkit-tasks-dir, else the project's task folders (as the CLI)."""
        if self._registry is None:
            from evalkit.config import load_config
            from evalkit.discovery.registry import discover

            if self._tasks_dirs:
                self._registry = discover(self._tasks_dirs)
            else:
                config = load_config(Path(self.config.invocation_params.dir))
                self._registry = discover(config.tasks, fallback_to_bundled=not config.tasks_configured)
        return self._registry

    def is_task_file(self, path: Path, session: pytest.Session) -> bool:
        if path.suffix not in TASK_SUFFIXES or path.name == "conftest.py" or path.name.startswith((".", "_")):
            return False
        if path.suffix == ".py" and any(fnmatch.fnmatch(path.name, p) for p in self.config.getini("python_files")):
            return False  # test modules stay pytest's, even inside a task folder
        if session.isinitpath(path):
            return True  # named on the command line
        path = path.resolve()
        for root in self.roots():
            try:
                rel = path.relative_to(root).parts
            except ValueError:
                continue
            if not any(p.startswith((".", "_")) or p in SKIP_DIRS for p in rel[:-1]):
                return True
        return False


STATE = pytest.StashKey[PluginState]()
