"""Adaptive evaluation on the addition learning curve: samples per decision and time to target, vs the fixed-n loop.

The learning curve is finetune/addition.yaml's: at each evaluation (every 100 steps) the true pass rate is taken to be
the rate a run of the recipe measured there on 200 held-out sums (built in: a run on this 2-core machine; or
`--run DIR`, a finetune output folder). At each evaluation, `--reps` simulated evaluations draw Bernoulli samples at
that rate and judge them two ways, on the same draws:

- fixed: n = 200 samples, "met" when the rate >= the target (0.95): the loop's rule without --adaptive;
- adaptive: `evalkit.run.sequential` at `--alpha` (looks after 8, 12, 18, ... samples, cap 200; undecided at the cap,
  the fixed rule on the 200).

Printed per evaluation: the mean samples each used, how often each decided wrongly (met while the true rate is below
the target, missed while it is at or above), and the adaptive decisions; then samples per decision over the curve
(goal <= 0.4x of fixed n at the same error rate) and the time to target: the loop's stop rule (every target met on 2
consecutive evaluations) on the simulated decisions, with the run's training seconds and evaluation seconds from a
cost model measured here on the ~1M addition model (`evaluate` and `HFBackend.generate` at 8 and 200 prompts: a
fixed cost per evaluation, a cost per generation round and per sample). Appends a section to bench/RESULTS.md.

    .venv/bin/python bench/adaptive.py                 # ~1 minute
    .venv/bin/python bench/adaptive.py --quick         # fewer simulated runs, no timing; writes nothing
    .venv/bin/python bench/adaptive.py --run reports/addition   # the curve of another run
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP waits make torch crawl on shared cores

from evalkit.run import sequential as seq  # noqa: E402

# finetune/addition.yaml, run to its stop (step 1,700: met at 1,600 and 1,700) on this machine (2 threads, shared):
# (step, pass rate on 200 held-out sums, wall seconds at the end of that evaluation, seconds the evaluation took).
CURVE = [
    (0, 0.0, 19.89, 0.845), (100, 0.005, 70.92, 0.543), (200, 0.015, 119.75, 1.010), (300, 0.005, 171.90, 0.477),
    (400, 0.015, 226.41, 0.281), (500, 0.015, 280.50, 0.692), (600, 0.015, 326.60, 0.261),
    (700, 0.02, 370.32, 0.266), (800, 0.305, 415.59, 0.236), (900, 0.455, 456.62, 0.269),
    (1000, 0.89, 504.21, 0.506), (1100, 0.815, 567.89, 0.331), (1200, 0.95, 617.60, 0.216),
    (1300, 0.92, 658.06, 0.290), (1400, 0.985, 696.88, 0.212), (1500, 0.945, 753.73, 0.533),
    (1600, 0.99, 797.03, 0.235), (1700, 0.97, 848.05, 0.302),
]
TARGET, N, CONFIRM = 0.95, 200, 2


def read_run(folder: Path) -> list[tuple[int, float, float, float]]:
    """The curve of a finetune output folder: its history and each evaluation's own seconds."""
    record = json.loads((folder / "record.json").read_text())
    curve = []
    for h in record["meta"]["training"]["history"]:
        [rate] = [r["rate"] for r in h["rates"].values()]
        ev = json.loads((folder / h["record"] / "record.json").read_text())
        curve.append((h["step"], rate, h["wall_s"], ev["timings"]["total_s"]))
    return curve


def simulate(rate: float, reps: int, rng: random.Random, table: dict[int, tuple[int, int]]
             ) -> list[tuple[str, int, int, bool, bool]]:
    """(adaptive decision: met/missed/cap, samples used, rounds, adaptive "met", fixed-n "met") for `reps`
    evaluations at `rate`, both rules on the same draws."""
    looks = seq.looks(N)
    out = []
    for _ in range(reps):
        stream = [rng.random() < rate for _ in range(N)]
        fixed_met = sum(stream) / N >= TARGET
        decision, done, passes, rounds = "cap", 0, 0, 0
        for n in looks:
            passes += sum(stream[done:n])
            done, rounds = n, rounds + 1
            met, missed = table[n]
            if passes >= met or passes <= missed:
                decision = "met" if passes >= met else "missed"
                break
        out.append((decision, done, rounds, decision == "met" or (decision == "cap" and fixed_met), fixed_met))
    return out


class Costs(TypedDict):
    """`measure_costs`'s cost model: seconds, and `generate`'s median seconds by prompt count."""

    per_sample: float
    per_round: float
    fixed_eval: float
    per_evaluation: float
    generate: dict[int, float]


