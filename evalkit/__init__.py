"""evalkit: checkable tasks, fast evaluation and train-until-the-checks-pass fine-tuning.

The core (tasks, checkers, self-test) imports without torch; model backends and training
import torch/transformers lazily.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import checkers
from .errors import ConfigError, EvalkitError, ExitCode, NothingToRun, PluginImportError, UnknownTaskError
from .example import Example, Overlap, overlap, split_of
from .scoring import Scored, score
from .task import GenerationConfig, Task, TaskSpec, task
from .verdict import Status, Verdict, verdict

__all__ = [
    "__version__",
    "checkers",
    "ConfigError", "EvalkitError", "ExitCode", "NothingToRun", "PluginImportError", "UnknownTaskError",
    "Example", "Overlap", "overlap", "split_of",
    "Scored", "score",
    "GenerationConfig", "Task", "TaskSpec", "task",
    "Status", "Verdict", "verdict",
]
