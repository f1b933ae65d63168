"""Chat and instruct prompting: a task's chat form, chat-mode runs, chat templates, end-of-turn tokens, and
the rule that leading whitespace never ends an answer.

The models are real: a tiny Llama whose weights are set by hand so that greedy decoding follows a chain
of tokens chosen here (its first token a newline, then digits, then the end-of-turn token), with a real
byte-level BPE tokenizer trained here that has a ChatML chat template.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

import evalkit
from evalkit import ConfigError, task, verdict
from evalkit.core.extract import cut_at_stop, find_stop
from evalkit.core.task import GenerationConfig
from evalkit.discovery.yamltask import load_yaml_task
from evalkit.models.python import PythonCallableBackend
from evalkit.run.journal import JOURNAL_FILE

SYSTEM = "Answer with the number only."


@task(name="arith", version=1, levels=[1], max_new_tokens=6)
class Plain:
    def generate(self, rng, level):
        return {"a": rng.randrange(10), "b": rng.randrange(10)}

    def prompt(self, ex):        return f"{ex['a']}+{ex['b']}="
    def reference(self, ex):     return str(ex["a"] + ex["b"])
    def check(self, ex, answer): return verdict(answer == self.reference(ex))


@task(name="arith", version=1, levels=[1], max_new_tokens=6, system=SYSTEM,
      fewshot=[("1+1=", "2"), {"user": "2+2=", "assistant": "4"}])
class Framed(Plain):
    pass


@task(name="arith", version=1, levels=[1], max_new_tokens=6, system=SYSTEM)
class Asked(Plain):
    def chat(self, ex):
        return f"What is {ex['a']} plus {ex['b']}?"


# -- the stop rule ------------------------------------------------------------------------------------
@pytest.mark.parametrize("output,stop,expected", [
    ("42\nmore", ("\n",), "42"),                 # unchanged: a stop after the answer
    ("\n42\nmore", ("\n",), "\n42"),             # a leading newline does not end the answer
    ("\n\n  42\n", ("\n",), "\n\n  42"),
    ("\n\n42\n\nx", ("\n\n",), "\n\n42"),
    (" \n\t", ("\n",), " \n\t"),                  # nothing but whitespace: nothing to cut (extracts to "")
    ("Q: 1", ("Q:",), ""),                       # a stop at the first character still counts
    ("\nQ: 1", ("Q:",), "\n"),
    ("a\nb", ("", "\n"), "a"),
    ("", ("\n",), ""),
])
def test_leading_whitespace_never_ends_an_answer(output, stop, expected):
    assert cut_at_stop(output, stop) == expected
    assert find_stop(output, stop) == (-1 if expected == output else len(expected))


def test_raw_generation_settings_keep_their_journal_form():
    assert GenerationConfig(8).to_dict() == {"max_new_tokens": 8, "stop": ["\n"], "temperature": 0.0, "top_p": 1.0}
    assert GenerationConfig(8, chat=True).to_dict()["chat"] is True


# -- a task's chat form -------------------------------------------------------------------------------
def test_the_chat_form_of_a_python_task():
    plain, framed, asked = (evalkit.as_task(c) for c in (Plain, Framed, Asked))
    ex = plain.examples(n=1)[0]
    assert [e.id for e in framed.examples(n=3)] == [e.id for e in plain.examples(n=3)]  # chat changes no example
    assert framed.examples(n=1)[0].prompt == ex.prompt  # ... nor the raw prompt
    assert plain.messages(ex) == [{"role": "user", "content": ex.prompt}]
    assert framed.messages(ex) == [
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": "1+1="},
        {"role": "assistant", "content": "2"}, {"role": "user", "content": "2+2="},
        {"role": "assistant", "content": "4"}, {"role": "user", "content": ex.prompt}]
    assert asked.messages(ex) == [{"role": "system", "content": SYSTEM},
                                  {"role": "user", "content": f"What is {ex['a']} plus {ex['b']}?"}]


@pytest.mark.parametrize("returned,error,match", [
    ([{"role": "user", "content": "hi"}], None, None),
    (3, TypeError, "must return the user message"),
    ([], ValueError, "no messages"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], ValueError, "last message"),
    ([{"role": "bot", "content": "q"}], ValueError, r"chat\(\)\[0\]: a message's role"),
    ([{"role": "user", "content": 5}], TypeError, "content must be str"),
    ([{"role": "user", "text": "q"}], TypeError, "expected"),
])
def test_a_chat_method_may_return_the_whole_conversation(returned, error, match):
    @task(name="whole", system="ignored: the list is the whole conversation")
    class Whole(Plain):
        def chat(self, ex):
            return returned

    t = evalkit.as_task(Whole)
    ex = t.examples(n=1)[0]
    if error is None:
        assert t.messages(ex) == returned
    else:
        with pytest.raises(error, match=match):
            t.messages(ex)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"system": 3}, TypeError, "system must be a str"),
    ({"fewshot": [("only a question",)]}, ValueError, r"fewshot\[0\]: expected a \(user, assistant\) pair"),
    ({"fewshot": ["a string"]}, ValueError, "pair"),
    ({"fewshot": [{"user": "q"}]}, ValueError, "keys user and assistant"),
    ({"fewshot": [("q", 4)]}, TypeError, "must be str"),
])
def test_bad_chat_settings_fail_at_decoration(kwargs, error, match):
    with pytest.raises(error, match=match):
        task(name="bad", **kwargs)(Plain)


def write_yaml(tmp_path: Path, extra: str) -> Path:
    (tmp_path / "rows.jsonl").write_text('{"q": "1+1", "a": "2"}\n{"q": "2+2", "a": "4"}\n')
    path = tmp_path / "t.yaml"
    path.write_text('name: t\ndata: rows.jsonl\nprompt: "Q: {q}\\nA: "\nreference: "{a}"\ncheck: exact\n' + extra)
    return path


def test_the_chat_form_of_a_yaml_task(tmp_path):
    t = load_yaml_task(write_yaml(tmp_path, textwrap.dedent("""\
        chat:
          system: "Answer with a number. {Braces} are literal here."
          user: "What is {q}?"
          fewshot: [{user: "What is 3+3?", assistant: "6"}]
        """)))
    ex = t.examples()[0]
    assert ex.prompt == "Q: 1+1\nA: "
    assert t.messages(ex) == [{"role": "system", "content": "Answer with a number. {Braces} are literal here."},
                              {"role": "user", "content": "What is 3+3?"}, {"role": "assistant", "content": "6"},
                              {"role": "user", "content": "What is 1+1?"}]
    only_system = load_yaml_task(write_yaml(tmp_path, "chat: {system: Be brief.}\n"))
    assert only_system.messages(ex) == [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "Q: 1+1\nA: "}]
    assert load_yaml_task(write_yaml(tmp_path, "")).messages(ex) == [{"role": "user", "content": "Q: 1+1\nA: "}]


@pytest.mark.parametrize("extra,field,expect", [
    ("chat: {sytem: hi}\n", "chat.sytem", "unknown field"),
    ("chat: {system: 3}\n", "chat.system", "expected string"),
    ("chat: {user: ''}\n", "chat.user", "should be non-empty"),
    ("chat: {fewshot: [{user: q}]}\n", "chat.fewshot.0.assistant", "required field is missing"),
    ("chat: {fewshot: [{user: q, assistant: a, role: x}]}\n", "chat.fewshot.0.role", "unknown field"),
    ('chat: {user: "{q.x}"}\n', "chat.user", "plain field name"),
    ('chat: {user: "{question}"}\n', None, "rows.jsonl: row 1 has no field 'question'"),
    ("chat: [system]\n", "chat", "expected object"),
])
def test_yaml_chat_errors_name_the_file_and_field(tmp_path, extra, field, expect):
    with pytest.raises(ConfigError) as info:
        load_yaml_task(write_yaml(tmp_path, extra))
    msg = str(info.value)
    assert "t.yaml" in msg or "rows.jsonl" in msg, msg
    if field:
        assert f"field '{field}'" in msg, msg
    assert expect in msg, msg


# -- chat-mode runs (python: backend) -----------------------------------------------------------------
class Recorder:
    """A python: model that answers arith prompts in either form, with a leading newline, and keeps them."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def __call__(self, prompt: Any) -> str:
        self.seen.append(prompt)
        text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
        a, b = text.rstrip("=").split("+")
        return f"\n{int(a) + int(b)}\nmore"


