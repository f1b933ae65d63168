"""What the sandbox binds, hides and runs as on this machine (computed once per process).

    layout().binds      # [path, symlink target or None]: read-only system and interpreter folders
    layout().drop_to    # the process level as root: the uid the program runs as (nobody), or None
"""

from __future__ import annotations

import os
import stat
import sys
import sysconfig
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

NOBODY = 65534


def _world_accessible(path: str) -> bool:
    """Whether an unrelated user can reach `path` (search on every directory above it)."""
    current = "/"
    for part in Path(path).parts[1:]:
        current = os.path.join(current, part)
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return False
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return False
    return True


def _mapped(kind: str, host_id: int) -> bool:
    """Whether `host_id` exists in our user namespace (inside a container it may not)."""
    try:
        with open(f"/proc/self/{kind}_map") as f:
            for line in f:
                inside, _outside, count = (int(x) for x in line.split())
                if inside <= host_id < inside + count:
                    return True
    except (OSError, ValueError):
        return True
    return False


@dataclass(frozen=True)
class Layout:
    """What the supervisor needs to know about this machine (computed once)."""

    binds: list[list[Any]]  # [path, symlink target or None]
    hide: list[str]
    ns_uid: int
    ns_gid: int
    drop_to: int | None  # process level as root: the uid the program runs as
    notes: dict[str, str] = field(default_factory=dict)


@lru_cache(maxsize=4)
def layout(extra_hide: tuple[str, ...] = ()) -> Layout:
    binds: list[list[Any]] = []
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            binds.append([top, os.readlink(top)])
    candidates = {"/usr", "/etc"}
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.isdir(top) and not os.path.islink(top):
            candidates.add(top)
    exe_home = os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, exe_home):
        candidates.add(os.path.abspath(p))
    chosen: list[str] = []
    for p in sorted(candidates, key=lambda s: (s.count("/"), s)):
        if not os.path.isdir(p) or any(p == c or p.startswith(c.rstrip("/") + "/") for c in chosen):
            continue
        chosen.append(p)
        binds.append([p, None])
    # evalkit's own folder holds the bundled tasks' tests: never visible to the program.
    hide = [str(Path(__file__).resolve().parent.parent), *extra_hide]
    hide = [h for h in hide if any(h.startswith(c.rstrip("/") + "/") for c in chosen)]
    euid = os.geteuid()
    nobody = euid == 0 and _mapped("uid", NOBODY) and _mapped("gid", NOBODY)
    if nobody:  # root: the sandbox's uid 0 is nobody outside (and RLIMIT_NPROC applies to it)
        ns_uid = ns_gid = NOBODY
    else:
        ns_uid, ns_gid = euid, os.getegid()
    paths = [os.path.realpath(sys.executable), *(sysconfig.get_paths().get(k, "") for k in
                                                  ("stdlib", "platstdlib", "purelib", "platlib"))]
    drop_to = NOBODY if nobody and all(_world_accessible(p) for p in paths if p) else None
    if drop_to is not None:
        who = f"{NOBODY} (nobody)"
    elif euid == 0:
        who = "0 without capabilities (" + ("the interpreter is not readable by nobody" if nobody else
                                           f"uid {NOBODY} is not mapped here") + ")"
    else:
        who = f"{euid} (yours)"
    notes = {"process_uid": who}
    return Layout(binds, hide, ns_uid, ns_gid, drop_to, notes)
