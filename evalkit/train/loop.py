"""The fine-tuning loop: train with the transformers Trainer until the checkers say the target is met.

    evalkit finetune finetune/addition.yaml            # train, evaluate, stop at target
    evalkit finetune finetune/addition.yaml --resume   # after a kill: continue from the last checkpoint

One readable file on the HF Trainer (so `torchrun` / `accelerate launch` data parallelism comes
from the Trainer). Evaluation is a callback calling the same runner in memory on the held-out
split; each evaluation writes a run record and a checkpoint; training stops when every target
has been met on `confirm` consecutive evaluations (pass rates are not monotone), or when the
budget ends (exit 1, naming the missed targets). Checkpoints are written to a staging folder
and renamed when complete, so a partial one is never resumed from. Recipes with
`mode: expert_iteration` or `mode: grpo` are run by `evalkit.verifier`, which reuses this file's
pieces (`Loop`, `make_trainer`, `finish`).

Output folder (default `reports/<recipe name>/`):
    model/                the best model by the checker metric (HF format, safetensors)
    record.json           the best evaluation's run record + training history: a gate's input
    samples.jsonl         its samples
    report.html           the report with learning curves
    evals/step-NNNNNN/    one run record per evaluation
    checkpoints/          resumable Trainer checkpoints (the best k and the latest)
    tokenizer/, data.json the tokenizer used and what the data filters did
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import ConfigError, EvalkitError, ExitCode
from evalkit.train.recipe import Recipe, Target, load_recipe

STATE_FILE = "evalkit_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


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


def complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints that finished saving (renamed into place with their state file), oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _CHECKPOINT.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_CHECKPOINT.match(p.name).group(1)))


def _measured(t: dict[str, Any], target: Target) -> float:
    return t["low"] if target.on == "lower_bound" else t["rate"]


def _is_main() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _broadcast(values: list[float]) -> list[float]:
    """Rank 0's values on every rank (a no-op without torch.distributed)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.broadcast(tensor, src=0)
    return tensor.tolist()


