"""Which isolation is available (probed once, for real), which is configured, and the doctor.

The setting, strongest source first: the EVALKIT_SANDBOX environment variable (the user's
word, both to require more and to opt into less), a checker's `isolation=` parameter,
`[tool.evalkit] sandbox = "..."` in pyproject.toml, else "auto". Values: "namespaces"
(required: unavailable means SandboxUnavailable, exit code 3), "process" (an explicit
opt-in to the weaker level), "auto" (namespaces where the probe succeeds, else process with
a warning).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

from evalkit.errors import ConfigError
from evalkit.sandbox._pool import Job, default_pool, layout
from evalkit.sandbox._types import Isolation, Limits, SandboxUnavailable

ENV_VAR = "EVALKIT_SANDBOX"
SETTINGS = ("auto", "namespaces", "process")
_EXECUTABLE = sys.executable  # the probe uses the interpreter evalkit was imported by

# Runs inside the sandbox: what can it do? (The parent judges the answers.)
_PROBE = r"""
import errno, json, os, socket
obs = {"pid": os.getpid()}
try:
    open("/evalkit-probe", "w").close()
    obs["root"] = "writable"
except OSError as exc:
    obs["root"] = errno.errorcode.get(exc.errno, str(exc.errno))
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(2)
try:
    s.connect(("127.0.0.1", 9))
    obs["net"] = "connected"
except OSError as exc:
    obs["net"] = errno.errorcode.get(exc.errno, str(exc.errno))
with open("/proc/self/status") as f:
    obs["cap"] = [line.split()[1] for line in f if line.startswith("CapEff")][0]
print(json.dumps(obs))
"""


@dataclass(frozen=True)
class Detection:
    """The probe's findings. `namespaces_detail` says what was verified, or why not."""

    namespaces: bool
    namespaces_detail: str
    facts: dict[str, str] = field(default_factory=dict)


_lock = threading.Lock()
_detected: Detection | None = None
_warned = False


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "n/a"


def _facts() -> dict[str, str]:
    lay = layout()
    facts = {
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "user.max_user_namespaces": _read("/proc/sys/user/max_user_namespaces"),
        "kernel.unprivileged_userns_clone": _read("/proc/sys/kernel/unprivileged_userns_clone"),
        "kernel.apparmor_restrict_unprivileged_userns": _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        "pidfd_open": "yes" if hasattr(os, "pidfd_open") else "no (waits poll)",
        "memfd_create": "yes" if hasattr(os, "memfd_create") else "no (unlinked temporary files)",
        "running as": f"uid {os.geteuid()}",
        "namespaces: program runs as": (f"uid 0 of its user namespace = host uid {lay.ns_uid}"
                                        + (" (nobody)" if lay.ns_uid == 65534 else "")),
        "process: program runs as": f"uid {lay.notes['process_uid']}",
        "read-only binds": ", ".join(p for p, link in lay.binds if link is None),
    }
    for tool, args in (("unshare", ["--version"]), ("bwrap", ["--version"])):
        path = shutil.which(tool)
        version = ""
        if path:
            try:
                version = subprocess.run([path, *args], capture_output=True, text=True, timeout=5).stdout.strip()
            except (OSError, subprocess.SubprocessError):
                version = "?"
        facts[f"{tool} (not needed: evalkit makes the system calls itself)"] = (
            f"{path} ({version})" if path else "not installed")
    return facts


def _probe() -> tuple[bool, str]:
    job = Job("script", _PROBE, Isolation.NAMESPACES, Limits(timeout=20.0, memory_mb=512), executable=_EXECUTABLE)
    result = default_pool().run(job)
    if result.status != "ok":
        return False, result.error or result.status
    if result.exit_code != 0:
        return False, f"the probe failed: {result.stderr.decode(errors='replace').strip()[-300:]}"
    try:
        obs: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        return False, "the probe printed no result"
    wrong = []
    if obs.get("root") != "EROFS":
        wrong.append(f"the root is not read-only ({obs.get('root')})")
    if obs.get("net") not in ("ENETUNREACH", "EHOSTUNREACH"):
        wrong.append(f"the network is reachable ({obs.get('net')})")
    if not isinstance(obs.get("pid"), int) or obs["pid"] > 16:
        wrong.append(f"no PID namespace (pid {obs.get('pid')})")
    if obs.get("cap") != "0" * 16:
        wrong.append(f"capabilities left ({obs.get('cap')})")
    if wrong:
        return False, "the probe found: " + "; ".join(wrong)
    return True, (f"verified: read-only root (EROFS), no network (connect: {obs['net']}), "
                  f"PID namespace (pid {obs['pid']}), no capabilities")


