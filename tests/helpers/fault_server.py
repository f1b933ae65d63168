"""A misbehaving OpenAI-compatible server on 127.0.0.1 for the fault-injection tests.

It answers POST /v1/completions for addition prompts ("12+30=") with the sum, unless `fault(prompt, index)`
(index: the request's number, from 0) names a fault (each answer after `delay` seconds):

- "malformed": a body that is not JSON;
- "surrogate": the sum followed by a lone surrogate, as legal JSON ("42\\ud83d");
- "trickle": the headers, then one byte of the body every 0.1 s, for ever (until the server closes);
- "hang": nothing at all.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Fault = Callable[[str, int], "str | None"]


def answer(prompt: str) -> str:
    m = re.fullmatch(r"(\d+)\+(\d+)=", prompt)
    return str(int(m.group(1)) + int(m.group(2))) if m else "?"


class FaultServer:
    def __init__(self, fault: Fault | None = None, delay: float = 0.0):
        self.fault = fault or (lambda prompt, index: None)
        self.delay = delay  # seconds before each answer
        self.requests: list[str] = []  # the prompts, in the order they came
        self.lock = threading.Lock()
        self.closing = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                prompt = body.get("prompt", "")
                with outer.lock:
                    index = len(outer.requests)
                    outer.requests.append(prompt)
                kind = outer.fault(prompt, index)
                if outer.delay:
                    outer.closing.wait(outer.delay)
                if kind == "hang":
                    outer.closing.wait(60)
                    return
                if kind == "trickle":
                    self._head(10**6)
                    while not outer.closing.wait(0.1):
                        try:
                            self.wfile.write(b" ")
                            self.wfile.flush()
                        except OSError:
                            return
                    return
                if kind == "malformed":
                    data = b'{"choices": [{"text": "4'
                elif kind == "surrogate":
                    data = ('{"choices": [{"index": 0, "text": "' + answer(prompt) + '\\ud83d"}]}').encode()
                else:
                    data = json.dumps({"choices": [{"index": 0, "text": answer(prompt)}],
                                       "usage": {"prompt_tokens": 4, "completion_tokens": 2}}).encode()
                self._head(len(data))
                self.wfile.write(data)

            def _head(self, length: int) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def close(self) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
