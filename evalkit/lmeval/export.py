"""`evalkit export lm-eval`: evalkit tasks as lm-eval task folders that the real harness runs.

For each task, `DIR/<name>/` gets three files:

- `<name>.yaml`: an lm-eval task: `output_type: generate_until`, `dataset_path: json` with the
  ABSOLUTE path of the JSONL below, `doc_to_text: prompt` (the evalkit prompt, verbatim),
  `doc_to_target: reference`, greedy `generation_kwargs` (`until`: the task's stop strings,
  `max_gen_toks`: its max new tokens), one metric `evalkit_pass` (mean, higher is better) and
  `process_results: !function utils.process_results`. `metadata.evalkit` records the task's
  name, version and source file and how the examples were drawn.
- `<name>.jsonl`: the examples, one lm-eval doc per line: `evalkit_id`, `evalkit_task`, `level`,
  `fields` (the example's fields as canonical JSON text, so that their types survive Arrow and
  the evalkit id can be recomputed), `prompt` and `reference` ("" when the task has none).
- `utils.py`: `process_results(doc, results)` loads the evalkit task from its source file,
  rebuilds the example from `fields` and scores lm-eval's response with `evalkit.score` (the
  task's own extraction and checker), returning `{"evalkit_pass": 1 or 0}`. The Python that
  runs lm-eval must be able to import evalkit.

    evalkit export lm-eval addition json_extract -o lm_tasks/
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 lm-eval run --model hf --model_args pretrained=MODEL \\
        --device cpu --include_path lm_tasks --tasks addition json_extract

(lm-eval 0.4.13's CLI always passes its own `--device`, default cuda:0, so `device=cpu` inside
`--model_args` is a duplicate keyword there: use `--device cpu`.)

Parity with `evalkit run` (tests/test_lmeval.py checks it on a tiny model): lm-eval sends the
prompt verbatim (zero-shot context == `doc_to_text`; trailing spaces and newlines kept) and its
HF backend, like evalkit's, lets the tokenizer decide on BOS (`add_bos_token=None`), so greedy
outputs are the same tokens and the verdicts the same. Where they can differ: lm-eval's
`add_bos_token=True/False`, or a prompt beginning with the BOS text (lm-eval then drops special
tokens for that whole batch); lm-eval also stops at the EOS token's *text* (a model spelling
"</s>" out is cut there, evalkit keeps it); lm-eval decodes with `tokenizer.decode`, so a
tokenizer with `clean_up_tokenization_spaces` on changes spaces there and not in evalkit; and
batched float arithmetic can, rarely, flip a near-tie argmax.

Nothing here imports lm-eval: exporting works without it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from evalkit.core.example import canonical
from evalkit.core.task import Task, default_max_new_tokens
from evalkit.errors import ConfigError, NothingToRun
from evalkit.version import __version__

METRIC = "evalkit_pass"

_UTILS = '''\
"""lm-eval scoring for the evalkit task {name!r}; written by `evalkit export lm-eval` (evalkit {evalkit}).

Regenerate it rather than editing it. `process_results` checks lm-eval's response with the
evalkit task's own extraction and checker (the task is loaded from TASK_SOURCE) and returns
{{"{metric}": 1}} for a PASS, {{"{metric}": 0}} otherwise (FAIL, ERROR, TIMEOUT).
"""

import json

TASK_NAME = {name!r}
TASK_VERSION = {version!r}
TASK_SOURCE = {source!r}  # None: the task comes from an `evalkit.tasks` entry point

_task = None


def _load():
    global _task
    if _task is None:
        from evalkit.discovery.registry import discover, load_path

        if TASK_SOURCE is not None:
            found = [t for t in load_path(TASK_SOURCE) if t.name == TASK_NAME]
            if not found:
                raise LookupError(f"{{TASK_SOURCE}} no longer defines the evalkit task {{TASK_NAME!r}}")
            task = found[0]
        else:
            task = discover([], entry_points=True).get(TASK_NAME)
        if task.version != TASK_VERSION:
            raise RuntimeError(f"evalkit task {{TASK_NAME!r}} is at version {{task.version}}, exported at "
                               f"version {{TASK_VERSION}}: export it again")
        _task = task
    return _task


def process_results(doc, results):
    from evalkit.core.scoring import score

    task = _load()
    example = task.example(json.loads(doc["fields"]), level=doc["level"])
    if example.id != doc["evalkit_id"]:
        raise ValueError(f"doc {{doc['evalkit_id']}} rebuilt as evalkit example {{example.id}}: the data file "
                         "does not belong to this task")
    scored = score(task, example, results[0])
    return {{"{metric}": 1 if scored.verdict.passed else 0}}
'''


class _Dumper(yaml.SafeDumper):
    """Strings with newlines, tabs or edge whitespace in double quotes ("\\n"), readable and exact."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    quoted = any(not ch.isprintable() for ch in value) or value != value.strip()
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"' if quoted else None)