class Loop:
    """Everything one fine-tuning run needs; `run()` does it."""

    def __init__(self, recipe: Recipe, output: Path, *, registry: Any, resume: bool, display: Any = None):
        self.recipe, self.output, self.registry, self.resume = recipe, output, registry, resume
        self.display = display
        self.state = LoopState()
        self.targets = {t.task: t for t in recipe.targets}
        self.tasks = [evaluation_task(registry.get(t.task), recipe.eval_checkers.get(t.task))
                      for t in recipe.targets]
        for t in recipe.targets:
            if t.target is None and self.registry.get(t.task).target is None:
                raise ConfigError(f"task {t.task!r} has no target: set eval.tasks.{t.task}.target",
                                  file=recipe.file, field=f"eval.tasks.{t.task}")
        self.start_time = time.monotonic()
        self.last_loss: float | None = None
        self.model: Any = None
        self.tokenizer: Any = None
        # Verifier modes train in several Trainer runs (rounds): steps already trained before the
        # current one, so evaluations, checkpoints and curves count steps across the whole run.
        self.step_offset = 0
        self.entry_extra: dict[str, Any] = {}  # merged into each history entry (phase, round, levels)
        self.training_meta: dict[str, Any] = {}  # merged into the final record's meta.training

    def target_of(self, name: str) -> float:
        t = self.targets[name]
        return t.target if t.target is not None else self.registry.get(name).target

    # -- evaluation -------------------------------------------------------------------
    def evaluate(self, model: Any, step: int, epoch: float | None) -> bool:
        """Evaluate at `step` (rank 0), record it, decide whether to stop; returns stop."""
        stop = 0.0
        if _is_main():
            stop = 1.0 if self._evaluate_main(model, step, epoch) else 0.0
        return bool(_broadcast([stop])[0])

    def _evaluate_main(self, model: Any, step: int, epoch: float | None) -> bool:
        from evalkit.run.runner import evaluate

        recipe = self.recipe
        settings = {t.task: {k: v for k, v in (("n", t.n), ("level", t.level)) if v is not None}
                    for t in recipe.targets}
        folder = self.output / "evals" / f"step-{step:06d}"
        if folder.exists() and not (folder / "record.json").exists():
            shutil.rmtree(folder)  # a half-written evaluation from a killed run: redo it
        record = evaluate(model=model, tokenizer=self.tokenizer, tasks=self.tasks, n=recipe.eval_n,
                          seed=recipe.eval_seed, batch_size=recipe.eval_batch_size, task_settings=settings,
                          run_dir=folder, run_id=f"{recipe.name}-step-{step:06d}",
                          meta={"training": {"step": step, "recipe": str(recipe.file)}})
        rates, met_all, margins = {}, True, []
        for t in record.tasks:
            target = self.target_of(t["name"])
            measured = _measured(t, self.targets[t["name"]])
            met = measured >= target
            met_all &= met
            margins.append(measured - target)
            rates[t["name"]] = {"rate": t["rate"], "low": t["low"], "high": t["high"], "target": target,
                                "on": self.targets[t["name"]].on, "met": met}
        wall = self.state.elapsed_s + (time.monotonic() - self.start_time)
        entry = {"step": step, "epoch": epoch, "loss": self.last_loss, "wall_s": round(wall, 2), "rates": rates,
                 "all_met": met_all, "record": str(folder.relative_to(self.output)),
                 **copy.deepcopy(self.entry_extra)}
        self.state.history.append(entry)
        self.state.consecutive_met = self.state.consecutive_met + 1 if met_all else 0
        key = [1.0 if met_all else 0.0, min(margins), sum(r["rate"] for r in rates.values()) / len(rates)]
        improved = not self.state.best or key > self.state.best[0]["key"]
        self.state.best = sorted([*self.state.best, {"step": step, "key": key}], key=lambda b: b["key"],
                                 reverse=True)[: recipe.keep_best]
        self.state.since_best = 0 if improved else self.state.since_best + 1
        if self.display:
            self.display.evaluation(entry)
        if met_all and self.state.consecutive_met >= recipe.confirm:
            self.state.stopped_because = (f"every target met on {recipe.confirm} consecutive evaluation(s)"
                                          if recipe.confirm > 1 else "every target met")
            return True
        if recipe.patience and self.state.since_best >= recipe.patience:
            self.state.stopped_because = f"no improvement in {recipe.patience} evaluations (patience)"
            return True
        return False

    def out_of_time(self) -> bool:
        if self.recipe.max_minutes is None:
            return False
        return self.state.elapsed_s + (time.monotonic() - self.start_time) > self.recipe.max_minutes * 60

    # -- checkpoints ------------------------------------------------------------------
    def state_for_checkpoint(self) -> dict[str, Any]:
        data = self.state.to_dict()
        data["elapsed_s"] = self.state.elapsed_s + (time.monotonic() - self.start_time)
        return data

    def restore(self, checkpoint: Path) -> None:
        data = json.loads((checkpoint / STATE_FILE).read_text())
        self.state = LoopState(**data)
        self.start_time = time.monotonic()

    def prune(self, folder: Path) -> None:
        """Keep the best k checkpoints by the checker metric and the latest (for resume)."""
        checkpoints = complete_checkpoints(folder)
        keep = {b["step"] for b in self.state.best}
        if checkpoints:
            keep.add(int(_CHECKPOINT.match(checkpoints[-1].name).group(1)))
        for ckpt in checkpoints:
            if int(_CHECKPOINT.match(ckpt.name).group(1)) not in keep:
                shutil.rmtree(ckpt, ignore_errors=True)


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


def _make_trainer_class(base: Any = None):
    """AtomicTrainer over `base` (default: transformers.Trainer; the GRPO mode passes TRL's GRPOTrainer)."""
    if base is None:
        from transformers import Trainer as base

    class AtomicTrainer(base):
        """A Trainer whose checkpoints appear only when complete (staging folder + rename)."""

        evalkit_loop: Loop | None = None
        _staging: str | None = None

        def _get_output_dir(self, trial: Any) -> str:
            return self._staging or super()._get_output_dir(trial)

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            loop = self.evalkit_loop
            local = self.state.global_step  # the folder name the Trainer writes
            step = local + (loop.step_offset if loop is not None else 0)  # the run's step
            root = Path(self.args.output_dir)
            staging = root / f".staging-{step}"
            if self.args.should_save:
                shutil.rmtree(staging, ignore_errors=True)
            self._staging = str(staging)
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self._staging = None
            if not self.args.should_save:
                return
            folder = staging / f"checkpoint-{local}"
            if loop is not None:
                (folder / STATE_FILE).write_text(json.dumps(loop.state_for_checkpoint(), indent=1))
            _fault("kill-during-save", step)
            final = root / f"checkpoint-{step}"
            if final.exists():
                shutil.rmtree(final)
            os.replace(folder, final)  # the checkpoint becomes visible only now, complete
            shutil.rmtree(staging, ignore_errors=True)
            if loop is not None:
                loop.prune(root)

    return AtomicTrainer


