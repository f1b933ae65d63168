"""Time to target: evalkit's fine-tuning loop vs a plain HF Trainer evaluated by lm-eval.

Baseline (what a user assembles today): the transformers `Trainer` on the same tokenised data,
model config, seed and hyperparameters, with a `TrainerCallback` that every `eval.every` steps
calls `lm_eval.simple_evaluate` (HFLM wrapping the in-memory model, the task exported by
`evalkit export lm-eval`, the same held-out examples) and stops when the pass rate has met the
target on `eval.confirm` consecutive evaluations — the same rule evalkit's loop applies.

Contender: `evalkit.train.finetune(recipe)` — the same Trainer underneath, evaluating with the
in-memory runner.

A recipe that trains in chat form (`eval.chat: true`, e.g. finetune/smollm2-addition.yaml) gets a
chat baseline: the same model (the recipe's base, LoRA per `train.lora` through peft:
`evalkit.train.common.build_model`), the same chat-rendered rows (`build_training_rows`, then
`tokenize_rows(..., chat=True)`), the same TrainingArguments (`training_arguments`), and a callback
that runs `simple_evaluate(..., apply_chat_template=True, system_instruction=<the task's system
message>, fewshot_as_multiturn=True)` on the exported task, its docs carrying the chat question and its
few-shot turns as `fewshot_config.samples`, scored with the task's chat view (`task.for_chat()`:
chat extraction, stop strings and token budget). Both sides stop at the recipe's time budget too.

Printed: wall-clock seconds to target for both and the ratio (goal <= 0.5x), the step each
stopped at, training throughput in tokens/s, and an MFU-style figure: achieved training FLOP/s
(6 x parameters x tokens / training seconds) over this machine's measured fp32 matmul rate.
Appends a section to bench/RESULTS.md.

    .venv/bin/python bench/time_to_target.py            # finetune/addition.yaml (minutes)
    .venv/bin/python bench/time_to_target.py --quick    # a tiny recipe (well under a minute)
    .venv/bin/python bench/time_to_target.py --levers   # + evalkit with each of its levers off, same run
    .venv/bin/python bench/time_to_target.py --seeds 0,1,2,3,4   # both contenders on each seed (~40 min)
    .venv/bin/python bench/time_to_target.py --recipe finetune/smollm2-addition.yaml   # ~40 min of 2 CPUs
    .venv/bin/python bench/time_to_target.py --recipe finetune/smollm2-addition.yaml --max-steps 4 \
        --override eval.n=8 --override eval.every=2 --override data.size=64 --no-append   # plumbing check
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's progress bars


def matmul_flops(n: int = 512) -> float:
    """This machine's fp32 matmul rate (FLOP/s) at the training thread count (gpu_bench's measurement)."""
    import torch
    from gpu_bench import matmul_rate  # a sibling script (bench/ is on sys.path when one runs)

    return matmul_rate(torch.float32, n=n)


def parse_overrides(items: list[str]) -> dict:
    """`--override eval.n=8` (a dotted path and a YAML value) as a nested dict for `load_recipe`."""
    import yaml

    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--override {item!r}: expected KEY.PATH=VALUE, e.g. eval.n=8")
        node = out
        *parents, leaf = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = yaml.safe_load(value)
    return out


def evalkit_run(recipe: Path, tasks_dir: Path, out: Path, overrides: dict, max_steps: int | None) -> dict:
    import json

    from evalkit.discovery.registry import discover
    from evalkit.train import finetune

    registry = discover([tasks_dir], entry_points=False)
    start = time.perf_counter()
    result = finetune(recipe, output=out, force=True, registry=registry, overrides=overrides or None,
                      max_steps=max_steps)
    wall = time.perf_counter() - start
    record = json.loads((out / "record.json").read_text())
    history = record["meta"]["training"]["history"]
    return {"wall_s": wall, "met": result.targets_met, "step": history[-1]["step"], "evals": len(history),
            "rate": history[-1]["rates"], "why": result.stopped_because}


def write_lm_task(task, folder: Path, n: int, seed: int, level: int | None, chat: bool) -> tuple[str, str | None]:
    """The task exported for lm-eval (`evalkit export lm-eval`); in chat form, rewritten so that lm-eval's
    chat rendering is evalkit's chat prompt and its scoring the chat view's. Returns (lm-eval task name,
    system message to pass as system_instruction)."""
    import json

    import yaml

    from evalkit.lmeval.export import export_task, task_config

    exported = export_task(task, folder, n=n, seed=seed, level=level)
    if not chat:
        return exported.name, None
    view = task.for_chat()
    examples = task.examples("eval", n=n, seed=seed, level=level)
    messages = [task.messages(ex) for ex in examples]
    if any(m[:-1] != messages[0][:-1] for m in messages):
        raise SystemExit(f"task {task.name!r}: the examples' system message and few-shot turns differ")
    prefix = messages[0][:-1]
    system = prefix.pop(0)["content"] if prefix and prefix[0]["role"] == "system" else None
    pairs = [(prefix[i]["content"], prefix[i + 1]["content"]) for i in range(0, len(prefix), 2)]
    docs = [json.loads(line) for line in exported.data.read_text(encoding="utf-8").splitlines()]
    if [d["evalkit_id"] for d in docs] != [ex.id for ex in examples]:
        raise SystemExit("the exported docs are not the examples drawn here")
    for doc, m in zip(docs, messages):
        doc["question"] = m[-1]["content"]
    exported.data.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    config = task_config(view, exported.name, exported.data,
                         view.generation.max_new_tokens or exported.max_gen_toks,
                         {"split": "eval", "n": n, "seed": seed, "level": level, "chat": True},
                         str(Path(task.source).resolve()))
    config.update(doc_to_text="question", num_fewshot=len(pairs),
                  fewshot_config={"sampler": "first_n",
                                  "samples": [{"question": u, "reference": a} for u, a in pairs]})
    exported.yaml.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=120)
                             + "process_results: !function utils.process_results\n", encoding="utf-8")
    utils = exported.utils.read_text(encoding="utf-8")
    old = "scored = score(task, example, results[0])"
    if utils.count(old) != 1:
        raise SystemExit(f"{exported.utils}: cannot find {old!r} to score with the chat view")
    exported.utils.write_text(utils.replace(old, "scored = score(task.for_chat(), example, results[0])"),
                              encoding="utf-8")
    return exported.name, system


def baseline_run(recipe_path: Path, tasks_dir: Path, out: Path, overrides: dict, max_steps: int | None) -> dict:
    """Plain Trainer + lm-eval simple_evaluate in a callback; same data, model, seed, arguments, rule."""
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from evalkit.discovery.registry import discover
    from evalkit.train.common import build_model, training_arguments
    from evalkit.train.data import CompletionCollator, build_training_rows, tokenize_rows
    from evalkit.train.recipe import load_recipe

    start = time.perf_counter()
    recipe = load_recipe(recipe_path, overrides or None)
    if recipe.train.get("threads"):
        torch.set_num_threads(recipe.train["threads"])
    registry = discover([tasks_dir], entry_points=False)
    target = recipe.targets[0]
    task = registry.get(target.task)
    n = target.n or recipe.eval_n
    eval_examples = [ex for t in recipe.targets for ex in registry.get(t.task).examples(
        "eval", n=t.n or recipe.eval_n, seed=recipe.eval_seed, level=t.level)]
    rows, _ = build_training_rows(recipe, registry, eval_examples, count_tokens=lambda s: len(s) + 1)
    model, tok = build_model(recipe, out, rows, resume=False)
    dataset = tokenize_rows(rows, tok, chat=recipe.eval_chat)
    name, system = write_lm_task(task, out / "lm_tasks", n, recipe.eval_seed, target.level, recipe.eval_chat)
    manager = TaskManager(include_path=str(out / "lm_tasks"), include_defaults=False)
    chat_kwargs = ({"apply_chat_template": True, "system_instruction": system, "fewshot_as_multiturn": True}
                   if recipe.eval_chat else {})
    goal = target.target if target.target is not None else task.target
    progress: dict[str, Any] = {"consecutive": 0, "evals": 0, "rate": None, "why": "step budget"}
    budget_s = recipe.max_minutes * 60 if recipe.max_minutes is not None else None

    class LmEvalStop(TrainerCallback):
        def _evaluate(self, model):
            lm = HFLM(pretrained=model, tokenizer=tok, batch_size=recipe.eval_batch_size,
                      device=str(next(model.parameters()).device))
            res = lm_eval.simple_evaluate(model=lm, tasks=[name], task_manager=manager, log_samples=False,
                                          verbosity="ERROR", **chat_kwargs)
            progress["evals"] += 1
            return res["results"][name]["evalkit_pass,none"]

        def on_step_end(self, args, state, control, **kwargs):
            model = kwargs.get("model")
            out_of_time = budget_s is not None and time.perf_counter() - start > budget_s
            if state.global_step % recipe.eval_every == 0 or state.global_step >= state.max_steps or out_of_time:
                if model is None:
                    raise SystemExit("the Trainer passed no model to on_step_end: cannot evaluate")
                rate = self._evaluate(model)
                model.train()
                progress["consecutive"] = progress["consecutive"] + 1 if rate >= goal else 0
                progress["step"], progress["rate"] = state.global_step, rate
                if progress["consecutive"] >= recipe.confirm:
                    progress["why"] = "target met"
                    control.should_training_stop = True
                elif out_of_time:
                    progress["why"] = "time budget"
                    control.should_training_stop = True
            return control

    args = training_arguments(recipe, out / "ckpt", max_steps or recipe.max_steps)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=CompletionCollator(tok.pad_token_id))
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    trainer.add_callback(LmEvalStop())
    trainer.train()
    return {"wall_s": time.perf_counter() - start, "met": progress["consecutive"] >= recipe.confirm,
            "step": progress.get("step"), "evals": progress["evals"], "rate": progress["rate"], "why": progress["why"],
            "params": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "tokens_per_row": sum(len(r["input_ids"]) for r in dataset) / len(dataset)}


def lever_variants(r) -> dict[str, dict]:
    """The recipe overrides that switch off each loop lever the recipe turns on (evalkit.train.signal, adaptive)."""
    variants: dict[str, dict] = {}
    if r.eval_every_near and r.eval_every_near != r.eval_every:
        variants["eval.every_near"] = {"eval": {"every_near": r.eval_every}}  # the same cadence everywhere
    if r.train.get("rise"):
        variants["train.rise"] = {"train": {"rise": None}}
    if r.train.get("anneal"):
        variants["train.anneal"] = {"train": {"anneal": None, "rise": None}}  # a rise needs the anneal
    if r.eval_adaptive:
        variants["eval.adaptive"] = {"eval": {"adaptive": False}}
    return variants


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny recipe instead of finetune/addition.yaml")
    parser.add_argument("--recipe", type=Path, help="the recipe to run (default finetune/addition.yaml)")
    parser.add_argument("--tasks", type=Path, default=REPO / "tasks", help="task folder (default tasks/)")
    parser.add_argument("--max-steps", type=int, help="override budget.max_steps for both contenders")
    parser.add_argument("--override", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="merged into the recipe for both contenders, e.g. eval.n=8 (repeatable)")
    parser.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    parser.add_argument("--levers", action="store_true",
                        help="also run evalkit with each loop lever the recipe turns on switched off (eval.every_near, "
                             "train.rise, train.anneal, eval.adaptive), to measure what each buys")
    parser.add_argument("--seeds", type=seed_list,
                        help="comma-separated recipe seeds: both contenders on each (model init and data order), one "
                             "row per seed, instead of the recipe's seed alone")
    args = parser.parse_args(argv)
    if args.seeds and args.levers:
        parser.error("--seeds and --levers measure different things: run them one at a time")
    import torch

    if args.quick:
        fixtures = REPO / "tests" / "fixtures" / "ft"
        recipe, tasks_dir = fixtures / "quick.yaml", fixtures / "tasks.py"
    else:
        recipe, tasks_dir = (args.recipe or REPO / "finetune" / "addition.yaml").resolve(), args.tasks
    overrides = parse_overrides(args.override)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    # Pay every import before the clock starts, for both contenders alike.
    import lm_eval  # noqa: F401
    import peft  # noqa: F401
    from lm_eval.models.huggingface import HFLM  # noqa: F401
    from transformers import Trainer  # noqa: F401

    import evalkit.reports  # noqa: F401
    import evalkit.train.sft  # noqa: F401
    from evalkit.train.recipe import load_recipe

    if args.seeds:
        return per_seed(args, recipe, tasks_dir, overrides, args.seeds)
    r = load_recipe(recipe, overrides or None)
    levers = lever_variants(r) if args.levers else {}
    load_before = os.getloadavg()
    without: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ours = evalkit_run(recipe, tasks_dir, tmp / "evalkit", overrides, args.max_steps)
        theirs = baseline_run(recipe, tasks_dir, tmp / "baseline", overrides, args.max_steps)
        for i, (name, off) in enumerate(levers.items()):
            from evalkit.train.recipe import deep_merge

            without[name] = evalkit_run(recipe, tasks_dir, tmp / f"lever-{i}", deep_merge(overrides, off),
                                        args.max_steps)
    # Training throughput: tokens the model trained on per second of evalkit's run.
    params, rows_tokens = theirs["params"], theirs["tokens_per_row"]
    tokens = ours["step"] * r.train["batch_size"] * r.train["gradient_accumulation"] * rows_tokens
    tok_s = tokens / ours["wall_s"]
    peak = matmul_flops()
    mfu = 6 * params * tok_s / peak
    ratio = ours["wall_s"] / theirs["wall_s"]
    ev_rate = "; ".join(f"{k} {v['rate']:.1%}" for k, v in (ours["rate"] or {}).items())
    lines = [
        "| contender | met | step | evaluations | last rate | stopped | wall s | ratio |",
        "|---|---|---|---|---|---|---|---|",
        f"| evalkit finetune | {ours['met']} | {ours['step']} | {ours['evals']} | {ev_rate} | {ours['why']} | "
        f"{ours['wall_s']:.1f} | {ratio:.2f}x (goal <= 0.5x: {'PASS' if ratio <= 0.5 else 'ABOVE'}) |",
        f"| Trainer + lm-eval simple_evaluate | {theirs['met']} | {theirs['step']} | {theirs['evals']} | "
        f"{theirs['rate']:.1%} | {theirs['why']} | {theirs['wall_s']:.1f} | baseline |",
    ]
    for name, res in without.items():
        rate = "; ".join(f"{k} {v['rate']:.1%}" for k, v in (res["rate"] or {}).items())
        lines.append(f"| evalkit, {name} off | {res['met']} | {res['step']} | {res['evals']} | {rate} | {res['why']} | "
                     f"{res['wall_s']:.1f} | {res['wall_s'] / theirs['wall_s']:.2f}x |")
    shown = recipe.relative_to(REPO) if recipe.is_relative_to(REPO) else recipe
    changed = " ".join(f"--override {o}" for o in args.override)
    steps = f" --max-steps {args.max_steps}" if args.max_steps else ""
    lora = f"LoRA {r.train['lora']}, {theirs['trainable']:,} trainable; " if r.train.get("lora") else ""
    from code_checks import cpu_model  # a sibling script (bench/ is on sys.path when one runs)

    notes = [f"recipe: {shown}{steps}{(' ' + changed) if changed else ''}; chat form: {r.eval_chat}; "
             f"params {params:,}; {lora}~{rows_tokens:.0f} tokens/row (mean of the tokenized training rows); "
             f"training throughput ~{tok_s:,.0f} tokens/s (whole run incl. evaluations)",
             f"MFU-style: 6 x params x tokens/s = {6 * params * tok_s / 1e9:.2f} GFLOP/s vs measured fp32 matmul "
             f"{peak / 1e9:.1f} GFLOP/s at {torch.get_num_threads()} threads = {mfu:.1%}"
             + (" (LoRA trains no frozen weight: ~4 x params would be its count)" if lora else ""),
             f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; "
             f"python {platform.python_version()}, torch {torch.__version__}; cpu {cpu_model()}"]
    print("\n".join(lines + [""] + notes))
    if not args.no_append:
        flags = (" --quick" if args.quick else (f" --recipe {shown}" if args.recipe else "")) + (
            " --levers" if args.levers else "")
        append_section(f"{flags}{steps}", lines, notes)
    return 0


def seed_list(text: str) -> list[int]:
    """`--seeds 0,1,2` as integers (argparse reports a bad value as a usage error, exit 2)."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 0,1,2; got {text!r}") from None


