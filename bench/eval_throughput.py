"""Evaluation throughput: evalkit against lm-eval and raw `model.generate`, measured in one run.

    .venv/bin/python bench/eval_throughput.py            # full run (minutes), appends to bench/RESULTS.md
    .venv/bin/python bench/eval_throughput.py --quick    # tiny sizes, < 60 s, writes only with --results
    .venv/bin/python bench/eval_throughput.py --sizes '~1M' --only per-call --no-write   # one comparison
    .venv/bin/python bench/eval_throughput.py --smollm2  # SmolLM2-135M-Instruct in chat form instead of the
                                                         # tiny sizes (bench/smollm2_throughput.py; minutes)

Everything runs on in-memory tiny Llamas built from a config (`evalkit.models.tiny`) and
the same examples for every contender; nothing is downloaded (HF_HUB_OFFLINE,
HF_DATASETS_OFFLINE and TRANSFORMERS_OFFLINE are set before any Hugging Face import, and
lm-eval reads a JSONL file written here). Two comparisons, each at two model sizes:

1. **Per evaluation call, as a training loop pays it** (baseline: lm-eval `simple_evaluate`).
   `evalkit.evaluate(model=..., tasks=[addition], n=N)` against
   `lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tok, ...), tasks=[a generated
   local task], task_manager=TaskManager(include_path=..., include_defaults=False),
   log_samples=True)` on the same N addition prompts (tasks/addition.py, level 3, eval split,
   seed 0), greedy, stop "\\n", max 10 new tokens, same batch size. HFLM and the TaskManager are
   built once, outside the timing (the cheapest way a training loop could use lm-eval); their
   one-time costs are printed. Each `simple_evaluate` call still loads the JSONL through
   `datasets`, templates every document, collects environment info and scores.
   Goal: evalkit >= 5x.

2. **The generation core** (baselines: HFLM.generate_until and a raw static-batch
   `model.generate`). Prompts like "c..h;=" ask for the letters from c to h followed by a
   terminator chosen by the prompt's mark (";" -> ";", "." -> ".", "/" -> "\\n"), so answers are
   1-52 letters long and each row has its own stop string. Contenders, all at the same batch
   size and max_new_tokens:
     - evalkit `HFBackend.generate` (decoder="loop"), one call per distinct stop set;
     - `HFLM.generate_until` with one `Instance` per row (args (prompt, {"until": [stop],
       "max_gen_toks": N})): lm-eval groups rows by their generation kwargs, and a batch runs
       until every row in it has hit its stop (or EOS);
     - raw `model.generate(input_ids, attention_mask, max_new_tokens=N, do_sample=False)` on
       left-padded static batches in prompt order, cut at each row's stop afterwards (it stops a
       batch only when every row has emitted EOS).
   Goals: evalkit >= 1.3x HFLM, >= 1.0x raw generate.

How the models produce variable-length answers (an untrained model emits junk that never
hits a stop):
  - The ~1M model (hidden 128, 4 layers) is trained here first, briefly (250 steps of batch 32,
    1-2 min on two shared cores; 30 steps with --quick), on a 50/50 mix of 1-3 digit additions
    ("12+34=" -> "46\\n" EOS) and the letter-range task above (answer, terminator, EOS). After
    250 steps about 80 % of its letter ranges are exact and every row ends with a terminator
    well before the cap, so its stops are the prompts' own terminators ("task" stops). Its
    additions are wrong (digits, then "\\n"): the format is learnt, not the sums.
  - The ~20M model (hidden 512, 6 layers, intermediate 1536) is left untrained. Its stops are
    "derived": one greedy pass without stops (batched evalkit; greedy output does not depend on
    the batch) gives each row's text; each row draws a target length uniformly in
    [1, max_new_tokens], and gets, of 4 characters picked from the 16 found in the most rows
    (greedily, to fit the targets best; never one that occurs in a special token's text such as
    "</s>", which HFLM's stop check decodes), the one whose first occurrence ends nearest that
    target. Rows in which none occurs run to the cap.
    So rows differ in stop string and length, as in the task mode.
  The printed "needed tokens" line gives the resulting answer lengths.

Fairness: both lm-eval paths are given `add_bos_token=True`, so HFLM encodes prompts exactly
as evalkit does (BOS + characters); its contexts are checked against evalkit's prompts.
Examples/s and tokens/s use the same numerator for every contender: examples, and the tokens
the answers need (each row up to and including the token that ends it: stop, EOS or the cap),
so they measure useful throughput, not work done. Every answer is compared: in (1) evalkit's
output against lm-eval's logged response; in (2) every contender against the cut output of the
stop-free greedy pass.

Reading the numbers: the per-call ratio is (lm-eval's fixed cost + its generation) over
(evalkit's generation + a small fixed cost), so it falls toward 1 as the model's forward pass
grows (at ~20M parameters generation is nearly all of both calls). In the generation core a
~1M model's decoding step costs about the same whatever the number of rows (per-step
overhead, not arithmetic, dominates), so dropping finished rows saves less than at ~20M; and
evalkit makes one call per distinct stop set (a call has one GenerationConfig), so each stop
group ends in a partial batch, as HFLM's groups do, while raw generate batches all rows together.

Timing: one warm-up call per contender, then `--reps` rounds with the contenders interleaved
(ABC ABC ABC), median per contender. Threads: `torch.set_num_threads(--threads)` (default 2).
OMP_WAIT_POLICY defaults to PASSIVE (unless set): on a shared 2-core machine, spinning OpenMP
workers made single forward passes 10-20x slower when other processes held a core. The load
average, CPU, versions and threads are recorded with the results; there are no timed asserts.
"""

