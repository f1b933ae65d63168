"""Evals as tests: a pytest plugin (entry point `pytest11: evalkit`, disable with `-p no:evalkit`).

    pytest --evalkit-model oracle tasks/            # one test item per task: tasks/addition.py::addition
    pytest --evalkit-model hf:out/model tasks/ -k addition --evalkit-n 200 --evalkit-lower-bound

With `--evalkit-model`, every task file (.py/.yaml) in a task folder — `[tool.evalkit] tasks`
(default `tasks/`), `--evalkit-tasks-dir`, or a task file named on the command line — becomes a
collector whose items run `evalkit.evaluate` on one task and pass when it meets its threshold
(`--evalkit-threshold`, else the task's target; neither: the item fails — fail closed). Without
`--evalkit-model` the plugin leaves collection alone.

For ordinary test files: the `evalkit_run` fixture (run tasks, get the RunRecord), the
`evalkit_task` fixture (a loaded Task by name), and the `evalkit` marker
(`@pytest.mark.evalkit(model="oracle")` picks the model for one test). A test using
`evalkit_run` with no model from either place is *skipped* with a reason saying how to give one.

This module is imported in every pytest run once evalkit is installed, so it imports nothing
heavy at import time: the runner, backends and task discovery load inside the hooks that need
them. Each process (and so each pytest-xdist worker) loads the model at most once, lazily.
"""

from __future__ import annotations

import argparse
import fnmatch
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from evalkit.run.record import RunRecord
    from evalkit.core.task import Task

_NO_MODEL = ("evalkit: no model to evaluate — run pytest with --evalkit-model SPEC (oracle, hf:PATH, "
             "openai:URL, python:MODULE:FUNCTION) or mark the test @pytest.mark.evalkit(model=SPEC)")
_TASK_SUFFIXES = (".py", ".yaml", ".yml")
_SKIP_DIRS = {"data", "__pycache__"}  # as evalkit.discovery: data files and caches are not tasks


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("evalkit", "evalkit: evals as tests")
    group.addoption("--evalkit-model", metavar="SPEC", default=None,
                    help="evaluate task files as tests with this model (oracle, hf:PATH, openai:URL, "
                         "python:MODULE:FUNCTION); also the default model of the evalkit_run fixture")
    group.addoption("--evalkit-n", type=_positive_int, default=100, metavar="N",
                    help="examples per task (default 100)")
    group.addoption("--evalkit-seed", type=int, default=0, metavar="SEED", help="example/sampling seed")
    group.addoption("--evalkit-level", type=int, default=None, metavar="LEVEL",
                    help="difficulty level; tasks without that level are skipped")
    group.addoption("--evalkit-batch-size", type=_positive_int, default=64, metavar="N")
    group.addoption("--evalkit-threshold", type=_unit_float, default=None, metavar="FLOAT",
                    help="minimum pass rate for every task, overriding the tasks' targets")
    group.addoption("--evalkit-lower-bound", action="store_true", default=False,
                    help="compare the 95%% interval's lower end (not the rate) with the threshold")
    group.addoption("--evalkit-reports-dir", metavar="DIR", default=None,
                    help="where task items write run records (default: [tool.evalkit] reports, else ./reports)")
    group.addoption("--evalkit-tasks-dir", metavar="DIR", action="append", default=[],
                    help="a task folder (repeatable), besides [tool.evalkit] tasks")
    group.addoption("--evalkit-show-failures", type=int, default=5, metavar="N",
                    help="failing samples shown per failed task (default 5)")


