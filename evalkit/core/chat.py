"""The chat form of a prompt: messages (system, user, assistant) for instruct models.

A task's prompt has two forms. The raw form, `Task.prompt` (the `prompt` of each `Example`), is text a
base model continues. The chat form, `Task.messages(ex)`, is a list of messages that a backend renders
with the model's chat template (`hf:`) or sends as they are (`openai:` chat completions):

    [{"role": "system", "content": "Answer with the number only."},      # optional
     {"role": "user", "content": "12+34="}, {"role": "assistant", "content": "46"},   # few-shot turns
     {"role": "user", "content": "57+68="}]                                # the question

A task gives its chat form in one of three ways (`task_messages` applies them):

- nothing: the chat form is the raw prompt as the user message (after the task's system message and
  few-shot turns, if it has them);
- `@task(system=..., fewshot=[(user, assistant), ...])` (YAML: `chat: {system, fewshot}`): a system
  message and few-shot turns before the user message;
- a `chat(ex)` method (YAML: `chat: {user: "template with {fields}"}`) returning the user message's
  text (the system message and few-shot turns are added around it), or the whole list of messages.

Messages are plain dicts (`Message`), what chat templates and chat APIs take, and JSON as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypedDict

if TYPE_CHECKING:
    from evalkit.core.example import Example

ROLES = ("system", "user", "assistant")
Role = Literal["system", "user", "assistant"]


class Message(TypedDict):
    """One chat message: `{"role": "system" | "user" | "assistant", "content": str}`."""

    role: Role
    content: str


#: What a backend's `generate` takes per prompt: raw text, or (in chat mode) a list of messages.
Prompt: TypeAlias = str | Sequence[Message]


def message(role: str, content: str) -> Message:
    """A checked message.

    Raises:
        ValueError: a role other than system, user, assistant. TypeError: content that is not a str.
    """
    if role not in ROLES:
        raise ValueError(f"a message's role must be one of {', '.join(ROLES)}, got {role!r}")
    if not isinstance(content, str):
        raise TypeError(f"a message's content must be str, got {type(content).__name__}")
    return {"role": role, "content": content}  # type: ignore[typeddict-item]  # role checked above


def as_messages(value: Iterable[Mapping[str, Any]], where: str = "messages") -> list[Message]:
    """Check a list of messages (mappings with `role` and `content`) for a prompt: at least one, each
    a known role with str content, no other keys, and the last from the user (the model answers it).

    Raises:
        TypeError, ValueError: naming `where` and the offending message.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{where}: expected a list of messages, got {type(value).__name__}")
    out: list[Message] = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or set(m) != {"role", "content"}:
            raise TypeError(f"{where}[{i}]: expected {{'role': ..., 'content': ...}}, got {m!r:.80}")
        try:
            out.append(message(m["role"], m["content"]))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{where}[{i}]: {exc}") from None
    if not out:
        raise ValueError(f"{where}: no messages")
    if out[-1]["role"] != "user":
        raise ValueError(f"{where}: the last message must be the user's (the model answers it), "
                         f"got {out[-1]['role']!r}")
    return out


def is_chat(prompt: Prompt) -> bool:
    """Whether a prompt is in the chat form (a list of messages) rather than raw text."""
    return not isinstance(prompt, str)


@dataclass(frozen=True)
class ChatSpec:
    """A task's chat settings: a system message and few-shot turns put before each user message.

    Attributes:
        system: the system message (None: none).
        fewshot: (user, assistant) pairs, in order, between the system message and the question.
    """

    system: str | None = None
    fewshot: tuple[tuple[str, str], ...] = ()

    def messages(self, user: str) -> list[Message]:
        """[system] + the few-shot turns + `user` as the last message."""
        out = [message("system", self.system)] if self.system is not None else []
        for question, answer in self.fewshot:
            out += [message("user", question), message("assistant", answer)]
        return [*out, message("user", user)]

    def to_dict(self) -> dict[str, Any]:
        return {"system": self.system, "fewshot": [{"user": u, "assistant": a} for u, a in self.fewshot]}


def chat_spec(system: str | None = None,
              fewshot: Iterable[Sequence[str] | Mapping[str, str]] = ()) -> ChatSpec | None:
    """A ChatSpec from `@task(system=..., fewshot=...)` (None when both are empty). Each few-shot turn is a
    (user, assistant) pair or a mapping `{"user": ..., "assistant": ...}`.

    Raises:
        TypeError: a system message or a turn's text that is not a str; ValueError: a malformed turn.
    """
    if system is not None and not isinstance(system, str):
        raise TypeError(f"system must be a str, got {type(system).__name__}")
    turns: list[tuple[str, str]] = []
    for i, turn in enumerate(fewshot):
        if isinstance(turn, Mapping):
            if set(turn) != {"user", "assistant"}:
                raise ValueError(f"fewshot[{i}]: expected the keys user and assistant, got {sorted(turn)}")
            pair = (turn["user"], turn["assistant"])
        elif isinstance(turn, (str, bytes)) or len(turn) != 2:
            raise ValueError(f"fewshot[{i}]: expected a (user, assistant) pair, got {turn!r:.80}")
        else:
            pair = (turn[0], turn[1])
        if not all(isinstance(t, str) for t in pair):
            raise TypeError(f"fewshot[{i}]: the user and assistant texts must be str")
        turns.append(pair)
    if system is None and not turns:
        return None
    return ChatSpec(system, tuple(turns))


def task_messages(task: Any, ex: Example) -> list[Message]:
    """The chat form of `ex`'s prompt for `task` (a `Task`; what `Task.messages` returns).

    The task's `chat(ex)` when it has one: a str is the user message, framed by the task's system
    message and few-shot turns; a list is the whole conversation (checked, used as it is). Without
    `chat`, the user message is the raw prompt, framed the same way.

    Raises:
        TypeError, ValueError: `chat(ex)` returned something else, or malformed messages.
    """
    spec: ChatSpec = task.spec.chat or ChatSpec()
    if not hasattr(task.impl, "chat"):
        return spec.messages(ex.prompt)
    value = task.impl.chat(ex)
    if isinstance(value, str):
        return spec.messages(value)
    if isinstance(value, (list, tuple)):
        return as_messages(value, f"task {task.name!r}: chat()")
    raise TypeError(f"task {task.name!r}: chat() must return the user message (str) or a list of messages, "
                    f"got {type(value).__name__}")


__all__ = ["ROLES", "ChatSpec", "Message", "Prompt", "Role", "as_messages", "chat_spec", "is_chat", "message",
           "task_messages"]