from __future__ import annotations

import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's progress bars would interleave with the table
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import contextlib
import io
import json
import logging
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, TypedDict

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TERMINATORS = {";": ";", ".": ".", "/": "\n"}  # prompt mark -> the text that ends the answer
DERIVED_STOPS = 4


class Arch(TypedDict, total=False):
    """`tiny_llama`'s size arguments."""

    hidden: int
    layers: int
    heads: int
    intermediate: int


@dataclass
class Size:
    name: str
    arch: Arch
    train_steps: int  # 0: untrained, stops derived from its own output


@dataclass
class Config:
    quick: bool
    threads: int
    batch_size: int
    n_e2e: int
    n_gen: int
    max_new: int
    reps: int
    train_batch: int
    sizes: list[Size]
    results: Path | None
    seed: int = 0


def make_config(args: argparse.Namespace) -> Config:
    if args.smollm2:  # bench/smollm2_throughput.py: one real model, no tiny sizes
        quick = args.quick
        return Config(quick, args.threads, args.batch_size or (8 if quick else 16), args.n or (8 if quick else 64),
                      args.n_gen or (8 if quick else 48), args.max_new or (16 if quick else 48),
                      args.reps or (1 if quick else 2), 32, [],
                      None if args.no_write else args.results or (None if quick else ROOT / "bench" / "RESULTS.md"))
    if args.quick:
        sizes = [Size("~1M", dict(hidden=128, layers=4, heads=4), args.train_steps or 30),
                 Size("~2M", dict(hidden=256, layers=2, heads=4, intermediate=768), 0)]
        cfg = Config(True, args.threads, args.batch_size or 32, args.n or 32, args.n_gen or 32,
                     args.max_new or 24, args.reps or 1, 32, sizes, args.results)
    else:
        sizes = [Size("~1M", dict(hidden=128, layers=4, heads=4), args.train_steps or 250),
                 Size("~20M", dict(hidden=512, layers=6, heads=8, intermediate=1536), 0)]
        cfg = Config(False, args.threads, args.batch_size or 64, args.n or 500, args.n_gen or 500,
                     args.max_new or 64, args.reps or 3, 32, sizes,
                     args.results or ROOT / "bench" / "RESULTS.md")
    if args.sizes:
        wanted = {w.strip() for w in args.sizes.split(",")}
        cfg.sizes = [s for s in cfg.sizes if s.name in wanted]
        if not cfg.sizes:
            raise SystemExit(f"--sizes: none of {sorted(wanted)} is a size here ({[s.name for s in sizes]})")
    if args.no_write:
        cfg.results = None
    return cfg