def test_chat_run_sends_messages_and_never_reuses_raw_samples(tmp_path):
    model = Recorder()
    backend = PythonCallableBackend(model, identity="python:recorder")
    raw = evalkit.evaluate(tasks=[Framed], backend=backend, n=5, reports_dir=tmp_path)
    assert all(isinstance(p, str) for p in model.seen) and raw.rate("arith") == 1.0  # "\n7\nmore" -> "7"
    model.seen.clear()
    chat = evalkit.evaluate(tasks=[Framed], backend=backend, n=5, reports_dir=tmp_path, chat=True)
    framed = evalkit.as_task(Framed)
    examples = framed.examples(n=5)
    assert model.seen == [framed.messages(ex) for ex in examples]
    assert chat.rate("arith") == 1.0 and chat.run_id != raw.run_id
    assert chat.data["settings"]["chat"] is True and "chat" not in raw.data["settings"]
    assert chat.task("arith")["generation"]["chat"] is True and "chat" not in raw.task("arith")["generation"]
    samples = list(evalkit.load_record(chat.path).samples())  # validated against the record schema
    assert [s["messages"] for s in samples] == model.seen and samples[0]["prompt"] == examples[0].prompt
    assert all("messages" not in s for s in raw.samples())

    def keys(record):
        return {json.loads(line)["key"] for line in (record.path / JOURNAL_FILE).read_text().splitlines()}

    assert len(keys(chat)) == len(keys(raw)) == 5 and not keys(chat) & keys(raw)
    model.seen.clear()
    again = evalkit.evaluate(tasks=[Framed], backend=backend, n=5, reports_dir=tmp_path, chat=True)
    assert again.run_id == chat.run_id and model.seen == []  # resumed: nothing generated again
    from evalkit.discovery.registry import Registry
    from evalkit.run.posthoc import rescore

    assert rescore(chat.path, registry=Registry([Framed])).task("arith")["generation"]["chat"] is True


