"""BPE-correct training data: rows are tokenized as evaluation tokenizes prompts, the answer's ids are the
ones generation produces after exactly those prompt ids, the loss is on the answer and the token that ends
it only, and chat-mode recipes train on the chat template's rendering.

Tokenizers are real: a byte-level BPE trained here with a ChatML template (`conftest.bpe_chat_tokenizer`),
and, in a slow test, SmolLM2-135M-Instruct's own tokenizer and template where it is cached.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import BPE_CORPUS, CHATML_TEMPLATE, FIXTURES, bpe_chat_tokenizer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evalkit
from evalkit import ConfigError, task, verdict
from evalkit.core.chat import message

pytest.importorskip("transformers")

from evalkit.models.hf_chat import (  # noqa: E402
    encode_prompt,
    encode_prompts,
    end_of_turn_ids,
    render_chat,
    token_ids,
)
from evalkit.train.data import CompletionCollator, Row, encode_row, tokenize_rows  # noqa: E402

FT = FIXTURES / "ft"
SYSTEM = "Answer with the number only."


@pytest.fixture(scope="module")
def tok() -> Any:
    return bpe_chat_tokenizer()


def ids(tok: Any, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def split(item: dict[str, list[int]]) -> tuple[list[int], list[int]]:
    """(prompt ids, learned ids): labels are -100 on a prefix and equal the input ids after it."""
    n = item["labels"].count(-100)
    assert item["labels"][:n] == [-100] * n
    assert item["labels"][n:] == item["input_ids"][n:] and -100 not in item["labels"][n:]
    return item["input_ids"][:n], item["input_ids"][n:]


def text(tok: Any, token_ids: list[int]) -> str:
    return tok.decode(token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


# -- raw mode ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt,completion", [
    ("What is 12+34?", " 46"),       # the answer's leading space is its own
    ("A:", " 42"),
    ("A: ", "42"),                   # " 42" would merge across the boundary: the prompt ends in its own " "
    ("Sort: 3 1", " 2"),
    ("hello", " world\n"),
    ("x", ""),
])
def test_raw_rows_train_evaluations_prompt_ids_then_the_answer_then_eos(tok, prompt, completion):
    prompt_ids, learned = split(encode_row(Row(prompt, completion, "s"), tok))
    assert prompt_ids == encode_prompt(tok, prompt) == encode_prompts(tok, [prompt])[0]  # what HFBackend feeds
    assert prompt_ids[0] == tok.bos_token_id and prompt_ids.count(tok.bos_token_id) == 1
    assert learned[-1] == tok.eos_token_id
    assert text(tok, learned[:-1]) == completion  # exactly the answer, no space added or lost
    assert text(tok, prompt_ids + learned) == "<s>" + prompt + completion + "<|endoftext|>"


def test_a_token_merging_across_the_boundary_keeps_the_prompts_ids(tok):
    """Byte-level BPE writes "A: 42" as "A", ":", " 42": the prompt "A: " ends in a " " token that evaluation
    feeds, so training must teach "42" after it, not the joint tokenization's " 42"."""
    joint = ids(tok, "A: 42")
    prompt = ids(tok, "A: ")
    assert joint[:len(prompt)] != prompt  # the merge this test is about happens with this tokenizer
    prompt_ids, learned = split(encode_row(Row("A: ", "42", "s"), tok))
    assert prompt_ids == encode_prompt(tok, "A: ") and prompt_ids[-1] == ids(tok, " ")[0]
    assert learned[:-1] == ids(tok, "42")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(st.text(alphabet="A: 0123456789+=?abc \n", max_size=12),
                                st.text(alphabet=" 0123456789abc\n.", max_size=6)), min_size=1, max_size=12))
def test_rows_tokenized_together_are_each_rows_own_encoding(tok, pairs):
    """`tokenize_rows` batches its tokenizer calls; each row's ids and labels are still `encode_row`'s, merges
    across the prompt/answer boundary ("A: " + "42") included."""
    rows = [Row(p, c, "s") for p, c in [*pairs, ("A: ", "42"), ("What is 12+34?", " 46")]]
    assert tokenize_rows(rows, tok) == [encode_row(r, tok) for r in rows]


