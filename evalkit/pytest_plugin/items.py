"""Task files as pytest collectors: one TaskItem per task, evaluated with the session's model."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from evalkit.pytest_plugin.options import STATE
from evalkit.pytest_plugin.report import failure_report

if TYPE_CHECKING:
    from evalkit.core.task import Task


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


class FailureRepr:
    """A TerminalRepr-like longrepr: the headline is the short summary and JUnit failure message."""

    def __init__(self, headline: str, body: str, path: Path):
        self.text = headline + ("\n" + body if body else "")
        self.reprcrash = Crash(str(path), 0, headline)

    def toterminal(self, tw: Any) -> None:
        for line in self.text.splitlines():
            tw.line(line)

    def __str__(self) -> str:
        return self.text


class Crash:
    """Where a failure happened, as pytest's short summary and JUnit writer read it (reprcrash)."""

    def __init__(self, path: str, lineno: int, message: str):
        self.path, self.lineno, self.message = path, lineno, message


class TaskItem(pytest.Item):
    """One task evaluated with the session's model; passes when it meets its threshold."""

    def __init__(self, *, task: Task, **kwargs: Any):
        super().__init__(**kwargs)
        self.task = task

    def setup(self) -> None:
        st = self.config.stash[STATE]
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

        st = self.config.stash[STATE]
        name = self.task.name
        threshold = st.threshold if st.threshold is not None else self.task.target
        if threshold is None:
            raise TaskFailed(f"evalkit: task {name!r} has no target and no --evalkit-threshold was given "
                             "(fail closed: set target= on the task or pass --evalkit-threshold FLOAT)")
        assert st.model is not None
        # Adaptive: decided against the threshold at --evalkit-alpha, stopping as soon as it is met or missed.
        record = evaluate(tasks=[self.task], backend=self.backend, model_spec=st.model, n=st.n, seed=st.seed,
                          level=st.level, batch_size=st.batch_size, chat=st.chat, reports_dir=st.reports_dir(),
                          adaptive=st.adaptive, alpha=st.alpha,
                          task_settings={name: {"target": threshold}} if st.adaptive else None)
        t = record.task(name)
        decision = (t.get("adaptive") or {}).get("decision")
        # A decided task is judged on its rate, which is above the threshold when "met" and below it when
        # "missed"; the Wilson lower bound is the fixed-n rule's, for a task that reached the cap undecided.
        rule = Rule(min_pass_rate=threshold, use_lower_bound=st.lower_bound and decision in (None, "cap"),
                    max_error_rate=1.0, no_regression=False)
        outcome = judge(record, GateConfig({name: rule}, source="pytest"), [self.task]).outcomes[0]
        where = str(record.path / "record.json") if record.path else ""
        self.user_properties.extend([
            ("evalkit_task", name), ("evalkit_model", st.model), ("evalkit_rate", round(t["rate"], 6)),
            ("evalkit_low", round(t["low"], 6)), ("evalkit_high", round(t["high"], 6)),
            ("evalkit_threshold", threshold), ("evalkit_lower_bound", st.lower_bound), ("evalkit_n", t["n_samples"]),
            ("evalkit_errors", t["errors"]), ("evalkit_timeouts", t["timeouts"]), ("evalkit_record", where),
            ("evalkit_adaptive", decision or ""),
        ])
        if not outcome.passed:
            source = "--evalkit-threshold" if st.threshold is not None else "task target"
            raise TaskFailed(f"evalkit: {name}: " + "; ".join(outcome.reasons),
                             failure_report(record, t, st.model, threshold, source, st.lower_bound, st.show_failures))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from evalkit.errors import EvalkitError

        exc = excinfo.value
        if isinstance(exc, TaskFailed):
            return FailureRepr(exc.headline, exc.body, self.path)
        if isinstance(exc, EvalkitError):  # bad spec, model that fails to load, no examples: one clear line
            return FailureRepr(f"evalkit: {type(exc).__name__}: {exc}", "", self.path)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"evalkit task {self.task.name}"