def append_section(flags: str, lines: list[str], notes: list[str]) -> None:
    """A dated section of bench/RESULTS.md: the table `lines`, then `notes` as bullets."""
    with open(REPO / "bench" / "RESULTS.md", "a", encoding="utf-8") as fh:
        fh.write(f"\n## {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC — time_to_target.py{flags}\n\n"
                 + "\n".join(lines) + "\n\n" + "".join(f"- {n}\n" for n in notes))


def per_seed(args: argparse.Namespace, recipe: Path, tasks_dir: Path, overrides: dict, seeds: list[int]) -> int:
    """Both contenders on each seed (`--override seed=S` for both): how the ratio moves with the model's
    initialisation and the data order, which decide how long the search for the solution takes."""
    from code_checks import cpu_model  # a sibling script (bench/ is on sys.path when one runs)

    from evalkit.train.recipe import deep_merge

    load_before, started = os.getloadavg(), time.perf_counter()
    lines = ["| seed | evalkit step | evalkit evaluations | evalkit s | baseline step | baseline evaluations | "
             "baseline s | steps ratio | wall ratio |", "|---|---|---|---|---|---|---|---|---|"]
    ratios = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp, seeded = Path(tmp_name), deep_merge(overrides, {"seed": seed})
            ours = evalkit_run(recipe, tasks_dir, tmp / "evalkit", seeded, args.max_steps)
            theirs = baseline_run(recipe, tasks_dir, tmp / "baseline", seeded, args.max_steps)
        ratio = ours["wall_s"] / theirs["wall_s"]
        ratios.append(ratio)
        ours_met, theirs_met = ("" if res["met"] else " (not met)" for res in (ours, theirs))
        lines.append(f"| {seed} | {ours['step']}{ours_met} | {ours['evals']} | {ours['wall_s']:.1f} | "
                     f"{theirs['step']}{theirs_met} | {theirs['evals']} | {theirs['wall_s']:.1f} | "
                     f"{ours['step'] / theirs['step']:.2f} | {ratio:.2f}x |")
        print(lines[-1], flush=True)
    ratios.sort()
    import torch

    shown = recipe.relative_to(REPO) if recipe.is_relative_to(REPO) else recipe
    seeds_shown = ",".join(map(str, seeds))
    notes = [f"recipe: {shown}, seeds {seeds_shown}; wall ratio median {statistics.median(ratios):.2f}x, range "
             f"{ratios[0]:.2f}-{ratios[-1]:.2f}x (goal <= 0.5x on the recipe's seed)",
             f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; runtime "
             f"{time.perf_counter() - started:.0f} s; python {platform.python_version()}, torch {torch.__version__}; "
             f"cpu {cpu_model()}"]
    print("\n".join(notes))
    if not args.no_append:
        append_section(f" --seeds {seeds_shown}", lines, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
