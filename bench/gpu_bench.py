"""The GPU benchmark, prepared: SmolLM2-135M-Instruct on whatever card this runs on (or the CPU).

    bash bench/gpu.sh                  # a GPU machine: python3, no venv, no internet (bench/README.md)
    bash bench/gpu.sh --append         # ... and append the section to bench/RESULTS.md
    bash bench/gpu.sh --cpu-smoke      # a tiny budget on the CPU (a few minutes on 2 cores): so it cannot rot

Three parts, printed as they finish and then as one Markdown section:

(a) **Time to target, full fine-tune**: `evalkit.train.finetune("finetune/smollm2-addition.yaml",
    overrides=...)` with no LoRA, bf16 mixed precision (the Trainer's `bf16: true`: float32 master
    weights, bfloat16 autocast), a learning rate for a full fine-tune, a larger batch and a shorter
    evaluation interval; the recipe's task and target are kept (2-digit addition in chat form, 90 % of
    200 held-out problems on two evaluations in a row). Reported: steps, evaluations, wall time, the
    pass rate at each evaluation and at the stop, why it stopped.
(b) **Training tokens/s and MFU**: a plain bf16-autocast AdamW loop on the same model, timed after
    warm-up steps, at the recipe's shape (its chat rows, padded per batch) and at a packed shape
    (rows concatenated into full-length sequences). MFU = 6 x parameters x tokens/s over the card's
    dense bf16 peak (PEAK_TFLOPS, by device name; "peak unknown" for other cards). On the CPU, over a
    matrix product measured here in the same dtype.
(c) **Eval throughput**: evalkit's `hf:` backend (`HFBackend.generate`, its own KV-cache loop that
    drops finished rows) against a raw static-batch `model.generate` on the same chat prompts
    (bench/smollm2_throughput.py's mix of addition, sorting, reverse and countdown), same batch and
    max_new_tokens, greedy, bf16 weights on a GPU; examples/s, tokens/s and the ratio, each
    contender's answers checked against one stop-free greedy pass cut at each row's stop.

Where the model comes from: `--model DIR`, else the `evalkit models get smollm2-135m-instruct` cache
(`$EVALKIT_HOME/models/...`); a folder with config and tokenizer but no weights gives a randomly
initialised model of the same shape (figures (b) and (c) hold, (a)'s rates mean nothing). Nothing is
downloaded; missing Python packages are named, with how to carry them (bench/README.md).
"""

from __future__ import annotations

import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import argparse
import contextlib
import importlib
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

RECIPE = ROOT / "finetune" / "smollm2-addition.yaml"
MODEL_NAME = "smollm2-135m-instruct"
#: Dense bf16 peak TFLOP/s by a substring of torch.cuda.get_device_name(), first match wins.
PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0), ("L4", 121.0))
#: (module, distribution) that the benchmark imports; evalkit itself comes from this tree.
REQUIRED = (("torch", "torch"), ("transformers", "transformers"), ("accelerate", "accelerate"),
            ("safetensors", "safetensors"), ("tokenizers", "tokenizers"), ("yaml", "pyyaml"),
            ("jinja2", "jinja2"), ("jsonschema", "jsonschema"), ("referencing", "referencing"),
            ("jsonschema_specifications", "jsonschema-specifications"), ("rpds", "rpds-py"),
            ("rich", "rich"), ("hypothesis", "hypothesis"))


@dataclass
class Plan:
    smoke: bool
    threads: int
    bf16: bool
    # (a)
    ft_batch: int
    ft_lr: float
    ft_every: int
    ft_eval_n: int
    ft_max_steps: int
    ft_minutes: float
    ft_data: dict[str, Any] | None  # data section override (None: the recipe's)
    # (b)
    shapes: list[tuple[str, int, int | None]]  # (name, batch, packed length or None for padded rows)
    warm_steps: int
    timed_steps: int
    # (c)
    n_eval: int
    eval_batch: int
    max_new: int
    reps: int