# -- measurement helpers ------------------------------------------------------------------

@dataclass
class Timed:
    name: str
    times: list[float] = field(default_factory=list)
    result: Any = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def race(contenders: dict[str, Callable[[], Any]], reps: int) -> dict[str, Timed]:
    """Warm each contender up once, then `reps` interleaved rounds; keeps each one's last result."""
    out = {name: Timed(name) for name in contenders}
    for name, fn in contenders.items():
        out[name].result = fn()
    for _ in range(reps):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            out[name].result = fn()
            out[name].times.append(time.perf_counter() - t0)
    return out


@dataclass
class Row:
    section: str
    size: str
    name: str
    seconds: float
    examples: int
    tokens: int
    baseline: str | None = None  # the row this one is compared with
    goal: float | None = None
    ratio: float | None = None
    agree: str = ""
    times: Sequence[float] = ()

    @property
    def ex_s(self) -> float:
        return self.examples / self.seconds

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds


# -- models and data ------------------------------------------------------------------------

def letter_example(rng: random.Random) -> tuple[str, str, str]:
    """(prompt, answer without terminator, terminator)."""
    i = rng.randrange(len(LETTERS))
    j = rng.randrange(i, len(LETTERS))
    mark = rng.choice(list(TERMINATORS))
    return f"{LETTERS[i]}..{LETTERS[j]}{mark}=", LETTERS[i:j + 1], TERMINATORS[mark]


