"""Checker self-test: prove that a task's checker accepts right answers and rejects wrong ones.

For each task and level, on generated (or loaded) eval and train examples:

- soundness: every reference output passes;
- accepts solutions: every answer the task's `solutions(ex, rng)` gives (several valid answers, as
  different as the task allows) passes: this is what catches an over-strict checker;
- non-vacuity: the empty output, the prompt echoed back, random text, and hypothesis-chosen
  corruptions of every known valid answer (reference and solutions: digit/character edits,
  truncation, appended junk) fail, unless the task declares the corrupted answer equivalent
  (`equivalent` / `selftest.normalize`);
- agrees with second opinion: where the task has an independent judge, `second_opinion(ex, answer)`,
  the checker's verdict matches it on every input tried (every disagreement is reported);
- determinism: the same input gives the same verdict, checked outside hypothesis (which reseeds
  `random` before each input), each input scored three times in different orders;
- robustness: arbitrary unicode and very long outputs never make the checker raise or hang.

A task that reads chat-mode output its own way (`chat_extract`, chat stop strings: `Task.for_chat`) or
gives `chat_solutions(ex, rng)` gets the same properties again in chat mode, named "chat: ...", plus
"chat: rejects wrong answers in prose" (`evalkit.core.selftest_chat`).

A task with neither a reference nor solutions is UNPROVEN, not PASS (see `selftest_report`).
Usable from pytest: `assert_selftest(task)` raises AssertionError with the minimal counterexample.
Every function here takes a loaded `Task` or what `@task` decorated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalkit.core.example import Example
from evalkit.core.selftest_chat import ChatLevelRun, chat_pass_needed, chat_properties
from evalkit.core.selftest_inputs import CORRUPTIONS, PropertyFailure, corruption
from evalkit.core.selftest_report import (
    FAIL,
    PASS,
    UNPROVEN,
    UNPROVEN_HINT,
    LevelResult,
    PropertyResult,
    SelftestReport,
)
from evalkit.core.selftest_run import LevelRun
from evalkit.core.task import TaskLike, as_task
from evalkit.errors import InfrastructureError

__all__ = ["CORRUPTIONS", "FAIL", "PASS", "UNPROVEN", "UNPROVEN_HINT", "LevelResult", "PropertyFailure",
           "PropertyResult", "SelftestReport", "assert_selftest", "corruption", "selftest_level", "selftest_task"]


def selftest_level(task: TaskLike, level: int | None, *, n_examples: int = 20, max_examples: int = 100,
                   seed: int = 0, timeout: float = 10.0) -> LevelResult:
    """Run every property for one task at one level.

    Args:
        task: the task (a Task, or a @task-decorated class).
        level: the level (None: the task's default).
        n_examples: examples drawn per split (eval and train).
        max_examples: hypothesis examples per property.
        seed: the examples' seed (and the solutions' seed).
        timeout: seconds one check may take before it counts as TIMEOUT.
    """
    task = as_task(task)
    examples: list[Example] = []
    for split in ("eval", "train"):
        examples += task.examples(split, n=n_examples, seed=seed, level=level)
    if not examples:
        return LevelResult(task.name, level, (PropertyResult("examples", False, 0, "the task produced no examples"),))
    run = LevelRun(task, examples, seed=seed, max_examples=max_examples, timeout=timeout)
    results = run.properties()
    if chat_pass_needed(task):  # chat mode reads outputs its own way: prove that reading sound too
        results += chat_properties(ChatLevelRun(task, examples, seed=seed, max_examples=max_examples,
                                                timeout=timeout))
    return LevelResult(task.name, level, results, len(examples), run.proven)


def selftest_task(task: TaskLike, *, levels: Sequence[int] | None = None, **kwargs: Any) -> SelftestReport:
    """Self-test a task at each of its levels (or the given ones); keywords go to `selftest_level`.

    The report's `status` is PASS, FAIL or UNPROVEN (no reference and no solutions on some level);
    `passed` is true only for PASS.
    """
    task = as_task(task)
    report = SelftestReport(task.name)
    chosen: Sequence[int | None] = list(levels) if levels else (list(task.levels) or [None])
    if not task.is_generator and not task.levels:
        chosen = [None]
    for level in chosen:
        try:
            report.levels.append(selftest_level(task, level, **kwargs))
        except InfrastructureError:
            raise  # e.g. no sandbox for a code check: not the task's fault, the run stops (exit 3)
        except Exception as exc:  # noqa: BLE001 - a task that cannot even produce examples fails here
            report.error = f"level {level}: {type(exc).__name__}: {exc}"
            break
    return report


def assert_selftest(task: TaskLike, *, allow_unproven: bool = False, **kwargs: Any) -> SelftestReport:
    """Run the self-test; raise AssertionError naming each failed property and its counterexample.

    An UNPROVEN task (neither reference nor solutions) fails too, saying what to add, unless
    `allow_unproven`. Keywords: `levels` and those of `selftest_level` (`n_examples`,
    `max_examples`, `seed`, `timeout`).
    """
    report = selftest_task(task, **kwargs)
    if report.status == FAIL or (report.status == UNPROVEN and not allow_unproven):
        raise AssertionError(report.message())
    return report
