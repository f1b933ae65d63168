"""evalkit: checkable tasks, fast evaluation and train-until-the-checks-pass fine-tuning.

The core (tasks, checkers, self-test) imports without torch; model backends and training
import torch/transformers lazily.
"""

from __future__ import annotations

from evalkit.version import __version__

from evalkit import checkers
from evalkit.errors import ConfigError, EvalkitError, ExitCode, NothingToRun, PluginImportError, UnknownTaskError
from evalkit.core.example import Example, Overlap, overlap, split_of
from evalkit.core.scoring import Scored, score
from evalkit.core.task import GenerationConfig, Task, TaskSpec, task
from evalkit.core.verdict import Status, Verdict, verdict

__all__ = [
    "__version__",
    "checkers",
    "ConfigError", "EvalkitError", "ExitCode", "NothingToRun", "PluginImportError", "UnknownTaskError",
    "Example", "Overlap", "overlap", "split_of",
    "Scored", "score",
    "GenerationConfig", "Task", "TaskSpec", "task",
    "Status", "Verdict", "verdict",
]