def wrapper_ids(tok: Any, texts: list[str], special: bool) -> list[list[int]]:
    """The ids as the tokenizer's own call gives them: what `token_ids` must equal."""
    return [list(row) for row in tok(texts, add_special_tokens=special)["input_ids"]]


SPECIAL_TEXT = st.lists(st.sampled_from(["a", "b", " ", "\n", "1", "é", "🙂", "<s>", "</s>", "<|im_start|>",
                                         "<|im_end|>", "<|endoftext|>", "<"]), max_size=12).map("".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(SPECIAL_TEXT, min_size=1, max_size=8), special=st.booleans())
def test_token_ids_are_the_tokenizers_own_call(tok, texts, special):
    """`token_ids` reads the Rust tokenizer directly; the ids are the tokenizer call's, special-token strings
    included, for a BPE tokenizer (special-token strings are tokens) and a character one (they are split)."""
    from evalkit.models.tiny import build_char_tokenizer

    for t in (tok, build_char_tokenizer()):
        assert token_ids(t, texts, special=special) == wrapper_ids(t, texts, special)


def test_token_ids_fall_back_to_the_call_when_the_rust_tokenizer_is_set_up_otherwise():
    """A Rust tokenizer left truncating or padding (the call would undo that for itself) is not read directly:
    the ids are the call's, whole and unpadded; a tokenizer without a Rust one is called."""
    texts = ["12345678+1=", "1+1="]
    expected = wrapper_ids(bpe_chat_tokenizer(), texts, True)
    truncating = bpe_chat_tokenizer()
    truncating.backend_tokenizer.enable_truncation(3)
    assert token_ids(truncating, texts, special=True) == expected
    padding = bpe_chat_tokenizer()
    padding.backend_tokenizer.enable_padding(length=30)
    assert token_ids(padding, texts, special=True) == expected

    class Plain:  # the tokenizer interface only: no backend_tokenizer
        def __call__(self, batch, add_special_tokens):
            return {"input_ids": [[len(t), int(add_special_tokens)] for t in batch]}

    assert token_ids(Plain(), texts, special=False) == [[11, 0], [4, 0]]
    assert token_ids(Plain(), [], special=False) == []


# -- chat mode --------------------------------------------------------------------------------------------
@task(name="sum", version=1, levels=[1], max_new_tokens=6, system=SYSTEM, fewshot=[("1+1=", "2")])
class Sum:
    def generate(self, rng, level):
        return {"a": rng.randrange(50), "b": rng.randrange(50)}

    def prompt(self, ex):        return f"{ex['a']}+{ex['b']}="
    def reference(self, ex):     return str(ex["a"] + ex["b"])
    def check(self, ex, answer): return verdict(answer.strip() == self.reference(ex))


def test_chat_rows_train_the_templates_rendering_and_learn_the_end_of_turn_token(tok):
    t = evalkit.as_task(Sum)
    ex = t.examples("train", n=1)[0]
    messages = t.messages(ex)
    row = Row(ex.prompt, ex.reference or "", "sum", ex.id, tuple(messages))
    prompt_ids, learned = split(encode_row(row, tok, chat=True))
    assert prompt_ids == encode_prompt(tok, messages) == encode_prompts(tok, [messages])[0]
    assert text(tok, prompt_ids) == render_chat(tok, messages)
    assert text(tok, prompt_ids).startswith(f"<s><|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n1+1=")
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert end in end_of_turn_ids(tok) and learned[-1] == end  # generation stops there: it must be learned
    assert text(tok, learned) == ex.reference + "<|im_end|>"  # and nothing after it (ChatML's "\n")
    assert text(tok, learned[:-1]) == ex.reference
    full = tok.apply_chat_template([*messages, message("assistant", ex.reference)], tokenize=False)
    assert full == text(tok, prompt_ids + learned) + "\n"  # the template's conversation, cut at <|im_end|>
    # Without messages (a JSONL row) a chat row is one user message holding the raw prompt.
    bare_prompt, _ = split(encode_row(Row(ex.prompt, "1", "data"), tok, chat=True))
    assert bare_prompt == encode_prompt(tok, [message("user", ex.prompt)])
    assert tokenize_rows([row], tok, chat=True) == [encode_row(row, tok, chat=True)]


