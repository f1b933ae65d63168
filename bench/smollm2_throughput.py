"""The real-size rows of eval_throughput.py: SmolLM2-135M-Instruct, in chat form.

    .venv/bin/python bench/eval_throughput.py --smollm2            # a few minutes; appends to bench/RESULTS.md
    .venv/bin/python bench/eval_throughput.py --smollm2 --quick    # 8 prompts, < 2 min; writes only with --results

The model is the folder `evalkit models get smollm2-135m-instruct` cached
(`evalkit.models.store.cached_model_path`); without it the script says so and exits 0 having measured
nothing. It is loaded once (float32, CPU) and every contender uses the same in-memory model. The same
two comparisons as the tiny sizes, on chat prompts rendered by the model's chat template:

1. **Per evaluation call** (baseline: lm-eval `simple_evaluate`).
   `evalkit.evaluate(model=..., tasks=[addition], n=N, chat=True, level=2)` against
   `lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tok, ...), tasks=[a generated local
   task], apply_chat_template=True, system_instruction=<the task's system message>,
   fewshot_as_multiturn=True, log_samples=True)`. The lm-eval task is written from evalkit's own chat
   messages: doc_to_text is the last user message ("What is 46 + 85?"), the few-shot turn is a
   `fewshot_config: {sampler: first_n, samples: [...]}` entry holding the task's few-shot pair, and
   generation uses the chat view's settings (`task.for_chat()`: stop "\\n", 24 new tokens). Checked,
   not assumed: every lm-eval context equals `render_chat(tok, task.messages(ex))`, and its token ids
   (HFLM's `tok_batch_encode`) equal evalkit's (`encode_prompt`); every answer is compared.

2. **The generation core on chat prompts** (baselines: HFLM.generate_until, raw `model.generate`).
   The chat forms of addition (levels 2-4), sorting, reverse and countdown, interleaved, each row with
   its task's chat stop strings and one shared max_new_tokens, so answers differ in length (the
   instruct model ends most of them with "\\n" or <|im_end|>, a few run to the cap). evalkit's
   `HFBackend.generate` takes the messages; HFLM and raw generate take the rendered text (HFLM adds
   <|im_end|>, the EOS, to its stop strings; raw generate stops a batch when every row has emitted
   it). All contenders are checked against one stop-free greedy pass cut at each row's stop.

Every chat prompt of a task repeats its system message and few-shot turns (46 of the ~59 tokens of an
addition prompt): evalkit's `hf:` backend runs such a shared prefix once per `generate` call and starts
each row from its key/value states (`evalkit.models.prefix`); HFLM and raw generate prefill every prompt
whole. That is evalkit's own code path as a user gets it (on by default), checked by the same answer
comparisons.

Threads, OMP_WAIT_POLICY, interleaved timing and the output table are eval_throughput.py's.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import eval_throughput as et

MODEL_NAME = "smollm2-135m-instruct"
LM_EVAL_CHAT_TASK = "evalkit_bench_addition_chat"
CORE_TASKS = (("addition", 2), ("sorting", 2), ("reverse", 3), ("addition", 3), ("countdown", 2), ("addition", 4))


def model_folder() -> Path | None:
    """The cached SmolLM2 folder, or None (with the reason printed) when it is not there."""
    from evalkit.errors import ConfigError
    from evalkit.models.store import cached_model_path

    try:
        path = cached_model_path(MODEL_NAME)
    except ConfigError as exc:
        print(f"SmolLM2 rows skipped: {exc}", file=sys.stderr)
        return None
    if path is None or not (path / "config.json").is_file():
        print(f"SmolLM2 rows skipped: no cached folder for {MODEL_NAME}; get it with "
              f"`evalkit models get {MODEL_NAME}`", file=sys.stderr)
        return None
    return path


def split_messages(messages: Sequence[dict[str, str]]) -> tuple[str | None, list[tuple[str, str]], str]:
    """(system message, few-shot (user, assistant) pairs, the question) of one chat prompt."""
    msgs = list(messages)
    system = msgs.pop(0)["content"] if msgs and msgs[0]["role"] == "system" else None
    question = msgs.pop()["content"]
    pairs = [(msgs[i]["content"], msgs[i + 1]["content"]) for i in range(0, len(msgs), 2)]
    return system, pairs, question


def write_chat_task(folder: Path, task: Any, examples: Sequence[Any], max_new: int,
                    stop: Sequence[str]) -> str | None:
    """An lm-eval task whose chat rendering is evalkit's chat prompt; returns the system message."""
    shared = {json.dumps(split_messages(task.messages(ex))[:2]) for ex in examples}
    if len(shared) != 1:
        raise SystemExit("the examples' system message and few-shot turns differ; one lm-eval task cannot hold them")
    system, pairs = json.loads(shared.pop())
    data = folder / "addition_chat.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        for ex in examples:
            question = split_messages(task.messages(ex))[2]
            f.write(json.dumps({"id": ex.id, "question": question, "target": ex.reference}) + "\n")
    samples = ", ".join(json.dumps({"id": f"fewshot-{i}", "question": u, "target": a})
                        for i, (u, a) in enumerate(pairs))
    (folder / f"{LM_EVAL_CHAT_TASK}.yaml").write_text(
        f"task: {LM_EVAL_CHAT_TASK}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    test: {json.dumps(str(data))}\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_target: "{{target}}"\n'
        f"num_fewshot: {len(pairs)}\n"
        "fewshot_config:\n"
        "  sampler: first_n\n"
        f"  samples: [{samples}]\n"
        "generation_kwargs:\n"
        f"  until: [{', '.join(json.dumps(s) for s in stop)}]\n"
        f"  max_gen_toks: {max_new}\n"
        "  do_sample: false\n"
        "metric_list:\n"
        "  - metric: exact_match\n"
        "    aggregation: mean\n"
        "    higher_is_better: true\n"
        "metadata:\n"
        "  version: 1.0\n", encoding="utf-8")
    return system


