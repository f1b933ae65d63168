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

A model that talks needs its answer read out of prose, and more room: chat-mode runs use the task's chat
stop strings, token budget and extraction where it has them (`@task(chat_stop=..., chat_max_new_tokens=...)`
and a `chat_extract(output)` method; YAML: `chat: {stop, max_new_tokens, extract}`), through
`Task.for_chat()`. The raw form's settings never change.

Messages are plain dicts (`Message`), what chat templates and chat APIs take, and JSON as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
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
    """A task's chat settings: a system message and few-shot turns put before each user message, and the
    generation settings of chat-mode runs where they differ from the raw form's.

    Attributes:
        system: the system message (None: none).
        fewshot: (user, assistant) pairs, in order, between the system message and the question.
        stop: the stop strings of chat-mode runs (None: the task's `stop`). An instruct model writes
            JSON and code over several lines, so "\n" would cut its answer short.
        max_new_tokens: the token budget of chat-mode runs (None: the task's): a model that talks needs
            room for "The answer is 579."
    """

    system: str | None = None
    fewshot: tuple[tuple[str, str], ...] = ()
    stop: tuple[str, ...] | None = None
    max_new_tokens: int | None = None

    def messages(self, user: str) -> list[Message]:
        """[system] + the few-shot turns + `user` as the last message."""
        out = [message("system", self.system)] if self.system is not None else []
        for question, answer in self.fewshot:
            out += [message("user", question), message("assistant", answer)]
        return [*out, message("user", user)]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"system": self.system,
                               "fewshot": [{"user": u, "assistant": a} for u, a in self.fewshot]}
        if self.stop is not None:
            out["stop"] = list(self.stop)
        if self.max_new_tokens is not None:
            out["max_new_tokens"] = self.max_new_tokens
        return out


def chat_spec(system: str | None = None,
              fewshot: Iterable[Sequence[str] | Mapping[str, str]] = (),
              stop: Sequence[str] | None = None, max_new_tokens: int | None = None) -> ChatSpec | None:
    """A ChatSpec from `@task(system=..., fewshot=..., chat_stop=..., chat_max_new_tokens=...)` (None when
    all are empty). Each few-shot turn is a (user, assistant) pair or a mapping `{"user": ..., "assistant": ...}`.

    Raises:
        TypeError: a system message or a turn's text that is not a str; ValueError: a malformed turn, a
        stop that is not a list of strings, a max_new_tokens below 1.
    """
    if system is not None and not isinstance(system, str):
        raise TypeError(f"system must be a str, got {type(system).__name__}")
    if stop is not None and (isinstance(stop, str) or not all(isinstance(s, str) for s in stop)):
        raise ValueError(f"chat stop strings must be a list of str, got {stop!r:.80}")
    if max_new_tokens is not None and (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int)
                                       or max_new_tokens < 1):
        raise ValueError(f"chat max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
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
    if system is None and not turns and stop is None and max_new_tokens is None:
        return None
    return ChatSpec(system, tuple(turns), None if stop is None else tuple(stop), max_new_tokens)


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


def has_chat_settings(task: Any) -> bool:
    """Whether chat-mode runs of `task` (a `Task`) stop, budget or extract differently from raw ones."""
    chat: ChatSpec | None = task.spec.chat
    return hasattr(task.impl, "chat_extract") or (
        chat is not None and (chat.stop is not None or chat.max_new_tokens is not None))


def chat_view(task: Any) -> Any:
    """A `Task` as chat-mode runs use it (what `Task.for_chat` returns, once per task): the same
    implementation, examples and checks, with the chat stop strings and token budget in its generation
    settings, `chat_extract` (else the task's `extract`, which then cuts at the chat stop strings) as its
    extraction, and the self-test's chat-only skips (`chat_skip`) added to its skips."""
    chat: ChatSpec = task.spec.chat or ChatSpec()
    gen = task.spec.generation
    gen = replace(gen, stop=gen.stop if chat.stop is None else chat.stop,
                  max_new_tokens=gen.max_new_tokens if chat.max_new_tokens is None else chat.max_new_tokens)
    st = task.spec.selftest
    st = replace(st, skip=st.skip + tuple(k for k in st.chat_skip if k not in st.skip))
    view = type(task)(replace(task.spec, generation=gen, selftest=st), task.impl, task.source)
    if hasattr(task.impl, "chat_extract"):
        view._extract = task.impl.chat_extract
    view._rows = task._rows
    view._chat_view = view  # the view is its own chat view
    return view


__all__ = ["ROLES", "ChatSpec", "Message", "Prompt", "Role", "as_messages", "chat_spec", "chat_view",
           "has_chat_settings", "is_chat", "message", "task_messages"]