def make_plan(args: argparse.Namespace, cuda: bool) -> Plan:
    if args.cpu_smoke:
        plan = Plan(True, args.threads or 2, not args.fp32, 4, 1e-4, 2, 8, 2, 3.0,
                    {"size": 32, "sources": [{"task": "addition", "levels": {2: 1.0}, "n": 64}]},
                    [("recipe rows", 4, None), ("packed", 2, 128)], 1, 2, 8, 8, 16, 1)
    else:
        plan = Plan(False, args.threads or min(8, os.cpu_count() or 1), not args.fp32, 64, 1e-4, 25, 200,
                    1500, 4.0, None, [("recipe rows", 64, None), ("packed", 16, 2048)], 5, 20,
                    512 if cuda else 64, 128 if cuda else 16, 48, 3 if cuda else 1)
    for key in ("ft_minutes", "ft_max_steps", "ft_lr", "ft_batch", "ft_every"):
        value = getattr(args, key.removeprefix("ft_"), None)
        if value is not None:
            setattr(plan, key, value)
    return plan


# -- setup ----------------------------------------------------------------------------------

def missing_packages() -> list[str]:
    missing = []
    for module, dist in REQUIRED:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - a broken install counts as missing
            missing.append(dist)
    return missing


def device_and_peak(smoke: bool, bf16: bool) -> tuple[Any, str, float | None, str]:
    """(torch device, its name, peak FLOP/s or None, where the peak comes from)."""
    import torch

    if torch.cuda.is_available() and not smoke:
        name = torch.cuda.get_device_name(0)
        for key, tflops in PEAK_TFLOPS:
            if key.lower() in name.lower():
                return torch.device("cuda"), name, tflops * 1e12, f"{key} dense bf16 peak {tflops:g} TFLOP/s"
        return torch.device("cuda"), name, None, "peak unknown"
    rate = matmul_rate(torch.bfloat16 if bf16 else torch.float32)
    dtype = "bf16" if bf16 else "fp32"
    return torch.device("cpu"), "cpu", rate, f"measured {dtype} 1024^3 matmul here: {rate / 1e9:.1f} GFLOP/s"


def matmul_rate(dtype: Any, n: int = 1024, seconds: float = 1.0) -> float:
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start)


def resolve_model(arg: Path | None, workdir: Path) -> tuple[Path, bool]:
    """(a folder with weights, whether they are the real ones). A folder without weights: random init."""
    from evalkit.models.store import cached_model_path

    folder = arg
    if folder is None:
        try:
            folder = cached_model_path(MODEL_NAME)
        except Exception as exc:  # noqa: BLE001 - ConfigError: not cached; said below
            print(f"not cached: {exc}", file=sys.stderr)
    if folder is None or not (folder / "config.json").is_file():
        raise SystemExit(f"no SmolLM2 folder (looked at {folder or '$EVALKIT_HOME/models/' + MODEL_NAME}): "
                         "give --model DIR, or set EVALKIT_HOME to a folder holding models/" + MODEL_NAME
                         + " (bench/README.md says how to carry it to a GPU machine)")
    if any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")):
        return folder, True
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    print(f"WARNING: {folder} holds no weights: random initialisation of the same shape ((a)'s rates mean "
          "nothing; (b) and (c) hold)", file=sys.stderr)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder, local_files_only=True))
    out = workdir / "random-init"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(folder, local_files_only=True).save_pretrained(out)
    for extra in ("generation_config.json",):
        if (folder / extra).is_file():
            (out / extra).write_bytes((folder / extra).read_bytes())
    return out, False


# -- (a) time to target, full fine-tune -----------------------------------------------------------