def train(model: Any, tok: Any, steps: int, batch: int, seed: int) -> tuple[float, float]:
    """Teach the model the addition format and the letter ranges; returns (seconds, last loss)."""
    import torch

    rng = random.Random(seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    warm = max(1, min(20, steps // 5))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.05, 1 - s / steps))
    t0, loss_value = time.perf_counter(), float("nan")
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(steps):
            rows = []
            for _ in range(batch):
                if rng.random() < 0.5:
                    digits = rng.choice([1, 2, 3])
                    a, b = rng.randrange(10**digits), rng.randrange(10**digits)
                    prompt, answer = f"{a}+{b}=", f"{a + b}\n"
                else:
                    prompt, letters, term = letter_example(rng)
                    answer = letters + term
                p = tok(prompt)["input_ids"]
                a_ids = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                rows.append((p, a_ids))
            width = max(len(p) + len(a) for p, a in rows)
            ids = torch.full((batch, width), tok.pad_token_id, dtype=torch.long)
            labels = torch.full((batch, width), -100, dtype=torch.long)
            mask = torch.zeros((batch, width), dtype=torch.long)
            for k, (p, a) in enumerate(rows):
                seq = p + a
                ids[k, :len(seq)] = torch.tensor(seq)
                mask[k, :len(seq)] = 1
                labels[k, len(p):len(seq)] = torch.tensor(a)  # loss on the answer only
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            loss_value = float(loss.detach())
    model.eval()
    return time.perf_counter() - t0, loss_value


def load_addition() -> Any:
    from evalkit.discovery.registry import load_path

    return next(t for t in load_path(ROOT / "tasks" / "addition.py") if t.name == "addition")


# -- comparison 1: per evaluation call --------------------------------------------------------

LM_EVAL_TASK = "evalkit_bench_addition"


def write_lm_eval_task(folder: Path, examples: Sequence[Any], max_new: int, stop: Sequence[str]) -> None:
    data = folder / "addition.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps({"id": ex.id, "prompt": ex.prompt, "target": ex.reference}) + "\n")
    until = ", ".join(json.dumps(s) for s in stop)
    (folder / f"{LM_EVAL_TASK}.yaml").write_text(
        f"task: {LM_EVAL_TASK}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    test: {json.dumps(str(data))}\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        'doc_to_text: "{{prompt}}"\n'
        'doc_to_target: "{{target}}"\n'
        "generation_kwargs:\n"
        f"  until: [{until}]\n"
        f"  max_gen_toks: {max_new}\n"
        "  do_sample: false\n"
        "metric_list:\n"
        "  - metric: exact_match\n"
        "    aggregation: mean\n"
        "    higher_is_better: true\n"
        "metadata:\n"
        "  version: 1.0\n", encoding="utf-8")


def lm_eval_context(sample: dict[str, Any]) -> str | None:
    args = sample.get("arguments")
    if isinstance(args, dict):
        first = next(iter(args.values()), None)
        if isinstance(first, dict):
            return first.get("arg_0")
    if isinstance(args, (list, tuple)) and args:
        first = args[0]
        return first[0] if isinstance(first, (list, tuple)) else first
    return None


def compare_e2e(cfg: Config, size: Size, model: Any, tok: Any, workdir: Path, notes: list[str]) -> list[Row]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from evalkit.run.runner import evaluate

    task = load_addition()
    examples = task.examples("eval", n=cfg.n_e2e, seed=cfg.seed)
    gen = task.generation
    max_new = gen.max_new_tokens
    folder = workdir / f"lm_eval_tasks_{len(examples)}"
    folder.mkdir(exist_ok=True)
    write_lm_eval_task(folder, examples, max_new, gen.stop)

    t0 = time.perf_counter()
    with quiet():
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=cfg.batch_size, device="cpu", add_bos_token=True)
    t_hflm = time.perf_counter() - t0
    t0 = time.perf_counter()
    with quiet():
        tm = TaskManager(include_path=str(folder), include_defaults=False)
    t_tm = time.perf_counter() - t0

    def run_evalkit() -> Any:
        return evaluate(model=model, tokenizer=tok, tasks=[task], n=cfg.n_e2e, seed=cfg.seed,
                        batch_size=cfg.batch_size)

    def run_lm_eval() -> Any:
        with quiet():
            return lm_eval.simple_evaluate(model=lm, tasks=[LM_EVAL_TASK], task_manager=tm, log_samples=True)

    res = race({"evalkit": run_evalkit, "lm-eval": run_lm_eval}, cfg.reps)
    record = res["evalkit"].result
    ours = {s["prompt"]: s["output"] for s in record.samples()}
    theirs: dict[str, str] = {}
    context_mismatch = 0
    for s in res["lm-eval"].result["samples"][LM_EVAL_TASK]:
        prompt = s["doc"]["prompt"]
        theirs[prompt] = s["resps"][0][0]
        if lm_eval_context(s) not in (None, prompt):
            context_mismatch += 1
    agree = sum(1 for p, o in ours.items() if theirs.get(p) == o)
    mismatches = [(p, o, theirs.get(p)) for p, o in ours.items() if theirs.get(p) != o]
    tokens = record.tasks[0]["timings"]["generated_tokens"]
    passes = record.tasks[0]["passes"]
    lm_acc = res["lm-eval"].result["results"][LM_EVAL_TASK].get("exact_match,none")
    notes.append(f"[{size.name}] per-call: {len(examples)} addition prompts (level 3), batch {cfg.batch_size}, "
                 f"max_new_tokens {max_new}; evalkit pass rate {passes}/{len(examples)}, lm-eval exact_match "
                 f"{lm_acc}; answers agree {agree}/{len(examples)}; lm-eval contexts differing from the prompt: "
                 f"{context_mismatch}; one-time HFLM() {t_hflm:.2f} s, TaskManager() {t_tm:.2f} s (not timed).")
    for p, o, t in mismatches[:5]:
        notes.append(f"[{size.name}] per-call mismatch: prompt {p!r}: evalkit {o!r}, lm-eval {t!r}")
    n = len(examples)
    ag = f"{agree}/{n}"
    t = record.data["timings"]
    notes.append(f"[{size.name}] per-call: evalkit's last call spent {t['total_s']:.3f} s in evaluate(): "
                 f"{t['generate_s']:.3f} s generating, {t['check_s']:.3f} s checking, the rest on examples, "
                 f"the weights fingerprint and the record.")
    base = Row("per-call", size.name, "lm-eval simple_evaluate", res["lm-eval"].median, n, tokens, agree=ag,
               times=res["lm-eval"].times)
    ours_row = Row("per-call", size.name, "evalkit evaluate", res["evalkit"].median, n, tokens,
                   baseline=base.name, goal=5.0, ratio=base.seconds / res["evalkit"].median, agree=ag,
                   times=res["evalkit"].times)
    return [ours_row, base]


# -- comparison 2: the generation core -------------------------------------------------------

class StopGroups:
    """evalkit's contender in the generation core: one `HFBackend.generate` call per distinct stop set (rows
    keep their order within it); `generated` is the tokens the last call generated, `groups` the row indices."""

    def __init__(self, backend: Any, prompts: Sequence[Any], stops: Sequence[tuple[str, ...]], max_new: int):
        self.backend, self.prompts, self.max_new, self.generated = backend, prompts, max_new, 0
        self.groups: dict[tuple[str, ...], list[int]] = {}
        for i, s in enumerate(stops):
            self.groups.setdefault(s, []).append(i)

    def __call__(self) -> list[str]:
        from evalkit.core.task import GenerationConfig

        out = [""] * len(self.prompts)
        self.generated = 0
        for s, idx in self.groups.items():
            got = self.backend.generate([self.prompts[i] for i in idx], GenerationConfig(max_new_tokens=self.max_new,
                                                                                         stop=s))
            self.generated += self.backend.last_stats.generated_tokens
            for i, o in zip(idx, got):
                out[i] = o[0]
        return out


def derive_stops(outputs: Sequence[str], max_new: int, seed: int) -> list[tuple[str, ...]]:
    """Per-row stop strings from the model's own stop-free output (see the module docstring)."""
    from evalkit.models.tiny import SPECIAL_TOKENS

    banned = set("".join(SPECIAL_TOKENS))
    rows_with: dict[str, int] = {}
    for o in outputs:
        for ch in set(o) - banned:
            rows_with[ch] = rows_with.get(ch, 0) + 1
    candidates = sorted(rows_with, key=lambda c: (-rows_with[c], c))[:4 * DERIVED_STOPS]
    rng = random.Random(seed + 7)
    targets = [rng.randint(1, max_new) for _ in outputs]
    ends = [{c: (o.find(c) + 1 if c in o else max_new) for c in candidates} for o in outputs]

    def cost(chars: list[str]) -> int:
        return sum(min(abs(e[c] - t) for c in chars) for e, t in zip(ends, targets))

    # Greedy forward selection: the few characters whose first occurrences best match the targets.
    chars: list[str] = []
    while len(chars) < min(DERIVED_STOPS, len(candidates)):
        chars.append(min((c for c in candidates if c not in chars), key=lambda c: (cost(chars + [c]), c)))
    return [(min(chars, key=lambda c: (abs(e[c] - t), c)),) for e, t in zip(ends, targets)]


def row_lengths(full: Sequence[str], cut: Sequence[str], stops: Sequence[tuple[str, ...]], max_new: int) -> list[int]:
    """Approximate tokens each row needs (for the printed distribution only; the tokenizer is
    character-level, special tokens aside): through its stop, else through EOS, else the cap."""
    out = []
    for f, c, s in zip(full, cut, stops):
        hit = [len(c) + len(x) for x in s if f.startswith(c + x)]
        out.append(min(max_new, hit[0] if hit else len(f) + 1))
    return out


def compare_core(cfg: Config, size: Size, model: Any, tok: Any, notes: list[str]) -> list[Row]:
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from evalkit.core.extract import cut_at_stop
    from evalkit.core.task import GenerationConfig
    from evalkit.models.hf import HFBackend

    rng = random.Random(cfg.seed + 3)
    items = [letter_example(rng) for _ in range(cfg.n_gen)]
    prompts = [p for p, _, _ in items]
    backend = HFBackend(model, tok, batch_size=cfg.batch_size, decoder="loop")
    # Stop-free greedy text of every row: the reference all contenders are checked against.
    full = [o[0] for o in backend.generate(prompts, GenerationConfig(max_new_tokens=cfg.max_new, stop=()))]
    if size.train_steps:
        stops: list[tuple[str, ...]] = [(term,) for _, _, term in items]
        exact = sum(1 for (_, letters, term), f in zip(items, full) if f.startswith(letters + term))
        mode_note = f"task stops (the prompt's terminator); exact answers {exact}/{len(items)}"
    else:
        stops = derive_stops(full, cfg.max_new, cfg.seed)
        chars = sorted({s[0] for s in stops})
        mode_note = f"derived stops {chars!r}"
    reference = [cut_at_stop(f, s) for f, s in zip(full, stops)]
    need = row_lengths(full, reference, stops, cfg.max_new)
    capped = sum(1 for n in need if n >= cfg.max_new)
    run_evalkit = StopGroups(backend, prompts, stops, cfg.max_new)  # one generate call per distinct stop set

    with quiet():
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=cfg.batch_size, device="cpu", add_bos_token=True)
    requests = [Instance(request_type="generate_until", doc={}, idx=i,
                         arguments=(p, {"until": list(s), "max_gen_toks": cfg.max_new, "do_sample": False}))
                for i, (p, s) in enumerate(zip(prompts, stops))]

    def run_hflm() -> list[str]:
        with quiet():
            return lm.generate_until(requests, disable_tqdm=True)

    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # as evalkit and HFLM sort
    eos = tok.eos_token_id

    def run_raw() -> list[str]:
        out = [""] * len(prompts)
        with torch.inference_mode():
            for b in range(0, len(order), cfg.batch_size):
                idx = order[b:b + cfg.batch_size]
                enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True)  # left padding
                seqs = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                      max_new_tokens=cfg.max_new, do_sample=False, pad_token_id=tok.pad_token_id)
                for i, row in zip(idx, seqs[:, enc["input_ids"].shape[1]:].tolist()):
                    kept = row[:row.index(eos)] if eos in row else row
                    out[i] = cut_at_stop(tok.decode(kept, skip_special_tokens=True), stops[i])
        return out

    res = race({"evalkit": run_evalkit, "hflm": run_hflm, "raw": run_raw}, cfg.reps)
    tokens = run_evalkit.generated
    n = len(prompts)
    agree = {k: sum(1 for a, b in zip(res[k].result, reference) if a == b) for k in res}
    lengths = sorted(need)
    notes.append(f"[{size.name}] generation core: {n} letter-range prompts, batch {cfg.batch_size}, "
                 f"max_new_tokens {cfg.max_new}, {mode_note}, {len(run_evalkit.groups)} stop groups; "
                 f"needed tokens per row "
                 f"min {lengths[0]} / median {statistics.median(lengths):g} / max {lengths[-1]}, "
                 f"{capped} rows run to the cap, {tokens} tokens in all; "
                 "agreement with the stop-free greedy pass cut at each row's "
                 f"stop: " + ", ".join(f"{k} {v}/{n}" for k, v in agree.items()))
    for k in res:
        bad = [(prompts[i], res[k].result[i], reference[i]) for i in range(n) if res[k].result[i] != reference[i]]
        for p, got, want in bad[:3]:
            notes.append(f"[{size.name}] core mismatch ({k}): prompt {p!r}: got {got!r}, want {want!r}")
    hflm = Row("core", size.name, "HFLM generate_until", res["hflm"].median, n, tokens, agree=f"{agree['hflm']}/{n}",
               times=res["hflm"].times)
    raw = Row("core", size.name, "raw model.generate", res["raw"].median, n, tokens, agree=f"{agree['raw']}/{n}",
              times=res["raw"].times)
    ev, ev_times = res["evalkit"].median, res["evalkit"].times
    ag = f"{agree['evalkit']}/{n}"
    return [Row("core", size.name, "evalkit HFBackend (loop)", ev, n, tokens, hflm.name, 1.3, hflm.seconds / ev, ag,
                ev_times),
            Row("core", size.name, "evalkit HFBackend (loop)", ev, n, tokens, raw.name, 1.0, raw.seconds / ev, ag,
                ev_times),
            hflm, raw]


