"""Expert iteration (checker only) against SFT on reference answers, for the same budget.

    .venv/bin/python bench/expert_vs_sft.py            # a few minutes; appends to bench/RESULTS.md
    .venv/bin/python bench/expert_vs_sft.py --quick    # tiny sizes, < 2 min; writes only with --results

Both arms start from the same warm-started model and train the same number of steps with the
same evaluation (held-out addition, level 2, 200 problems by default), in this process:

1. warm start: the recipe finetune/expert_iteration.yaml's model, data and warm_start.steps, run
   as plain SFT (mode sft) and exported;
2. **expert iteration** (the contender): that recipe's rounds, from the warm model
   (warm_start.model) — it samples, keeps what the checker passes and trains on it; it never
   sees a reference answer;
3. **SFT on reference answers** (the baseline): mode sft from the warm model on fresh reference
   answers for as many training prompts as expert iteration samples, for the same number of steps.

Targets are set out of reach (a 100 % lower bound) so both arms spend the whole budget. Reported
per arm: held-out pass rate at the start, best and at the end, minutes, the gain in
percentage points per minute, and the minutes to reach 50 / 80 / 90 %; then the ratio
expert iteration / SFT of the gain per minute (SFT on references is the upper bound a
verifier-only method is compared to: it is told the answers). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "finetune" / "expert_iteration.yaml"
RESULTS_HEADER = """# Benchmark results

Appended by the scripts in bench/ (newest last). Each section records the machine, versions,
threads and load average it ran under: compare numbers only within a section, where every
contender ran in the same process on the same model and examples.
"""
THRESHOLDS = (0.5, 0.8, 0.9)


def _write(folder: Path, name: str, data: dict[str, Any]) -> Path:
    import yaml

    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def arms(base: dict[str, Any], warm_model: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(expert iteration recipe, SFT recipe) from the demo recipe, both starting at `warm_model`."""
    ei = copy.deepcopy(base)
    ei["name"] = "bench-expert-iteration"
    ei["warm_start"] = {"model": str(warm_model)}
    ei["model"] = {"base": "scratch"}
    ei.pop("data", None)
    task = next(iter(base["eval"]["tasks"]))
    level = base["eval"]["tasks"][task].get("level")
    for spec in ei["eval"]["tasks"].values():
        spec.update(target=1.0, use_lower_bound=True)
    ei["eval"]["confirm"] = 1
    ei["eval"].pop("patience", None)
    x = ei["expert_iteration"]
    steps = x["rounds"] * x["steps_per_round"]
    ei["budget"] = {"max_steps": steps}
    sft = {k: copy.deepcopy(v) for k, v in ei.items() if k not in ("mode", "warm_start", "expert_iteration",
                                                                    "curriculum")}
    sft.update(name="bench-sft-reference", mode="sft", model={"base": str(warm_model)},
               data={"sources": [{"task": task, "levels": {level: 1.0}, "n": x["rounds"] * x["prompts_per_round"]}]})
    sft["train"] = {**base.get("train", {}), "warmup_steps": x.get("warmup_steps", 0)}
    return ei, sft


def summary(record_path: Path) -> dict[str, Any]:
    import json

    data = json.loads(record_path.read_text())
    history = data["meta"]["training"]["history"]
    task = next(iter(history[0]["rates"]))
    points = [(h["wall_s"] / 60, h["step"], h["rates"][task]["rate"]) for h in history]
    t0, _, r0 = points[0]
    t1, s1, r1 = points[-1]
    minutes = max(t1 - t0, 1e-9)
    reach = {th: next((round(t - t0, 2) for t, _, r in points if r >= th), None) for th in THRESHOLDS}
    return {"task": task, "start": r0, "end": r1, "best": max(r for _, _, r in points), "minutes": minutes,
            "steps": s1, "gain_pp_per_min": 100 * (r1 - r0) / minutes, "reach": reach, "points": points}


def markdown(cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in cells[0]) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells[1:]]
    return "\n".join(lines)


def append_results(path: Path, title: str, env: dict[str, str], cells: list[list[str]], notes: list[str]) -> None:
    """Append a section (never rewrites what is there: other scripts append to the same file)."""
    body = [f"\n## {title}\n", *[f"- {k}: {v}" for k, v in env.items()], "", markdown(cells), ""]
    body += [f"- {n}" for n in notes]
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(RESULTS_HEADER, encoding="utf-8")
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n".join(body) + "\n")


