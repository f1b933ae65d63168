"""Fine-tune recipes: a YAML plan (model, data, training, targets, budget), schema-validated."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

TRAIN_DEFAULTS: dict[str, Any] = {
    "batch_size": 64, "gradient_accumulation": 1, "lr": 1e-3, "scheduler": "constant_with_warmup",
    "warmup_steps": 50, "weight_decay": 0.0, "max_grad_norm": 1.0, "threads": None, "bf16": False, "lora": None,
}
FILTER_DEFAULTS: dict[str, Any] = {"dedupe": True, "near_dedupe": True, "min_chars": 1, "max_tokens": None,
                                   "verify_reference": True}


@dataclass(frozen=True)
class Target:
    """A task's stopping target: `target` on the pass rate or on the 95 % interval's lower end."""

    task: str
    target: float | None
    on: str = "rate"
    level: int | None = None
    n: int | None = None


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. Paths are absolute (resolved relative to the recipe file)."""

    file: Path
    name: str
    description: str
    seed: int
    model: dict[str, Any]
    sources: tuple[dict[str, Any], ...]
    size: int | None
    filters: dict[str, Any]
    contamination: str
    train: dict[str, Any]
    targets: tuple[Target, ...]
    eval_every: int
    eval_n: int
    eval_seed: int
    eval_batch_size: int
    confirm: int
    patience: int | None
    keep_best: int
    max_steps: int
    max_minutes: float | None
    output: Path | None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def base_is_scratch(self) -> bool:
        return self.model["base"] == "scratch"


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in, mapping by mapping (lists and scalars replace)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_recipe(path: Path | str, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read and validate a recipe; ConfigError naming the file and field on any problem.

    Args:
        overrides: merged into the YAML before validation (e.g. {"model": {"hidden": 64}}):
            how experiments derive trials from a base recipe.
    """
    from .yamltask import validate

    path = Path(path).resolve()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("recipe not found", file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read recipe: {exc}", file=path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", file=path) from None
    if overrides:
        if not isinstance(data, dict):
            raise ConfigError("expected a mapping at the top level", file=path)
        data = deep_merge(data, overrides)
    # YAML reads `levels: {3: 1.0}` with integer keys; JSON Schema speaks of string keys.
    for src in ((data or {}).get("data") or {}).get("sources") or []:
        if isinstance(src, dict) and isinstance(src.get("levels"), dict):
            src["levels"] = {str(k): v for k, v in src["levels"].items()}
    validate(data, "recipe", path)
    model = dict(data["model"])
    if model["base"] != "scratch":
        base = (path.parent / model["base"]).resolve()
        if not (base / "config.json").is_file():
            raise ConfigError(f"{base} is not a local Hugging Face model folder (no config.json); use 'scratch' "
                              "or a local path — evalkit never downloads models", file=path, field="model.base")
        model["base"] = str(base)
    sources = []
    for i, src in enumerate(data["data"]["sources"]):
        src = dict(src)
        if "jsonl" in src:
            src["jsonl"] = str((path.parent / src["jsonl"]).resolve())
            if not Path(src["jsonl"]).is_file():
                raise ConfigError(f"data file not found: {src['jsonl']}", file=path, field=f"data.sources.{i}.jsonl")
        src.setdefault("name", src.get("task") or Path(src["jsonl"]).stem)
        sources.append(src)
    names = [s["name"] for s in sources]
    if len(set(names)) != len(names):
        raise ConfigError("two sources share a name; give each a distinct 'name'", file=path, field="data.sources")
    ev = data["eval"]
    targets = tuple(Target(name, (spec or {}).get("target"),
                           "lower_bound" if (spec or {}).get("use_lower_bound") else "rate",
                           (spec or {}).get("level"), (spec or {}).get("n"))
                    for name, spec in ev["tasks"].items())
    budget = data.get("budget", {})
    train = {**TRAIN_DEFAULTS, **data.get("train", {})}
    return Recipe(
        file=path, name=data["name"], description=data.get("description", ""), seed=data.get("seed", 0),
        model=model, sources=tuple(sources), size=data["data"].get("size"),
        filters={**FILTER_DEFAULTS, **data["data"].get("filters", {})},
        contamination=data["data"].get("contamination", "drop"), train=train, targets=targets,
        eval_every=ev.get("every", 250), eval_n=ev.get("n", 200), eval_seed=ev.get("seed", 0),
        eval_batch_size=ev.get("batch_size", 128), confirm=ev.get("confirm", 2), patience=ev.get("patience"),
        keep_best=ev.get("keep_best", 2), max_steps=budget.get("max_steps", 5000),
        max_minutes=budget.get("max_minutes"),
        output=Path(data["output"]) if data.get("output") else None, raw=data,
    )