def test_the_text_a_template_puts_before_the_answer_is_trained_too():
    """A template whose generation prompt stops at "assistant" writes "\\n" + answer + "<|im_end|>": the newline
    is the model's to write (evaluation keeps a leading newline), so it is learned."""
    tok = bpe_chat_tokenizer(CHATML_TEMPLATE.replace("assistant\n{% endif %}", "assistant{% endif %}"))
    messages = [message("user", "What is 12+34?")]
    assert render_chat(tok, messages).endswith("<|im_start|>assistant")
    prompt_ids, learned = split(encode_row(Row("What is 12+34?", "46", "s", messages=tuple(messages)), tok,
                                           chat=True))
    assert prompt_ids == encode_prompt(tok, messages)
    assert text(tok, learned) == "\n46<|im_end|>"


def test_a_template_that_ends_turns_with_eos_learns_eos():
    template = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
                "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")
    tok = bpe_chat_tokenizer(template, eos="<|endoftext|>")
    messages = [message("user", "What is 12+34?")]
    prompt_ids, learned = split(encode_row(Row("What is 12+34?", " 46", "s", messages=tuple(messages)), tok,
                                           chat=True))
    assert prompt_ids == encode_prompt(tok, messages)
    assert learned[-1] == tok.eos_token_id and text(tok, learned) == " 46<|endoftext|>"


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=24)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=_text, completion=_text, system=st.none() | _text)
def test_property_prompt_ids_are_evaluations_and_the_answer_decodes_exactly(tok, prompt, completion, system):
    # raw
    prompt_ids, learned = split(encode_row(Row(prompt, completion, "s"), tok))
    assert prompt_ids == encode_prompt(tok, prompt)
    assert learned[-1] == tok.eos_token_id and text(tok, learned[:-1]) == completion
    # chat
    messages = ([message("system", system)] if system is not None else []) + [message("user", prompt)]
    prompt_ids, learned = split(encode_row(Row(prompt, completion, "s", messages=tuple(messages)), tok, chat=True))
    assert prompt_ids == encode_prompt(tok, messages)
    assert learned[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert text(tok, learned) == completion + "<|im_end|>"


def test_the_collator_pads_with_no_loss(tok):
    items = tokenize_rows([Row("What is 12+34?", " 46", "s"), Row("A:", " 1234567890", "s")], tok)
    batch = CompletionCollator(tok.pad_token_id)(items)
    for i, item in enumerate(items):
        n = len(item["input_ids"])
        assert batch["input_ids"][i, :n].tolist() == item["input_ids"]
        assert batch["labels"][i, :n].tolist() == item["labels"]
        assert set(batch["labels"][i, n:].tolist()) <= {-100} and set(batch["attention_mask"][i, n:].tolist()) <= {0}
        assert batch["attention_mask"][i, :n].tolist() == [1] * n


# -- the rows of a chat-mode recipe -----------------------------------------------------------------------
def chat_recipe(tmp_path: Path, base: str = "scratch", extra_sources: str = "") -> Path:
    text = (FT / "quick.yaml").read_text().replace("  n: 40\n", "  n: 40\n  chat: true\n")
    text = text.replace("base: scratch, architecture: llama, hidden: 32, layers: 2, heads: 2, intermediate: 64, "
                        "max_positions: 32", f"base: {base}")
    text = text.replace("      n: 400\n", "      n: 400\n" + extra_sources)
    shutil.copy(FT / "tasks.py", tmp_path / "tasks.py")
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_chat_recipes_rows_carry_the_tasks_messages_and_the_guard_compares_raw_prompts(tmp_path):
    from evalkit.discovery.registry import discover
    from evalkit.train.data import build_training_rows
    from evalkit.train.recipe import load_recipe

    reg = discover([FT / "tasks.py"], entry_points=False)
    initials = reg.get("initials")
    eval_examples = initials.examples("eval", n=40)
    leaked = eval_examples[0].prompt
    (tmp_path / "data.jsonl").write_text(json.dumps({"prompt": "  " + leaked.upper(), "completion": "zz"}) + "\n"
                                         + json.dumps({"prompt": "zzz:", "completion": "zz"}) + "\n")
    recipe = load_recipe(chat_recipe(tmp_path, extra_sources="    - jsonl: data.jsonl\n"))
    assert recipe.eval_chat
    rows, report = build_training_rows(recipe, reg, eval_examples)
    assert report.to_dict()["removed"]["contamination (eval overlap)"] == {"data": 1}  # the raw prompt, normalised
    from_task = next(r for r in rows if r.source == "initials")
    ex = next(e for e in initials.examples("train", n=400) if e.id == from_task.example_id)
    assert list(from_task.messages or ()) == initials.messages(ex)
    from_jsonl = next(r for r in rows if r.source == "data")
    assert from_jsonl.messages is None and from_jsonl.chat_messages() == [message("user", "zzz:")]
    raw_rows, _ = build_training_rows(load_recipe(FT / "quick.yaml"), reg, eval_examples)
    assert all(r.messages is None for r in raw_rows)  # raw recipes: nothing changes


def test_sampled_rows_carry_the_messages_the_model_was_sent():
    from evalkit.train.verify import select_samples

    sent = [message("system", SYSTEM), message("user", "1+2=")]
    rows, _ = select_samples([{"prompt": "1+2=", "output": "3", "status": "PASS", "task": "sum", "messages": sent},
                              {"prompt": "2+2=", "output": "4", "status": "PASS", "task": "sum"}],
                             cap_per_prompt=2)
    assert rows[0].chat_messages() == sent and rows[1].chat_messages() == [message("user", "2+2=")]


def test_chat_mode_needs_a_model_with_a_chat_template(tmp_path):
    from evalkit.discovery.registry import discover
    from evalkit.train import finetune

    path = chat_recipe(tmp_path)
    path.write_text((FT / "quick.yaml").read_text().replace("  n: 40\n", "  n: 40\n  chat: true\n")
                    .replace("size: 2000", "size: 20"))
    with pytest.raises(ConfigError, match="field 'eval.chat'.*chat template"):
        finetune(path, output=tmp_path / "out", registry=discover([FT / "tasks.py"], entry_points=False))


def tiny_chat_model(folder: Path) -> Path:
    """A tiny random Llama with the byte-level BPE + ChatML tokenizer, saved as a local HF model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = bpe_chat_tokenizer(corpus=(*BPE_CORPUS, "bal: bb", "system", "user"))
    config = LlamaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_sft_in_chat_mode_end_to_end(tmp_path):
    """A few SFT steps on a tiny BPE + ChatML Llama with `eval.chat: true`: training runs on chat-rendered
    rows, every evaluation runs in chat mode, and the loss goes down."""
    from evalkit.discovery.registry import discover
    from evalkit.run.record import load_record
    from evalkit.train import finetune

    base = tiny_chat_model(tmp_path / "base")
    path = chat_recipe(tmp_path, base=str(base))
    path.write_text(path.read_text().replace("max_steps: 120", "max_steps: 40").replace("size: 2000", "size: 640")
                    .replace("every: 10", "every: 20").replace("lr: 0.003", "lr: 0.01"))
    result = finetune(path, output=tmp_path / "out", registry=discover([FT / "tasks.py"], entry_points=False))
    record = load_record(tmp_path / "out")
    history = record.data["meta"]["training"]["history"]
    assert [h["step"] for h in history][:1] == [0] and history[-1]["step"] <= 40, result
    for h in history:
        evaluation = load_record(tmp_path / "out" / h["record"])
        assert evaluation.data["settings"]["chat"] is True
    sample = json.loads((tmp_path / "out" / history[-1]["record"] / "samples.jsonl").read_text().splitlines()[0])
    assert sample["messages"][-1] == {"role": "user", "content": sample["prompt"]}
    losses = [h["loss"] for h in history if h["loss"] is not None]
    assert len(losses) >= 2 and losses[-1] < losses[0], losses
    rates = [h["rates"]["initials"]["rate"] for h in history]
    assert rates[-1] >= 0.5 > rates[0], rates  # it learned the answers in the form evaluation asks for them


def test_grpo_in_chat_mode_end_to_end(tmp_path):
    """GRPO with `eval.chat: true` on the tiny BPE + ChatML Llama: TRL gets the tasks' chat forms (its
    conversational format, rendered by the chat template), the reward reads the replies, and every
    evaluation runs in chat mode."""
    pytest.importorskip("trl")
    from evalkit.discovery.registry import discover
    from evalkit.run.record import load_record
    from evalkit.train import finetune

    base = tiny_chat_model(tmp_path / "base")
    path = chat_recipe(tmp_path, base=str(base))
    path.write_text(path.read_text().replace("max_steps: 120", "max_steps: 64").replace("size: 2000", "size: 960")
                    .replace("every: 10", "every: 30").replace("lr: 0.003", "lr: 0.01")
                    + "mode: grpo\nwarm_start: {steps: 60}\n"
                      "grpo: {steps: 4, num_generations: 4, prompts_per_step: 4, lr: 0.0005}\n")
    result = finetune(path, output=tmp_path / "out", registry=discover([FT / "tasks.py"], entry_points=False))
    record = load_record(tmp_path / "out")
    training = record.data["meta"]["training"]
    assert training["baseline"][0]["pass_at_k"] > 0, result  # the warm start taught the chat form
    assert [x["step"] for x in training["rewards"]] == [61, 62, 63, 64]
    assert all(0.0 <= x["reward"] <= 1.0 for x in training["rewards"])
    for h in training["history"]:
        assert load_record(tmp_path / "out" / h["record"]).data["settings"]["chat"] is True


# -- SmolLM2's real tokenizer and template (slow; no weights needed) ----------------------------------------
SMOL_CASES = [("What is 12+34?", "46"), ("What is 12+34?", " 46"), ("A: ", "42"), ("Sort: 3 1 2", "1 2 3"),
              ("Translate: chat", "le chat\n"), ("naïve café?", "Ça va — 日本語 🙂"), ("x", ""),
              ("def f(x):\n    ", "return x + 1\n"), ("Say <hi>", "<hi>  two  spaces")]


@pytest.mark.slow
def test_smollm2_tokenizer_and_template(smollm2):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2, local_files_only=True)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert end in end_of_turn_ids(tok)
    for prompt, completion in SMOL_CASES:
        for system in (None, SYSTEM):
            messages = ([message("system", system)] if system else []) + [message("user", prompt)]
            prompt_ids, learned = split(encode_row(Row(prompt, completion, "s", messages=tuple(messages)), tok,
                                                   chat=True))
            assert prompt_ids == encode_prompt(tok, messages) == encode_prompts(tok, [messages])[0]
            assert text(tok, prompt_ids).endswith("<|im_start|>assistant\n")
            assert learned[-1] == end and end not in learned[:-1]
            assert text(tok, learned) == completion + "<|im_end|>", (prompt, completion)
        prompt_ids, learned = split(encode_row(Row(prompt, completion, "s"), tok))
        assert prompt_ids == encode_prompt(tok, prompt)
        assert learned[-1] == tok.eos_token_id and text(tok, learned[:-1]) == completion, (prompt, completion)
    rendered = [render_chat(tok, [message("user", p)]) + c for p, c in SMOL_CASES]
    for special in (True, False):  # the real tokenizer's ids read directly are its call's
        assert token_ids(tok, rendered + [p + c for p, c in SMOL_CASES], special=special) == wrapper_ids(
            tok, rendered + [p + c for p, c in SMOL_CASES], special)