_Dumper.add_representer(str, _str)


@dataclass(frozen=True)
class ExportedTask:
    """One exported lm-eval task: its name there and the files written."""

    name: str
    folder: Path
    yaml: Path
    data: Path
    utils: Path
    examples: int
    max_gen_toks: int


def _source_of(task: Task) -> str | None:
    if task.source and Path(task.source).is_file():
        return str(Path(task.source).resolve())
    if task.source and task.source.startswith("entry point"):
        return None
    raise ConfigError(f"task {task.name!r} has no source file to load its checker from (source: {task.source!r})",
                      field="TASK")


def _doc(ex: Any) -> dict[str, Any]:
    return {"evalkit_id": ex.id, "evalkit_task": ex.task, "level": ex.level, "fields": canonical(ex.fields),
            "prompt": ex.prompt, "reference": ex.reference if ex.reference is not None else ""}


def task_config(task: Task, name: str, data: Path, max_gen_toks: int, drawn: dict[str, Any],
                source: str | None) -> dict[str, Any]:
    """The lm-eval task config (without `process_results`, which needs the `!function` tag)."""
    return {
        "task": name,
        "output_type": "generate_until",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "num_fewshot": 0,
        # Field names, not Jinja templates: lm-eval returns the field verbatim.
        "doc_to_text": "prompt",
        "doc_to_target": "reference",
        "generation_kwargs": {"until": list(task.generation.stop), "max_gen_toks": max_gen_toks,
                              "do_sample": False, "temperature": 0.0},
        "metric_list": [{"metric": METRIC, "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": float(task.version),
                     "evalkit": {"task": task.name, "version": task.version, "source": source,
                                 "evalkit_version": __version__, **drawn}},
    }


def export_task(task: Task, out_dir: Path | str, *, n: int | None = 100, seed: int = 0, split: str = "eval",
                level: int | None = None, max_new_tokens: int | None = None, prefix: str = "") -> ExportedTask:
    """Write one task's lm-eval folder `out_dir/<prefix><name>/` (see the module docstring).

    Args:
        n, seed, split, level: which examples (as `evalkit run` draws them).
        max_new_tokens: `max_gen_toks` (default: the task's, else sized from its longest reference
            exactly as the runner sizes it without a tokenizer: characters + margin).
        prefix: prepended to the lm-eval task name (to avoid a clash with one of lm-eval's own).

    Raises:
        NothingToRun: the task has no examples in that split/level. ConfigError: no source file.
    """
    source = _source_of(task)
    examples = task.examples(split, n=n, seed=seed, level=level)
    if not examples:
        raise NothingToRun(f"task {task.name!r} has no {split} examples (level {level})")
    mnt = max_new_tokens or task.generation.max_new_tokens or default_max_new_tokens(e.reference for e in examples)
    name = f"{prefix}{task.name}"
    folder = (Path(out_dir) / name).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    data, config_file, utils = folder / f"{name}.jsonl", folder / f"{name}.yaml", folder / "utils.py"
    data.write_text("".join(json.dumps(_doc(ex), ensure_ascii=False) + "\n" for ex in examples), encoding="utf-8")
    drawn = {"split": split, "n": n, "seed": seed, "level": level, "examples": len(examples)}
    config = task_config(task, name, data, mnt, drawn, source)
    text = (f"# lm-eval task exported from the evalkit task {task.name!r} by `evalkit export lm-eval`.\n"
            + yaml.dump(config, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
            + "process_results: !function utils.process_results\n")
    config_file.write_text(text, encoding="utf-8")
    utils.write_text(_UTILS.format(name=task.name, version=task.version, source=source, metric=METRIC,
                                   evalkit=__version__), encoding="utf-8")
    return ExportedTask(name, folder, config_file, data, utils, len(examples), mnt)


def export_tasks(tasks: Sequence[Task], out_dir: Path | str, **kwargs: Any) -> list[ExportedTask]:
    """`export_task` for each task, into one include folder `out_dir`."""
    return [export_task(t, out_dir, **kwargs) for t in tasks]


__all__ = ["METRIC", "ExportedTask", "export_task", "export_tasks", "task_config"]