def measure_costs(threads: int, reps: int) -> Costs:
    """Seconds per evaluation (fixed), per generation round and per sample, on the ~1M addition model."""
    import torch

    torch.set_num_threads(threads)
    from evalkit.core.task import GenerationConfig
    from evalkit.discovery.registry import load_path
    from evalkit.models.hf import HFBackend
    from evalkit.models.tiny import build_char_tokenizer, tiny_llama
    from evalkit.run.runner import evaluate

    task = load_path(REPO / "tasks" / "addition.py")[0]
    tok = build_char_tokenizer()
    model = tiny_llama(tok, hidden=128, layers=4, heads=4, intermediate=512, max_positions=64)
    examples = task.examples("eval", n=N, seed=0, level=3)
    backend = HFBackend(model, tok, batch_size=512)
    gen = GenerationConfig(max_new_tokens=task.generation.max_new_tokens or 10, stop=task.generation.stop)

    def generate(k: int) -> object:  # one generation round on the first k prompts
        return backend.generate([e.prompt for e in examples[:k]], gen, seed=0)

    sizes = (8, 27, 93, 200)  # round sizes of the look schedule, and the full evaluation
    calls: dict[int, Callable[[], object]] = {k: functools.partial(generate, k) for k in sizes}
    calls[0] = lambda: evaluate(model=model, tokenizer=tok, tasks=[task], n=N, level=3, batch_size=128,
                                keep_samples=False)
    times: dict[int, list[float]] = {k: [] for k in calls}
    for rep in range(reps + 1):  # interleaved, so that a burst of load hits every size alike; the first is warm-up
        for k, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            if rep:
                times[k].append(time.perf_counter() - t0)
    seconds = [statistics.median(times[k]) for k in sizes]
    whole = statistics.median(times[0])
    mean_k, mean_s = statistics.fmean(sizes), statistics.fmean(seconds)  # least squares: s = round + k * sample
    slope = (sum((k - mean_k) * (s - mean_s) for k, s in zip(sizes, seconds))
             / sum((k - mean_k) ** 2 for k in sizes))
    per_sample = max(0.0, slope)
    per_round = max(0.0, mean_s - per_sample * mean_k)
    return {"per_sample": per_sample, "per_round": per_round, "fixed_eval": whole,
            "per_evaluation": max(0.0, whole - per_round - N * per_sample),
            "generate": dict(zip(sizes, seconds))}


def eval_seconds(costs: Costs, used: int, rounds: int) -> float:
    return costs["per_evaluation"] + rounds * costs["per_round"] + used * costs["per_sample"]


