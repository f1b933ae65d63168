"""Scale: `evalkit run` over a JSONL data task of 10k, 30k and 100k examples with a `python:` model — peak memory and
wall time at each size, then the resume of the largest run (a full rerun: everything resumed; and a run stopped with
SIGINT part way, then rerun).

Everything is built in a temporary folder (nothing is downloaded): a declarative task (`tasks/qa.yaml` naming
`qa.jsonl`, the way a user declares a data task) with n rows of a short passage, a question and its answer, and a
solver module (`python:solver:answer`, wrong on about 1 in 9 rows, so the reports have failures to show). Each run is
`python -m evalkit run qa --model python:solver:answer -n N --tasks-dir tasks --reports-dir R` in a subprocess, the
way a user runs it; its peak RSS is what `wait4` reports for it (the largest of the evalkit process and its check
workers), its wall time from start to exit.

Goals (issue 17, item 6): peak RSS at 100k / peak RSS at 10k <= 1.10 (flat: memory does not grow with n), and the
100k resume in seconds (<= 10 s) — stated beside the first run's time. Appends a section to bench/RESULTS.md.

    .venv/bin/python bench/scale.py                  # 10k, 30k, 100k; ~1.5 minutes on 2 busy cores
    .venv/bin/python bench/scale.py --quick          # 2k, 6k, 20k; writes only with --results PATH
    .venv/bin/python bench/scale.py --evalkit DIR    # another evalkit source tree (DIR/evalkit), e.g. `git archive`
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from code_checks import cpu_model  # bench/ is on the path: this script's folder

REPO = Path(__file__).resolve().parent.parent
RSS_GOAL = 1.10  # peak RSS at the largest n / at the smallest
RESUME_GOAL_S = 10.0  # the largest run's full resume

WORDS = ("river", "stone", "market", "lantern", "orchard", "harbor", "signal", "copper", "meadow", "engine", "violet",
         "bridge", "archive", "pepper", "falcon", "garden", "silver", "ticket", "canvas", "thunder")
TASK_YAML = """\
name: qa
version: 1
description: Read a passage and answer with the number it asks for.
data: qa.jsonl
prompt: "{passage}\\nQuestion: {question}\\nAnswer:"
reference: " {answer}"
generation: {max_new_tokens: 16, stop: ["\\n"]}
check: {name: exact}
target: 0.8
"""
SOLVER = '''\
import re


def answer(prompt):
    """Adds the two numbers of the question; wrong when their sum is a multiple of 9."""
    a, b = map(int, re.findall(r"\\d+", prompt.rsplit("Question:", 1)[1])[:2])
    return " " + str(a + b + (1 if (a + b) % 9 == 0 else 0))
'''


def build(folder: Path, n: int) -> None:
    """tasks/qa.yaml, tasks/qa.jsonl (n distinct rows) and solver.py in `folder`."""
    (folder / "tasks").mkdir(parents=True)
    (folder / "tasks" / "qa.yaml").write_text(TASK_YAML)
    (folder / "solver.py").write_text(SOLVER)
    rng = random.Random(n)
    with open(folder / "tasks" / "qa.jsonl", "w", encoding="utf-8") as fh:
        for i in range(n):
            a, b = rng.randrange(10**6), i  # i makes every row distinct
            passage = " ".join(rng.choice(WORDS) for _ in range(18))
            fh.write(json.dumps({"passage": f"{passage}. The {rng.choice(WORDS)} count was {a}.",
                                 "question": f"What is {a} plus {b}?", "answer": str(a + b)}) + "\n")


# A small launcher forks and execs evalkit and reports what wait4 says of it: a process spawned straight from this
# script would start with this script's resident set on its high-water mark (exec keeps it), not only its own.
LAUNCHER = """
import json, os, signal, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
signal.signal(signal.SIGINT, lambda *_: os.kill(pid, signal.SIGINT))
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    json.dump({"maxrss_kib": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime}, fh)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run(folder: Path, n: int, reports: str, evalkit_src: Path | None, stop_at_bytes: int | None = None) -> dict:
    """One `evalkit run` in a subprocess: exit code, wall seconds, peak RSS (MiB), CPU seconds, its journal line;
    with `stop_at_bytes`, SIGINT once its journal is that large."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*([str(evalkit_src)] if evalkit_src else []), str(folder)]),
           "COLUMNS": "120", "NO_COLOR": "1"}
    cmd = [sys.executable, "-m", "evalkit", "run", "qa", "--model", "python:solver:answer", "-n", str(n),
           "--tasks-dir", "tasks", "--reports-dir", reports]
    log_out, log_err, usage_file = folder / f"{reports}.out", folder / f"{reports}.err", folder / f"{reports}.usage"
    sent = False
    with open(log_out, "wb") as out_f, open(log_err, "wb") as err_f:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(usage_file), *cmd], cwd=folder, env=env,
                                stdout=out_f, stderr=err_f)
        while proc.poll() is None:
            if stop_at_bytes is not None and not sent:
                journals = list((folder / reports).glob("*/journal.jsonl"))
                if journals and journals[0].stat().st_size >= stop_at_bytes:
                    proc.send_signal(signal.SIGINT)  # the launcher passes it on
                    sent = True
            time.sleep(0.02)
        wall = time.perf_counter() - start
    usage = json.loads(usage_file.read_text())
    code = proc.returncode
    out, err = log_out.read_text(errors="replace"), log_err.read_text(errors="replace")
    journal = re.search(r"journal: ([\d,]+) samples? resumed, ([\d,]+) generated", err + out)
    records = list((folder / reports).glob("*/record.json"))
    counts = None
    if records and code in (0, 1):
        task = json.loads(records[0].read_text())["tasks"][0]
        counts = {k: task[k] for k in ("n_examples", "n_samples", "passes", "rate", "errors", "timeouts",
                                       "pass_at_k", "per_level")}
    journals = list((folder / reports).glob("*/journal.jsonl"))
    return {"n": n, "code": code, "wall_s": wall, "rss_mib": usage["maxrss_kib"] / 1024, "cpu_s": usage["cpu_s"],
            "journal_lines": journals[0].read_bytes().count(b"\n") if journals else 0,
            "journal_mib": journals[0].stat().st_size / 2**20 if journals else 0.0,
            "resumed": int(journal.group(1).replace(",", "")) if journal else None,
            "generated": int(journal.group(2).replace(",", "")) if journal else None, "counts": counts,
            "tail": (out + err)[-600:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=None, help="comma-separated example counts (default 10000,30000,100000)")
    ap.add_argument("--quick", action="store_true", help="2k, 6k, 20k; nothing written unless --results")
    ap.add_argument("--evalkit", type=Path, help="an evalkit source tree to measure instead (DIR/evalkit)")
    ap.add_argument("--label", default="", help="what --evalkit is, for the section (e.g. 'HEAD before the change')")
    ap.add_argument("--results", type=Path, help="append here (default bench/RESULTS.md; --quick: nothing)")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in (args.sizes or ("2000,6000,20000" if args.quick else "10000,30000,100000")).split(",")]
    results = args.results or (None if args.quick or args.no_append else REPO / "bench" / "RESULTS.md")
    src = args.evalkit.resolve() if args.evalkit else None
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="evalkit-scale-") as tmp:
        first: dict[int, dict] = {}
        for n in sizes:
            folder = Path(tmp) / f"n{n}"
            build(folder, n)
            r = first[n] = run(folder, n, "reports", src)
            data_mib = (folder / "tasks" / "qa.jsonl").stat().st_size / 2**20
            print(f"n={n}: exit {r['code']}, {r['wall_s']:.1f} s, peak RSS {r['rss_mib']:.1f} MiB, data "
                  f"{data_mib:.1f} MiB, journal {r['journal_mib']:.1f} MiB ({r['generated']} generated)", flush=True)
            rows.append([f"first run, n = {n:,}", str(r["code"]), f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}",
                         f"{r['rss_mib']:.1f}",
                         f"{r['resumed']:,} / {r['generated']:,}" if r["resumed"] is not None else "?",
                         f"data {data_mib:.1f} MiB, journal {r['journal_mib']:.1f} MiB"])
        big = sizes[-1]
        folder = Path(tmp) / f"n{big}"
        full = run(folder, big, "reports", src)
        same = full["counts"] == first[big]["counts"]
        print(f"rerun n={big}: exit {full['code']}, {full['wall_s']:.1f} s, peak RSS {full['rss_mib']:.1f} MiB, "
              f"{full['resumed']} resumed / {full['generated']} generated; counts equal: {same}", flush=True)
        rows.append([f"rerun of n = {big:,} (all resumed)", str(full["code"]), f"{full['wall_s']:.1f}",
                     f"{full['cpu_s']:.1f}", f"{full['rss_mib']:.1f}", f"{full['resumed']:,} / {full['generated']:,}",
                     f"record counts equal the first run's: {same}"])
        stop_at = int(0.4 * first[big]["journal_mib"] * 2**20)  # SIGINT at about 40 % of the samples
        stopped = run(folder, big, "reports-int", src, stop_at_bytes=stop_at)
        print(f"interrupted n={big}: exit {stopped['code']} after {stopped['wall_s']:.1f} s, "
              f"{stopped['journal_lines']} samples journaled", flush=True)
        rows.append([f"n = {big:,}, SIGINT part way", str(stopped["code"]), f"{stopped['wall_s']:.1f}",
                     f"{stopped['cpu_s']:.1f}", f"{stopped['rss_mib']:.1f}", f"0 / {stopped['journal_lines']:,}",
                     "SIGINT at ~40 % of the journal; exit 4 = interrupted, samples saved"])
        again = run(folder, big, "reports-int", src)
        same_again = again["counts"] == first[big]["counts"]
        print(f"after SIGINT, rerun: exit {again['code']}, {again['wall_s']:.1f} s, peak RSS {again['rss_mib']:.1f} "
              f"MiB, {again['resumed']} resumed / {again['generated']} generated; counts equal: {same_again}",
              flush=True)
        rows.append(["rerun after SIGINT", str(again["code"]), f"{again['wall_s']:.1f}", f"{again['cpu_s']:.1f}",
                     f"{again['rss_mib']:.1f}",
                     f"{again['resumed']:,} / {again['generated']:,}" if again["resumed"] is not None else "?",
                     f"record counts equal the uninterrupted run's: {same_again}"])
    load_after = os.getloadavg()
    small = sizes[0]
    rss_ratio = first[big]["rss_mib"] / first[small]["rss_mib"]
    resume_rss_ratio = full["rss_mib"] / first[small]["rss_mib"]
    resume_ratio = full["wall_s"] / first[big]["wall_s"]
    ok_rss = rss_ratio <= RSS_GOAL
    ok_resume = full["wall_s"] <= RESUME_GOAL_S and full["generated"] == 0 and same
    lines = [
        f"peak RSS, first run: {first[big]['rss_mib']:.1f} MiB at n = {big:,} vs {first[small]['rss_mib']:.1f} MiB at "
        f"n = {small:,}: {rss_ratio:.2f}x (goal <= {RSS_GOAL:.2f}x: {'PASS' if ok_rss else 'MISSED'}); "
        + ", ".join(f"{n:,}: {first[n]['rss_mib']:.1f}" for n in sizes) + " MiB",
        f"peak RSS of the full resume at n = {big:,}: {full['rss_mib']:.1f} MiB = {resume_rss_ratio:.2f}x the "
        f"first run at n = {small:,}",
        f"resume of n = {big:,}: {full['wall_s']:.1f} s ({full['cpu_s']:.1f} s CPU), {resume_ratio:.2f}x the first "
        f"run's {first[big]['wall_s']:.1f} s ({first[big]['cpu_s']:.1f} s CPU) "
        f"(goal <= {RESUME_GOAL_S:g} s, nothing generated, counts equal: {'PASS' if ok_resume else 'MISSED'}); after "
        f"SIGINT: {again['resumed']} resumed, {again['generated']} generated in {again['wall_s']:.1f} s",
    ]
    what = f"source tree {src}{' (' + args.label + ')' if args.label else ''}" if src else "this checkout"
    notes.append(f"evalkit: {what}; each run `python -m evalkit run "
                 f"qa --model python:solver:answer -n N` in a subprocess (the task: tasks/qa.yaml naming qa.jsonl, "
                 f"max_new_tokens 16); peak RSS: wait4's ru_maxrss, the largest of the evalkit process and its "
                 f"check workers; CPU s: user + system of them all; wall times move with the load (2 shared cores)")
    print("\n".join(lines))
    if results:
        env = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {cpu_model()}",
               "python": platform.python_version(), "evalkit": evalkit_version(src),
               "load average (1/5/15 min) before, after": f"{'/'.join(f'{x:.2f}' for x in load_before)}, "
               f"{'/'.join(f'{x:.2f}' for x in load_after)}",
               "runtime": f"{time.perf_counter() - started:.0f} s"}
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        head = ["run", "exit", "wall s", "CPU s", "peak RSS MiB", "resumed / generated", "notes"]
        title = f"scale.py --evalkit ({args.label or src})" if src else "scale.py"
        body = [f"\n## {stamp} — {title}\n", *[f"- {k}: {v}" for k, v in env.items()], "",
                markdown([head, *rows]), "", *[f"- {line}" for line in lines + notes]]
        with open(results, "a", encoding="utf-8") as fh:  # append: other scripts write here too
            fh.write("\n".join(body) + "\n")
        print(f"appended to {results}")
    return 0 if full["code"] == 0 or full["code"] == 1 else 1


def evalkit_version(src: Path | None) -> str:
    code = "import evalkit; print(evalkit.__version__)"
    env = {**os.environ, "PYTHONPATH": str(src)} if src else None
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    return out.stdout.strip() or "?"


def markdown(rows: list[list[str]]) -> str:
    head, *body = rows
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                      *["| " + " | ".join(r) + " |" for r in body]])


if __name__ == "__main__":
    raise SystemExit(main())