class _State:
    """Per-process plugin state (each xdist worker has its own): options and caches."""

    def __init__(self, config: pytest.Config):
        self.config = config
        opt = config.getoption
        self.model: str | None = opt("evalkit_model")
        self.n: int = opt("evalkit_n")
        self.seed: int = opt("evalkit_seed")
        self.level: int | None = opt("evalkit_level")
        self.batch_size: int = opt("evalkit_batch_size")
        self.threshold: float | None = opt("evalkit_threshold")
        self.lower_bound: bool = opt("evalkit_lower_bound")
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
                self._backends[spec] = load_backend(spec, batch_size=self.batch_size)
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
        if path.suffix not in _TASK_SUFFIXES or path.name == "conftest.py" or path.name.startswith((".", "_")):
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
            if not any(p.startswith((".", "_")) or p in _SKIP_DIRS for p in rel[:-1]):
                return True
        return False


_STATE = pytest.StashKey[_State]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "evalkit(model=None): an evalkit task item, or a test using the "
                                       "evalkit_run fixture; model=SPEC picks the model for that test")
    config.stash[_STATE] = st = _State(config)
    if st.model is not None:
        config.pluginmanager.register(_Summary(), "evalkit-summary")


def pytest_report_header(config: pytest.Config) -> str | None:
    st = config.stash[_STATE]
    if st.model is None:
        return None
    threshold = "task targets" if st.threshold is None else f"{st.threshold:g}"
    return (f"evalkit: model {st.model}, n={st.n}, seed={st.seed}, level={st.level}, threshold {threshold}"
            f"{' (95% lower bound)' if st.lower_bound else ''}")


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    results = yield
    st = parent.config.stash.get(_STATE, None)
    if st is None or st.model is None or not st.is_task_file(file_path, parent.session):
        return results
    # A task module is evalkit's to import (discovery gives it a unique name), never a test module.
    results = [r for r in results if not isinstance(r, pytest.Module)]
    results.append(TaskFile.from_parent(parent, path=file_path))
    return results


class TaskFile(pytest.File):
    """A task file: one TaskItem per task it defines."""

    def collect(self) -> Iterable[TaskItem]:
        from evalkit.discovery.registry import load_path
        from evalkit.errors import EvalkitError

        try:
            tasks = load_path(self.path)
        except EvalkitError as exc:  # a task that fails to load is a collection error, never a skip
            raise self.CollectError(f"evalkit: {exc}") from None
        for t in tasks:
            item = TaskItem.from_parent(self, name=t.name, task=t)
            item.add_marker("evalkit")
            for tag in t.tags:  # registered first: no unknown-marker warning, and -m TAG selects
                self.config.addinivalue_line("markers", f"{tag}: evalkit task tag")
                item.add_marker(tag)
            yield item


class TaskFailed(Exception):
    """A task item below its threshold (or with none); the text is the whole failure report."""

    def __init__(self, headline: str, body: str = ""):
        super().__init__(headline)
        self.headline, self.body = headline, body


class _FailureRepr:
    """A TerminalRepr-like longrepr: the headline is the short summary and JUnit failure message."""

    def __init__(self, headline: str, body: str, path: Path):
        self.text = headline + ("\n" + body if body else "")
        self.reprcrash = _Crash(str(path), 0, headline)

    def toterminal(self, tw: Any) -> None:
        for line in self.text.splitlines():
            tw.line(line)

    def __str__(self) -> str:
        return self.text


class _Crash:
    def __init__(self, path: str, lineno: int, message: str):
        self.path, self.lineno, self.message = path, lineno, message


