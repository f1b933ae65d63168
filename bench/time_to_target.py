"""Time to target: evalkit's fine-tuning loop vs a plain HF Trainer evaluated by lm-eval.

Baseline (what a user assembles today): the transformers `Trainer` on the same tokenised data,
model config, seed and hyperparameters, with a `TrainerCallback` that every `eval.every` steps
calls `lm_eval.simple_evaluate` (HFLM wrapping the in-memory model, the task exported by
`evalkit export lm-eval`, the same held-out examples) and stops when the pass rate has met the
target on `eval.confirm` consecutive evaluations — the same rule evalkit's loop applies.

Contender: `evalkit.train.finetune(recipe)` — the same Trainer underneath, evaluating with the
in-memory runner.

Printed: wall-clock seconds to target for both and the ratio (goal <= 0.5x), the step each
stopped at, training throughput in tokens/s, and an MFU-style figure: achieved training FLOP/s
(6 x parameters x tokens / training seconds) over this machine's measured fp32 matmul rate.
Appends a section to bench/RESULTS.md.

    .venv/bin/python bench/time_to_target.py            # finetune/addition.yaml (minutes)
    .venv/bin/python bench/time_to_target.py --quick    # a tiny recipe (well under a minute)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def matmul_flops(seconds: float = 1.0, n: int = 512) -> float:
    """This machine's fp32 matmul rate (FLOP/s) at the training thread count."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start)


def evalkit_run(recipe: Path, tasks_dir: Path, out: Path) -> dict:
    from evalkit.discovery.registry import discover
    from evalkit.train import finetune

    registry = discover([tasks_dir], entry_points=False)
    start = time.perf_counter()
    result = finetune(recipe, output=out, force=True, registry=registry)
    wall = time.perf_counter() - start
    import json

    record = json.loads((out / "record.json").read_text())
    history = record["meta"]["training"]["history"]
    return {"wall_s": wall, "met": result.targets_met, "step": history[-1]["step"], "evals": len(history)}