def finetune_part(plan: Plan, base: Path, out: Path) -> dict[str, Any]:
    from evalkit.discovery.registry import discover
    from evalkit.train import finetune

    overrides: dict[str, Any] = {
        "model": {"base": str(base)},
        "train": {"lora": None, "bf16": plan.bf16, "lr": plan.ft_lr, "batch_size": plan.ft_batch,
                  "warmup_steps": min(20, max(1, plan.ft_max_steps // 10)), "threads": plan.threads},
        "eval": {"every": plan.ft_every, "n": plan.ft_eval_n, "batch_size": 256 if not plan.smoke else 8},
        "budget": {"max_steps": plan.ft_max_steps, "max_minutes": plan.ft_minutes},
    }
    if plan.ft_data is not None:
        overrides["data"] = plan.ft_data
    registry = discover([ROOT / "tasks"], entry_points=False)
    start = time.perf_counter()
    result = finetune(RECIPE, output=out, force=True, registry=registry, overrides=overrides)
    wall = time.perf_counter() - start
    history = json.loads((out / "record.json").read_text())["meta"]["training"]["history"]
    curve = [(h["step"], h["wall_s"], next(iter(h["rates"].values()))["rate"]) for h in history]
    target = next(iter(history[-1]["rates"].values()))["target"]
    first = next(((s, w) for s, w, r in curve if r >= target), None)
    return {"wall_s": wall, "met": result.targets_met, "why": result.stopped_because, "steps": curve[-1][0],
            "evals": len(curve), "rate": curve[-1][2], "curve": curve, "first_at_target": first, "target": target,
            "overrides": overrides}


# -- (b) training tokens/s and MFU -----------------------------------------------------------------

def chat_rows(tok: Any, count: int) -> list[dict[str, list[int]]]:
    """`count` training rows of the recipe, tokenized in chat form as evalkit trains them."""
    from evalkit.discovery.registry import discover
    from evalkit.train.data import build_training_rows, tokenize_rows
    from evalkit.train.recipe import load_recipe

    recipe = load_recipe(RECIPE, {"data": {"size": count, "sources": [
        {"task": "addition", "levels": {2: 1.0}, "n": count}]}})
    registry = discover([ROOT / "tasks"], entry_points=False)
    evals = [ex for t in recipe.targets for ex in registry.get(t.task).examples(
        "eval", n=t.n or recipe.eval_n, seed=recipe.eval_seed, level=t.level)]
    rows, _ = build_training_rows(recipe, registry, evals)
    return tokenize_rows(rows, tok, chat=recipe.eval_chat)


def train_speed(plan: Plan, folder: Path, device: Any, peak: float | None) -> tuple[list[dict[str, Any]], float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evalkit.train.data import CompletionCollator

    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    most = max(b * (plan.warm_steps + plan.timed_steps) for _, b, _ in plan.shapes)
    rows = chat_rows(tok, max(most, 256))
    mean_row = statistics.mean(len(r["input_ids"]) for r in rows)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32).to(device)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    collate = CompletionCollator(tok.pad_token_id if tok.pad_token_id is not None else 0)
    stream = [t for r in rows for t in r["input_ids"]]
    out = []
    for name, batch, length in plan.shapes:
        batches = [make_batch(rows, stream, collate, batch, length, i)
                   for i in range(plan.warm_steps + plan.timed_steps)]
        width = max(b["input_ids"].shape[1] for b in batches)
        tokens = 0
        for i, b in enumerate(batches):
            if i == plan.warm_steps:
                sync(device)
                start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=plan.bf16):
                loss = model(**{k: v.to(device) for k, v in b.items() if k != "tokens"}).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= plan.warm_steps:
                tokens += b["tokens"]
        sync(device)
        secs = time.perf_counter() - start
        tok_s = tokens / secs
        flops = 6 * params * tok_s
        out.append({"shape": name, "batch": batch, "length": f"<= {width} (rows padded)" if length is None else length,
                    "tokens": tokens, "steps": plan.timed_steps, "s": secs, "tok_s": tok_s, "flops": flops,
                    "mfu": flops / peak if peak else None, "params": params})
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out, mean_row


def make_batch(rows: list[dict[str, list[int]]], stream: list[int], collate: Any, batch: int, length: int | None,
               i: int) -> dict[str, Any]:
    """Training batch `i`: `batch` chat rows padded as evalkit's collator pads them (loss on the answers), or
    `batch` x `length` tokens of the rows concatenated (loss on every token). `tokens`: the real tokens in it."""
    import torch

    if length is None:
        b = collate([rows[(i * batch + k) % len(rows)] for k in range(batch)])
        return {**b, "tokens": int(b["attention_mask"].sum())}
    need = batch * length
    looped = stream * (1 + 2 * need // len(stream))
    off = (i * need) % (len(looped) - need + 1)
    ids = torch.tensor(looped[off:off + need]).view(batch, length)
    return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids), "tokens": need}


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


# -- (c) eval throughput ---------------------------------------------------------------------------

def eval_speed(plan: Plan, folder: Path, device: Any) -> dict[str, Any]:
    import smollm2_throughput as st
    import torch

    from evalkit.core.extract import cut_at_stop
    from evalkit.core.task import GenerationConfig
    from evalkit.models.hf import HFBackend
    from evalkit.models.hf_chat import encode_prompts
    from evalkit.models.tiny import load_model

    dtype = torch.bfloat16 if (plan.bf16 and device.type == "cuda") else torch.float32
    # Any: transformers' stubs make generate() a Tensor attribute and decode() return str | list[str]
    model: Any
    tok: Any
    model, tok = load_model(folder, device=device, dtype=dtype)
    items = st.core_prompts(plan.n_eval, 0)
    messages, stops = [m for _, m, _ in items], [s for _, _, s in items]
    backend = HFBackend(model, tok, batch_size=plan.eval_batch)
    full = [o[0] for o in backend.generate(messages, GenerationConfig(max_new_tokens=plan.max_new, stop=()))]
    reference = [cut_at_stop(f, s) for f, s in zip(full, stops)]
    run_evalkit = st.et.StopGroups(backend, messages, stops, plan.max_new)  # one call per stop set

    ids = encode_prompts(tok, messages)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    eos, pad = sorted(backend.eos_ids), backend.pad_id

    def run_raw() -> list[str]:
        got = [""] * len(ids)
        with torch.inference_mode():
            for b in range(0, len(order), plan.eval_batch):
                idx = order[b:b + plan.eval_batch]
                width = max(len(ids[i]) for i in idx)
                input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for k, i in enumerate(idx):
                    input_ids[k, width - len(ids[i]):] = torch.tensor(ids[i])
                    mask[k, width - len(ids[i]):] = 1
                seqs = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                      max_new_tokens=plan.max_new, do_sample=False, eos_token_id=eos,
                                      pad_token_id=pad)
                for i, row in zip(idx, seqs[:, width:].tolist()):
                    cut = next((k for k, t in enumerate(row) if t in eos), len(row))
                    got[i] = cut_at_stop(tok.decode(row[:cut], skip_special_tokens=True), stops[i])
        return got

    res = st.et.race({"evalkit": run_evalkit, "raw": run_raw}, plan.reps)
    n = len(messages)
    return {"n": n, "batch": plan.eval_batch, "max_new": plan.max_new, "dtype": str(dtype).removeprefix("torch."),
            "tokens": run_evalkit.generated, "groups": len(run_evalkit.groups),
            "rows": {k: {"s": res[k].median, "times": res[k].times,
                         "agree": sum(1 for a, b in zip(res[k].result, reference) if a == b)} for k in res}}