def test_raw_run_ids_and_journal_keys_are_unchanged():
    """The ids evalkit gave this run before chat mode existed (computed on the previous commit)."""

    @task(name="fixed_sum", version=1, levels=[1, 2], max_new_tokens=6)
    class FixedSum:
        def generate(self, rng, level):
            return {"a": rng.randrange(10 ** level), "b": rng.randrange(10 ** level)}
        def prompt(self, ex):        return f"{ex['a']}+{ex['b']}="
        def reference(self, ex):     return str(ex["a"] + ex["b"])
        def check(self, ex, answer): return verdict(answer == self.reference(ex))

    def answer(prompt):
        a, b = prompt[:-1].split("+")
        return f"{int(a) + int(b)}\n"

    backend = PythonCallableBackend(answer, identity="python:fixed")
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        record = evalkit.evaluate(tasks=[FixedSum], backend=backend, n=4, seed=3, level=2, reports_dir=folder)
        keys = sorted(json.loads(line)["key"] for line in (record.path / JOURNAL_FILE).read_text().splitlines())
    assert record.run_id == "python-fixed-10fe3e2091"
    assert keys[0] == "0f3d12ebcffa13998a0d5082c9634f97"
    assert evalkit.evaluate(tasks=[FixedSum], backend=backend, n=4, seed=3, level=2).run_id == "python-fixed-7eac6baf33"