def _fault(kind: str, step: int) -> None:
    """Fault injection for the resume tests: EVALKIT_FAULT=kill-during-save:STEP (never set it otherwise)."""
    spec = os.environ.get("EVALKIT_FAULT", "")
    if spec == f"{kind}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def _make_callback(loop: Loop):
    from transformers import TrainerCallback

    class EvalkitCallback(TrainerCallback):
        """Evaluates with the task checkers, saves a checkpoint per evaluation, stops at target."""

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step == 0 and not loop.state.history:
                loop.evaluate(model, 0, 0.0)  # the starting point of every learning curve

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                loop.last_loss = float(logs["loss"])
                # Logging runs after on_step_end: the loss of the steps up to an evaluation arrives
                # just after it (and before the checkpoint is saved, so a resume keeps it).
                step = loop.step_offset + state.global_step
                if loop.state.history and loop.state.history[-1]["step"] == step:
                    loop.state.history[-1]["loss"] = loop.last_loss
                if loop.display:
                    loop.display.progress(step, loop.step_offset + state.max_steps, loop.last_loss)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            step = loop.step_offset + state.global_step
            out_of_time = bool(_broadcast([1.0 if loop.out_of_time() else 0.0])[0])
            if step % loop.recipe.eval_every == 0 or state.global_step >= state.max_steps or out_of_time:
                stop = loop.evaluate(model, step, state.epoch)
                control.should_save = True
                if out_of_time and not stop:
                    loop.state.stopped_because = f"time budget of {loop.recipe.max_minutes:g} minutes used"
                if stop or out_of_time:
                    control.should_training_stop = True
            elif loop.display:
                loop.display.progress(step, loop.step_offset + state.max_steps, loop.last_loss)
            return control

    return EvalkitCallback()


def _build_model(recipe: Recipe, output: Path, rows: list[Any], resume: bool) -> tuple[Any, Any]:
    from evalkit.models.tiny import DEFAULT_ALPHABET, build_char_tokenizer, load_model, tiny_gpt2, tiny_llama

    m = recipe.model
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
    lora = recipe.train.get("lora")
    if lora:
        from peft import LoraConfig, get_peft_model

        default_modules = ["q_proj", "v_proj"] if "llama" in type(model).__name__.lower() else ["c_attn"]
        model = get_peft_model(model, LoraConfig(r=lora.get("r", 8), lora_alpha=lora.get("alpha", 16),
                                                 lora_dropout=lora.get("dropout", 0.0),
                                                 target_modules=lora.get("target_modules", default_modules),
                                                 task_type="CAUSAL_LM"))
    return model.train(), tokenizer


def _export_best(loop: Loop, model: Any, ckpt_dir: Path, current: int, output: Path) -> int | None:
    """Save the best model (by the checker metric) to output/model as plain HF weights.

    `model` holds the weights of step `current`; another best step is loaded from its checkpoint.
    """
    from evalkit.models.tiny import save_model

    if not loop.state.best:
        return None
    best_step = loop.state.best[0]["step"]
    ckpt = Path(ckpt_dir) / f"checkpoint-{best_step}"
    if best_step != current and ckpt.is_dir():
        from safetensors.torch import load_file

        weights = next((ckpt / n for n in ("model.safetensors", "adapter_model.safetensors")
                        if (ckpt / n).is_file()), None)
        if weights is not None:
            state = load_file(str(weights))
            if weights.name.startswith("adapter"):
                from peft import set_peft_model_state_dict

                set_peft_model_state_dict(model, state)
            else:
                model.load_state_dict(state, strict=False)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    save_model(model, loop.tokenizer, output / "model")
    return best_step