def main(argv: list[str] | None = None) -> int:
    import yaml

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", type=Path, default=RECIPE, help="an expert_iteration recipe with warm_start.steps")
    ap.add_argument("--quick", action="store_true", help="a tiny model and few steps; writes only with --results")
    ap.add_argument("--threads", type=int, help="torch threads (default: the recipe's)")
    ap.add_argument("--results", type=Path, help="Markdown file to append to (default bench/RESULTS.md; quick: none)")
    args = ap.parse_args(argv)
    base = yaml.safe_load(args.recipe.read_text())
    if base.get("mode") != "expert_iteration" or not (base.get("warm_start") or {}).get("steps"):
        ap.error(f"{args.recipe} must be an expert_iteration recipe with warm_start.steps")
    if args.quick:
        base["model"].update(hidden=64, layers=2, heads=2, intermediate=256)
        base["warm_start"]["steps"] = 250
        base["expert_iteration"].update(rounds=3, prompts_per_round=256, steps_per_round=40)
        base["eval"]["n"] = 100
        base["eval"]["every"] = 40
    if args.threads:
        base.setdefault("train", {})["threads"] = args.threads
    base.pop("output", None)
    results = args.results or (None if args.quick else ROOT / "bench" / "RESULTS.md")
    started, load_before = time.perf_counter(), os.getloadavg()

    import torch
    import transformers

    from evalkit.train import finetune

    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="evalkit-bench-ei-") as tmp:
        work = Path(tmp)
        warm = copy.deepcopy(base)
        warm.update(name="bench-warm", mode="sft")
        for key in ("warm_start", "expert_iteration", "curriculum"):
            warm.pop(key, None)
        warm["budget"] = {"max_steps": base["warm_start"]["steps"]}
        for spec in warm["eval"]["tasks"].values():
            spec.update(target=1.0, use_lower_bound=True)
        print("# warm start (SFT on a little reference data) ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        w = finetune(_write(work, "warm", warm), output=work / "warm")
        notes.append(f"warm start: {warm['budget']['max_steps']} SFT steps on {warm['data']['sources'][0].get('n')} "
                     f"reference answers in {time.perf_counter() - t:.0f} s (shared by both arms).")
        ei, sft = arms(base, w.output / "model")
        out = {}
        for name, recipe in (("expert iteration (checker only)", ei), ("SFT on reference answers", sft)):
            print(f"# {name} ...", file=sys.stderr, flush=True)
            result = finetune(_write(work, recipe["name"], recipe), output=work / recipe["name"])
            if result.record_path is None:
                raise SystemExit(f"{name}: finetune returned no run record (only the main process writes one)")
            out[name] = s = summary(result.record_path)
            reach = " / ".join("—" if s["reach"][th] is None else f"{s['reach'][th]:.1f}" for th in THRESHOLDS)
            rows.append([name, f"{s['steps']}", f"{s['start']:.1%}", f"{s['best']:.1%}", f"{s['end']:.1%}",
                         f"{s['minutes']:.2f}", f"{s['gain_pp_per_min']:+.1f}", reach])
            notes.append(f"{name}: held-out curve (minutes, step, rate) "
                         + ", ".join(f"({m - s['points'][0][0]:.1f}, {st}, {r:.0%})" for m, st, r in s["points"]))
        a, b = out["expert iteration (checker only)"], out["SFT on reference answers"]
        ratio = a["gain_pp_per_min"] / b["gain_pp_per_min"] if b["gain_pp_per_min"] > 0 else float("nan")
        notes.insert(0, f"ratio expert iteration / SFT of the held-out gain per minute: {ratio:.2f}x (SFT is told "
                        "the answers: the upper bound a checker-only method is measured against)")
        ei_lr = ei["expert_iteration"].get("lr") or ei["train"]["lr"]
        notes.append(f"learning rates: expert iteration rounds {ei_lr}, SFT {sft['train'].get('lr')} (each arm's "
                     f"recipe setting); batch {sft['train'].get('batch_size')}; "
                     f"SFT data: {sft['data']['sources'][0]['n']} reference answers (as many prompts as expert "
                     "iteration samples).")
    x, task = base["expert_iteration"], next(iter(base["eval"]["tasks"]))
    env = {"recipe": f"{args.recipe.relative_to(ROOT) if args.recipe.is_relative_to(ROOT) else args.recipe}"
                     f"{' (--quick sizes)' if args.quick else ''}",
           "model": ", ".join(f"{k}={v}" for k, v in base["model"].items()),
           "expert iteration": f"{x['rounds']} rounds x {x['steps_per_round']} steps, k={x['k']}, "
                               f"T={x['temperature']}, {x['prompts_per_round']} prompts/round, "
                               f"cap {x['cap_per_prompt']}/prompt",
           "eval": f"{task} level {base['eval']['tasks'][task].get('level')}, "
                   f"n={base['eval'].get('n', 200)}, every {base['eval'].get('every')} steps",
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
           "versions": f"python {platform.python_version()}, torch {torch.__version__}, "
                       f"transformers {transformers.__version__}",
           "load average (1/5/15 min) before, after": ", ".join(
               "/".join(f"{v:.2f}" for v in la) for la in (load_before, os.getloadavg())),
           "runtime": f"{time.perf_counter() - started:.0f} s"}
    cells = [["arm", "steps", "start", "best", "end", "minutes", "gain pp/min", "min to 50 / 80 / 90 %"], *rows]
    print(markdown(cells))
    for k, v in env.items():
        print(f"{k}: {v}")
    for n in notes:
        print(n)
    if results is not None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        append_results(results, f"{stamp} — expert_vs_sft.py{' --quick' if args.quick else ''}", env, cells, notes)
        print(f"appended to {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
