"""An OpenAI-compatible HTTP server as a `ModelBackend` (vLLM, SGLang, TGI, llama.cpp,
`transformers serve`, OpenAI itself).

Standard library only (urllib): the core gains no dependency. Each continuation is one
request with `n` left out (servers disagree on `n`; several ignore it), sent from a
bounded thread pool; sample `i` of a call with seed `s` asks for `seed = s + i`, which
servers that honour `seed` use to make sampling reproducible. Greedy requests
(temperature 0) are sent once per prompt and shared by all its samples, as `HFBackend`
does. A prompt that is a list of chat messages goes to /v1/chat/completions as it is (the
server applies the model's chat template); raw text goes to /v1/completions. Every returned
text is cut locally at the first stop string, since servers differ in whether they include
it. At most four stop strings (OpenAI's limit) are sent, and never a whitespace-only one
("\n"): a server would cut an answer that opens with a newline to nothing, where evalkit's
rule is that leading whitespace never ends an answer (`cut_at_stop`), so those apply here.

Every request has an overall deadline, `timeout` (the CLI's `--request-timeout`, 120 s): connecting,
waiting, reading the whole answer and any retries must fit in it, so a server that trickles its
answer a byte at a time cannot hold a run (`evalkit.models.deadline`); past it the request fails
with a `BackendError` and the run stops (exit 3), its completed batches saved. Connection errors,
HTTP 429 and 5xx are retried with exponential backoff and jitter (honouring a numeric
`Retry-After`) while the deadline allows; other 4xx answers fail at once. Both end in a
`BackendError` that names the URL and the last error; the API key never appears in one. A
malformed answer (not JSON, or without the completion's text) is retried the same way; one that
stays malformed fails only its own sample: it is returned as a `FailedOutput`, which the runner
records as an ERROR verdict (and generates again when the run is resumed), keeping the rest.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from evalkit.core.chat import as_messages
from evalkit.core.extract import cut_at_stop
from evalkit.errors import EvalkitError, ExitCode
from evalkit.models.base import GenerationStats, check_generate_args
from evalkit.models.deadline import Canceller, DeadlineExceeded, build_opener, fetch
from evalkit.models.failed import FailedOutput

if TYPE_CHECKING:
    from evalkit.core.chat import Prompt
    from evalkit.core.task import GenerationConfig

#: OpenAI accepts at most this many stop sequences per request.
MAX_STOP = 4
#: Characters of a server's error body kept in an error message.
_MESSAGE_CHARS = 300
#: Longest wait a server's Retry-After header may impose between two attempts.
_MAX_RETRY_AFTER = 60.0
#: Seconds a request may take in all, retries included (`--request-timeout`).
DEFAULT_TIMEOUT = 120.0
#: Failures worth another attempt: refused/reset connections, timeouts and URLError are
#: all OSErrors; HTTPException covers answers cut short (RemoteDisconnected, IncompleteRead).
_RETRYABLE_EXC = (OSError, http.client.HTTPException)


class BackendError(EvalkitError):
    """A model server failed: unreachable, timing out, or answering with an error.

    Attributes:
        url: the URL of the failed request.
        status: the HTTP status of the last answer (None when there was none).
    """

    exit_code = ExitCode.INTERNAL

    def __init__(self, message: str, *, url: str, status: int | None = None):
        super().__init__(message)
        self.url, self.status = url, status


class _Retryable(Exception):
    """One failed attempt that may succeed if repeated."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


class _Malformed(_Retryable):
    """An answer that is not the JSON expected (retried; in the end, its sample's failure)."""


def _normalize_base(base_url: str) -> str:
    base = base_url.strip().rstrip("/")
    base = base.removesuffix("/v1")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
    return base


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_CHARS else text[:_MESSAGE_CHARS] + "..."