def compare_e2e_chat(cfg: et.Config, label: str, model: Any, tok: Any, workdir: Path,
                     notes: list[str]) -> list[et.Row]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from evalkit.models.hf_chat import encode_prompt, render_chat
    from evalkit.run.runner import evaluate

    level = 2
    task = et.load_addition()
    chat = task.for_chat()
    examples = task.examples("eval", n=cfg.n_e2e, seed=cfg.seed, level=level)
    by_id = {ex.id: ex for ex in examples}
    max_new, stop = chat.generation.max_new_tokens, chat.generation.stop
    folder = workdir / f"lm_eval_chat_{len(examples)}"
    folder.mkdir(exist_ok=True)
    system = write_chat_task(folder, task, examples, max_new, stop)
    with et.quiet():
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=cfg.batch_size, device="cpu")
        tm = TaskManager(include_path=str(folder), include_defaults=False)

    def run_evalkit() -> Any:
        return evaluate(model=model, tokenizer=tok, tasks=[task], n=cfg.n_e2e, seed=cfg.seed, level=level,
                        batch_size=cfg.batch_size, chat=True)

    def run_lm_eval() -> Any:
        with et.quiet():
            return lm_eval.simple_evaluate(model=lm, tasks=[LM_EVAL_CHAT_TASK], task_manager=tm, log_samples=True,
                                           apply_chat_template=True, system_instruction=system,
                                           fewshot_as_multiturn=True)

    res = et.race({"evalkit": run_evalkit, "lm-eval": run_lm_eval}, cfg.reps)
    record = res["evalkit"].result
    ours = {s["example_id"]: s["output"] for s in record.samples()}
    theirs: dict[str, str] = {}
    ctx_diff = ids_diff = 0
    first_diff = None
    for s in res["lm-eval"].result["samples"][LM_EVAL_CHAT_TASK]:
        ex = by_id[s["doc"]["id"]]
        theirs[ex.id] = s["resps"][0][0]
        context = et.lm_eval_context(s) or ""
        want = render_chat(tok, task.messages(ex))
        if context != want:
            ctx_diff += 1
            first_diff = first_diff or (context, want)
        enc, _ = lm.tok_batch_encode([context])
        if enc[0].tolist() != encode_prompt(tok, task.messages(ex)):
            ids_diff += 1
    n = len(examples)
    agree = sum(1 for i, o in ours.items() if theirs.get(i) == o)
    tokens = record.tasks[0]["timings"]["generated_tokens"]
    prompt_ids = [encode_prompt(tok, task.messages(ex)) for ex in examples]
    shared = min(next((k for k, (x, y) in enumerate(zip(p, prompt_ids[0])) if x != y), len(p)) for p in prompt_ids)
    lm_acc = res["lm-eval"].result["results"][LM_EVAL_CHAT_TASK].get("exact_match,none")
    notes.append(f"[{label}] per-call (chat): {n} addition prompts (level {level}), batch {cfg.batch_size}, "
                 f"max_new_tokens {max_new}, stop {list(stop)!r}; evalkit pass rate {record.tasks[0]['passes']}/{n}, "
                 f"lm-eval exact_match {lm_acc}; answers agree {agree}/{n}; lm-eval chat contexts differing from "
                 f"evalkit's rendered prompt: {ctx_diff}/{n}, token ids differing: {ids_diff}/{n}; "
                 f"{sum(map(len, prompt_ids))} prompt tokens (the first {shared} of each, system message and few-shot "
                 f"turn, the same in every prompt) for {tokens} answer tokens: prefill is most of the work.")
    if first_diff:
        notes.append(f"[{label}] first context difference: lm-eval {first_diff[0]!r} vs evalkit {first_diff[1]!r}")
    for i in [i for i, o in ours.items() if theirs.get(i) != o][:5]:
        notes.append(f"[{label}] per-call mismatch: {by_id[i].prompt!r}: evalkit {ours[i]!r}, "
                     f"lm-eval {theirs.get(i)!r}")
    t = record.data["timings"]
    notes.append(f"[{label}] per-call: evalkit's last call spent {t['total_s']:.3f} s in evaluate(): "
                 f"{t['generate_s']:.3f} s generating, {t['check_s']:.3f} s checking, the rest on examples, "
                 "the weights fingerprint and the record.")
    ag = f"{agree}/{n}"
    base = et.Row("per-call (chat)", label, "lm-eval simple_evaluate", res["lm-eval"].median, n, tokens, agree=ag,
                  times=res["lm-eval"].times)
    ours_row = et.Row("per-call (chat)", label, "evalkit evaluate", res["evalkit"].median, n, tokens,
                      baseline=base.name, goal=5.0, ratio=base.seconds / res["evalkit"].median, agree=ag,
                      times=res["evalkit"].times)
    return [ours_row, base]