def _final_record(loop: Loop, output: Path, best_step: int | None, data_report: dict[str, Any]) -> Path | None:
    from evalkit.run.record import load_record

    if best_step is None:
        return None
    entry = next(h for h in loop.state.history if h["step"] == best_step)
    best = load_record(output / entry["record"])
    data = json.loads(json.dumps(best.data))
    data["run_id"] = loop.recipe.name
    shutil.copyfile(output / entry["record"] / "samples.jsonl", output / "samples.jsonl")
    data["samples_file"] = "samples.jsonl"
    data["model"] = {"spec": f"hf:{output / 'model'}", "identity": data["model"]["identity"]}
    for t in data["tasks"]:  # the recipe's targets, so that `evalkit gate OUTPUT` judges what training aimed at
        if t["name"] in loop.targets:
            t["target"] = loop.target_of(t["name"])
            t["meets_target"] = t["rate"] >= t["target"]
    data["meta"] = {**data.get("meta", {}), "training": {
        "recipe": str(loop.recipe.file), "mode": loop.recipe.mode, "best_step": best_step,
        "history": loop.state.history, "stopped_because": loop.state.stopped_because, "data": data_report,
        "targets": {t.task: {"target": loop.target_of(t.task), "on": t.on} for t in loop.recipe.targets},
        **({"eval_checkers": loop.recipe.eval_checkers} if loop.recipe.eval_checkers else {}),
        **loop.training_meta,
    }}
    from evalkit.run.record import RunRecord

    record = RunRecord(data)
    record.save(output)
    try:
        from evalkit.reports import render

        (output / "report.html").write_text(render(record, "html"), encoding="utf-8")
    except ImportError:  # pragma: no cover - reports ship with evalkit
        pass
    return output / "record.json"


def _quiet_libraries() -> None:
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


@dataclass
class Prepared:
    """A recipe made ready to run: where it writes, what it resumes from, the task registry."""

    recipe: Recipe
    output: Path
    ckpt_dir: Path
    resume_from: Path | None
    registry: Any


def prepare(recipe_path: Path | str, *, output: Path | None = None, resume: bool = False, force: bool = False,
            registry: Any = None, overrides: dict[str, Any] | None = None) -> Prepared:
    """Load the recipe, settle the output folder (--force / --resume), threads and the task registry."""
    import torch

    from evalkit.config import load_config
    from evalkit.discovery.registry import discover

    recipe = load_recipe(recipe_path, overrides)
    config = load_config()
    _quiet_libraries()
    output = Path(output) if output else (config.root / recipe.output if recipe.output else config.reports / recipe.name)
    output = output.resolve()
    ckpt_dir = output / "checkpoints"
    existing = complete_checkpoints(ckpt_dir)
    if existing and not resume and not force:
        raise ConfigError(f"{output} already holds a training run; pass --resume to continue it or --force to "
                          "start over", file=recipe.file, field="output")
    if force and output.exists() and _is_main():
        shutil.rmtree(output)
        existing = []
    if ckpt_dir.is_dir() and _is_main():
        for stale in ckpt_dir.glob(".staging-*"):  # a save that a kill interrupted
            shutil.rmtree(stale, ignore_errors=True)
    if recipe.train.get("threads"):
        torch.set_num_threads(recipe.train["threads"])
    if registry is None:
        registry = discover(list(config.tasks), fallback_to_bundled=not config.tasks_configured)
    return Prepared(recipe, output, ckpt_dir, existing[-1] if (resume and existing) else None, registry)


def training_arguments(recipe: Recipe, ckpt_dir: Path, max_steps: int, *, cls: Any = None, **overrides: Any) -> Any:
    """The recipe's TrainingArguments (or `cls`, e.g. TRL's GRPOConfig), with `overrides` applied."""
    import torch

    if cls is None:
        from transformers import TrainingArguments as cls
    t = recipe.train
    kwargs = dict(
        output_dir=str(ckpt_dir), max_steps=max_steps,
        per_device_train_batch_size=t["batch_size"], gradient_accumulation_steps=t["gradient_accumulation"],
        learning_rate=t["lr"], lr_scheduler_type=t["scheduler"], warmup_steps=t["warmup_steps"],
        weight_decay=t["weight_decay"], max_grad_norm=t["max_grad_norm"], logging_steps=10,
        save_strategy="no", report_to=[], seed=recipe.seed, data_seed=recipe.seed, dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(), bf16=bool(t.get("bf16")), remove_unused_columns=False,
        disable_tqdm=True, save_only_model=False, ddp_find_unused_parameters=False,
    )
    kwargs.update(overrides)
    return cls(**kwargs)


