"""evalkit: checkable tasks, fast evaluation and train-until-the-checks-pass fine-tuning.

The public API, all importable from `evalkit`:

- tasks: `task` (the decorator), `Task`, `TaskSpec`, `GenerationConfig`, `as_task`, `load_tasks`,
  `Example`, `overlap`, `normalize_prompt`, `split_of`, and the chat form: `Message`, `ChatSpec`;
- checking: `verdict`, `Verdict`, `Status`, `checkers`, `score`, `assert_selftest`, `selftest_task`;
- running: `evaluate`, `RunRecord`, `load_record`, `compare_records`, `ModelBackend`;
- gating: `load_gate`, `judge`, `GateConfig`, `GateResult`, `Rule`;
- errors: `EvalkitError` and its kinds, `ExitCode`.

    import evalkit
    record = evalkit.evaluate(model_spec="oracle", tasks=["addition"], n=50)
    record.rate("addition")

`import evalkit` is cheap and never imports torch: the runner, the self-test (hypothesis) and the
gate are imported on first use of their names; model backends and training import
torch/transformers lazily.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from evalkit import checkers
from evalkit.core.chat import ChatSpec, Message
from evalkit.core.example import Example, Overlap, normalize_prompt, overlap, split_of
from evalkit.core.scoring import Scored, score
from evalkit.core.task import GenerationConfig, Task, TaskLike, TaskSpec, as_task, task
from evalkit.core.verdict import Status, Verdict, verdict
from evalkit.errors import ConfigError, EvalkitError, ExitCode, NothingToRun, PluginImportError, UnknownTaskError
from evalkit.version import __version__

if TYPE_CHECKING:
    from evalkit.core.checkpool import contained
    from evalkit.core.selftest import SelftestReport, assert_selftest, selftest_task
    from evalkit.discovery.load import load_tasks
    from evalkit.gate import GateConfig, GateResult, Rule, judge, load_gate
    from evalkit.models.base import ModelBackend
    from evalkit.run.posthoc import compare_records
    from evalkit.run.record import RunRecord, load_record
    from evalkit.run.runner import evaluate

# Imported on first access (PEP 562): name -> module.
_LAZY = {
    "evaluate": "evalkit.run.runner",
    "contained": "evalkit.core.checkpool",
    "compare_records": "evalkit.run.posthoc",
    "RunRecord": "evalkit.run.record",
    "load_record": "evalkit.run.record",
    "load_tasks": "evalkit.discovery.load",
    "ModelBackend": "evalkit.models.base",
    "assert_selftest": "evalkit.core.selftest",
    "selftest_task": "evalkit.core.selftest",
    "SelftestReport": "evalkit.core.selftest",
    "load_gate": "evalkit.gate",
    "judge": "evalkit.gate",
    "GateConfig": "evalkit.gate",
    "GateResult": "evalkit.gate",
    "Rule": "evalkit.gate",
}

__all__ = [  # sorted; the module docstring groups them by purpose
    "ChatSpec", "ConfigError", "EvalkitError", "Example", "ExitCode", "GateConfig", "GateResult", "GenerationConfig",
    "Message", "ModelBackend", "NothingToRun", "Overlap", "PluginImportError", "Rule", "RunRecord", "Scored",
    "SelftestReport", "Status", "Task", "TaskLike", "TaskSpec", "UnknownTaskError", "Verdict", "__version__",
    "as_task", "assert_selftest", "checkers", "compare_records", "contained", "evaluate", "judge", "load_gate",
    "load_record", "load_tasks", "normalize_prompt", "overlap", "score", "selftest_task", "split_of", "task", "verdict"
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'evalkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
