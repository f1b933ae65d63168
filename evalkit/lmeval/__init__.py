"""lm-eval (EleutherAI's lm-evaluation-harness) interoperability.

Three directions, each in its own module:

- `export`: evalkit tasks -> an lm-eval task folder (YAML + local JSONL + utils.py whose
  `process_results` calls the evalkit checker), run by `lm-eval run --include_path DIR`.
- `importer`: an lm-eval `generate_until` task -> an evalkit Task (an evalkit task file with a
  top-level `lm_eval:` key; prompts built by lm-eval's own task objects).
- `evalkit.models.lmeval`: any registered lm-eval model as an evalkit backend (`lmeval:MODEL,ARGS`).

Offline by default, explicitly: every code path here calls `ensure_offline()` before lm-eval,
`datasets` or `huggingface_hub` can reach the network, which sets HF_HUB_OFFLINE=1 and
HF_DATASETS_OFFLINE=1 unless the user has set them (to any value: an explicit "0" is respected).
lm-eval's index of its ~14.7k bundled tasks (7-15 s to build) is never built unless asked for:
`include_defaults: true` in an import file, or EVALKIT_LMEVAL_DEFAULTS=1 (the CLI's
`--lm-eval-defaults` sets it).

This module imports neither lm-eval nor torch: the core imports it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

#: Environment variables that keep Hugging Face libraries off the network.
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
#: Set to 1 to index lm-eval's bundled tasks as well (slow; off by default).
DEFAULTS_ENV = "EVALKIT_LMEVAL_DEFAULTS"

def ensure_offline() -> list[str]:
    """Turn on the Hugging Face offline switches the user has not set; returns those set now.

    An explicit setting always wins (HF_HUB_OFFLINE=0 lets lm-eval download datasets; the legacy
    TRANSFORMERS_OFFLINE counts as a setting of HF_HUB_OFFLINE). The libraries read these
    variables when they are imported, so a library imported earlier is told directly too.
    """
    set_now = []
    for var in OFFLINE_VARS:
        explicit = var in os.environ or (var == "HF_HUB_OFFLINE" and "TRANSFORMERS_OFFLINE" in os.environ)
        if not explicit:
            os.environ[var] = "1"
            set_now.append(var)
    if set_now:
        hub = sys.modules.get("huggingface_hub.constants")
        if hub is not None and "HF_HUB_OFFLINE" in set_now:
            setattr(hub, "HF_HUB_OFFLINE", True)  # noqa: B010 - a module from sys.modules: its attributes are not typed
        cfg = sys.modules.get("datasets.config")
        if cfg is not None:
            for var in set_now:
                setattr(cfg, var, True)
    return set_now


def defaults_requested(flag: bool | None = None) -> bool:
    """Whether lm-eval's bundled task index should be built: `flag` if given, else the env var."""
    if flag is not None and flag:
        return True
    return os.environ.get(DEFAULTS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def task_manager(include_path: str | Path | list[str | Path] | None, include_defaults: bool = False) -> Any:
    """A fresh lm-eval `TaskManager` over `include_path` (a few ms for a small folder).

    `include_defaults=False` (the default) skips lm-eval's own ~14.7k tasks: indexing them
    costs 7-15 s and is only needed for a task that `include:`s one of lm-eval's YAML files.
    """
    ensure_offline()
    from lm_eval.tasks import TaskManager

    paths = include_path if isinstance(include_path, (list, tuple)) else [include_path] if include_path else []
    return TaskManager(include_path=[str(Path(p).resolve()) for p in paths] or None,
                       include_defaults=bool(include_defaults))


__all__ = ["OFFLINE_VARS", "DEFAULTS_ENV", "ensure_offline", "defaults_requested", "task_manager"]
