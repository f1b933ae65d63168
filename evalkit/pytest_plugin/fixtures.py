"""Fixtures for ordinary test files: `evalkit_backend`, `evalkit_run` and `evalkit_task`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pytest

from evalkit.pytest_plugin.options import NO_MODEL, STATE, PluginState

if TYPE_CHECKING:
    from evalkit.core.task import Task
    from evalkit.discovery.load import TaskRef
    from evalkit.run.record import RunRecord


def resolve_tasks(st: PluginState, tasks: TaskRef | Sequence[TaskRef]) -> list[Task]:
    """Tasks named as the fixtures accept them: a name, glob, `tag:NAME`, path, Task, @task class, or a list.

    The project's folders are searched only when a name needs them (`evalkit.load_tasks`).
    """
    from evalkit.discovery.load import load_tasks

    return load_tasks(tasks, registry=st.registry)


@pytest.fixture(scope="session")
def evalkit_backend(pytestconfig: pytest.Config) -> Any:
    """The --evalkit-model backend, loaded once per session (per xdist worker); skips without the option."""
    st = pytestconfig.stash[STATE]
    if st.model is None:
        pytest.skip(NO_MODEL)
    return st.backend(st.model)


@pytest.fixture
def evalkit_run(request: pytest.FixtureRequest) -> Callable[..., RunRecord]:
    """`evalkit_run(tasks, n=None, **evaluate_kwargs) -> RunRecord`.

    `tasks`: a name, glob, `tag:NAME`, Task, or a list of them (names from --evalkit-tasks-dir, else the
    project's task folders). The model: `@pytest.mark.evalkit(model=SPEC)` on the test, else
    --evalkit-model; neither skips the test. n, seed, level, batch_size, chat, adaptive and alpha default to
    the --evalkit-* options; other keywords go to `evalkit.evaluate`. The record stays in memory unless you
    pass `reports_dir=` or `run_dir=`. Each task's rate is added to the test's JUnit properties.
    """
    st = request.config.stash[STATE]
    marker = request.node.get_closest_marker("evalkit")
    spec = (marker.kwargs.get("model") if marker else None) or st.model
    if spec is None:
        pytest.skip(NO_MODEL)
    backend = st.backend(spec)

    def run(tasks: str | Task | Sequence[str | Task], n: int | None = None, **kwargs: Any) -> RunRecord:
        from evalkit.run.runner import evaluate

        settings = {"n": st.n if n is None else n, "seed": st.seed, "level": st.level,
                    "batch_size": st.batch_size, "chat": st.chat, "adaptive": st.adaptive, "alpha": st.alpha,
                    **kwargs}
        record = evaluate(tasks=resolve_tasks(st, tasks), backend=backend, model_spec=spec, **settings)
        for t in record.tasks:
            request.node.user_properties.append((f"evalkit_rate[{t['name']}]", round(t["rate"], 6)))
        return record

    return run


@pytest.fixture
def evalkit_task(pytestconfig: pytest.Config) -> Callable[[str], Task]:
    """`evalkit_task(name) -> Task`: a loaded task by name (UnknownTaskError with close matches otherwise)."""
    st = pytestconfig.stash[STATE]
    return lambda name: st.registry().get(name)