def time_to_target(curve, decisions_per_eval, costs, adaptive: bool) -> list[tuple[float, float] | None]:
    """(seconds to the loop's stop, of them evaluating) for each simulated replicate (None: not stopped within
    the curve)."""
    reps = len(decisions_per_eval[0])
    out: list[tuple[float, float] | None] = []
    for r in range(reps):
        streak, recorded, modeled = 0, 0.0, 0.0
        stop = None
        for i, (_, _, wall, eval_s) in enumerate(curve):
            _, used, rounds, adaptive_met, fixed_met = decisions_per_eval[i][r]
            met = adaptive_met if adaptive else fixed_met
            recorded += eval_s
            modeled += eval_seconds(costs, used, rounds) if adaptive else eval_seconds(costs, N, 1)
            streak = streak + 1 if met else 0
            if streak >= CONFIRM:
                stop = (wall - recorded + modeled, modeled)
                break
        out.append(stop)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, help="a finetune output folder whose learning curve to use")
    ap.add_argument("--alpha", type=float, default=seq.DEFAULT_ALPHA)
    ap.add_argument("--reps", type=int, default=4000, help="simulated evaluations per point (default 4000)")
    ap.add_argument("--timing-reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="400 simulated evaluations, no timing, nothing written")
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    reps = 400 if args.quick else args.reps
    load_before = os.getloadavg()
    started = time.perf_counter()
    curve = read_run(args.run) if args.run else CURVE
    table = {n: (met, missed) for n, met, missed in seq.thresholds(TARGET, args.alpha, seq.looks(N))}
    rng = random.Random(args.seed)
    per_eval = [simulate(rate, reps, rng, table) for _, rate, _, _ in curve]

    rows = [["step", "true rate", "fixed n", "adaptive n (mean)", "adaptive met / missed / cap", "wrong: fixed",
             "wrong: adaptive"]]
    total_adaptive = wrong_fixed = wrong_adaptive = 0.0
    for (step, rate, _, _), sims in zip(curve, per_eval):
        truth = rate >= TARGET
        used = statistics.fmean(s[1] for s in sims)
        share = {d: sum(s[0] == d for s in sims) / reps for d in ("met", "missed", "cap")}
        wf = sum(s[4] != truth for s in sims) / reps
        wa = sum(s[3] != truth for s in sims) / reps
        total_adaptive += used
        wrong_fixed += wf
        wrong_adaptive += wa
        rows.append([str(step), f"{rate:.1%}", str(N), f"{used:.1f}",
                     " / ".join(f"{share[d]:.0%}" for d in ("met", "missed", "cap")), f"{wf:.1%}", f"{wa:.1%}"])
    k = len(curve)
    ratio = total_adaptive / (N * k)
    rows.append(["all", "", f"{N}", f"{total_adaptive / k:.1f}", "", f"{wrong_fixed / k:.1%}",
                 f"{wrong_adaptive / k:.1%}"])
    # "The same error rate": the adaptive rule's wrong decisions per evaluation within half a point of fixed n's.
    verdict = "PASS" if ratio <= 0.4 and wrong_adaptive / k <= wrong_fixed / k + 0.005 else "BELOW"
    lines = [f"samples per decision: adaptive {total_adaptive / k:.1f} vs fixed {N} = {ratio:.2f}x "
             f"(goal <= 0.4x at the same error rate: {verdict}); wrong decisions per evaluation: adaptive "
             f"{wrong_adaptive / k:.1%}, fixed {wrong_fixed / k:.1%}"]
    source = f"run {args.run}" if args.run else "finetune/addition.yaml, built in (a run to step 1,700)"
    notes = [f"curve: {source}; {k} evaluations; target {TARGET:.0%}; {reps} simulated evaluations per point on the "
             f"same draws for both rules; alpha {args.alpha:g}; looks {seq.looks(N)}",
             "wrong: met while the true rate < target, or missed while >= target (a cap decision counts as made; "
             "the anytime-valid guarantee covers the met/missed decisions before the cap)"]
    if not args.quick:
        costs = measure_costs(args.threads, args.timing_reps)
        fixed = [t for t in time_to_target(curve, per_eval, costs, adaptive=False) if t is not None]
        adaptive = [t for t in time_to_target(curve, per_eval, costs, adaptive=True) if t is not None]
        eval_fixed = eval_seconds(costs, N, 1)
        fixed_t, adaptive_t = statistics.median(t[0] for t in fixed), statistics.median(t[0] for t in adaptive)
        lines.append(f"time to target (median of {reps}): fixed {fixed_t:.1f} s ({len(fixed) / reps:.0%} stopped "
                     f"within the curve), adaptive {adaptive_t:.1f} s ({len(adaptive) / reps:.0%}): "
                     f"{adaptive_t / fixed_t:.3f}x; of it evaluating: fixed "
                     f"{statistics.median(t[1] for t in fixed):.2f} s, adaptive "
                     f"{statistics.median(t[1] for t in adaptive):.2f} s")
        notes.append(f"cost model (~1M addition model, untrained: every row runs to max_new_tokens, {args.threads} "
                     f"threads): evaluate() n={N} {costs['fixed_eval']:.3f} s; per evaluation "
                     f"{costs['per_evaluation']:.3f} s + per round {costs['per_round']:.3f} s + per sample "
                     f"{1000 * costs['per_sample']:.2f} ms (least squares over generate() of "
                     + ", ".join(f"{k} prompts {t:.3f} s" for k, t in costs["generate"].items())
                     + f"); a fixed evaluation {eval_fixed:.3f} s; the run's own evaluations took "
                     f"{sum(c[3] for c in curve):.1f} s of {curve[-1][2]:.0f} s")
    load_after = os.getloadavg()
    print(markdown(rows))
    for line in lines + notes:
        print("- " + line)
    if not (args.quick or args.no_append):
        import torch

        env = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "python": platform.python_version(),
               "torch": torch.__version__, "load average (1 min) before, after":
               f"{load_before[0]:.2f}, {load_after[0]:.2f}", "runtime": f"{time.perf_counter() - started:.0f} s"}
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        body = [f"\n## {stamp} — adaptive.py\n", *[f"- {k}: {v}" for k, v in env.items()], "", markdown(rows), ""]
        body += [f"- {line}" for line in lines + notes]
        with open(args.results, "a", encoding="utf-8") as fh:
            fh.write("\n".join(body) + "\n")
        print(f"appended to {args.results}")
    return 0


def markdown(rows: list[list[str]]) -> str:
    head, *body = rows
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                      *["| " + " | ".join(r) + " |" for r in body]])


if __name__ == "__main__":
    raise SystemExit(main())
