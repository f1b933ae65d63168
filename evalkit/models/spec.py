"""Model specs on the command line: `hf:PATH`, `openai:URL`, `python:module:function`, `lmeval:MODEL,ARGS`,
`oracle`."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from evalkit.errors import ConfigError, EvalkitError, ExitCode

SCHEMES = ("hf:PATH", "openai:URL", "python:MODULE:FUNCTION", "lmeval:MODEL,ARGS", "oracle")


class ModelLoadError(EvalkitError):
    """The model could not be loaded or reached (exit 3)."""

    exit_code = ExitCode.INTERNAL


def load_backend(spec: str, *, device: str | None = None, dtype: str | None = None, batch_size: int = 64,
                 model_name: str | None = None, concurrency: int = 8, chat: bool = False,
                 request_timeout: float | None = None) -> Any:
    """A backend from a spec string.

    Raises:
        ConfigError: malformed spec (exit 2).
        ModelLoadError: the model cannot be loaded (exit 3).
    """
    if spec == "oracle":
        from evalkit.models.oracle import OracleBackend

        return OracleBackend()
    scheme, _, rest = spec.partition(":")
    if not rest:
        raise ConfigError(f"unknown model spec {spec!r}; expected one of {', '.join(SCHEMES)}", field="--model")
    if scheme == "hf":
        path = Path(rest).expanduser()
        if not path.exists():  # `hf:smollm2-135m-instruct`: a model `evalkit models get` put in the cache
            from evalkit.models.store import cached_model_path

            path = cached_model_path(rest, field="--model") or path
        if not (path / "config.json").is_file() and not (path.suffix.lower() == ".gguf" and path.is_file()):
            raise ConfigError(f"{path} is not a local Hugging Face model folder (no config.json) nor a .gguf file; "
                              "evalkit never downloads models (`evalkit models get NAME` does)", field="--model")
        try:
            import torch

            from evalkit.models.hf import HFBackend

            torch_dtype = getattr(torch, dtype) if dtype else None
            return HFBackend.from_path(path, device=device or "cpu", dtype=torch_dtype, batch_size=batch_size)
        except ImportError as exc:
            raise ModelLoadError(f"hf models need the [train] extra (torch, transformers): {exc}") from None
        except Exception as exc:  # noqa: BLE001 - any load failure is an infrastructure error
            raise ModelLoadError(f"cannot load {path}: {type(exc).__name__}: {exc}") from None
    if scheme == "openai":
        from evalkit.models.openai import DEFAULT_TIMEOUT, OpenAIBackend

        try:
            return OpenAIBackend(rest, model_name, concurrency=concurrency, chat=chat,
                                 timeout=request_timeout if request_timeout is not None else DEFAULT_TIMEOUT)
        except EvalkitError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"cannot reach {rest}: {type(exc).__name__}: {exc}") from None
    if scheme == "python":
        module_name, _, func = rest.rpartition(":")
        if not module_name or not func:
            raise ConfigError(f"expected python:MODULE:FUNCTION, got {spec!r}", field="--model")
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))  # like `python -m`, the working directory's modules
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - the user's module: a mistake of theirs (exit 2), as a task plugin's
            name = exc.name if isinstance(exc, ModuleNotFoundError) else None
            missing = name is not None and (module_name == name or module_name.startswith(name + "."))
            why = (f"no module named {name!r} in the working directory or on sys.path" if missing
                   else f"{type(exc).__name__}: {exc}")
            raise ConfigError(f"cannot import {module_name}: {why}", field="--model") from None
        fn = getattr(module, func, None)
        if not callable(fn):
            raise ConfigError(f"{module_name} has no callable {func!r}", field="--model")
        from evalkit.models.python import PythonCallableBackend

        return PythonCallableBackend(fn)
    if scheme == "lmeval":  # any lm-eval registered model: lmeval:hf,pretrained=/path,device=cpu
        from evalkit.models.lmeval import parse_lmeval_spec

        model, args = parse_lmeval_spec(rest)
        try:
            from evalkit.models.lmeval import LMEvalBackend

            return LMEvalBackend(model, args, batch_size=batch_size, device=device, dtype=dtype)
        except EvalkitError:
            raise
        except ImportError as exc:
            raise ModelLoadError(f"lmeval: models need the [lmeval] extra (lm-eval): {exc}") from None
        except Exception as exc:  # noqa: BLE001 - any load failure is an infrastructure error
            raise ModelLoadError(f"lm-eval cannot load {model!r} ({args}): {type(exc).__name__}: {exc}") from None
    raise ConfigError(f"unknown model scheme {scheme!r} in {spec!r}; expected one of {', '.join(SCHEMES)}",
                      field="--model")
