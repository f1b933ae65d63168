"""The sandbox for model-written code: contained runs, verdicts the program cannot forge.

    from evalkit.sandbox import run_sandboxed, call_sandboxed, test_sandboxed, Limits

    r = call_sandboxed("def add(a, b):\\n    return a + b\\n", "add", [[1, 2], [3, 4]])
    r.report["results"]          # [{"ok": 3}, {"ok": 7}]  (tagged JSON, see _wire.py)

    r = test_sandboxed(program, "add", test="def check(candidate):\\n    assert candidate(1, 2) == 3\\n")
    r.report["status"], r.report["reason"]   # "pass", "tests passed"

Every run is one job on a `SandboxPool` (default: `default_pool()`, two runs per CPU):
a trusted harness process and the program's process, with limits, inside new user,
mount, PID, network and IPC namespaces (`Isolation.NAMESPACES`); where the kernel does not
allow them, runs are refused (`SandboxUnavailable`, exit code 3) unless the weaker level, plain
processes with limits (`Isolation.PROCESS`), is chosen explicitly (EVALKIT_SANDBOX=process).
The program never shares an interpreter
with the test or the expected answers: the harness calls it over a pipe with plain data.
docs/SECURITY.md states the threat model and what each level guarantees; `evalkit doctor`
shows the level in force and why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evalkit.sandbox import _wire
from evalkit.sandbox._detect import ENV_VAR, Detection, configured, detect, doctor, resolve_isolation
from evalkit.sandbox._pool import Job, SandboxPool, default_pool, default_size
from evalkit.sandbox._types import Isolation, Limits, SandboxResult, SandboxUnavailable
from evalkit.sandbox._wire import decode as decode_value

__all__ = [
    "Isolation", "Limits", "SandboxResult", "SandboxUnavailable", "SandboxPool", "default_pool", "default_size",
    "run_sandboxed", "call_sandboxed", "test_sandboxed", "detect", "Detection", "resolve_isolation",
    "configured", "doctor", "ENV_VAR", "decode_value",
]


def _level(isolation: Isolation | str | None) -> Isolation:
    return isolation if isinstance(isolation, Isolation) else resolve_isolation(isolation)


def run_sandboxed(program: str, *, limits: Limits | None = None, isolation: Isolation | str | None = None,
                  pool: SandboxPool | None = None) -> SandboxResult:
    """Run `program` as a script (like `python solution.py`, stdin empty).

    The result has the exit code (negative: the signal), the captured output and whether
    it was truncated. A string `isolation` ("auto", "namespaces", "process") or None is
    resolved by `resolve_isolation`; an `Isolation` is used as is.
    """
    job = Job("script", program, _level(isolation), limits or Limits())
    return (pool or default_pool()).run(job)


def call_sandboxed(program: str, entry_point: str, calls: Sequence[Any], *, limits: Limits | None = None,
                   isolation: Isolation | str | None = None, pool: SandboxPool | None = None) -> SandboxResult:
    """The input/output form: call `entry_point` once per item of `calls`.

    Each call is a list of positional arguments, or {"args": [...], "kwargs": {...}}, of plain
    data. `report["results"]` has one entry per call made: {"ok": <tagged JSON value>},
    {"exc": [type name, message]} when the function raised, or {"fault": why} when the
    program died or broke the protocol (no later calls are made). A failure to load the
    program is `report["load_error"]`. Compare with `evalkit.sandbox.strict_equal` — in the
    parent; the program never sees the expected values.
    """
    encoded = []
    for call in calls:
        if isinstance(call, Mapping):
            args, kwargs = call.get("args", []), call.get("kwargs", {})
        else:
            args, kwargs = call, {}
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs, Mapping):
            raise TypeError(f"a call is a list of arguments or {{'args': [...], 'kwargs': {{...}}}}, got {call!r}")
        encoded.append([_wire.encode(list(args)), _wire.encode(dict(kwargs))])
    job = Job("call", program, _level(isolation), limits or Limits(), entry_point=entry_point, calls=encoded)
    return (pool or default_pool()).run(job)


def test_sandboxed(program: str, entry_point: str, test: str, *, prompt: str = "", limits: Limits | None = None,
                   isolation: Isolation | str | None = None, pool: SandboxPool | None = None) -> SandboxResult:
    """The assert form (HumanEval): `test` defines `check(candidate)`, run by the trusted harness.

    The harness runs `prompt` (for the helpers a test may use, e.g. HumanEval's `poly`) and
    `test` in its own interpreter; `candidate` there is a proxy whose every call is answered
    by the program's process with plain data. `report["status"]` is "pass", "fail" or
    "error" (the test itself cannot run), with `report["reason"]`.
    """
    job = Job("test", program, _level(isolation), limits or Limits(), entry_point=entry_point, test=test,
              prompt=prompt)
    return (pool or default_pool()).run(job)


test_sandboxed.__test__ = False  # type: ignore[attr-defined]  # not a pytest test

from evalkit.sandbox._compare import describe, strict_equal  # noqa: E402

__all__ += ["strict_equal", "describe"]