class TaskItem(pytest.Item):
    """One task evaluated with the session's model; passes when it meets its threshold."""

    def __init__(self, *, task: Task, **kwargs: Any):
        super().__init__(**kwargs)
        self.task = task

    def setup(self) -> None:
        st = self.config.stash[_STATE]
        if st.level is not None and st.level not in self.task.levels:
            levels = list(self.task.levels) or "none"
            pytest.skip(f"evalkit: task {self.task.name!r} has no level {st.level} (levels: {levels})")
        assert st.model is not None
        from evalkit.errors import EvalkitError

        try:
            self.backend = st.backend(st.model)
            return
        except EvalkitError as exc:  # a model that cannot load is an ERROR (setup), not a FAILED task
            message = f"evalkit: {type(exc).__name__}: {exc}"
        pytest.fail(message, pytrace=False)

    def runtest(self) -> None:
        from evalkit.gate import GateConfig, Rule, judge
        from evalkit.run.runner import evaluate

        st = self.config.stash[_STATE]
        name = self.task.name
        threshold = st.threshold if st.threshold is not None else self.task.target
        if threshold is None:
            raise TaskFailed(f"evalkit: task {name!r} has no target and no --evalkit-threshold was given "
                             "(fail closed: set target= on the task or pass --evalkit-threshold FLOAT)")
        record = evaluate(tasks=[self.task], backend=self.backend, model_spec=st.model, n=st.n, seed=st.seed,
                          level=st.level, batch_size=st.batch_size, reports_dir=st.reports_dir())
        t = record.task(name)
        rule = Rule(min_pass_rate=threshold, use_lower_bound=st.lower_bound, max_error_rate=1.0, no_regression=False)
        outcome = judge(record, GateConfig({name: rule}, source="pytest")).outcomes[0]
        where = str(record.path / "record.json") if record.path else ""
        self.user_properties.extend([
            ("evalkit_task", name), ("evalkit_model", st.model), ("evalkit_rate", round(t["rate"], 6)),
            ("evalkit_low", round(t["low"], 6)), ("evalkit_high", round(t["high"], 6)),
            ("evalkit_threshold", threshold), ("evalkit_lower_bound", st.lower_bound), ("evalkit_n", t["n_samples"]),
            ("evalkit_errors", t["errors"]), ("evalkit_timeouts", t["timeouts"]), ("evalkit_record", where),
        ])
        if not outcome.passed:
            source = "--evalkit-threshold" if st.threshold is not None else "task target"
            raise TaskFailed(f"evalkit: {name}: " + "; ".join(outcome.reasons),
                             _report(record, t, st.model, threshold, source, st.lower_bound, st.show_failures))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from evalkit.errors import EvalkitError

        exc = excinfo.value
        if isinstance(exc, TaskFailed):
            return _FailureRepr(exc.headline, exc.body, self.path)
        if isinstance(exc, EvalkitError):  # bad spec, model that fails to load, no examples: one clear line
            return _FailureRepr(f"evalkit: {type(exc).__name__}: {exc}", "", self.path)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"evalkit task {self.task.name}"


def _show(value: Any, limit: int = 200) -> str:
    """Untrusted text shown literally: repr escapes control characters, ESC and bidi overrides."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(str(value))} chars)"


def _report(record: RunRecord, t: dict[str, Any], model: str, threshold: float, source: str, lower_bound: bool,
            show: int) -> str:
    measured = "the 95% interval's lower bound" if lower_bound else "the pass rate"
    lines = [
        f"  model      {model}",
        f"  rate       {t['rate']:.1%} ({t['passes']}/{t['n_samples']} samples passed)",
        f"  95% CI     {t['low']:.1%} – {t['high']:.1%} (Wilson)",
        f"  threshold  {threshold:.1%} on {measured} ({source})",
        f"  n          {t['n_samples']} samples of {t['n_examples']} examples "
        f"(seed {record.data['settings']['seed']}, level {'default' if t['level'] is None else t['level']})",
        f"  errors     {t['errors']} errors, {t['timeouts']} timeouts (counted as failures)",
    ]
    if record.path is not None:
        lines.append(f"  record     {record.path / 'record.json'}")
    failing = [s for s in record.samples() if s["task"] == t["name"] and s["status"] != "PASS"]
    if failing and show > 0:
        lines.append(f"  failing samples (first {min(show, len(failing))} of {len(failing)}):")
        for i, s in enumerate(failing[:show], 1):
            lines.append(f"    #{i} {s['status']} example {s['example_id']}"
                         + (f" (level {s['level']})" if s.get("level") is not None else ""))
            lines.append(f"       prompt:   {_show(s['prompt'])}")
            lines.append(f"       expected: {_show(s['reference'])}")
            lines.append(f"       got:      {_show(s['output'])}")
            if s["answer"] != s["output"]:
                lines.append(f"       answer:   {_show(s['answer'])} (extracted)")
            lines.append(f"       reason:   {_show(s['reason'])}")
    return "\n".join(lines)


class _Summary:
    """Collects task items' results (from workers too, under xdist) for one summary section."""

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        if report.when == "call" and "evalkit_task" in props:
            self.results.append({**props, "passed": report.passed})

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results:
            return
        tr = terminalreporter
        tr.write_sep("-", f"evalkit: {len(self.results)} task(s)")
        for r in sorted(self.results, key=lambda r: str(r["evalkit_task"])):
            what = "95% lower bound" if r["evalkit_lower_bound"] in (True, "True") else "rate"
            tr.write_line(f"{'PASS' if r['passed'] else 'FAIL'} {r['evalkit_task']:<20} "
                          f"{float(r['evalkit_rate']):7.1%}  95% CI {float(r['evalkit_low']):.1%}–"
                          f"{float(r['evalkit_high']):.1%}  n={r['evalkit_n']}  "
                          f"threshold {float(r['evalkit_threshold']):.1%} on the {what}")