def _error_message(body: bytes) -> str:
    """The server's own message from an error body ({"error": {"message": ...}}, {"detail": ...})."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return _short(text)
    if isinstance(data, dict):
        for key in ("error", "detail", "message"):
            value = data.get(key)
            if isinstance(value, dict) and "message" in value:
                value = value["message"]
            if value:
                return _short(value if isinstance(value, str) else json.dumps(value))
    return _short(text)


class OpenAIBackend:
    """A model behind an OpenAI-compatible endpoint.

    Args:
        base_url: the server's root, with or without a trailing "/v1"
            ("http://127.0.0.1:8000" and "http://127.0.0.1:8000/v1/" are the same).
        model: the model name to ask for; None takes the first id that GET /v1/models
            lists (asked once, on first use).
        api_key: sent as "Authorization: Bearer ..."; defaults to $OPENAI_API_KEY, else none.
        chat: send raw text prompts to /v1/chat/completions too, as one user message, instead of
            /v1/completions. Chat messages (a chat-mode run's prompts) always go there.
        concurrency: requests in flight at once.
        timeout: the deadline of each request in seconds: connecting, waiting, reading the whole
            answer and any retries (see the module's doc).
        max_retries: retries after the first attempt of a request (as the deadline allows).
        backoff: seconds before the first retry; doubled for each further one, plus up to
            25 % jitter.

    `identity` is "openai:<base>#<model>" (base without "/v1"), with "#chat" appended when `chat`
    is set, because the chat template changes what the model sees. (A chat-mode run records its
    mode in the generation settings of every journal key instead.)
    """

    def __init__(self, base_url: str, model: str | None = None, *, api_key: str | None = None,
                 chat: bool = False, concurrency: int = 8, timeout: float = DEFAULT_TIMEOUT,
                 max_retries: int = 4, backoff: float = 0.5):
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if backoff < 0:
            raise ValueError(f"backoff must be >= 0, got {backoff}")
        self.base_url = _normalize_base(base_url)
        self.chat = chat
        self.concurrency, self.timeout = concurrency, timeout
        self.max_retries, self.backoff = max_retries, backoff
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY") or None
        self._model = model
        self._model_lock = threading.Lock()
        self._opener = build_opener()  # urllib's: honours *_proxy / no_proxy like curl
        self._stats = GenerationStats()

    def __repr__(self) -> str:  # never shows the key
        return (f"OpenAIBackend({self.base_url!r}, model={self._model!r}, chat={self.chat}, "
                f"concurrency={self.concurrency})")

    # -- identity ---------------------------------------------------------------------
    @property
    def model(self) -> str:
        """The model name, asked of GET /v1/models once when none was given."""
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    self._model = self._discover_model()
        return self._model

    @property
    def identity(self) -> str:
        return f"openai:{self.base_url}#{self.model}" + ("#chat" if self.chat else "")

    @property
    def last_stats(self) -> GenerationStats:
        return self._stats

    def _discover_model(self) -> str:
        url = f"{self.base_url}/v1/models"
        data = self._request("GET", url, None, threading.Event(), Canceller())
        models = data.get("data") if isinstance(data, dict) else None
        ids = [m.get("id") for m in models or [] if isinstance(m, dict) and m.get("id")]
        if not ids:
            raise BackendError(f"{url} lists no models; pass the model name explicitly "
                               f"(answer: {_short(json.dumps(data))})", url=url)
        return str(ids[0])

    # -- generation -------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], config: GenerationConfig, *, seed: int = 0,
                 num_samples: int = 1) -> list[list[str]]:
        """See `ModelBackend.generate`.

        An answer that stays malformed after the retries is that sample's `FailedOutput`.

        Raises:
            ValueError: when `config.max_new_tokens` is None or < 1, or num_samples < 1.
            BackendError: when a request fails for good (after retries where retrying helps, within
                its deadline); the call's other requests are ended at once.
        """
        check_generate_args(config, num_samples)
        start = time.perf_counter()
        prompts = list(prompts)
        model = self.model  # discover before starting threads
        sampling = config.temperature > 0
        per_prompt = num_samples if sampling else 1  # greedy rows are shared by all samples
        jobs = [(p, s) for p in range(len(prompts)) for s in range(per_prompt)]
        stop = list(dict.fromkeys(s for s in config.stop if s.strip()))[:MAX_STOP]  # see the module's doc
        abort = threading.Event()  # set on the first failure: queued retries give up early
        canceller = Canceller()  # and requests in flight end (also on Ctrl-C)

        def one(job: tuple[int, int]) -> tuple[str, int, int]:
            p, s = job
            body: dict[str, Any] = {"model": model, "max_tokens": config.max_new_tokens,
                                    "temperature": config.temperature, "top_p": config.top_p,
                                    "seed": seed + s}
            prompt = prompts[p]
            if not isinstance(prompt, str):
                body["messages"] = [dict(m) for m in as_messages(prompt)]
            elif self.chat:
                body["messages"] = [{"role": "user", "content": prompt}]
            else:
                body["prompt"] = prompt
            chat = "messages" in body
            if stop:
                body["stop"] = stop
            url = f"{self.base_url}/v1/chat/completions" if chat else f"{self.base_url}/v1/completions"
            answer = self._request("POST", url, body, abort, canceller, lambda data: self._parse(data, url, chat))
            return (answer, 0, 0) if isinstance(answer, FailedOutput) else answer

        results: list[tuple[str, int, int]] = [("", 0, 0)] * len(jobs)
        if jobs:
            pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs)),
                                      thread_name_prefix="evalkit-openai")
            try:
                futures = {pool.submit(one, job): i for i, job in enumerate(jobs)}
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                failed = next((f for f in done if f.exception() is not None), None)
                if failed is not None:
                    abort.set()
                    raise failed.exception()  # type: ignore[misc]
                for f, i in futures.items():
                    results[i] = f.result()
            finally:
                abort.set()
                canceller.cancel()
                pool.shutdown(wait=True, cancel_futures=True)

        out: list[list[str]] = [[] for _ in prompts]
        for (p, _), (text, _, _) in zip(jobs, results):
            out[p].append(text if isinstance(text, FailedOutput) else cut_at_stop(text, config.stop))
        if not sampling:
            out = [row * num_samples for row in out]
        self._stats = GenerationStats(
            prompts=len(prompts), samples=len(prompts) * num_samples,
            prompt_tokens=sum(r[1] for r in results), generated_tokens=sum(r[2] for r in results),
            seconds=time.perf_counter() - start)
        return out

    def _parse(self, data: Any, url: str, chat: bool) -> tuple[str, int, int]:
        """(text, prompt tokens, completion tokens) of one answer."""
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] if chat else choice["text"]
            usage = data.get("usage") or {}
            counts = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise _Malformed(f"unexpected answer (no choices[0].{'message.content' if chat else 'text'}): "
                             f"{_short(json.dumps(data))}") from None
        if text is not None and not isinstance(text, str):
            raise _Malformed(f"unexpected answer (the text is {type(text).__name__}): {_short(json.dumps(data))}")
        return (text or "", *counts)

    # -- HTTP -------------------------------------------------------------------------
    def _request(self, method: str, url: str, body: dict[str, Any] | None, abort: threading.Event,
                 canceller: Canceller, parse: Callable[[Any], Any] | None = None) -> Any:
        """One JSON request by its deadline, retried on connection errors, 429, 5xx and malformed answers.

        Returns `parse(answer)` (the answer itself without `parse`); with `parse`, an answer still
        malformed after the retries is a `FailedOutput` rather than an error.
        """
        deadline = time.monotonic() + self.timeout
        last, status, retry_after, tries, malformed = "no attempt made", None, None, 0, False
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1) * (1 + 0.25 * random.random())
                if retry_after is not None:
                    delay = max(delay, min(retry_after, _MAX_RETRY_AFTER))
                if time.monotonic() + delay >= deadline:
                    last += f" (no time for another attempt within the {self.timeout:g} s request deadline)"
                    break
                if abort.wait(delay):  # another request failed for good: stop trying
                    break
            tries += 1
            try:
                data = self._once(method, url, body, deadline, canceller, tries, last)
                return parse(data) if parse is not None else data
            except _Retryable as e:
                last, status, retry_after, malformed = str(e), e.status, e.retry_after, isinstance(e, _Malformed)
        message = f"{method} {url} failed after {tries} attempt{'s' * (tries != 1)}: {last}"
        if malformed and parse is not None:
            return FailedOutput(message)
        raise BackendError(message, url=url, status=status)

    def _once(self, method: str, url: str, body: dict[str, Any] | None, deadline: float, canceller: Canceller,
              tries: int, last: str) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            answer = fetch(self._opener, req, deadline, canceller)
        except DeadlineExceeded as e:
            if e.cancelled:
                raise BackendError(f"{method} {url}: cancelled", url=url) from None
            earlier = f" (attempt {tries}; before it: {last})" if tries > 1 else ""
            raise BackendError(f"{method} {url}: no complete answer within the {self.timeout:g} s request "
                               f"deadline (--request-timeout){earlier}", url=url) from None
        except _RETRYABLE_EXC as e:
            reason = getattr(e, "reason", None) or e
            raise _Retryable(f"{type(e).__name__}: {reason}") from None
        if answer.status >= 400:
            message = _error_message(answer.body)
            if answer.status == 429 or answer.status >= 500:
                raise _Retryable(f"HTTP {answer.status}: {message}", answer.status,
                                 _retry_after(answer.headers.get("Retry-After")))
            raise BackendError(f"{method} {url}: HTTP {answer.status}: {message}", url=url, status=answer.status)
        try:
            return json.loads(answer.body)
        except (ValueError, RecursionError):
            raise _Malformed(f"answer is not JSON: {_short(answer.body.decode('utf-8', 'replace'))}") from None


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:  # an HTTP date: rare from model servers, use our own backoff
        return None