# -- output ---------------------------------------------------------------------------------

@contextlib.contextmanager
def quiet():
    """Silence lm-eval's and transformers' chatter (prints, progress bars) during a call."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        yield


def environment(cfg: Config) -> dict[str, str]:
    from code_checks import cpu_model  # bench/ is on the path: this script's folder

    cpu = cpu_model()

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "missing"

    import torch

    return {"cpu": f"{cpu} ({os.cpu_count()} logical CPUs)", "python": platform.python_version(),
            "torch": version("torch"), "transformers": version("transformers"), "lm-eval": version("lm_eval"),
            "datasets": version("datasets"), "threads": str(torch.get_num_threads()),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", ""),
            "batch size": str(cfg.batch_size), "reps": f"1 warm-up + {cfg.reps} timed, median"}


def table(rows: Sequence[Row]) -> list[list[str]]:
    out = [["comparison", "model", "contender", "s/call", "min-max s", "examples/s", "tokens/s", "ratio", "goal",
            "answers"]]
    for r in rows:
        if r.ratio is not None:
            if r.goal is None:
                raise SystemExit(f"row {r.name!r} ({r.section}, {r.size}) has a ratio but no goal")
            mark = "PASS" if r.ratio >= r.goal else "BELOW"
            ratio, goal = f"{r.ratio:.2f}x vs {r.baseline}", f">= {r.goal:g}x {mark}"
        else:
            ratio, goal = "baseline", ""
        spread = f"{min(r.times):.3f}-{max(r.times):.3f}" if r.times else ""
        out.append([r.section, r.size, r.name, f"{r.seconds:.3f}", spread, f"{r.ex_s:,.0f}", f"{r.tok_s:,.0f}",
                    ratio, goal, r.agree])
    return out


def print_table(cells: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for k, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


def markdown(cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in cells[0]) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells[1:]]
    return "\n".join(lines)


RESULTS_HEADER = """# Benchmark results