# -- report ----------------------------------------------------------------------------------------

def versions() -> str:
    from importlib import metadata

    def v(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "missing"

    import torch

    cuda = f", CUDA {torch.version.cuda}" if torch.cuda.is_available() else ""
    return (f"python {platform.python_version()}, torch {torch.__version__}{cuda}, transformers {v('transformers')}, "
            f"accelerate {v('accelerate')}")


def section(title: str, head: list[str], a: dict | None, b: list[dict] | None, mean_row: float | None,
            c: dict | None) -> str:
    lines = [f"\n## {title}\n", *[f"- {h}" for h in head], ""]
    if a is not None:
        tok_s = a["steps"] * a["overrides"]["train"]["batch_size"] * (mean_row or 0) / a["wall_s"]
        first = (f"step {a['first_at_target'][0]} at {a['first_at_target'][1]:.0f} s" if a["first_at_target"]
                 else "never")
        lines += [f"(a) full fine-tune to the recipe's target (addition level 2, chat, {a['target']:.0%} of "
                  f"{a['overrides']['eval']['n']} held-out, on 2 evaluations in a row)", "",
                  f"| met | steps | evaluations | rate at stop | first >= {a['target']:.0%} | wall s | "
                  "stopped because | tokens/s (whole run) |", "|---|---|---|---|---|---|---|---|",
                  f"| {a['met']} | {a['steps']} | {a['evals']} | {a['rate']:.1%} | {first} | {a['wall_s']:.1f} | "
                  f"{a['why']} | ~{tok_s:,.0f} |", "",
                  "- overrides: " + json.dumps(a["overrides"]),
                  "- curve (step, s, rate): " + ", ".join(f"({s}, {w:.0f}, {r:.0%})" for s, w, r in a["curve"]), ""]
    if b is not None:
        lines += ["(b) training throughput (AdamW, full model, timed after warm-up)", "",
                  "| shape | batch x length | tokens timed | s | tokens/s | 6·N·tokens/s | MFU |",
                  "|---|---|---|---|---|---|---|"]
        for r in b:
            mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "peak unknown"
            lines.append(f"| {r['shape']} | {r['batch']} x {r['length']} | {r['tokens']:,} | {r['s']:.2f} | "
                         f"{r['tok_s']:,.0f} | {r['flops'] / 1e12:.2f} TFLOP/s | {mfu} |")
        lines += ["", f"- N = {b[0]['params']:,} parameters (tied embeddings once); attention FLOPs not counted; "
                  f"mean chat row {mean_row:.0f} tokens", ""]
    if c is not None:
        rows = c["rows"]
        ev, raw = rows["evalkit"], rows["raw"]
        lines += [f"(c) eval throughput, {c['n']} chat prompts, batch {c['batch']}, max_new_tokens {c['max_new']}, "
                  f"{c['dtype']} weights, greedy; {c['tokens']:,} tokens the answers need", "",
                  "| contender | s (median) | examples/s | tokens/s | ratio | answers |", "|---|---|---|---|---|---|"]
        for name, r, ratio in (("evalkit hf: backend (HFBackend.generate)", ev, f"{raw['s'] / ev['s']:.2f}x vs raw"),
                               ("raw model.generate (static batches)", raw, "baseline")):
            lines.append(f"| {name} | {r['s']:.3f} | {c['n'] / r['s']:,.1f} | {c['tokens'] / r['s']:,.0f} | {ratio} | "
                         f"{r['agree']}/{c['n']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny budget on the CPU, even where a GPU is")
    ap.add_argument("--model", type=Path, help="the SmolLM2 folder (default: the evalkit model cache, $EVALKIT_HOME)")
    ap.add_argument("--append", action="store_true", help="append the section to bench/RESULTS.md")
    ap.add_argument("--section-out", type=Path, help="also write the section to this file (e.g. $OUT/...)")
    ap.add_argument("--parts", default="abc", help="which parts to run (default abc)")
    ap.add_argument("--fp32", action="store_true", help="float32 instead of bf16 mixed precision")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default 8; smoke 2)")
    ap.add_argument("--minutes", type=float, help="(a)'s time budget (default 4; smoke 3)")
    ap.add_argument("--max-steps", type=int, help="(a)'s step budget (default 1500; smoke 2)")
    ap.add_argument("--lr", type=float, help="(a)'s learning rate (default 1e-4)")
    ap.add_argument("--batch", type=int, help="(a)'s batch size (default 64; smoke 4)")
    ap.add_argument("--every", type=int, help="(a)'s evaluation interval in steps (default 25; smoke 2)")
    args = ap.parse_args(argv)
    if args.cpu_smoke:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the Trainer in (a) too: torch is not imported yet
    missing = missing_packages()
    try:
        import evalkit  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        missing.append(f"evalkit itself ({type(exc).__name__}: {exc})")
    if missing:
        print("missing Python packages: " + ", ".join(missing) + "\nNothing can be fetched on a GPU machine: "
              "carry them as wheels in .gpu-stage/whl (bash bench/gpu.sh --stage, bench/README.md).", file=sys.stderr)
        return 3
    import torch

    cuda = torch.cuda.is_available() and not args.cpu_smoke
    plan = make_plan(args, cuda)
    torch.set_num_threads(plan.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    started, load_before = time.perf_counter(), os.getloadavg()
    device, name, peak, peak_note = device_and_peak(plan.smoke, plan.bf16)
    print(f"device: {name}", flush=True)
    a = b = c = None
    mean_row = None
    with tempfile.TemporaryDirectory(prefix="evalkit-gpu-bench-") as tmp:
        folder, real = resolve_model(args.model, Path(tmp))
        print(f"model: {folder}{'' if real else ' (RANDOM INIT)'}", flush=True)
        if "b" in args.parts:
            print("(b) training throughput ...", flush=True)
            b, mean_row = train_speed(plan, folder, device, peak)
            for r in b:
                print(f"    {r['shape']}: {r['tok_s']:,.0f} tokens/s, MFU "
                      + (f"{r['mfu']:.1%}" if r["mfu"] is not None else "peak unknown"), flush=True)
        if "c" in args.parts:
            print("(c) eval throughput ...", flush=True)
            c = eval_speed(plan, folder, device)
            ratio = c["rows"]["raw"]["s"] / c["rows"]["evalkit"]["s"]
            print(f"    hf: backend {c['n'] / c['rows']['evalkit']['s']:,.1f} examples/s, raw generate "
                  f"{c['n'] / c['rows']['raw']['s']:,.1f} examples/s: {ratio:.2f}x", flush=True)
        if "a" in args.parts:
            print("(a) full fine-tune to target ...", flush=True)
            with contextlib.redirect_stdout(sys.stderr):
                a = finetune_part(plan, folder, Path(tmp) / "finetune")
            print(f"    met {a['met']} at step {a['steps']} ({a['wall_s']:.0f} s): {a['why']}", flush=True)
    head = [f"device: {name}" + ("" if real else " — RANDOM INIT weights (no SmolLM2 weights carried)"),
            f"peak: {peak_note}", f"model: SmolLM2-135M-Instruct from {folder}",
            f"precision: {'bf16 mixed (autocast, fp32 master weights)' if plan.bf16 else 'fp32'}; torch threads "
            f"{plan.threads}; {'CPU SMOKE (tiny budget: figures are a plumbing check)' if plan.smoke else 'full'}",
            f"versions: {versions()}",
            f"load average before, after: {load_before[0]:.2f}, {os.getloadavg()[0]:.2f}; "
            f"runtime {time.perf_counter() - started:.0f} s"]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = section(f"{stamp} — gpu.sh{' --cpu-smoke' if plan.smoke else ''} on {name}", head, a, b, mean_row, c)
    print(text)
    if args.section_out:
        args.section_out.write_text(text, encoding="utf-8")
    if args.append:
        with open(ROOT / "bench" / "RESULTS.md", "a", encoding="utf-8") as fh:
            fh.write(text)
        print("appended to bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