def core_prompts(n: int, seed: int) -> list[tuple[str, list[Any], tuple[str, ...]]]:
    """(task name, chat messages, chat stop strings) of `n` rows, the tasks of CORE_TASKS interleaved."""
    from evalkit.discovery.registry import load_path

    tasks = {}
    for name, _ in CORE_TASKS:
        if name not in tasks:
            tasks[name] = next(t for t in load_path(et.ROOT / "tasks" / f"{name}.py") if t.name == name)
    per = -(-n // len(CORE_TASKS))
    pools = [[(name, tasks[name].messages(ex), tuple(tasks[name].for_chat().generation.stop))
              for ex in tasks[name].examples("eval", n=per, seed=seed, level=level)] for name, level in CORE_TASKS]
    rows = [pool[i] for i in range(per) for pool in pools if i < len(pool)]
    return rows[:n]


def compare_core_chat(cfg: et.Config, label: str, model: Any, tok: Any, notes: list[str]) -> list[et.Row]:
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from evalkit.core.extract import cut_at_stop
    from evalkit.core.task import GenerationConfig
    from evalkit.models.hf import HFBackend
    from evalkit.models.hf_chat import encode_prompts, render_chat

    items = core_prompts(cfg.n_gen, cfg.seed)
    messages = [m for _, m, _ in items]
    stops = [s for _, _, s in items]
    texts = [render_chat(tok, m) for m in messages]
    backend = HFBackend(model, tok, batch_size=cfg.batch_size, decoder="loop")
    full = [o[0] for o in backend.generate(messages, GenerationConfig(max_new_tokens=cfg.max_new, stop=()))]
    full_tokens = backend.last_stats.generated_tokens
    reference = [cut_at_stop(f, s) for f, s in zip(full, stops)]
    run_evalkit = et.StopGroups(backend, messages, stops, cfg.max_new)  # one call per stop set

    with et.quiet():
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=cfg.batch_size, device="cpu")
    requests = [Instance(request_type="generate_until", doc={}, idx=i,
                         arguments=(t, {"until": list(s), "max_gen_toks": cfg.max_new, "do_sample": False}))
                for i, (t, s) in enumerate(zip(texts, stops))]

    def run_hflm() -> list[str]:
        with et.quiet():
            return lm.generate_until(requests, disable_tqdm=True)

    ids = encode_prompts(tok, messages)  # the rendered text, no special tokens added: as evalkit and HFLM
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    eos = sorted(backend.eos_ids)
    pad = backend.pad_id

    def run_raw() -> list[str]:
        out = [""] * len(ids)
        with torch.inference_mode():
            for b in range(0, len(order), cfg.batch_size):
                idx = order[b:b + cfg.batch_size]
                width = max(len(ids[i]) for i in idx)
                input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for k, i in enumerate(idx):
                    input_ids[k, width - len(ids[i]):] = torch.tensor(ids[i])
                    mask[k, width - len(ids[i]):] = 1
                seqs = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=cfg.max_new,
                                      do_sample=False, eos_token_id=eos, pad_token_id=pad)
                for i, row in zip(idx, seqs[:, width:].tolist()):
                    cut = next((k for k, t in enumerate(row) if t in eos), len(row))
                    out[i] = cut_at_stop(tok.decode(row[:cut], skip_special_tokens=True), stops[i])
        return out

    res = et.race({"evalkit": run_evalkit, "hflm": run_hflm, "raw": run_raw}, cfg.reps)
    tokens, n = run_evalkit.generated, len(messages)
    agree = {k: sum(1 for a, b in zip(res[k].result, reference) if a == b) for k in res}
    prompt_lens = sorted(len(i) for i in ids)
    names = sorted({f"{t}" for t, _, _ in items})
    notes.append(f"[{label}] generation core (chat): {n} chat prompts of {', '.join(names)} (prompt tokens min "
                 f"{prompt_lens[0]} / median {statistics.median(prompt_lens):g} / max {prompt_lens[-1]}), batch "
                 f"{cfg.batch_size}, max_new_tokens {cfg.max_new}, {len(run_evalkit.groups)} stop group(s) "
                 f"{sorted(run_evalkit.groups)!r}; evalkit generated {tokens} tokens with stops "
                 f"({full_tokens} without); "
                 "agreement with the stop-free greedy pass cut at each row's stop: "
                 + ", ".join(f"{k} {v}/{n}" for k, v in agree.items()))
    for k in res:
        bad = [i for i in range(n) if res[k].result[i] != reference[i]]
        for i in bad[:3]:
            notes.append(f"[{label}] core mismatch ({k}): {messages[i][-1]['content']!r}: got {res[k].result[i]!r}, "
                         f"want {reference[i]!r}")
    hflm = et.Row("core (chat)", label, "HFLM generate_until", res["hflm"].median, n, tokens,
                  agree=f"{agree['hflm']}/{n}", times=res["hflm"].times)
    raw = et.Row("core (chat)", label, "raw model.generate", res["raw"].median, n, tokens,
                 agree=f"{agree['raw']}/{n}", times=res["raw"].times)
    ev, ag = res["evalkit"].median, f"{agree['evalkit']}/{n}"
    return [et.Row("core (chat)", label, "evalkit HFBackend (loop)", ev, n, tokens, hflm.name, 1.3, hflm.seconds / ev,
                   ag, res["evalkit"].times),
            et.Row("core (chat)", label, "evalkit HFBackend (loop)", ev, n, tokens, raw.name, 1.0, raw.seconds / ev,
                   ag, res["evalkit"].times),
            hflm, raw]


def run(cfg: et.Config, workdir: Path, notes: list[str]) -> list[et.Row] | None:
    """Both comparisons on SmolLM2-135M-Instruct; None when the model is not cached."""
    path = model_folder()
    if path is None:
        return None
    from evalkit.models.tiny import load_model

    t0 = time.perf_counter()
    model, tok = load_model(path)
    params = sum(p.numel() for p in model.parameters())
    label = f"SmolLM2-135M-Instruct ({params / 1e6:.2f}M)"
    notes.append(f"[{label}] loaded from {path} in {time.perf_counter() - t0:.1f} s (float32, CPU; not timed).")
    print(f"# {label}: per-call comparison (chat) ...", file=sys.stderr, flush=True)
    rows = compare_e2e_chat(cfg, label, model, tok, workdir, notes)
    print(f"# {label}: generation core (chat) ...", file=sys.stderr, flush=True)
    return rows + compare_core_chat(cfg, label, model, tok, notes)