def detect(refresh: bool = False) -> Detection:
    """Probe the namespaces level once per process by running a program in it."""
    global _detected
    with _lock:
        if _detected is not None and not refresh:
            return _detected
        if sys.platform != "linux":
            ok, detail = False, f"namespaces need Linux (this is {sys.platform})"
        else:
            ok, detail = _probe()
            if not ok and "could not start" in detail:  # a missing interpreter: don't cache
                return Detection(False, detail, _facts())
        _detected = Detection(ok, detail, _facts())
        return _detected


def configured(requested: Isolation | str | None = None) -> tuple[str, str]:
    """(setting, where it came from); ConfigError for an unknown value."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        value, source = env, f"{ENV_VAR}={env}"
    elif requested is not None:
        value = requested.value if isinstance(requested, Isolation) else str(requested)
        source = "the checker's isolation parameter"
    else:
        from evalkit.config import load_config

        raw = load_config().raw.get("sandbox")
        value, source = (str(raw), "[tool.evalkit] sandbox") if raw is not None else ("auto", "default")
    value = value.strip().lower()
    if value not in SETTINGS:
        raise ConfigError(f"sandbox isolation must be one of {', '.join(SETTINGS)}; got {value!r} (from {source})")
    return value, source


def resolve_isolation(requested: Isolation | str | None = None) -> Isolation:
    """The level to run at, per the setting; SandboxUnavailable where it is required but missing."""
    global _warned
    value, source = configured(requested)
    if value == "process":
        return Isolation.PROCESS
    found = detect()
    if found.namespaces:
        return Isolation.NAMESPACES
    if value == "namespaces":
        raise SandboxUnavailable(f"namespaces isolation is required ({source}) but unavailable: "
                                 f"{found.namespaces_detail}. Run `evalkit doctor`; set {ENV_VAR}=process to "
                                 f"opt into the weaker process isolation")
    if not _warned:
        _warned = True
        warnings.warn(f"evalkit sandbox: namespaces unavailable ({found.namespaces_detail}); model code runs "
                      f"with process isolation only. Set {ENV_VAR}=namespaces to fail instead, or "
                      f"{ENV_VAR}=process to silence this.", RuntimeWarning, stacklevel=2)
    return Isolation.PROCESS


def doctor() -> tuple[list[str], int]:
    """The doctor's lines and exit code (3 when the configured isolation is unavailable)."""
    lines: list[str] = []
    try:
        value, source = configured()
    except ConfigError as exc:
        return [f"error: {exc}"], int(exc.exit_code)
    found = detect(refresh=True)
    code = 0
    try:
        level = resolve_isolation()
        in_force = level.value
    except SandboxUnavailable:
        in_force, code = "none: namespaces are required but unavailable (exit 3)", 3
    if value == "auto" and not found.namespaces:
        in_force = "process (namespaces unavailable)"
    lines.append(f"isolation in force: {in_force}")
    lines.append(f"setting:            {value} (from {source})")
    lines.append(f"namespaces:         {'available' if found.namespaces else 'UNAVAILABLE'} - "
                 f"{found.namespaces_detail}")
    lines.append("process:            available - limits, new session, scrubbed environment, fresh working "
                 "folder; no file-system or network containment")
    lines.append("")
    width = max(len(k) for k in found.facts)
    lines.extend(f"{k.ljust(width)}  {v}" for k, v in found.facts.items())
    if not found.namespaces:
        lines.append("")
        lines.append("namespaces need unprivileged user namespaces: user.max_user_namespaces > 0 (and, where "
                     "present, kernel.unprivileged_userns_clone=1 / kernel.apparmor_restrict_unprivileged_userns=0),"
                     " or running as root; inside containers, a seccomp profile that allows unshare/mount.")
    return lines, code

