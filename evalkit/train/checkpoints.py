"""Atomic checkpoints: a checkpoint is resumed from only when it is complete.

    checkpoints/
        .staging/checkpoint-<trainer step>/   the Trainer writes here (its output_dir)
        checkpoint-<run step>/                renamed into place with evalkit_state.json inside

A checkpoint counts as complete only when it sits at `checkpoints/checkpoint-N` with the loop's
state file (`evalkit_state.json`) inside. The Trainer saves into the staging folder; `commit`
then writes the state file and renames the folder into place (one `os.replace`), so a kill at any
moment leaves either the previous checkpoint or the new one, never a partial one to resume from.
Stale staging folders (a save that a kill interrupted) are removed when a run is prepared, after
`check_writable` has proven the output folder writable.

The run step is the Trainer's step plus the steps trained before it: the verifier modes train in
several Trainer runs, and their checkpoints count steps across the whole run. No torch or
transformers here (the Trainer side is evalkit.train.trainer.AtomicCheckpoints).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from evalkit.errors import ConfigError

STATE_FILE = "evalkit_state.json"
STAGING = ".staging"
NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(path: Path) -> int | None:
    """N for a folder named checkpoint-N, else None."""
    match = NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints that finished saving (renamed into place with their state file), oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if checkpoint_step(p) is not None and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint a resume continues from: the newest complete one (None: start afresh)."""
    found = complete_checkpoints(folder)
    return found[-1] if found else None


def staging_folder(folder: Path) -> Path:
    """Where the Trainer writes a checkpoint before it is complete (its output_dir)."""
    return folder / STAGING


def remove_staging(folder: Path) -> None:
    """Remove staging folders: saves that a kill interrupted (also `.staging-N`, the older layout)."""
    if folder.is_dir():
        for stale in folder.glob(STAGING + "*"):
            shutil.rmtree(stale, ignore_errors=True)


def read_state(checkpoint: Path) -> dict[str, Any]:
    """The loop state saved inside a complete checkpoint."""
    return json.loads((checkpoint / STATE_FILE).read_text())


def commit(staged: Path, folder: Path, step: int, state: dict[str, Any]) -> Path:
    """Make the checkpoint saved at `staged` complete: write the loop state into it, then rename it to
    `folder/checkpoint-<step>` (replacing one of that name). Returns the final path."""
    (staged / STATE_FILE).write_text(json.dumps(state, indent=1))
    inject_fault("kill-during-save", step)  # between the weights being written and the rename
    final = folder / f"checkpoint-{step}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(staged, final)  # the checkpoint becomes visible only now, complete
    return final


def save_now(model: Any, folder: Path, step: int, state: dict[str, Any]) -> Path:
    """A complete checkpoint of `model`'s weights made outside any Trainer (same layout, same rename):
    the verifier modes' step 0, evaluated before the first Trainer runs."""
    from evalkit.models.tiny import save_model

    staged = staging_folder(folder) / f"checkpoint-{step}"
    save_model(model, None, staged)
    final = commit(staged, folder, step, state)
    remove_staging(folder)
    return final


def prune(folder: Path, keep: Iterable[int]) -> None:
    """Remove complete checkpoints except the steps in `keep` (the best k) and the latest (for resume)."""
    checkpoints = complete_checkpoints(folder)
    kept = set(keep)
    if checkpoints:
        kept.add(checkpoint_step(checkpoints[-1]) or 0)
    for checkpoint in checkpoints:
        if checkpoint_step(checkpoint) not in kept:
            shutil.rmtree(checkpoint, ignore_errors=True)


def inject_fault(kind: str, step: int) -> None:
    """Fault injection for the resume tests: EVALKIT_FAULT=kill-during-save:STEP (never set it otherwise)."""
    if os.environ.get("EVALKIT_FAULT", "") == f"{kind}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def check_writable(folder: Path, recipe_file: Path | str | None = None) -> None:
    """Prove that `folder` can be written (or, while it does not exist, created): a file is created and
    removed in it or in its nearest existing parent, so nothing is left behind. A ConfigError naming the folder
    otherwise: a read-only output is found before training, not at its first save minutes in."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    why = None
    if not existing.is_dir():
        why = f"{existing} is not a folder"
    else:
        probe = existing / f".evalkit-write-test-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            why = f"{existing if existing != folder else 'it'}: {exc.strerror or exc}"
    if why:
        raise ConfigError(f"the folder {folder} is not writable ({why}): training writes its checkpoints, "
                          "evaluations and model there; choose another output (--output, or `output:` in the recipe) "
                          "or make it writable", file=recipe_file, field="output")


__all__ = ["NAME", "STAGING", "STATE_FILE", "check_writable", "checkpoint_step", "commit", "complete_checkpoints",
           "inject_fault", "latest_checkpoint", "prune", "read_state", "remove_staging", "save_now", "staging_folder"]