def baseline_run(recipe_path: Path, tasks_dir: Path, out: Path) -> dict:
    """Plain Trainer + lm-eval simple_evaluate in a callback; same data, model, seed, rule."""
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from evalkit.discovery.registry import discover
    from evalkit.lmeval.export import export_tasks
    from evalkit.train.common import build_model
    from evalkit.train.data import CompletionCollator, build_training_rows, tokenize_rows
    from evalkit.train.recipe import load_recipe

    start = time.perf_counter()
    recipe = load_recipe(recipe_path)
    if recipe.train.get("threads"):
        torch.set_num_threads(recipe.train["threads"])
    registry = discover([tasks_dir], entry_points=False)
    target = recipe.targets[0]
    task = registry.get(target.task)
    eval_examples = task.examples("eval", n=target.n or recipe.eval_n, seed=recipe.eval_seed, level=target.level)
    rows, _ = build_training_rows(recipe, registry, eval_examples, count_tokens=lambda s: len(s) + 1)
    model, tok = build_model(recipe, out, rows, resume=False)
    export_tasks([task], out / "lm_tasks", n=target.n or recipe.eval_n, seed=recipe.eval_seed, level=target.level)
    manager = TaskManager(include_path=str(out / "lm_tasks"), include_defaults=False)
    goal = target.target
    state = {"consecutive": 0, "evals": 0}

    class LmEvalStop(TrainerCallback):
        def _evaluate(self, model):
            lm = HFLM(pretrained=model, tokenizer=tok, batch_size=recipe.eval_batch_size, device="cpu")
            res = lm_eval.simple_evaluate(model=lm, tasks=[task.name], task_manager=manager, log_samples=False,
                                          verbosity="ERROR")
            state["evals"] += 1
            return res["results"][task.name]["evalkit_pass,none"]

        def on_step_end(self, args, st, control, model=None, **kwargs):
            if st.global_step % recipe.eval_every == 0 or st.global_step >= st.max_steps:
                rate = self._evaluate(model)
                model.train()
                state["consecutive"] = state["consecutive"] + 1 if rate >= goal else 0
                state["step"] = st.global_step
                if state["consecutive"] >= recipe.confirm:
                    control.should_training_stop = True
            return control

    t = recipe.train
    args = TrainingArguments(output_dir=str(out / "ckpt"), max_steps=recipe.max_steps,
                             per_device_train_batch_size=t["batch_size"], learning_rate=t["lr"],
                             lr_scheduler_type=t["scheduler"], warmup_steps=t["warmup_steps"],
                             weight_decay=t["weight_decay"], max_grad_norm=t["max_grad_norm"], logging_steps=10,
                             save_strategy="no", report_to=[], seed=recipe.seed, data_seed=recipe.seed,
                             use_cpu=True, remove_unused_columns=False, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=tokenize_rows(rows, tok),
                      data_collator=CompletionCollator(tok.pad_token_id))
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    trainer.add_callback(LmEvalStop())
    trainer.train()
    return {"wall_s": time.perf_counter() - start, "met": state["consecutive"] >= recipe.confirm,
            "step": state.get("step"), "evals": state["evals"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny recipe instead of finetune/addition.yaml")
    parser.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    import torch

    if args.quick:
        fixtures = REPO / "tests" / "fixtures" / "ft"
        recipe, tasks_dir = fixtures / "quick.yaml", fixtures / "tasks.py"
    else:
        recipe, tasks_dir = REPO / "finetune" / "addition.yaml", REPO / "tasks"
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    # Pay every import before the clock starts, for both contenders alike.
    import lm_eval  # noqa: F401
    from lm_eval.models.huggingface import HFLM  # noqa: F401
    from transformers import Trainer  # noqa: F401

    import evalkit.reports  # noqa: F401
    import evalkit.train.sft  # noqa: F401

    os.environ.setdefault("TQDM_DISABLE", "1")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ours = evalkit_run(recipe, tasks_dir, tmp / "evalkit")
        theirs = baseline_run(recipe, tasks_dir, tmp / "baseline")
        # Training throughput: tokens the model trained on per second of evalkit's run.
        from evalkit.train.recipe import load_recipe

        r = load_recipe(recipe)
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(tmp / "evalkit" / "model", local_files_only=True)
        params = sum(p.numel() for p in model.parameters())
        samples = record_samples(tmp)
        rows_tokens = max(8, int(sum(len(s["prompt"]) + len(s["reference"] or "") + 2 for s in samples)
                                 / max(1, len(samples))))
    tokens = ours["step"] * r.train["batch_size"] * rows_tokens
    tok_s = tokens / ours["wall_s"]
    peak = matmul_flops()
    mfu = 6 * params * tok_s / peak
    ratio = ours["wall_s"] / theirs["wall_s"]
    lines = [
        "| contender | met | step | evaluations | wall s | ratio |",
        "|---|---|---|---|---|---|",
        f"| evalkit finetune | {ours['met']} | {ours['step']} | {ours['evals']} | {ours['wall_s']:.1f} | "
        f"{ratio:.2f}x (goal <= 0.5x: {'PASS' if ratio <= 0.5 else 'ABOVE'}) |",
        f"| Trainer + lm-eval simple_evaluate | {theirs['met']} | {theirs['step']} | {theirs['evals']} | "
        f"{theirs['wall_s']:.1f} | baseline |",
    ]
    notes = [f"recipe: {recipe.relative_to(REPO)}; params {params:,}; ~{rows_tokens} tokens/row; "
             f"training throughput ~{tok_s:,.0f} tokens/s (whole run incl. evaluations)",
             f"MFU-style: 6 x params x tokens/s = {6 * params * tok_s / 1e9:.2f} GFLOP/s vs measured fp32 matmul "
             f"{peak / 1e9:.1f} GFLOP/s at {torch.get_num_threads()} threads = {mfu:.1%}",
             f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; "
             f"python {platform.python_version()}, torch {torch.__version__}"]
    print("\n".join(lines + [""] + notes))
    if not args.no_append:
        with open(REPO / "bench" / "RESULTS.md", "a", encoding="utf-8") as fh:
            fh.write(f"\n## {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC — time_to_target.py"
                     f"{' --quick' if args.quick else ''}\n\n" + "\n".join(lines) + "\n\n"
                     + "".join(f"- {n}\n" for n in notes))
    return 0


def record_samples(tmp: Path) -> list[dict]:
    import json

    path = tmp / "evalkit" / "samples.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    sys.exit(main())
