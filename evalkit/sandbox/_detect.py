"""Which isolation is available (probed once, for real), which is configured, and the doctor.

The setting, strongest source first: the EVALKIT_SANDBOX environment variable (the user's
word, both to require more and to opt into less), a checker's `isolation=` parameter,
`[tool.evalkit] sandbox = "..."` in pyproject.toml, else "auto". Values: "auto" and
"namespaces" (the namespaces level, verified by the probe; where it is unavailable,
SandboxUnavailable, exit code 3: the sandbox never weakens by itself), "process" (the
explicit opt-in to the weaker level; `PROCESS_DOES_NOT` says what it does not protect).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import ConfigError
from evalkit.sandbox._layout import layout
from evalkit.sandbox._pool import Job, default_pool
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


# What the weaker level does and does not do (measured: docs/SECURITY.md), said wherever it is offered.
PROCESS_DOES = ("limits time, CPU, memory, output, file size and open files, scrubs the environment, gives a fresh "
                "working folder and kills every process the program started")
PROCESS_DOES_NOT = ("contain the network, reading your files, writing wherever the program's uid may (your home, "
                    "the repository, the host's /tmp), seeing your processes (and signalling them and reading their "
                    "environments when it runs as your uid), or a fork bomb (no process limit unless it runs as "
                    "nobody)")


@dataclass(frozen=True)
class Detection:
    """The probe's findings. `namespaces_detail` says what was verified, or which step failed
    and how (the system call and its errno); `advice` says why that happens and what to do."""

    namespaces: bool
    namespaces_detail: str
    facts: dict[str, str] = field(default_factory=dict)
    advice: str = ""


_lock = threading.Lock()
_detected: Detection | None = None


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
                version = subprocess.run([path, *args], check=False, capture_output=True, text=True,
                                         timeout=5).stdout.strip()
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


def _advice(detail: str, facts: dict[str, str]) -> str:
    """Why the namespaces level failed the way `detail` says, and what to do (doctor, errors)."""
    root = os.geteuid() == 0
    if detail.startswith("namespaces need Linux"):
        return "the namespaces level needs Linux (a Linux VM or container will do)"
    if detail.startswith("cannot create namespaces"):
        causes = []
        if facts.get("user.max_user_namespaces") == "0":
            causes.append("user.max_user_namespaces is 0: allow user namespaces with "
                          "`sysctl -w user.max_user_namespaces=10000`")
        if not root and facts.get("kernel.unprivileged_userns_clone") == "0":
            causes.append("kernel.unprivileged_userns_clone is 0: `sysctl -w kernel.unprivileged_userns_clone=1`")
        if not root and facts.get("kernel.apparmor_restrict_unprivileged_userns") == "1":
            causes.append("AppArmor restricts unprivileged user namespaces: `sysctl -w "
                          "kernel.apparmor_restrict_unprivileged_userns=0`, or an AppArmor profile that allows "
                          "`userns` for this interpreter")
        if not causes and "ENOSPC" in detail:
            causes.append("the limit on user namespaces is reached (user.max_user_namespaces, or 32 nested levels)")
        if not causes and "EPERM" in detail:
            causes.append("the kernel's settings allow user namespaces, so the refusal comes from around this "
                          "process: typically a container's seccomp profile (Docker's default refuses unshare; run "
                          "with `--security-opt seccomp=unconfined` or a profile that allows unshare, mount and "
                          "pivot_root), or a chroot")
        return "; ".join(causes) or "the kernel refused unshare(2) with the errno above"
    if detail.startswith("cannot write the uid/gid maps"):
        return ("the kernel refused the new user namespace's uid/gid map (the uid it maps must exist where evalkit "
                "runs; in a container, in the container's own map)")
    if detail.startswith(("cannot build the sandbox's file system", "cannot prepare the job's namespaces")):
        if "/proc failed with EPERM" in detail:
            return ("the kernel refused a fresh /proc in the new namespaces: it allows one only where /proc is not "
                    "partly masked, as container runtimes do (Docker: `--security-opt systempaths=unconfined`; "
                    "Kubernetes: `procMount: Unmasked`), or run evalkit in a VM")
        if "EPERM" in detail or "EACCES" in detail:
            return ("a mount inside the new namespaces was refused (the step and path are above): typically a "
                    "container's seccomp or AppArmor/SELinux policy (Docker: `--security-opt seccomp=unconfined "
                    "--security-opt apparmor=unconfined`)")
        return ("the namespaces were created, but evalkit could not lay out the sandbox's file system on this "
                "machine (the step and path are above): that is an evalkit bug, not a kernel restriction; please "
                "report it with this output")
    if detail.startswith("the probe found"):
        return ("the namespaces started but did not contain the probe program: do not rely on them; please report "
                "it with this output")
    if "could not start" in detail:
        return "the interpreter could not be started for the probe"
    if "timed out" in detail or "did not answer" in detail or "did not start" in detail:
        return "the probe did not finish in time (an overloaded machine?): run `evalkit doctor` again"
    return "`EVALKIT_SANDBOX_DEBUG=1 evalkit doctor` also shows the supervisor's own errors"


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
        facts = _facts()
        found = Detection(ok, detail, facts, "" if ok else _advice(detail, facts))
        if not ok and "could not start" in detail:  # a missing interpreter: don't cache
            return found
        _detected = found
        return _detected


_settings: dict[tuple[str, str, int, int], Any] = {}


def _project_setting() -> Any:
    """`[tool.evalkit] sandbox` of the nearest pyproject.toml (None if unset), read again only when
    the working directory or that file (its path, size or mtime) changes: every sandboxed run asks."""
    from evalkit.config import find_pyproject, load_config

    cwd = Path.cwd()
    pyproject = find_pyproject(cwd.resolve())
    try:
        st = os.stat(pyproject) if pyproject is not None else None
    except OSError:
        st = None
    key = (str(cwd), str(pyproject), st.st_mtime_ns if st else 0, st.st_size if st else 0)
    if key not in _settings:
        value = load_config(cwd).raw.get("sandbox")  # ConfigError (not cached) for a broken file
        if len(_settings) > 32:
            _settings.clear()
        _settings[key] = value
    return _settings[key]


def configured(requested: Isolation | str | None = None) -> tuple[str, str]:
    """(setting, where it came from); ConfigError for an unknown value."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        value, source = env, f"{ENV_VAR}={env}"
    elif requested is not None:
        value = requested.value if isinstance(requested, Isolation) else str(requested)
        source = "the checker's isolation parameter"
    else:
        raw = _project_setting()
        value, source = (str(raw), "[tool.evalkit] sandbox") if raw is not None else ("auto", "default")
    value = value.strip().lower()
    if value not in SETTINGS:
        raise ConfigError(f"sandbox isolation must be one of {', '.join(SETTINGS)}; got {value!r} (from {source})")
    return value, source


