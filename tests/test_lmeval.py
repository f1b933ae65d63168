"""lm-eval interoperability: export -> lm-eval, lm-eval task -> evalkit, lm-eval models as a backend.

Everything runs the real lm-eval offline on tiny models built here (evalkit.models.tiny): no hub.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

from evalkit.lmeval import DEFAULTS_ENV, defaults_requested, ensure_offline, task_manager  # noqa: E402

ensure_offline()  # before lm-eval, datasets or huggingface_hub are imported below

import lm_eval  # noqa: E402

from evalkit import score  # noqa: E402
from evalkit.core.task import GenerationConfig  # noqa: E402
from evalkit.discovery.registry import load_path  # noqa: E402
from evalkit.errors import ConfigError  # noqa: E402
from evalkit.lmeval.export import METRIC, export_tasks  # noqa: E402
from evalkit.lmeval.importer import load_lmeval_task  # noqa: E402
from evalkit.models.lmeval import LMEvalBackend  # noqa: E402
from evalkit.models.spec import load_backend  # noqa: E402
from evalkit.run.runner import evaluate  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
N = 6  # examples per exported task

TOY = '''
from evalkit import task, verdict


@task(name="toy_mix", version=1, max_new_tokens=12, stop=(".", "$"))
class ToyMix:
    """Passes about half of a random model's outputs (those of even length), cut at "." or "$"."""

    def generate(self, rng):
        return {"a": rng.randrange(100), "b": rng.randrange(100)}

    def prompt(self, ex):
        return f"{ex['a']}+{ex['b']}="

    def reference(self, ex):
        return str(ex["a"] + ex["b"])

    def check(self, ex, answer):
        return verdict(len(answer) % 2 == 0, f"length {len(answer)}")
