"""Fine-tune recipes: a YAML plan (model, data, training, targets, budget), schema-validated."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import ConfigError

TRAIN_DEFAULTS: dict[str, Any] = {
    "batch_size": 64, "gradient_accumulation": 1, "lr": 1e-3, "scheduler": "constant_with_warmup",
    "warmup_steps": 50, "weight_decay": 0.0, "max_grad_norm": 1.0, "threads": None, "bf16": False, "lora": None,
    "anneal": None, "rise": None,
}
FILTER_DEFAULTS: dict[str, Any] = {"dedupe": True, "near_dedupe": True, "min_chars": 1, "max_tokens": None,
                                   "verify_reference": True}
EXPERT_ITERATION_DEFAULTS: dict[str, Any] = {
    "rounds": 10, "k": 8, "temperature": 1.0, "top_p": 1.0, "prompts_per_round": 256, "cap_per_prompt": 2,
    "steps_per_round": 50, "lr": None, "warmup_steps": 0, "accumulate": True,
}
GRPO_DEFAULTS: dict[str, Any] = {
    "steps": 200, "num_generations": 8, "prompts_per_step": 8, "lr": 1e-5, "beta": 0.0, "temperature": 1.0,
    "format_reward": 0.0, "max_completion_length": None, "warmup_steps": 0,
}


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
    mode: str = "sft"  # or "expert_iteration", "grpo" (the schema checks it): which file trains it
    warm_start: dict[str, Any] = field(default_factory=dict)  # {"steps": N} and/or {"model": PATH}
    expert_iteration: dict[str, Any] = field(default_factory=dict)
    grpo: dict[str, Any] = field(default_factory=dict)
    curriculum: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> rule fields given
    eval_checkers: dict[str, Any] = field(default_factory=dict)  # task -> evaluation-only checker spec
    eval_chat: bool = False  # evaluate in chat mode (the tasks' chat forms, the model's chat template)
    eval_adaptive: bool = False  # stop each evaluation of a task once its target is decided (evalkit.run.sequential)
    eval_alpha: float = 0.05  # the adaptive decisions' level
    eval_every_near: int | None = None  # evaluate this often while every task is near its target (train.signal)
    eval_near: float = 0.1  # how far below a target counts as near
    gate: Path | None = None  # the gate config the result is meant for (the finetune's closing hint names it)

    @property
    def base_is_scratch(self) -> bool:
        return self.model["base"] == "scratch"


def _gate_file(data: dict[str, Any], path: Path) -> Path | None:
    if not data.get("gate"):
        return None
    gate = (path.parent / data["gate"]).resolve()
    if not gate.is_file():
        raise ConfigError(f"gate config not found: {gate}", file=path, field="gate")
    return gate


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
    from evalkit._yaml import read_yaml
    from evalkit.schemas import validate

    path = Path(path).resolve()
    data = read_yaml(path, "recipe")
    if overrides:
        if not isinstance(data, dict):
            raise ConfigError("expected a mapping at the top level", file=path)
        data = deep_merge(data, overrides)
    # YAML reads `levels: {3: 1.0}` with integer keys; JSON Schema speaks of string keys.
    for src in ((data or {}).get("data") or {}).get("sources") or []:
        if isinstance(src, dict) and isinstance(src.get("levels"), dict):
            src["levels"] = {str(k): v for k, v in src["levels"].items()}
    validate(data, "recipe", path)
    mode = data.get("mode", "sft")
    _check_mode_sections(data, mode, path)
    model = dict(data["model"])
    warm_start = dict(data.get("warm_start") or {})
    if warm_start.get("model"):
        if model["base"] != "scratch":
            raise ConfigError("give the starting model once: model.base is already a model folder",
                              file=path, field="warm_start.model")
        model["base"] = warm_start["model"]
    if model["base"] != "scratch":
        where = "warm_start.model" if warm_start.get("model") else "model.base"
        base = (path.parent / model["base"]).resolve()
        if not base.exists():  # `base: smollm2-135m-instruct`: a model `evalkit models get` put in the cache
            from evalkit.models.store import cached_model_path

            try:
                base = cached_model_path(model["base"]) or base
            except ConfigError as exc:
                raise ConfigError(str(exc), file=path, field=where) from None
        if not (base / "config.json").is_file():
            raise ConfigError(f"{base} is not a local Hugging Face model folder (no config.json); use 'scratch' "
                              "or a local path — evalkit never downloads models", file=path, field=where)
        model["base"] = str(base)
        if warm_start.get("model"):
            warm_start["model"] = str(base)
    data.setdefault("data", {"sources": []})
    sources = []
    for i, raw in enumerate(data["data"]["sources"]):
        src = dict(raw)
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
    eval_checkers = dict(ev.get("checkers") or {})
    for name, spec in eval_checkers.items():
        if name not in ev["tasks"]:
            raise ConfigError(f"checker for {name!r}, which is not in eval.tasks", file=path,
                              field=f"eval.checkers.{name}")
        try:
            from evalkit import checkers

            checkers.make(spec)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(str(exc).strip("'\""), file=path, field=f"eval.checkers.{name}") from None
    if "near" in ev and not ev.get("every_near"):
        raise ConfigError("eval.near is how close to a target eval.every_near applies: set eval.every_near too, or "
                          "drop it", file=path, field="eval.near")
    if train.get("rise") and not train.get("anneal"):
        raise ConfigError("train.rise raises the learning rate until the pass rate moves, which train.anneal.at "
                          "defines: set train.anneal too, or drop it", file=path, field="train.rise")
    if "alpha" in ev and not ev.get("adaptive"):
        raise ConfigError("eval.alpha is the level of adaptive decisions: set eval.adaptive: true too, or drop it",
                          file=path, field="eval.alpha")
    curriculum = {name: dict(spec or {}) for name, spec in (data.get("curriculum") or {}).items()}
    _check_curriculum(curriculum, ev["tasks"], path)
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
        mode=mode, warm_start=warm_start,
        expert_iteration={**EXPERT_ITERATION_DEFAULTS, **(data.get("expert_iteration") or {})},
        grpo={**GRPO_DEFAULTS, **(data.get("grpo") or {})}, curriculum=curriculum, eval_checkers=eval_checkers,
        eval_chat=ev.get("chat", False), eval_adaptive=ev.get("adaptive", False), eval_alpha=ev.get("alpha", 0.05),
        eval_every_near=ev.get("every_near"), eval_near=ev.get("near", 0.1),
        gate=_gate_file(data, path),
    )


def _check_mode_sections(data: dict[str, Any], mode: str, path: Path) -> None:
    """Sections that only one mode reads are errors under another (a typo'd mode would ignore them)."""
    for section in ("expert_iteration", "grpo"):
        if section in data and mode != section:
            raise ConfigError(f"the {section} section is only read with mode: {section} (mode is {mode})",
                              file=path, field=section)
    if mode == "sft":
        for section in ("warm_start", "curriculum"):
            if section in data:
                raise ConfigError(f"{section} applies to the verifier-only modes (expert_iteration, grpo); "
                                  "mode is sft", file=path, field=section)
        if "data" not in data:
            raise ConfigError("required field is missing", file=path, field="data")
    if (data.get("warm_start") or {}).get("steps") and not ((data.get("data") or {}).get("sources")):
        raise ConfigError("warm-start SFT steps need data.sources (reference answers or JSONL)", file=path,
                          field="warm_start.steps")


def _check_curriculum(curriculum: dict[str, dict[str, Any]], eval_tasks: dict[str, Any], path: Path) -> None:
    for name, rule in curriculum.items():
        where = f"curriculum.{name}"
        if name not in eval_tasks:
            raise ConfigError(f"task {name!r} is not in eval.tasks", file=path, field=where)
        rise, fall = rule.get("rise", 0.7), rule.get("fall", 0.3)
        if not fall < rise:
            raise ConfigError(f"fall ({fall}) must be below rise ({rise})", file=path, field=f"{where}.fall")
        lo, hi, start = rule.get("min_level"), rule.get("max_level"), rule.get("start")
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(f"min_level {lo} > max_level {hi}", file=path, field=f"{where}.min_level")
        if start is not None and ((lo is not None and start < lo) or (hi is not None and start > hi)):
            raise ConfigError(f"start {start} is outside [min_level, max_level]", file=path, field=f"{where}.start")