CHATBOT = '''
def answer(prompt):
    assert isinstance(prompt, list), f"expected messages, got {prompt!r}"
    a, b = prompt[-1]["content"].rstrip("=").split("+")
    return "\\n" + str(int(a) + int(b)) + "\\nthe end"
'''

SUM_TASK = '''
from evalkit import task, verdict

@task(name="chatsum", levels=[1], max_new_tokens=8, system="Add.")
class ChatSum:
    def generate(self, rng, level):
        return {"a": rng.randrange(100), "b": rng.randrange(100)}
    def prompt(self, ex):        return f"{ex['a']}+{ex['b']}="
    def reference(self, ex):     return str(ex["a"] + ex["b"])
    def check(self, ex, answer): return verdict(answer == self.reference(ex))
'''


def test_cli_run_chat_sends_messages_to_a_python_model(run_cli, tmp_path):
    (tmp_path / "chatbot.py").write_text(CHATBOT)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "chatsum.py").write_text(SUM_TASK)
    args = ("run", "--model", "python:chatbot:answer", "--task", "chatsum", "-n", "6", "--tasks-dir",
            str(tmp_path / "tasks"), "--reports-dir", str(tmp_path / "reports"))
    out = run_cli(*args, "--chat", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    [run] = list((tmp_path / "reports").iterdir())
    record = json.loads((run / "record.json").read_text())
    assert record["settings"]["chat"] is True and record["tasks"][0]["rate"] == 1.0
    sample = json.loads((run / "samples.jsonl").read_text().splitlines()[0])
    assert sample["messages"][0] == {"role": "system", "content": "Add."} and sample["answer"] == sample["reference"]
    raw = run_cli(*args, cwd=tmp_path)  # the same model without --chat gets text: it refuses (exit 2: its code)
    assert raw.returncode == 2 and "expected messages" in raw.stderr, raw.stdout + raw.stderr
    show = run_cli("show", "chatsum", "-n", "1", "--chat", "--tasks-dir", str(tmp_path / "tasks"), cwd=tmp_path)
    assert show.returncode == 0 and "chat system  Add." in show.stdout and "chat user" in show.stdout, show.stdout
    (tmp_path / "gate.yaml").write_text("tasks:\n  chatsum: {min_pass_rate: 0.9}\nrun: {n: 4, chat: true}\n")
    gate = run_cli("gate", "--model", "python:chatbot:answer", "--config", str(tmp_path / "gate.yaml"),
                   "--tasks-dir", str(tmp_path / "tasks"), "--reports-dir", str(tmp_path / "gated"), cwd=tmp_path)
    assert gate.returncode == 0 and "gate passed" in gate.stdout, gate.stdout + gate.stderr
    [gated] = list((tmp_path / "gated").iterdir())
    assert json.loads((gated / "record.json").read_text())["settings"]["chat"] is True


def test_a_recipe_evaluates_in_chat_mode_when_it_says_so(tmp_path):
    from evalkit.train.recipe import load_recipe

    text = (Path(__file__).parent / "fixtures" / "ft" / "quick.yaml").read_text()
    path = tmp_path / "r.yaml"
    path.write_text(text)
    assert load_recipe(path).eval_chat is False
    path.write_text(text.replace("  n: 40\n", "  n: 40\n  chat: true\n"))
    assert load_recipe(path).eval_chat is True
    path.write_text(text.replace("  n: 40\n", "  n: 40\n  chat: sometimes\n"))
    with pytest.raises(ConfigError, match="field 'eval.chat'"):
        load_recipe(path)


# -- hf: chat templates and end-of-turn tokens ---------------------------------------------------------
CHATML = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant{% endif %}")
QUESTION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 12+34?"}]


def chatml_tokenizer(template: str | None = CHATML, eos: str = "<|endoftext|>") -> Any:
    """A byte-level BPE trained here: BOS <s> added to raw text, EOS <|endoftext|>, ChatML's <|im_start|> and
    <|im_end|> as special tokens (so <|im_end|> ends a turn only as an end-of-turn token, not as EOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<s>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    lines = ["What is 12+34?", "The answer is 46.", "system", "user", "assistant", "Sort: 3 1 2", "Be brief."]
    bpe.train_from_iterator(lines * 5, trainers.BpeTrainer(
        vocab_size=300, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token=eos, pad_token="<pad>")
    tok.chat_template = template
    return tok


def one_token(tok: Any, text: str) -> int:
    [i] = tok(text, add_special_tokens=False)["input_ids"]
    return i


def chain_model(tok: Any, chain: dict[int, int]) -> Any:
    """A 1-layer Llama whose greedy next token depends only on the current one: `chain[current]`.

    Attention and MLP outputs are zeroed, so the last hidden state is the current token's embedding; each
    chained token's embedding is a distinct unit vector that the LM head maps to its successor.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        layer = model.model.layers[0]
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.lm_head.weight.zero_()
        for d, (current, successor) in enumerate(chain.items()):
            model.model.embed_tokens.weight[current, d] = 1.0
            model.lm_head.weight[successor, d] = 1.0
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model.eval()


@pytest.fixture(scope="module")
def chat_model():
    """(model, tokenizer): after the chat prompt, after "?" (a raw question) and after "Ġ2" ("Sort: 3 1 2")
    the model writes "\\n42<|im_end|>", "\\n42<|im_end|>" and "7\\n42<|im_end|>"; after <|im_end|> it would go on
    with "9" — were <|im_end|> not an end-of-turn token."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from evalkit.models.hf_chat import encode_prompt

    tok = chatml_tokenizer()
    ids = {t: one_token(tok, t) for t in ("\n", "4", "2", "7", "9", "?", " 2")}
    end = tok.convert_tokens_to_ids("<|im_end|>")
    last_of_chat = encode_prompt(tok, QUESTION)[-1]
    chain = {last_of_chat: ids["\n"], ids["?"]: ids["\n"], ids["\n"]: ids["4"], ids["4"]: ids["2"],
             ids["2"]: end, end: ids["9"], ids[" 2"]: ids["7"], ids["7"]: ids["\n"]}
    assert len(chain) == 8  # no token chained twice
    return chain_model(tok, chain), tok


def test_chat_prompts_are_rendered_by_the_template_once(chat_model):
    from evalkit.models.hf import HFBackend
    from evalkit.models.hf_chat import encode_prompt

    model, tok = chat_model
    backend = HFBackend(model, tok)
    text = backend.render(QUESTION)
    assert text == tok.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<s><|im_start|>system\nBe brief.<|im_end|>\n") and text.endswith("<|im_start|>assistant")
    ids = encode_prompt(tok, QUESTION)
    assert ids == tok(text, add_special_tokens=False)["input_ids"]
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id  # the template's BOS, not a second
    raw = encode_prompt(tok, "What is 12+34?")
    assert raw[0] == tok.bos_token_id and raw.count(tok.bos_token_id) == 1  # raw text: the tokenizer adds it
    backend.generate([QUESTION], GenerationConfig(max_new_tokens=4, stop=()))
    assert backend.last_stats.prompt_tokens == len(ids)


@pytest.mark.parametrize("decoder", ["loop", "generate"])
def test_rows_end_at_end_of_turn_and_a_leading_newline_is_not_a_stop(chat_model, decoder):
    from evalkit.models.hf import HFBackend

    model, tok = chat_model
    backend = HFBackend(model, tok, batch_size=2, decoder=decoder)
    assert tok.convert_tokens_to_ids("<|im_end|>") in backend.eos_ids and tok.eos_token_id in backend.eos_ids
    prompts = [QUESTION, "What is 12+34?", "Sort: 3 1 2"]
    free = backend.generate(prompts, GenerationConfig(max_new_tokens=8, stop=()))
    assert free == [["\n42"], ["\n42"], ["7\n42"]]  # ended by <|im_end|> (never "9"), raw prompts too
    assert backend.last_stats.generated_tokens == 4 + 4 + 5  # each row's tokens, its <|im_end|> included
    cut = backend.generate(prompts, GenerationConfig(max_new_tokens=8, stop=("\n",)))
    assert cut == [["\n42"], ["\n42"], ["7"]]  # "\n" ends an answer only after its first visible character
    assert backend.last_stats.generated_tokens == 4 + 4 + 2
    two = backend.generate(prompts, GenerationConfig(max_new_tokens=8, stop=("\n4", "42")))
    assert two == [["\n"], ["\n"], ["7"]]  # multi-character stops: "\n4" is not whitespace only


def test_chat_runs_end_to_end_and_the_template_is_part_of_the_identity(chat_model, tmp_path):
    model, tok = chat_model

    @task(name="answer42", system="Be brief.")
    class Answer42:
        def rows(self):
            return [{"q": "What is 12+34?"}]
        def prompt(self, ex):        return ex["q"]
        def reference(self, ex):     return "42"
        def check(self, ex, answer): return verdict(answer == "42")

    raw = evalkit.evaluate(model=model, tokenizer=tok, tasks=[Answer42], n=None, reports_dir=tmp_path)
    chat = evalkit.evaluate(model=model, tokenizer=tok, tasks=[Answer42], n=None, reports_dir=tmp_path, chat=True)
    assert raw.rate("answer42") == chat.rate("answer42") == 1.0  # "\n42": empty answers before this change
    [sample] = chat.samples()
    assert sample["output"] == "\n42" and sample["messages"] == QUESTION
    from evalkit.models.hf_chat import chat_template_id

    assert chat.data["model"]["identity"] == f"{raw.data['model']['identity']}#chat-template:{chat_template_id(tok)}"
    other = chatml_tokenizer(CHATML.replace("{{ m['content'] }}", "{{ m['content'] | trim }}"))
    assert chat_template_id(other) != chat_template_id(tok) and chat_template_id(chatml_tokenizer(None)) == "none"


def test_chat_mode_needs_a_chat_template(chat_model):
    from evalkit.models.hf import HFBackend

    model, _ = chat_model
    backend = HFBackend(model, chatml_tokenizer(None))
    assert backend.generate(["What is 12+34?"], GenerationConfig(max_new_tokens=4)) == [["\n42"]]
    with pytest.raises(ConfigError, match="has no chat template.*run without --chat"):
        backend.generate([QUESTION], GenerationConfig(max_new_tokens=4))
    with pytest.raises(ConfigError, match="has no chat template"):
        evalkit.evaluate(model=model, tokenizer=chatml_tokenizer(None), tasks=[Framed], n=1, chat=True)


def test_lmeval_chat_mode_uses_lm_evals_chat_template(chat_model):
    pytest.importorskip("lm_eval")
    from evalkit.lmeval import ensure_offline

    ensure_offline()
    from lm_eval.models.huggingface import HFLM

    from evalkit.models.hf import HFBackend
    from evalkit.models.lmeval import LMEvalBackend

    model, _ = chat_model
    tok = chatml_tokenizer(eos="<|im_end|>")  # lm-eval ends a row at the tokenizer's EOS (only)
    lmb = LMEvalBackend("hf", "", lm=HFLM(pretrained=model, tokenizer=tok, batch_size=2, device="cpu"))
    assert lmb.render(QUESTION) == HFBackend(model, tok).render(QUESTION)
    prompts = [QUESTION, "What is 12+34?", "Sort: 3 1 2"]
    for config in (GenerationConfig(max_new_tokens=8, stop=("\n",)), GenerationConfig(max_new_tokens=8, stop=())):
        assert lmb.generate(prompts, config) == HFBackend(model, tok).generate(prompts, config)
    assert lmb.chat_template_id == HFBackend(model, tok).chat_template_id