def unavailable_message(found: Detection, value: str, source: str) -> str:
    """The one message for code checks refused because the namespaces level is unavailable."""
    how = f"{ENV_VAR}={value}" if source.startswith(ENV_VAR) else f"setting {value!r}, from {source}"
    advice = f" ({found.advice})" if found.advice else ""
    return (f"namespaces isolation is required ({how}: evalkit never falls back to a weaker sandbox by itself) but "
            f"unavailable here: {found.namespaces_detail}{advice}. Model-written code is not run. To run it anyway "
            f"at the weaker process level, set {ENV_VAR}=process: that level {PROCESS_DOES}, but does NOT "
            f"{PROCESS_DOES_NOT}. `evalkit doctor` shows the details")


def resolve_isolation(requested: Isolation | str | None = None) -> Isolation:
    """The level to run at, per the setting; SandboxUnavailable (exit code 3) where the
    namespaces level is unavailable, unless the setting is the explicit "process"."""
    value, source = configured(requested)
    if value == "process":
        return Isolation.PROCESS
    found = detect()
    if found.namespaces:
        return Isolation.NAMESPACES
    raise SandboxUnavailable(unavailable_message(found, value, source))


def doctor() -> tuple[list[str], int]:
    """The doctor's lines and exit code (3 when the configured isolation is unavailable)."""
    lines: list[str] = []
    try:
        value, source = configured()
    except ConfigError as exc:
        return [f"error: {exc}"], int(exc.exit_code)
    found = detect(refresh=True)
    code = 0
    if value == "process":
        in_force = f"process (the explicit opt-in, from {source})"
        if found.namespaces:
            in_force += ": weaker than the namespaces level, which is available here"
    elif found.namespaces:
        in_force = "namespaces"
    else:
        in_force, code = "none - code checks refuse to run (exit 3): namespaces are unavailable", 3
    lines.append(f"isolation in force: {in_force}")
    lines.append(f"setting:            {value} (from {source})")
    lines.append(f"namespaces:         {'available' if found.namespaces else 'UNAVAILABLE'} - "
                 f"{found.namespaces_detail}")
    if not found.namespaces:
        lines.append(f"  why, what to do:  {found.advice}")
    lines.append(f"process:            the weaker level, only by explicit opt-in ({ENV_VAR}=process)")
    lines.append(f"  it does:          {PROCESS_DOES}")
    lines.append(f"  it does NOT:      {PROCESS_DOES_NOT}")
    lines.append("")
    width = max(len(k) for k in found.facts)
    lines.extend(f"{k.ljust(width)}  {v}" for k, v in found.facts.items())
    return lines, code