'''

ARITH_YAML = """\
task: arith_gen
dataset_path: json
dataset_kwargs:
  data_files:
    train: {train}
    test: {test}
training_split: train
fewshot_split: train
test_split: test
num_fewshot: 2
description: "Add the numbers.\\n\\n"
output_type: generate_until
doc_to_text: "Q: {{{{a}}}} plus {{{{b}}}}?\\nA:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n", "Q:"]
  max_gen_toks: 6
  do_sample: false
filter_list:
  - name: get-number
    filter:
      - function: regex
        regex_pattern: "(-?[0-9]+)"
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
metadata:
  version: 2.0
"""


# -- fixtures --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, tokenizer, folder): a random 2-layer char-level Llama, saved and reloaded."""
    from evalkit.models.tiny import build_char_tokenizer, load_model, save_model, tiny_llama

    folder = tmp_path_factory.mktemp("model") / "tiny"
    tok = build_char_tokenizer()
    save_model(tiny_llama(tok, hidden=64, layers=2, heads=2, seed=0), tok, folder)
    model, tokenizer = load_model(folder)
    return model, tokenizer, folder


@pytest.fixture(scope="module")
def hflm(tiny):
    from lm_eval.models.huggingface import HFLM

    model, tok, _ = tiny
    return HFLM(pretrained=model, tokenizer=tok, batch_size=4, device="cpu")


@pytest.fixture(scope="module")
def evalkit_tasks(tmp_path_factory):
    """toy_mix (a Python task, mixed verdicts), addition (Python) and json_extract (YAML; its prompt
    ends in a space, its stop is a newline)."""
    folder = tmp_path_factory.mktemp("ektasks")
    (folder / "toy.py").write_text(TOY)
    tasks = load_path(folder / "toy.py")
    tasks += [t for t in load_path(REPO / "tasks") if t.name in ("addition", "json_extract")]
    return {t.name: t for t in tasks}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, evalkit_tasks):
    out = tmp_path_factory.mktemp("lm_export")
    return out, export_tasks(list(evalkit_tasks.values()), out, n=N)


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    """A hand-written lm-eval task (fewshot, description, Jinja templates, a regex filter, exact_match)
    and two evalkit files importing it: one scored by lm-eval's metric, one by an evalkit checker."""
    root = tmp_path_factory.mktemp("lmimport")
    lm = root / "lm_tasks" / "arith"
    lm.mkdir(parents=True)
    rows = [{"a": a, "b": b, "answer": str(a + b)} for a, b in [(1, 2), (12, 30), (5, 5), (99, 1), (7, 8), (40, 2)]]
    (lm / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    (lm / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[2:]))
    (lm / "arith.yaml").write_text(ARITH_YAML.format(train=lm / "train.jsonl", test=lm / "test.jsonl"))
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "arith.lmeval.yaml").write_text("lm_eval:\n  include_path: ../lm_tasks\n  task: arith_gen\n"
                                            "target: 0.5\n")
    (tasks / "arith_numeric.yaml").write_text(textwrap.dedent("""\
        lm_eval: {include_path: ../lm_tasks/arith/arith.yaml, task: arith_gen}
        name: arith_numeric
        check: {name: numeric}
        extract: last_number
        generation: {max_new_tokens: 5}
        """))
    return root


def _lm_instances(include: Path, name: str) -> tuple[object, list]:
    """lm-eval's own Instances for a task, built as simple_evaluate builds them."""
    task = task_manager(include).load([name])["tasks"][name]
    if task.get_config("num_fewshot") is None:
        task.set_config(key="num_fewshot", value=0)
    task.set_fewshot_seed(seed=1234)
    task.build_all_requests(rank=0, world_size=1)
    return task, sorted(task.instances, key=lambda i: i.doc_id)


# -- export ----------------------------------------------------------------------------
def test_export_writes_an_lm_eval_task_folder(exported, evalkit_tasks):
    import yaml

    out, done = exported
    assert {e.name for e in done} == set(evalkit_tasks)
    for e in done:
        t = evalkit_tasks[e.name]
        assert e.folder == out.resolve() / e.name and e.utils.parent == e.folder
        cfg = yaml.safe_load(e.yaml.read_text().replace("!function ", ""))
        assert cfg["task"] == e.name and cfg["output_type"] == "generate_until"
        assert cfg["dataset_path"] == "json" and cfg["test_split"] == "test"
        data = Path(cfg["dataset_kwargs"]["data_files"]["test"])
        assert data.is_absolute() and data == e.data
        assert cfg["generation_kwargs"] == {"until": list(t.generation.stop), "max_gen_toks": e.max_gen_toks,
                                            "do_sample": False, "temperature": 0.0}
        assert cfg["metric_list"] == [{"metric": METRIC, "aggregation": "mean", "higher_is_better": True}]
        assert cfg["process_results"] == "utils.process_results"
        assert cfg["metadata"]["evalkit"]["source"] == str(Path(t.source).resolve())
        docs = [json.loads(line) for line in data.read_text().splitlines()]
        examples = t.examples("eval", n=N)
        assert [d["evalkit_id"] for d in docs] == [ex.id for ex in examples]
        assert [d["prompt"] for d in docs] == [ex.prompt for ex in examples]
        assert [d["reference"] for d in docs] == [ex.reference or "" for ex in examples]
        assert [json.loads(d["fields"]) for d in docs] == [dict(ex.fields) for ex in examples]
    assert next(e for e in done if e.name == "addition").max_gen_toks == 10  # the task's own setting


def test_exported_process_results_is_the_evalkit_checker(exported, evalkit_tasks):
    import importlib.util

    out, done = exported
    e = next(e for e in done if e.name == "addition")
    spec = importlib.util.spec_from_file_location("exported_addition_utils", e.utils)
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    for line in e.data.read_text().splitlines():
        doc = json.loads(line)
        assert utils.process_results(doc, [doc["reference"]]) == {METRIC: 1}
        assert utils.process_results(doc, [doc["reference"] + "1"]) == {METRIC: 0}
    with pytest.raises(ValueError, match="does not belong"):
        utils.process_results({**doc, "evalkit_id": "0" * 16}, ["1"])


def test_export_cli(run_cli, tmp_path):
    result = run_cli("export", "lm-eval", "addition", "multiple_choice", "-n", "3", "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "addition" / "addition.yaml").is_file()
    assert len((tmp_path / "out" / "multiple_choice" / "multiple_choice.jsonl").read_text().splitlines()) == 3
    assert "lm-eval run" in result.stdout and "--include_path" in result.stdout
    bad = run_cli("export", "lm-eval", "additon", "-o", str(tmp_path / "x"))
    assert bad.returncode == 2 and "did you mean 'addition'" in bad.stderr


@pytest.mark.slow
def test_export_lm_eval_verdicts_and_outputs_equal_evalkit(exported, evalkit_tasks, hflm, tiny, lm_folder):
    """simple_evaluate on the export (and on the imported lm-eval task): lm-eval's prompts,
    greedy outputs and verdicts equal evalkit's on the same model."""
    out, done = exported
    names = [e.name for e in done]
    manager = task_manager([out, lm_folder / "lm_tasks"])
    result = lm_eval.simple_evaluate(model=hflm, tasks=[*names, "arith_gen"], task_manager=manager,
                                     log_samples=True)
    model, tok, _ = tiny
    record = evaluate(model, tok, tasks=list(evalkit_tasks.values()), n=N, batch_size=4)
    ours = {(s["task"], s["example_id"]): s for s in record.samples()}
    for name in names:
        t = evalkit_tasks[name]
        samples = result["samples"][name]
        assert len(samples) == N
        verdicts = []
        for s in samples:
            doc, response = s["doc"], s["resps"][0][0]
            mine = ours[(name, doc["evalkit_id"])]
            assert s["arguments"][0][0] == doc["prompt"] == mine["prompt"]  # verbatim, trailing space kept
            assert response == mine["output"]  # greedy: same tokens (BOS included on both sides)
            ex = t.example(json.loads(doc["fields"]), level=doc["level"])
            assert score(t, ex, response).verdict.passed == bool(s[METRIC])  # evalkit on lm-eval's output
            assert (mine["status"] == "PASS") == bool(s[METRIC])  # and evalkit's own run
            verdicts.append(bool(s[METRIC]))
        rate = result["results"][name][f"{METRIC},none"]
        assert rate == pytest.approx(record.rate(name))
        if name == "toy_mix":
            assert 0 < sum(verdicts) < N  # both verdicts were exercised
    # The imported lm-eval task: evalkit's prompts, outputs and verdicts are lm-eval's.
    arith = load_lmeval_task(lm_folder / "tasks" / "arith.lmeval.yaml")
    rec = evaluate(model, tok, tasks=[arith], n=None, batch_size=4)
    by_prompt = {s["prompt"]: s for s in rec.samples()}
    for s in result["samples"]["arith_gen"]:
        mine = by_prompt[s["arguments"][0][0]]
        assert mine["output"] == s["resps"][0][0]
        assert mine["score"] == s["exact_match"]


@pytest.mark.slow
def test_lm_eval_cli_runs_the_export(exported, evalkit_tasks, tiny, tmp_path):
    out, _ = exported
    _, _, model_dir = tiny
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cli = Path(sys.executable).with_name("lm-eval")
    # lm-eval 0.4.13's CLI always passes its own --device (default cuda:0): device=cpu inside --model_args
    # would be a duplicate keyword, so the device goes in --device.
    result = subprocess.run([str(cli), "run", "--model", "hf", "--model_args", f"pretrained={model_dir}",
                             "--device", "cpu", "--include_path", str(out), "--tasks", "toy_mix", "--batch_size", "4",
                             "--log_samples", "--output_path", str(tmp_path / "res")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    [samples_file] = list((tmp_path / "res").rglob("samples_toy_mix_*.jsonl"))
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    t = evalkit_tasks["toy_mix"]
    assert len(samples) == N
    for s in samples:
        doc = s["doc"]
        ex = t.example(json.loads(doc["fields"]), level=doc["level"])
        assert score(t, ex, s["resps"][0][0]).verdict.passed == bool(s[METRIC])
    assert 0 < sum(s[METRIC] for s in samples) < N


# -- import ----------------------------------------------------------------------------
def test_import_prompts_are_lm_evals_own(lm_folder):
    tasks = {t.name: t for t in load_path(lm_folder / "tasks")}
    assert set(tasks) == {"arith_gen", "arith_numeric"}
    arith = tasks["arith_gen"]
    assert arith.version == 2 and arith.target == 0.5 and arith.source.endswith("arith.lmeval.yaml")
    assert arith.generation == GenerationConfig(max_new_tokens=6, stop=("\n", "Q:"))
    assert tasks["arith_numeric"].generation.max_new_tokens == 5
    lm_task, instances = _lm_instances(lm_folder / "lm_tasks", "arith_gen")
    examples = arith.examples("eval")
    assert len(examples) == len(instances) == 4
    for ex, inst in zip(examples, instances):
        assert dict(ex.fields) == dict(inst.doc)
        assert ex.prompt == inst.args[0]  # description + two fewshot turns + the question
        assert ex.prompt.startswith("Add the numbers.\n\n") and ex.prompt.endswith(lm_task.doc_to_text(inst.doc))
        assert ex.prompt.count("Q: ") == 3
        assert ex.reference == lm_task.doc_to_target(inst.doc)
        assert inst.args[1]["until"] == ["\n", "Q:"]
    assert [e.prompt for e in tasks["arith_numeric"].examples("eval")] == [e.prompt for e in examples]


def test_import_scores_with_lm_evals_filters_and_metric(lm_folder):
    from lm_eval.api.instance import Instance

    arith = load_lmeval_task(lm_folder / "tasks" / "arith.lmeval.yaml")
    lm_task, instances = _lm_instances(lm_folder / "lm_tasks", "arith_gen")
    [ensemble] = lm_task._filters
    for ex, inst in zip(arith.examples("eval"), instances):
        gold = ex.reference
        for response in [gold, " " + gold, f"{gold} apples", f"x{gold}", "-" + gold, "nothing", ""]:
            probe = Instance("generate_until", inst.doc, inst.args, 0, ("arith_gen", inst.doc_id, 1),
                             resps=[response])
            ensemble.apply([probe])  # lm-eval's own evaluator path
            expected = lm_task.process_results(inst.doc, [probe.filtered_resps[ensemble.name]])["exact_match"]
            verdict = score(arith, ex, response).verdict
            assert verdict.score == expected and verdict.passed == (expected == 1.0), (response, verdict)
    numeric = load_lmeval_task(lm_folder / "tasks" / "arith_numeric.yaml")
    ex = numeric.examples("eval")[0]
    assert score(numeric, ex, f"it is {ex.reference}").verdict.passed
    assert not score(numeric, ex, "it is 0").verdict.passed


def test_import_runs_with_evaluate(lm_folder, tiny):
    model, tok, _ = tiny
    tasks = load_path(lm_folder / "tasks")
    record = evaluate(model, tok, tasks=tasks, n=None, batch_size=4)
    assert {t["name"]: t["n_samples"] for t in record.tasks} == {"arith_gen": 4, "arith_numeric": 4}
    for s in record.samples():
        assert s["prompt"].startswith("Add the numbers.") and s["status"] in ("PASS", "FAIL")
        assert "\n" not in s["output"] and "Q:" not in s["output"]


def test_import_errors_are_config_errors(lm_folder, tmp_path):
    def write(text: str) -> Path:
        f = tmp_path / "t.lmeval.yaml"
        f.write_text(text.replace("LM", str(lm_folder / "lm_tasks")))
        return f

    with pytest.raises(ConfigError, match="did you mean 'arith_gen'"):
        load_path(write("lm_eval: {include_path: LM, task: arith_ge}\n"))
    with pytest.raises(ConfigError, match="no metric 'bleu'.*exact_match"):
        load_path(write("lm_eval: {include_path: LM, task: arith_gen, metric: bleu}\n"))
    with pytest.raises(ConfigError, match="no filter"):
        load_path(write("lm_eval: {include_path: LM, task: arith_gen, filter: strict}\n"))
    with pytest.raises(ConfigError, match="unknown field"):
        load_path(write("lm_eval: {include_path: LM, task: arith_gen}\nprompt: x\n"))
    with pytest.raises(ConfigError, match="no such folder"):
        load_path(write("lm_eval: {include_path: nowhere, task: arith_gen}\n"))
    with pytest.raises(ConfigError, match="unknown checker"):
        load_path(write("lm_eval: {include_path: LM, task: arith_gen}\ncheck: nope\n"))
    mc = tmp_path / "mc"
    mc.mkdir()
    (mc / "d.jsonl").write_text('{"q": "a?", "label": 0}\n')
    (mc / "mc.yaml").write_text("task: mc\ndataset_path: json\n"
                                f"dataset_kwargs: {{data_files: {{test: {mc / 'd.jsonl'}}}}}\n"
                                "test_split: test\noutput_type: multiple_choice\ndoc_to_text: q\ndoc_to_target: label\n"
                                "doc_to_choice: ['x', 'y']\n")
    with pytest.raises(ConfigError, match="only generate_until"):
        load_path(write(f"lm_eval: {{include_path: {mc}, task: mc}}\n"))


# -- backend ---------------------------------------------------------------------------
def test_lmeval_backend_matches_hf_backend(tiny, evalkit_tasks):
    _, _, folder = tiny
    lmb = load_backend(f"lmeval:hf,pretrained={folder},device=cpu", batch_size=4)
    hf = load_backend(f"hf:{folder}", batch_size=4)
    assert lmb.identity.startswith(f"lmeval:hf,pretrained={folder},device=cpu#hf:")
    assert lmb.identity.split("#hf:")[1] == hf.identity.rsplit(":", 1)[1]  # the same weights fingerprint
    prompts = ["1+2=", "12+30=", "Extract name.\nJSON: ", "  spaced  ", "x"]
    for cfg in (GenerationConfig(max_new_tokens=8, stop=("\n",)), GenerationConfig(max_new_tokens=20, stop=(".", "$")),
                GenerationConfig(max_new_tokens=6, stop=())):
        assert lmb.generate(prompts, cfg, num_samples=2) == hf.generate(prompts, cfg, num_samples=2)
    # Both sides let the tokenizer add BOS (lm-eval's add_bos_token=None); forcing it off changes the outputs.
    from lm_eval.models.huggingface import HFLM

    model, tok, _ = tiny
    no_bos = LMEvalBackend("hf", "add_bos_token=False", lm=HFLM(pretrained=model, tokenizer=tok, batch_size=4,
                                                                 device="cpu", add_bos_token=False))
    greedy = GenerationConfig(max_new_tokens=8, stop=("\n",))
    assert no_bos.generate(prompts, greedy) != hf.generate(prompts, greedy)
    tasks = [evalkit_tasks["toy_mix"]]
    a = evaluate(tasks=tasks, backend=lmb, model_spec=f"lmeval:hf,pretrained={folder}", n=N, batch_size=4)
    b = evaluate(tasks=tasks, backend=hf, model_spec=f"hf:{folder}", n=N, batch_size=4)
    assert [(s["output"], s["status"]) for s in a.samples()] == [(s["output"], s["status"]) for s in b.samples()]
    assert a.data["model"]["identity"] == lmb.identity
    sampled = GenerationConfig(max_new_tokens=6, stop=("\n",), temperature=1.0)
    assert lmb.generate(prompts[:2], sampled, seed=3, num_samples=2) == lmb.generate(prompts[:2], sampled, seed=3,
                                                                                       num_samples=2)


def test_lmeval_spec_errors():
    with pytest.raises(ConfigError, match="lmeval:MODEL,ARGS"):
        load_backend("lmeval:pretrained=/x")
    with pytest.raises(ConfigError, match="no model 'nonesuch'"):
        load_backend("lmeval:nonesuch,pretrained=/x")


# -- offline ---------------------------------------------------------------------------
def test_offline_is_explicit_and_respects_the_user(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    assert ensure_offline() == ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"]
    assert os.environ["HF_HUB_OFFLINE"] == os.environ["HF_DATASETS_OFFLINE"] == "1"
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True and datasets.config.HF_DATASETS_OFFLINE is True
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")  # the user's explicit choice wins
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    assert ensure_offline() == []
    assert os.environ["HF_DATASETS_OFFLINE"] == "0" and "HF_HUB_OFFLINE" not in os.environ


def test_lm_evals_bundled_tasks_are_not_indexed_unless_asked(lm_folder, monkeypatch):
    monkeypatch.delenv(DEFAULTS_ENV, raising=False)
    assert not defaults_requested() and defaults_requested(True)
    manager = task_manager(lm_folder / "lm_tasks")
    assert manager.all_tasks == ["arith_gen"]  # not lm-eval's ~14.7k
    monkeypatch.setenv(DEFAULTS_ENV, "1")
    assert defaults_requested()
