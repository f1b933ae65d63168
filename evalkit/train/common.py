"""What every training method shares: the run, its evaluation and stop rule, the model, the Trainer settings.

    run = prepare("finetune/addition.yaml", resume=True)   # recipe, output folder, registry, resume point
    model, tokenizer = build_model(run.recipe, run.output, rows, resume=run.resume_from is not None)
    stop = run.evaluate(model, step, epoch)                 # held-out evaluation, a record, the stop rule

`Run` is the one run context of all three methods (sft, expert_iteration, grpo): the recipe, where
it writes, the evaluation tasks and the loop state that checkpoints carry. Nothing here imports
torch or transformers at import time.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.core.scoring import DEFAULT_CHECK_TIMEOUT
from evalkit.errors import ConfigError, ExitCode
from evalkit.train import signal
from evalkit.train.checkpoints import check_writable, complete_checkpoints, read_state, remove_staging
from evalkit.train.precision import resolve
from evalkit.train.recipe import Recipe, load_recipe


@dataclass
class LoopState:
    """What the loop remembers across a resume (saved inside every checkpoint)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    consecutive_met: int = 0
    best: list[dict[str, Any]] = field(default_factory=list)  # [{"step", "key"}], best first
    since_best: int = 0
    elapsed_s: float = 0.0
    stopped_because: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class FinetuneResult:
    """How a run ended: whether every target was met, the best step, the final record, why it stopped."""

    output: Path
    targets_met: bool
    best_step: int | None
    record_path: Path | None
    stopped_because: str
    missed: tuple[str, ...]
    is_main: bool = True  # False on the other ranks of a distributed run (they print nothing)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.targets_met else ExitCode.FAILED


def is_main() -> bool:
    """Rank 0 of a torch.distributed run, or the only process."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def broadcast(values: list[float]) -> list[float]:
    """Rank 0's values on every rank (a no-op without torch.distributed)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.broadcast(tensor, src=0)
    return tensor.tolist()


def evaluation_task(task: Any, checker: Any = None) -> Any:
    """`task`, or a copy of it judged by `checker` (a recipe's eval.checkers: evaluation only)."""
    if checker is None:
        return task
    from evalkit import checkers
    from evalkit.core.verdict import as_verdict

    check = checkers.make(checker)
    judged = copy.copy(task)
    judged.check = lambda ex, answer: as_verdict(check(ex, answer))  # shadows Task.check on this copy
    return judged


