"""The self-test's chat pass: the checker sound as chat-mode runs read outputs.

A task whose chat-mode runs stop or extract differently (`Task.for_chat`: `chat_stop`, `chat_extract`), or
that gives `chat_solutions(ex, rng)` (right outputs as an instruct model writes them: "The answer is 579."),
is self-tested twice. The chat pass runs every property of the raw pass on `task.for_chat()`, with the chat
solutions among the valid outputs (so "accepts solutions" shows the chat extraction finds the answer in
prose) and the chat question echoed back among the outputs that must fail. Corruptions start from the
raw answers (reference and solutions), as in the raw pass: chat extraction must not turn a corrupted
answer into a right one. One property is added:

- **rejects wrong answers in prose** — in each chat solution the answer (the reference, or a solution,
  found verbatim in it) is replaced by a corruption of it (digit and character edits, truncation,
  appended junk), and the output must fail unless the corrupted answer is equivalent to a valid one
  (`equivalent`), also once the separators and punctuation around it are set aside ("The answer is :579."
  is still 579; `bare`). Prose around a wrong answer never makes it right.

Each chat property is reported as "chat: NAME".
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import strategies as st

from evalkit.core.chat import has_chat_settings
from evalkit.core.example import Example
from evalkit.core.selftest_inputs import CORRUPTIONS, PropertyFailure, corruption, run_property, show
from evalkit.core.selftest_report import PropertyResult
from evalkit.core.selftest_run import EXCUSED, LevelRun, nonzero
from evalkit.core.task import Task
from evalkit.core.verdict import Status

PREFIX = "chat: "


# What sets an answer off in prose without being part of it: "= 579", ": 579", "**579**", "579!".
_LEAD, _TRAIL = " \t\n:=\"'`*", " \t\n.,;:!?\"'`*"


def bare(answer: str) -> str:
    """The answer without separators and punctuation around it (not signs, dots before it or brackets:
    "-5", ".5" and "[5" are other answers)."""
    return answer.lstrip(_LEAD).rstrip(_TRAIL)


def chat_pass_needed(task: Task) -> bool:
    """Whether `task` gets a chat pass: it reads chat-mode output its own way, or gives chat solutions."""
    return has_chat_settings(task) or hasattr(task.impl, "chat_solutions")


class ChatLevelRun(LevelRun):
    """One level's chat pass: the properties of `LevelRun` on the task's chat-mode view."""

    def __init__(self, task: Task, examples: list[Example], **kwargs: Any):
        super().__init__(task.for_chat(), examples, **kwargs)
        self.raw_solutions = {k: list(v) for k, v in self.solutions.items()}
        self.chat_outputs: dict[str, list[str]] = {}
        if hasattr(self.impl, "chat_solutions"):
            for ex in examples:
                self.chat_outputs[ex.id] = [o for o in self.draw_solutions(ex, "chat_solutions")
                                            if o not in self.raw_solutions.get(ex.id, [])]
                self.solutions[ex.id] = self.raw_solutions.get(ex.id, []) + self.chat_outputs[ex.id]

    def accepts_solutions(self) -> PropertyResult:
        result = super().accepts_solutions()
        return replace(result, detail="every answer solutions(ex, rng) and chat_solutions(ex, rng) give, "
                                      "other than the reference") if self.chat_outputs else result

    def answers(self, ex: Example) -> list[str]:
        return ([ex.reference] if ex.reference is not None else []) + self.raw_solutions.get(ex.id, [])

    def echoes(self, ex: Example) -> list[tuple[str, str]]:
        question = self.task.messages(ex)[-1]["content"]
        return [*super().echoes(ex), (question, "the chat question echoed back")]

    def rejects_wrong_answers_in_prose(self) -> PropertyResult:
        name = "rejects wrong answers in prose"
        detail = "each chat solution with its answer replaced by a corruption of it"
        skip = self.task.spec.selftest.skip
        kinds = [k for k in CORRUPTIONS if k not in skip]
        frames: list[tuple[Example, str, str, str]] = []  # (example, before, answer, after)
        unframed = 0
        for ex in self.examples:
            for output in self.chat_outputs.get(ex.id, []):
                found = next(((output.rfind(a), a) for a in self.answers(ex) if a.strip() and a in output), None)
                if found is None:
                    unframed += 1
                else:
                    i, answer = found
                    frames.append((ex, output[:i], answer, output[i + len(answer):]))
        counts = {"chat solutions without a known answer written in them verbatim": unframed}
        if not frames or not kinds:
            why = "no chat solutions (chat_solutions(ex, rng))" if not frames else "every kind skipped by the task"
            return PropertyResult(name, None, 0, skipped={why: None, **nonzero(counts)}, detail=detail)
        excused: dict[str, int] = {}

        def body(v: tuple[tuple[Example, str, str, str], tuple[str, str]]) -> None:
            (ex, before, _answer, after), (kind, bad) = v
            output = before + bad + after
            if self.scored(ex, output).verdict.status is not Status.PASS:
                return
            if self.excused(ex, bad) or self.excused(ex, bare(bad)):
                excused[kind] = excused.get(kind, 0) + 1
                return
            raise PropertyFailure(f"a wrong answer ({kind}) {show(bad)} in prose: "
                                  f"{self.wrong_pass(ex, output, 'output')}")

        strategy = st.sampled_from(frames).flatmap(lambda f: corruption(f[2], kinds).map(lambda c: (f, c)))
        tried, failure = run_property(body, strategy, self.max_examples)
        counts.update({f"{EXCUSED} ({kind})": n for kind, n in sorted(excused.items())})
        return PropertyResult(name, failure is None, tried, failure, nonzero(counts), detail)

    def properties(self) -> tuple[PropertyResult, ...]:
        return (*super().properties(), self.rejects_wrong_answers_in_prose())


def chat_properties(run: ChatLevelRun) -> tuple[PropertyResult, ...]:
    """The chat pass's results, each named "chat: NAME"."""
    return tuple(replace(r, name=PREFIX + r.name) for r in run.properties())


__all__ = ["PREFIX", "ChatLevelRun", "bare", "chat_pass_needed", "chat_properties"]
