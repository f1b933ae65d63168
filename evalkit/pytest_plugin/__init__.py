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

This package is imported in every pytest run once evalkit is installed, so it imports nothing
heavy at import time: the runner, backends and task discovery load inside the hooks that need
them. Each process (and so each pytest-xdist worker) loads the model at most once, lazily.

Here: the hooks. `options` (the --evalkit-* flags and per-process state), `items` (task files
and items), `report` (failure text and the summary section), `fixtures`.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest

from evalkit.pytest_plugin.fixtures import evalkit_backend, evalkit_run, evalkit_task
from evalkit.pytest_plugin.items import TaskFailed, TaskFile, TaskItem
from evalkit.pytest_plugin.options import STATE, PluginState, add_options
from evalkit.pytest_plugin.report import TaskSummary

__all__ = ["TaskFailed", "TaskFile", "TaskItem", "evalkit_backend", "evalkit_run", "evalkit_task",
           "pytest_addoption", "pytest_collect_file", "pytest_configure", "pytest_report_header"]


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "evalkit(model=None): an evalkit task item, or a test using the "
                                       "evalkit_run fixture; model=SPEC picks the model for that test")
    config.stash[STATE] = st = PluginState(config)
    if st.model is not None:
        config.pluginmanager.register(TaskSummary(), "evalkit-summary")


def pytest_report_header(config: pytest.Config) -> str | None:
    st = config.stash[STATE]
    if st.model is None:
        return None
    threshold = "task targets" if st.threshold is None else f"{st.threshold:g}"
    return (f"evalkit: model {st.model}, n={st.n}, seed={st.seed}, level={st.level}, threshold {threshold}"
            f"{' (95% lower bound)' if st.lower_bound else ''}{', chat mode' if st.chat else ''}"
            f"{f', adaptive (alpha {st.alpha:g})' if st.adaptive else ''}")


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(file_path: Path, parent: pytest.Collector
                        ) -> Generator[None, list[pytest.Collector], list[pytest.Collector]]:
    results = yield
    st = parent.config.stash.get(STATE, None)
    if st is None or st.model is None or not st.is_task_file(file_path, parent.session):
        return results
    # A task module is evalkit's to import (discovery gives it a unique name), never a test module.
    results = [r for r in results if not isinstance(r, pytest.Module)]
    results.append(TaskFile.from_parent(parent, path=file_path))
    return results