# -- fixtures for ordinary test files -------------------------------------------------------------------


def _resolve(st: _State, tasks: str | Task | Sequence[str | Task]) -> list[Task]:
    from evalkit.core.task import Task

    items = [tasks] if isinstance(tasks, (str, Task)) else list(tasks)
    out: list[Task] = []
    for t in items:
        out.extend([t] if isinstance(t, Task) else st.registry().select([t]))
    return out


@pytest.fixture(scope="session")
def evalkit_backend(pytestconfig: pytest.Config) -> Any:
    """The --evalkit-model backend, loaded once per session (per xdist worker); skips without the option."""
    st = pytestconfig.stash[_STATE]
    if st.model is None:
        pytest.skip(_NO_MODEL)
    return st.backend(st.model)


@pytest.fixture
def evalkit_run(request: pytest.FixtureRequest) -> Callable[..., RunRecord]:
    """`evalkit_run(tasks, n=None, **evaluate_kwargs) -> RunRecord`.

    `tasks`: a name, glob, `tag:NAME`, Task, or a list of them (names from --evalkit-tasks-dir, else the
    project's task folders). The model: `@pytest.mark.evalkit(model=SPEC)` on the test, else
    --evalkit-model; neither skips the test. n, seed, level and batch_size default to the --evalkit-*
    options; other keywords go to `evalkit.evaluate`. The record stays in memory unless you pass
    `reports_dir=` or `run_dir=`. Each task's rate is added to the test's JUnit properties.
    """
    st = request.config.stash[_STATE]
    marker = request.node.get_closest_marker("evalkit")
    spec = (marker.kwargs.get("model") if marker else None) or st.model
    if spec is None:
        pytest.skip(_NO_MODEL)
    backend = st.backend(spec)

    def run(tasks: str | Task | Sequence[str | Task], n: int | None = None, **kwargs: Any) -> RunRecord:
        from evalkit.run.runner import evaluate

        settings = {"n": st.n if n is None else n, "seed": st.seed, "level": st.level,
                    "batch_size": st.batch_size, **kwargs}
        record = evaluate(tasks=_resolve(st, tasks), backend=backend, model_spec=spec, **settings)
        for t in record.tasks:
            request.node.user_properties.append((f"evalkit_rate[{t['name']}]", round(t["rate"], 6)))
        return record

    return run


@pytest.fixture
def evalkit_task(pytestconfig: pytest.Config) -> Callable[[str], Task]:
    """`evalkit_task(name) -> Task`: a loaded task by name (UnknownTaskError with close matches otherwise)."""
    st = pytestconfig.stash[_STATE]
    return lambda name: st.registry().get(name)