class Run:
    """One fine-tuning run: the recipe, where it writes, what it is judged on, and the loop state.

    Attributes:
        step_offset: steps trained before the current Trainer run (the verifier modes train in
            several), so evaluations, checkpoints and curves count steps across the whole run.
        entry_extra: merged into each history entry (phase, round, levels).
        training_meta: merged into the final record's meta.training.
        check_timeout: seconds one check may take in an evaluation (then TIMEOUT; the check is ended).
    """

    def __init__(self, recipe: Recipe, output: Path, registry: Any, *, resume_from: Path | None = None,
                 display: Any = None):
        self.recipe, self.output, self.registry = recipe, output, registry
        self.ckpt_dir = output / "checkpoints"
        self.resume_from, self.display = resume_from, display
        self.targets = {t.task: t for t in recipe.targets}
        for t in recipe.targets:
            if t.target is None and registry.get(t.task).target is None:
                raise ConfigError(f"task {t.task!r} has no target: set eval.tasks.{t.task}.target",
                                  file=recipe.file, field=f"eval.tasks.{t.task}")
        self.tasks = [evaluation_task(registry.get(t.task), recipe.eval_checkers.get(t.task))
                      for t in recipe.targets]
        self.state = LoopState()
        self.start_time = time.monotonic()
        self.last_loss: float | None = None
        self.model: Any = None
        self.tokenizer: Any = None
        self.step_offset = 0
        self.entry_extra: dict[str, Any] = {}
        self.training_meta: dict[str, Any] = {}
        self.check_timeout = DEFAULT_CHECK_TIMEOUT
        self.rank_rates: list[dict[str, Any]] = []  # on ranks other than 0: the pass rates rank 0 broadcast

    def target_of(self, name: str) -> float:
        t = self.targets[name]
        return t.target if t.target is not None else self.registry.get(name).target

    def eval_examples(self) -> list[Any]:
        """Every held-out example the evaluations use (the contamination guard's input)."""
        r = self.recipe
        return [ex for t in r.targets for ex in self.registry.get(t.task).examples(
            "eval", n=t.n or r.eval_n, seed=r.eval_seed, level=t.level)]

    def say(self, text: str) -> None:
        """A line on the live display's console (nothing without a display)."""
        console = getattr(self.display, "console", None)
        if console is not None:
            console.print(text, markup=False, highlight=False, soft_wrap=True)

    # -- evaluate and decide ------------------------------------------------------------------
    def evaluate(self, model: Any, step: int, epoch: float | None) -> bool:
        """Evaluate at `step` (on rank 0), record it, apply the stop rule; returns whether to stop. The other ranks
        get the decision and the pass rates (`signal_history`): `train.signal` then acts alike on every rank."""
        targets, values = {t.task: self.target_of(t.task) for t in self.recipe.targets}, [0.0]
        if is_main():
            values = [1.0 if self.evaluate_and_decide(model, step, epoch) else 0.0]
            values += signal.to_values(self.recipe, targets, self.state.history[-1]["rates"])
        width = 1 + len(signal.to_values(self.recipe, targets, {}))
        values = broadcast(values + [0.0] * (width - len(values)))
        if not is_main():
            self.rank_rates.append({"step": step, "rates": signal.from_values(self.recipe, targets, values[1:])})
        return bool(values[0])

    @property
    def signal_history(self) -> list[dict[str, Any]]:
        """Each evaluation's per-task rate and target on every rank (rank 0's history, else restored + broadcast)."""
        return self.state.history if is_main() else [*self.state.history, *self.rank_rates]

    def evaluate_and_decide(self, model: Any, step: int, epoch: float | None) -> bool:
        """One held-out evaluation (a run record in evals/step-N/) and the stop rule, in this process."""
        from evalkit.run.runner import evaluate

        recipe = self.recipe
        settings: dict[str, dict[str, Any]] = {
            t.task: {k: v for k, v in (("n", t.n), ("level", t.level)) if v is not None} for t in recipe.targets}
        for name, s in settings.items() if recipe.eval_adaptive else ():  # stop once target and marks are decided
            s.update(target=self.target_of(name), marks=signal.marks(recipe, self.target_of(name)))
        folder = self.output / "evals" / f"step-{step:06d}"
        if folder.exists() and not (folder / "record.json").exists():
            shutil.rmtree(folder)  # a half-written evaluation from a killed run: redo it
        record = evaluate(model=model, tokenizer=self.tokenizer, tasks=self.tasks, n=recipe.eval_n,
                          seed=recipe.eval_seed, batch_size=recipe.eval_batch_size, task_settings=settings,
                          check_timeout=self.check_timeout, run_dir=folder, run_id=f"{recipe.name}-step-{step:06d}",
                          chat=recipe.eval_chat, meta={"training": {"step": step, "recipe": str(recipe.file)}},
                          adaptive=recipe.eval_adaptive, alpha=recipe.eval_alpha)
        rates, met_all, margins = {}, True, []
        for t in record.tasks:
            target, on = self.target_of(t["name"]), self.targets[t["name"]].on
            measured = t["low"] if on == "lower_bound" else t["rate"]
            decision = t.get("adaptive", {}).get("decision")  # met/missed: decided at eval.alpha; cap: as fixed n
            met = decision == "met" if decision in ("met", "missed") else measured >= target
            met_all &= met
            margins.append(measured - target)
            rates[t["name"]] = {"rate": t["rate"], "low": t["low"], "high": t["high"], "target": target,
                                "on": on, "met": met, "n": t["n_samples"]}
            if decision:
                rates[t["name"]].update(decision=decision, marks=t["adaptive"].get("marks", []))
        entry = {"step": step, "epoch": epoch, "loss": self.last_loss, "wall_s": round(self.elapsed(), 2),
                 "rates": rates, "all_met": met_all, "record": str(folder.relative_to(self.output)),
                 **copy.deepcopy(self.entry_extra)}
        state = self.state
        state.history.append(entry)
        state.consecutive_met = state.consecutive_met + 1 if met_all else 0
        key = [1.0 if met_all else 0.0, min(margins), sum(r["rate"] for r in rates.values()) / len(rates)]
        improved = not state.best or key > state.best[0]["key"]
        state.best = sorted([*state.best, {"step": step, "key": key}], key=lambda b: b["key"],
                            reverse=True)[: recipe.keep_best]
        state.since_best = 0 if improved else state.since_best + 1
        if self.display:
            self.display.evaluation(entry)
        if met_all and state.consecutive_met >= recipe.confirm:
            state.stopped_because = (f"every target met on {recipe.confirm} consecutive evaluation(s)"
                                     if recipe.confirm > 1 else "every target met")
            return True
        if recipe.patience and state.since_best >= recipe.patience:
            state.stopped_because = f"no improvement in {recipe.patience} evaluations (patience)"
            return True
        return False

    # -- time and checkpoints -----------------------------------------------------------------
    def elapsed(self) -> float:
        """Seconds this run has spent, summed over resumes."""
        return self.state.elapsed_s + (time.monotonic() - self.start_time)

    def out_of_time(self) -> bool:
        return self.recipe.max_minutes is not None and self.elapsed() > self.recipe.max_minutes * 60

    def state_for_checkpoint(self) -> dict[str, Any]:
        return {**self.state.to_dict(), "elapsed_s": self.elapsed()}

    def best_steps(self) -> set[int]:
        """The steps of the best k evaluations (their checkpoints are kept)."""
        return {b["step"] for b in self.state.best}

    def restore(self, checkpoint: Path) -> None:
        """Continue from the loop state saved in `checkpoint`."""
        self.state = LoopState(**read_state(checkpoint))
        self.start_time = time.monotonic()


