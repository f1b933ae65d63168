"""HTTP requests with an overall deadline: connecting, the headers and the whole body.

urllib's `timeout` bounds each socket operation, not a request: a server that sends its headers
and then one byte every 20 s keeps a request alive for ever. `fetch` arms a timer that shuts the
request's socket down at the deadline, which wakes a blocked read at once, and the request ends
with `DeadlineExceeded`. A `Canceller` ends every request registered with it the same way (a
call that failed, or Ctrl-C, need not wait for its other requests). The opener is urllib's,
proxies (*_proxy, no_proxy) included; only its connections are ours, to find their sockets.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from typing import Any


class DeadlineExceeded(Exception):
    """The request did not complete before its deadline (or was cancelled: `cancelled` is True)."""

    def __init__(self, cancelled: bool = False):
        super().__init__("cancelled" if cancelled else "deadline exceeded")
        self.cancelled = cancelled


@dataclass
class Answer:
    """A complete HTTP answer: status, headers and the whole body."""

    status: int
    headers: Message
    body: bytes


def _shutdown(sock: Any) -> None:
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's: wakes a blocked read, TLS or not
    except (OSError, ValueError):
        pass  # already closed: the request is over


class _Attempt:
    """One request's socket, shut down when it expires (whichever comes first: connect or expiry)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sock: Any = None
        self.expired = self.cancelled = False

    def attach(self, sock: Any) -> None:
        with self.lock:
            self.sock = sock
            expired = self.expired
        if expired:
            _shutdown(sock)

    def expire(self, cancelled: bool = False) -> None:
        with self.lock:
            self.expired, self.cancelled = True, self.cancelled or cancelled
            sock = self.sock
        if sock is not None:
            _shutdown(sock)


_current = threading.local()  # the attempt this thread is making, for the connection to attach to


def _attach(sock: Any) -> None:
    attempt = getattr(_current, "attempt", None)
    if attempt is not None:
        attempt.attach(sock)


class _HTTPConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _attach(self.sock)


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, req)


_handlers: list[Any] = [_HTTPHandler]
if hasattr(http.client, "HTTPSConnection"):  # Python built with ssl
    class _HTTPSConnection(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            _attach(self.sock)

    class _HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(_HTTPSConnection, req)

    _handlers.append(_HTTPSHandler)


def build_opener() -> urllib.request.OpenerDirector:
    """urllib's default opener (proxies from the environment, redirects, ...) with connections `fetch` can end."""
    return urllib.request.build_opener(*_handlers)


class Canceller:
    """Ends the requests registered with it, now and from now on (`cancel`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: set[_Attempt] = set()
        self.cancelled = False

    def add(self, attempt: _Attempt) -> None:
        with self._lock:
            self._attempts.add(attempt)
            cancelled = self.cancelled
        if cancelled:
            attempt.expire(cancelled=True)

    def discard(self, attempt: _Attempt) -> None:
        with self._lock:
            self._attempts.discard(attempt)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            attempts = list(self._attempts)
        for attempt in attempts:
            attempt.expire(cancelled=True)


def fetch(opener: urllib.request.OpenerDirector, req: urllib.request.Request, deadline: float,
          canceller: Canceller | None = None) -> Answer:
    """Send `req` and read its whole answer (an HTTP error status included) by `deadline` (a
    `time.monotonic()` value).

    Raises:
        DeadlineExceeded: past the deadline, or cancelled.
        OSError, http.client.HTTPException: the connection failed or the answer was cut short.
    """
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineExceeded()
    attempt = _Attempt()
    timer = threading.Timer(remaining, attempt.expire)
    timer.daemon = True
    if canceller is not None:
        canceller.add(attempt)
    _current.attempt = attempt
    timer.start()
    try:
        try:
            # Each socket operation's own timeout is a little longer: the deadline is the timer's to call.
            with opener.open(req, timeout=remaining + 1.0) as resp:
                answer = Answer(resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as e:
            try:
                answer = Answer(e.code, e.headers, e.read())
            finally:
                e.close()
    except Exception:
        if attempt.expired:
            raise DeadlineExceeded(attempt.cancelled) from None
        raise
    finally:
        timer.cancel()
        _current.attempt = None
        if canceller is not None:
            canceller.discard(attempt)
    if attempt.expired:  # a body ended by the shutdown may look complete (no length, no chunks): not trusted
        raise DeadlineExceeded(attempt.cancelled)
    return answer
