"""lm-eval `generate_until` tasks as evalkit tasks: an evalkit task file that points at one.

    # tasks/arith.lmeval.yaml  (any *.yaml with a top-level `lm_eval:` mapping)
    lm_eval:
      include_path: ../lm_tasks      # lm-eval task folder(s), relative to this file (a YAML file: its folder)
      task: arith_gen                # the lm-eval task to load (a task, not a group)
      include_defaults: false        # also index lm-eval's ~14.7k bundled tasks (~7 s; only for
                                     #   a task that `include:`s one of their YAML files)
      num_fewshot: 0                 # default: the task's own, else 0 (as lm-eval does)
      fewshot_seed: 1234             # lm-eval's default fewshot_random_seed
      metric: exact_match            # the per-document metric that decides PASS (default: the first)
      filter: none                   # which filter pipeline's answer is scored (default: the first)
    name: arith                      # default: the lm-eval task's name
    version: 1                       # default: the task's metadata.version when integral, else 1
    target: 0.9
    tags: [lm-eval]
    check: {name: numeric}           # optional: score with an evalkit checker instead of the metric
    extract: last_number             # with `check`: the extractor (default strip)
    generation: {max_new_tokens: 16, stop: ["\\n"]}   # default: the task's generation_kwargs

Prompts are lm-eval's own: the task object is loaded with a `TaskManager` over `include_path`,
`num_fewshot` and the fewshot seed are set as `lm_eval.simple_evaluate` sets them, and
`build_all_requests` builds the Instances; an example's prompt is its Instance's context,
exactly the string lm-eval would send to a model. The examples' fields are the docs, every doc
of the task's evaluation split (test, else validation) is in evalkit's `eval` split.

Scoring without `check`: the backend's continuation (cut at the stop strings, not stripped, as
lm-eval leaves it) goes through the task's filter pipeline and `process_results`; the named
metric's value is the verdict's score and PASS means a value of at least 1 (exact_match 1.0).
Corpus-level metrics (bleu, ...) give no per-document value: name another one or use `check`.
With `check`, the task's extractor and the evalkit checker see the output and the reference
(`doc_to_target`, an index resolved through `doc_to_choice`, the first of a list).

Offline: `ensure_offline()` runs before lm-eval is imported; lm-eval's bundled tasks are only
indexed when asked for (`include_defaults: true`, or EVALKIT_LMEVAL_DEFAULTS=1, which the CLI's
`--lm-eval-defaults` sets).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from evalkit import checkers
from evalkit.core.example import Example, canonical
from evalkit.core.extract import cut_at_stop, make_extractor
from evalkit.core.task import GenerationConfig, SelftestSpec, Task, TaskSpec
from evalkit.core.verdict import Status, Verdict
from evalkit.errors import ConfigError
from evalkit.lmeval import defaults_requested, ensure_offline, task_manager

#: lm-eval's default `max_gen_toks` (HFLM and most backends) when a task sets none.
LMEVAL_DEFAULT_MAX_GEN_TOKS = 256
#: lm-eval's default fewshot_random_seed.
LMEVAL_FEWSHOT_SEED = 1234
_MARKER = re.compile(r"^lm_eval\s*:", re.MULTILINE)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["lm_eval"],
    "additionalProperties": False,
    "properties": {
        "lm_eval": {
            "type": "object",
            "required": ["include_path", "task"],
            "additionalProperties": False,
            "properties": {
                "include_path": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"},
                                                                  "minItems": 1}]},
                "task": {"type": "string", "minLength": 1},
                "include_defaults": {"type": "boolean"},
                "num_fewshot": {"type": "integer", "minimum": 0},
                "fewshot_seed": {"type": "integer"},
                "metric": {"type": "string"},
                "filter": {"type": "string"},
            },
        },
        "name": {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$"},
        "version": {"type": "integer", "minimum": 1},
        "target": {"type": "number", "minimum": 0, "maximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}},
        "description": {"type": "string"},
        "check": {"anyOf": [{"type": "string"}, {"type": "object", "required": ["name"]}]},
        "extract": {"anyOf": [{"type": "string"}, {"type": "object", "required": ["type"]}]},
        "generation": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"max_new_tokens": {"type": "integer", "minimum": 1},
                           "stop": {"type": "array", "items": {"type": "string"}}},
        },
    },
}


def is_lmeval_task_file(path: Path) -> bool:
    """Whether a YAML file is an lm-eval import: named `*.lmeval.yaml` or with a top-level `lm_eval:` key."""
    if path.name.endswith((".lmeval.yaml", ".lmeval.yml")):
        return True
    try:
        return _MARKER.search(path.read_text(encoding="utf-8")) is not None
    except (OSError, UnicodeDecodeError):
        return False  # the YAML loader reports it


def _read(file: Path) -> dict[str, Any]:
    import jsonschema

    from evalkit._yaml import read_yaml
    from evalkit.schemas import schema_error

    spec = read_yaml(file, "task file")
    errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(spec))
    if errors:
        path, message = schema_error(jsonschema.exceptions.best_match(errors))
        raise ConfigError(message, file=file, field=path)
    return spec


def _json_safe(doc: Any) -> dict[str, Any]:
    """The doc as plain JSON data (what the journal stores as the example's fields)."""
    return json.loads(canonical(dict(doc)))


class LMEvalTaskImpl:
    """The implementation behind an imported lm-eval task (what @task classes provide by hand)."""

    def __init__(self, spec: dict[str, Any], file: Path):
        self.file = file
        lm = spec["lm_eval"]
        raw_paths = lm["include_path"] if isinstance(lm["include_path"], list) else [lm["include_path"]]
        self.include_paths = [(file.parent / p).resolve() for p in raw_paths]
        for p in self.include_paths:
            if not p.exists():
                raise ConfigError(f"no such folder or file: {p} (paths are relative to this file)", file=file,
                                  field="lm_eval.include_path")
        # lm-eval indexes folders: a YAML file stands for its folder.
        self.include_paths = list(dict.fromkeys(p.parent if p.is_file() else p for p in self.include_paths))
        self.lm_name = lm["task"]
        self.task = self._load_task(lm, defaults_requested(lm.get("include_defaults")))
        cfg = self.task.config
        if self.task.OUTPUT_TYPE != "generate_until":
            raise ConfigError(f"lm-eval task {self.lm_name!r} has output_type {self.task.OUTPUT_TYPE!r}; only "
                              "generate_until tasks can be imported", file=file, field="lm_eval.task")
        # As lm_eval.simple_evaluate does: num_fewshot defaults to 0, the fewshot sampler is seeded.
        if "num_fewshot" in lm:
            self.task.set_config(key="num_fewshot", value=lm["num_fewshot"])
        elif self.task.get_config("num_fewshot") is None:
            self.task.set_config(key="num_fewshot", value=0)
        self.num_fewshot = int(self.task.get_config("num_fewshot") or 0)
        self.task.set_fewshot_seed(seed=lm.get("fewshot_seed", LMEVAL_FEWSHOT_SEED))
        gk = dict(cfg.generation_kwargs or {})
        until = gk.get("until") or []
        self.lm_stop = tuple([until] if isinstance(until, str) else until)
        self.lm_max_new_tokens = next((int(gk[k]) for k in ("max_gen_toks", "max_new_tokens", "max_tokens",
                                                            "max_completion_tokens") if gk.get(k)),
                                      LMEVAL_DEFAULT_MAX_GEN_TOKS)
        self.docs, self.contexts = self._build_requests()
        self._by_fields = {canonical(f): i for i, f in enumerate(self.fields)}
        # Scoring: an evalkit checker, or the task's filters + process_results metric.
        self.check_spec = spec.get("check")
        if self.check_spec is not None:
            try:
                self._check = checkers.make(self.check_spec)
            except KeyError as exc:
                raise ConfigError(str(exc.args[0]), file=file, field="check.name") from None
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"bad checker parameters: {exc}", file=file, field="check") from None
            try:
                self._extract = make_extractor(spec.get("extract", "strip"))
            except Exception as exc:  # noqa: BLE001 - a bad regex etc.
                raise ConfigError(f"bad extractor: {exc}", file=file, field="extract") from None
        elif "extract" in spec:
            raise ConfigError("`extract` needs `check` (lm-eval's metric is applied after the task's own filters)",
                              file=file, field="extract")
        else:
            self.metric = self._pick_metric(lm.get("metric"))
            self.filter = self._pick_filter(lm.get("filter"))
            self._probe_metric()
        self.stop = self.lm_stop  # replaced by load_lmeval_task when the file overrides it

    # -- loading ----------------------------------------------------------------------
    def _load_task(self, lm: dict[str, Any], defaults: bool) -> Any:
        ensure_offline()
        try:
            from lm_eval.tasks import get_task_dict
        except ImportError as exc:
            raise ConfigError(f"lm-eval task files need the [lmeval] extra (pip install 'evalkit[lmeval]'): {exc}",
                              file=self.file) from None
        manager = task_manager(self.include_paths, include_defaults=defaults)
        if self.lm_name not in manager.all_tasks:
            import difflib

            close = difflib.get_close_matches(self.lm_name, manager.all_tasks, n=3, cutoff=0.5)
            hint = (f"; did you mean {', '.join(map(repr, close))}?" if close else
                    " (lm-eval skips YAML files it cannot parse without saying so)")
            where = ", ".join(map(str, self.include_paths)) + (" and lm-eval's bundled tasks" if defaults else "")
            raise ConfigError(f"no lm-eval task {self.lm_name!r} in {where}{hint}", file=self.file,
                              field="lm_eval.task")
        try:
            if hasattr(manager, "load"):  # newer lm-eval (0.4.13): flat {"tasks": ..., "groups": ...}
                loaded = manager.load([self.lm_name])
                task = None if self.lm_name in loaded["groups"] else loaded["tasks"].get(self.lm_name)
            else:
                task = get_task_dict([self.lm_name], manager).get(self.lm_name)
        except Exception as exc:  # noqa: BLE001 - lm-eval's own error (bad YAML, data file, offline hub)
            extra = ("" if defaults else " (if it `include:`s one of lm-eval's bundled YAML files, set "
                     "lm_eval.include_defaults: true)")
            raise ConfigError(f"lm-eval could not load task {self.lm_name!r}: {type(exc).__name__}: {exc}{extra}",
                              file=self.file, field="lm_eval.task") from None
        if task is None or isinstance(task, dict):
            raise ConfigError(f"{self.lm_name!r} is an lm-eval group; name one of its tasks", file=self.file,
                              field="lm_eval.task")
        return task

    def _build_requests(self) -> tuple[list[dict[str, Any]], list[str]]:
        """lm-eval's own Instances for every evaluation doc: (docs, contexts) in doc order."""
        self.task.build_all_requests(rank=0, world_size=1)
        docs, contexts = [], []
        for inst in sorted(self.task.instances, key=lambda i: i.doc_id):
            context = inst.args[0]
            if not isinstance(context, str):
                raise ConfigError(f"lm-eval task {self.lm_name!r} builds non-text contexts; not supported",
                                  file=self.file, field="lm_eval.task")
            docs.append(inst.doc)
            contexts.append(context)
        self.fields = [_json_safe(d) for d in docs]
        return docs, contexts

    def _pick_metric(self, name: str | None) -> str:
        metrics = list(self.task._metric_fn_list) or list(self.task.higher_is_better() or {})
        if name is None:
            if not metrics:
                raise ConfigError(f"lm-eval task {self.lm_name!r} has no metrics; name `check`", file=self.file)
            name = metrics[0]
        elif name not in metrics:
            raise ConfigError(f"lm-eval task {self.lm_name!r} has no metric {name!r}; its metrics: "
                              f"{', '.join(metrics)}", file=self.file, field="lm_eval.metric")
        return name

    def _probe_metric(self) -> None:
        """Fail early (exit 2) when the metric gives no per-document number, e.g. bleu."""
        if not self.docs:
            return
        try:
            value = self.task.process_results(self.docs[0], [""]).get(self.metric)
        except Exception:  # noqa: BLE001 - a metric that needs a real answer shows as ERROR verdicts
            return
        if not isinstance(value, (bool, int, float)):
            raise ConfigError(f"metric {self.metric!r} gives {type(value).__name__}, not a per-document number "
                              "(a corpus-level metric?); name another lm_eval.metric or an evalkit `check`",
                              file=self.file, field="lm_eval.metric")

    def _pick_filter(self, name: str | None) -> Any:
        ensembles = list(getattr(self.task, "_filters", []) or [])
        if not ensembles:
            return None
        if name is None:
            return ensembles[0]
        for f in ensembles:
            if f.name == name:
                return f
        raise ConfigError(f"lm-eval task {self.lm_name!r} has no filter {name!r}; its filters: "
                          f"{', '.join(f.name for f in ensembles)}", file=self.file, field="lm_eval.filter")

    # -- the task protocol --------------------------------------------------------------
    def rows(self):
        return iter(self.fields)

    def _index(self, ex: Example) -> int | None:
        return self._by_fields.get(canonical(ex.fields))

    def _doc(self, ex: Example) -> dict[str, Any]:
        i = self._index(ex)
        return self.docs[i] if i is not None else dict(ex.fields)

    def prompt(self, ex: Example) -> str:
        i = self._index(ex)
        if i is not None:
            return self.contexts[i]
        doc = dict(ex.fields)  # a doc lm-eval did not build (zero-shot contexts do not depend on order)
        return self.task.fewshot_context(doc, num_fewshot=self.num_fewshot, gen_prefix=self.task.doc_to_prefix(doc))

    def reference(self, ex: Example) -> str | None:
        doc = self._doc(ex)
        target = self.task.doc_to_target(doc)
        if isinstance(target, int) and not isinstance(target, bool) and self.task.config.doc_to_choice is not None:
            target = self.task.doc_to_choice(doc)[target]
        if isinstance(target, list):
            target = target[0] if target else None
        return None if target is None else str(target)

    def extract(self, output: str) -> str:
        output = cut_at_stop(output, self.stop)
        return self._extract(output) if self.check_spec is not None else output

    def check(self, ex: Example, answer: str) -> Verdict:
        if self.check_spec is not None:
            if ex.reference is not None:
                ex = replace(ex, reference=self._extract(ex.reference))
            return self._check(ex, answer)
        doc = self._doc(ex)
        response: Any = answer
        if self.filter is not None:
            resps: Any = [[answer]]
            for make in self.filter.filters:
                resps = make().apply(resps, [doc])
            response = list(resps)[0]
        value = self.task.process_results(doc, [response])[self.metric]
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, (int, float)) or math.isnan(float(value)):
            raise TypeError(f"metric {self.metric!r} gives {type(value).__name__}, not a per-document number "
                            "(a corpus-level metric?): name another lm_eval.metric or an evalkit check")
        value = float(value)
        status = Status.PASS if value >= 1.0 else Status.FAIL
        return Verdict(status, min(max(value, 0.0), 1.0), f"{self.metric}={value:g} on {response!r}"[:300])