def quiet_libraries() -> None:
    """No per-save progress bars or info logs from transformers / huggingface_hub."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


def prepare(recipe_path: Path | str, *, output: Path | None = None, resume: bool = False, force: bool = False,
            registry: Any = None, display: Any = None, overrides: dict[str, Any] | None = None) -> Run:
    """Load the recipe, settle the output folder (--force / --resume), threads and the task registry.

    Args:
        overrides: merged into the recipe before validation (see `recipe.load_recipe`).
    """
    import torch

    from evalkit.config import load_config
    from evalkit.discovery.registry import discover

    recipe = load_recipe(recipe_path, overrides)
    config = load_config()
    quiet_libraries()
    default = config.root / recipe.output if recipe.output else config.reports / recipe.name
    output = (Path(output) if output else default).resolve()
    ckpt_dir = output / "checkpoints"
    existing = complete_checkpoints(ckpt_dir)
    if existing and not resume and not force:
        raise ConfigError(f"{output} already holds a training run; pass --resume to continue it or --force to "
                          "start over", file=recipe.file, field="output")
    if force and output.exists() and is_main():
        try:
            shutil.rmtree(output)
        except OSError as exc:
            raise ConfigError(f"--force cannot delete {output}: {exc.strerror or exc}", file=recipe.file,
                              field="output") from None
        existing = []
    if is_main():  # rank 0 writes the run's files; checked before any model is loaded, not at the first save
        for folder in (output, ckpt_dir, output / "evals"):
            check_writable(folder, recipe.file)
        remove_staging(ckpt_dir)  # a save that a kill interrupted
    if recipe.train.get("threads"):
        torch.set_num_threads(recipe.train["threads"])
    if registry is None:
        registry = discover(list(config.tasks), fallback_to_bundled=not config.tasks_configured, keep_broken=True)
    run = Run(recipe, output, registry, resume_from=existing[-1] if (resume and existing) else None,
              display=display if is_main() else None)  # one live display, on rank 0
    precision = resolve(recipe.train.get("bf16"))
    run.training_meta["precision"] = precision.to_dict()
    if (warning := precision.warning()) and is_main():  # on the display when there is one, else a warning
        if run.display is None:
            warnings.warn(warning, stacklevel=2)
        run.say(f"warning: {warning}")
    return run


def build_model(recipe: Recipe, output: Path, rows: list[Any], resume: bool) -> tuple[Any, Any]:
    """The model to train and its tokenizer, in train mode.

    `scratch` builds a tiny llama/gpt2 with a character tokenizer covering `rows` (or, on resume, the
    tokenizer saved in output/tokenizer/); otherwise the local HF folder. LoRA wraps it when asked.
    """
    from evalkit.models.tiny import DEFAULT_ALPHABET, build_char_tokenizer, load_model, tiny_gpt2, tiny_llama

    m = recipe.model
    model: Any
    tokenizer: Any
    if recipe.base_is_scratch:
        tok_dir = output / "tokenizer"
        if resume and tok_dir.is_dir():
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
        else:
            extra = sorted({ch for r in rows for ch in r.prompt + r.completion} - set(DEFAULT_ALPHABET))
            tokenizer = build_char_tokenizer(DEFAULT_ALPHABET + "".join(extra))
        build = tiny_llama if m.get("architecture", "llama") == "llama" else tiny_gpt2
        model = build(tokenizer, hidden=m.get("hidden", 128), layers=m.get("layers", 4), heads=m.get("heads", 4),
                      intermediate=m.get("intermediate"), max_positions=m.get("max_positions", 256),
                      seed=recipe.seed)
    else:
        model, tokenizer = load_model(m["base"])
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
    if recipe.eval_chat:
        from evalkit.models.hf_chat import chat_template

        if chat_template(tokenizer) is None:
            raise ConfigError("eval.chat trains and evaluates in chat form, which needs a tokenizer with a chat "
                              f"template; {m['base']!r} has none (scratch models never do): use an instruct "
                              "model, or set eval.chat: false", file=recipe.file, field="eval.chat")
    lora = recipe.train.get("lora")
    if lora:
        from peft import LoraConfig, get_peft_model

        default_modules = ["q_proj", "v_proj"] if "llama" in type(model).__name__.lower() else ["c_attn"]
        config = LoraConfig(r=lora.get("r", 8), lora_alpha=lora.get("alpha", 16), lora_dropout=lora.get("dropout", 0.0),
                            target_modules=lora.get("target_modules", default_modules), task_type="CAUSAL_LM")
        with warnings.catch_warnings():  # peft asks for a name transformers 5 deprecates; not the user's concern
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = get_peft_model(model, config)
    return model.train(), tokenizer


def write_run_files(run: Run, data_report: dict[str, Any]) -> None:
    """output/tokenizer/ (a scratch model's tokenizer, unless a resume loaded it from there) and data.json."""
    run.output.mkdir(parents=True, exist_ok=True)
    if not is_main():
        return
    tok_dir = run.output / "tokenizer"
    if run.recipe.base_is_scratch and not (run.resume_from is not None and tok_dir.is_dir()):
        run.tokenizer.save_pretrained(tok_dir)
    (run.output / "data.json").write_text(json.dumps(data_report, indent=1))


def training_arguments(recipe: Recipe, output_dir: Path, max_steps: int, *, cls: Any = None,
                       **overrides: Any) -> Any:
    """The recipe's TrainingArguments (or `cls`, e.g. TRL's GRPOConfig), with `overrides` applied.

    `output_dir` is where the Trainer saves checkpoints: the staging folder (evalkit.train.checkpoints).
    The Trainer never saves on its own schedule (save_strategy "no"): the evaluation callback asks it to.
    """
    import torch

    if cls is None:
        from transformers import TrainingArguments as cls
    t = recipe.train
    kwargs = {
        "output_dir": str(output_dir), "max_steps": max_steps, "per_device_train_batch_size": t["batch_size"],
        "gradient_accumulation_steps": t["gradient_accumulation"], "learning_rate": t["lr"],
        "lr_scheduler_type": t["scheduler"], "warmup_steps": t["warmup_steps"], "weight_decay": t["weight_decay"],
        "max_grad_norm": t["max_grad_norm"], "logging_steps": 10, "save_strategy": "no", "report_to": [],
        "seed": recipe.seed, "data_seed": recipe.seed, "dataloader_num_workers": 0,
        "use_cpu": not torch.cuda.is_available(), "bf16": resolve(t.get("bf16")).bf16, "remove_unused_columns": False,
        "disable_tqdm": True, "save_only_model": False, "ddp_find_unused_parameters": False,
    }
    kwargs.update(overrides)
    return cls(**kwargs)


__all__ = ["FinetuneResult", "LoopState", "Run", "broadcast", "build_model", "evaluation_task",
           "is_main", "prepare", "quiet_libraries", "training_arguments", "write_run_files"]