def attach(trainer: Any, loop: Loop) -> Any:
    """Give a trainer the evalkit evaluation callback (and no progress printing of its own)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.evalkit_loop = loop
    trainer.add_callback(_make_callback(loop))
    for quiet in (PrinterCallback, ProgressCallback):  # the live display shows progress instead
        trainer.remove_callback(quiet)
    return trainer


def make_trainer(loop: Loop, model: Any, tokenizer: Any, rows: list[Any], *, ckpt_dir: Path, max_steps: int,
                 **overrides: Any) -> Any:
    """A Trainer that fine-tunes `model` on prompt/completion `rows` (loss on the completion) for
    `max_steps`, evaluating and checkpointing through `loop` (stops when every target is met)."""
    from evalkit.train.data import CompletionCollator, tokenize_rows

    args = training_arguments(loop.recipe, ckpt_dir, max_steps, **overrides)
    trainer = _make_trainer_class()(model=model, args=args, train_dataset=tokenize_rows(rows, tokenizer),
                                    data_collator=CompletionCollator(tokenizer.pad_token_id))
    return attach(trainer, loop)


def finish(loop: Loop, model: Any, ckpt_dir: Path, current_step: int, data_report: dict[str, Any],
           default_reason: str, *, met: bool | None = None) -> FinetuneResult:
    """Name missed targets, export the best model, write the final record and report.

    Args:
        current_step: the step whose weights `model` holds.
        default_reason: why training stopped, when the loop did not say (e.g. the budget ended).
        met: overrides the confirmed-target rule (None: last evaluation met and confirmed).
    """
    recipe, output = loop.recipe, loop.output
    if loop.state.stopped_because is None:
        loop.state.stopped_because = default_reason
    missed = []
    last = loop.state.history[-1] if loop.state.history else None
    if last:
        for name, r in last["rates"].items():
            if not r["met"]:
                measured = r["low"] if r["on"] == "lower_bound" else r["rate"]
                what = "95% lower bound" if r["on"] == "lower_bound" else "pass rate"
                missed.append(f"{name}: {what} {measured:.1%} < target {r['target']:.1%} "
                              f"(short by {100 * (r['target'] - measured):.1f} points)")
    if met is None:
        met = bool(last and last["all_met"] and loop.state.consecutive_met >= recipe.confirm)
    met = bool(_broadcast([1.0 if met else 0.0])[0])  # only rank 0 evaluates: every rank exits alike
    best_step = record_path = None
    if _is_main():
        best_step = _export_best(loop, model, ckpt_dir, current_step, output)
        record_path = _final_record(loop, output, best_step, data_report)
    return FinetuneResult(output, met, best_step, record_path, loop.state.stopped_because, tuple(missed),
                          is_main=_is_main())


def finetune(recipe_path: Path | str, *, output: Path | None = None, resume: bool = False, force: bool = False,
             registry: Any = None, display: Any = None, max_steps: int | None = None,
             overrides: dict[str, Any] | None = None) -> FinetuneResult:
    """Run a recipe to its targets (or its budget). See the module docstring for the outputs.

    Args:
        overrides: merged into the recipe before validation (see `recipe.load_recipe`).
    """
    from evalkit.train.data import build_training_rows

    run = prepare(recipe_path, output=output, resume=resume, force=force, registry=registry, overrides=overrides)
    recipe, output, ckpt_dir, resume_from = run.recipe, run.output, run.ckpt_dir, run.resume_from
    registry = run.registry
    if not _is_main():
        display = None  # one live display, on rank 0
    if recipe.verifier_only:
        from evalkit.train.verifier import run_verifier

        return run_verifier(run, display=display, max_steps=max_steps)
    loop = Loop(recipe, output, registry=registry, resume=resume_from is not None, display=display)
    eval_examples = [ex for t in recipe.targets for ex in registry.get(t.task).examples(
        "eval", n=t.n or recipe.eval_n, seed=recipe.eval_seed, level=t.level)]
    rows, report = build_training_rows(recipe, registry, eval_examples, count_tokens=lambda s: len(s) + 1)
    model, tokenizer = _build_model(recipe, output, rows, resume_from is not None)
    loop.model, loop.tokenizer = model, tokenizer
    output.mkdir(parents=True, exist_ok=True)
    if _is_main():
        if recipe.base_is_scratch and not (output / "tokenizer").is_dir():
            tokenizer.save_pretrained(output / "tokenizer")
        (output / "data.json").write_text(json.dumps(report.to_dict(), indent=1))
    if display:
        display.start(recipe, report, model, resume_from)
    steps = max_steps or recipe.max_steps
    trainer = make_trainer(loop, model, tokenizer, rows, ckpt_dir=ckpt_dir, max_steps=steps)
    if resume_from is not None:
        loop.restore(resume_from)
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    finally:
        if display:
            display.stop()
    return finish(loop, trainer.model, ckpt_dir, trainer.state.global_step, report.to_dict(),
                  f"step budget of {steps} steps used")


__all__ = ["finetune", "FinetuneResult", "complete_checkpoints", "EvalkitError", "make_trainer", "finish",
           "prepare", "Loop"]