Appended by the scripts in bench/ (newest last). Each section records the machine, versions,
threads and load average it ran under: compare numbers only within a section, where every
contender ran in the same process on the same model and examples.
"""


def append_results(path: Path, title: str, env: dict[str, str], cells: list[list[str]], notes: list[str]) -> None:
    body = [f"\n## {title}\n", *[f"- {k}: {v}" for k, v in env.items()], "", markdown(cells), ""]
    body += [f"- {n}" for n in notes]
    text = "\n".join(body) + "\n"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(RESULTS_HEADER, encoding="utf-8")
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


# -- main -----------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few examples (< 60 s); writes no "
                    "results unless --results is given")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--batch-size", type=int, help="rows per batch for every contender (default 64; quick 32)")
    ap.add_argument("-n", type=int, help="examples per evaluation call (default 500; quick 32)")
    ap.add_argument("--n-gen", type=int, help="prompts for the generation core (default 500; quick 32)")
    ap.add_argument("--max-new", type=int, help="max new tokens in the generation core (default 64; quick 24)")
    ap.add_argument("--reps", type=int, help="timed rounds after the warm-up (default 3; quick 1)")
    ap.add_argument("--train-steps", type=int, help="training steps of the ~1M model (default 250; quick 30)")
    ap.add_argument("--results", type=Path, help="Markdown file to append to (default bench/RESULTS.md; "
                    "quick: none)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--sizes", help="comma-separated tiny sizes to run, e.g. '~1M' (default: all)")
    ap.add_argument("--only", choices=("per-call", "core"), help="run one comparison only (default: both)")
    ap.add_argument("--smollm2", action="store_true", help="instead of the tiny sizes: SmolLM2-135M-Instruct "
                    "(the cached `evalkit models get smollm2-135m-instruct` folder) in chat form, "
                    "bench/smollm2_throughput.py (defaults n 64, n-gen 48, batch 16, max-new 48, reps 2)")
    args = ap.parse_args(argv)
    cfg = make_config(args)
    started = time.perf_counter()
    load_before = os.getloadavg()

    import torch

    torch.set_num_threads(cfg.threads)
    logging.disable(logging.WARNING)  # lm-eval logs every task load and evaluation at INFO/WARNING
    import transformers

    transformers.logging.set_verbosity_error()
    from evalkit.models.tiny import build_char_tokenizer, tiny_llama

    rows: list[Row] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="evalkit-bench-") as tmp:
        workdir = Path(tmp)
        os.environ["HF_DATASETS_CACHE"] = str(workdir / "datasets-cache")  # nothing left behind
        if args.smollm2:
            sys.modules.setdefault("eval_throughput", sys.modules[__name__])  # one copy of these helpers
            import smollm2_throughput

            real = smollm2_throughput.run(cfg, workdir, notes)
            if real is None:
                return 0  # not cached: said why, measured nothing
            rows += real
        tok = build_char_tokenizer()
        for size in cfg.sizes:
            model = tiny_llama(tok, seed=cfg.seed, **size.arch)
            params = sum(p.numel() for p in model.parameters())
            size.name = f"{size.name} ({params / 1e6:.2f}M)"
            if size.train_steps:
                secs, loss = train(model, tok, size.train_steps, cfg.train_batch, cfg.seed)
                notes.append(f"[{size.name}] trained {size.train_steps} steps of batch {cfg.train_batch} in "
                             f"{secs:.1f} s (last loss {loss:.3f}).")
            else:
                notes.append(f"[{size.name}] untrained (random init, seed {cfg.seed}).")
            if args.only in (None, "per-call"):
                print(f"# {size.name}: per-call comparison ...", file=sys.stderr, flush=True)
                rows += compare_e2e(cfg, size, model, tok, workdir, notes)
            if args.only in (None, "core"):
                print(f"# {size.name}: generation core ...", file=sys.stderr, flush=True)
                rows += compare_core(cfg, size, model, tok, notes)
    load_after = os.getloadavg()
    env = environment(cfg)
    env["load average (1/5/15 min) before, after"] = (
        f"{'/'.join(f'{x:.2f}' for x in load_before)}, {'/'.join(f'{x:.2f}' for x in load_after)}")
    elapsed = time.perf_counter() - started
    env["runtime"] = f"{elapsed:.0f} s"
    cells = table(rows)
    print()
    print_table(cells)
    print()
    for k, v in env.items():
        print(f"{k}: {v}")
    for n in notes:
        print(n)
    if cfg.results is not None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        flags = "".join(f for f, on in ((" --smollm2", args.smollm2), (" --quick", cfg.quick),
                                        (f" --sizes {args.sizes}", bool(args.sizes)),
                                        (f" --only {args.only}", bool(args.only))) if on)
        title = f"{stamp} — eval_throughput.py{flags}"
        append_results(cfg.results, title, env, cells, notes)
        print(f"appended to {cfg.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