def load_lmeval_task(file: Path | str) -> Task:
    """Load an evalkit task file that imports an lm-eval task (see the module docstring).

    Raises:
        ConfigError: a bad file, an unknown lm-eval task, a task lm-eval cannot load (exit 2).
    """
    file = Path(file)
    spec = _read(file)
    impl = LMEvalTaskImpl(spec, file)
    gen = spec.get("generation", {})
    stop = tuple(gen.get("stop", impl.lm_stop))
    impl.stop = stop
    meta_version = (impl.task.config.metadata or {}).get("version")
    default_version = (int(meta_version) if isinstance(meta_version, (int, float)) and meta_version >= 1
                       and float(meta_version).is_integer() else 1)
    task_spec = TaskSpec(
        name=spec.get("name", impl.lm_name),
        version=spec.get("version", default_version),
        target=spec.get("target"),
        tags=tuple(spec.get("tags", ["lm-eval"])),
        description=spec.get("description", f"lm-eval task {impl.lm_name!r} from "
                                            f"{', '.join(map(str, impl.include_paths))}"),
        generation=GenerationConfig(max_new_tokens=gen.get("max_new_tokens", impl.lm_max_new_tokens), stop=stop),
        eval_fraction=1.0,
        selftest=SelftestSpec(),
    )
    return Task(task_spec, impl, source=str(file))


__all__ = ["SCHEMA", "LMEvalTaskImpl", "is_lmeval_task_file", "load_lmeval_task"]
