"""The decoding loop and shared-prefix caching (evalkit.models.decode, evalkit.models.prefix) on real tiny models.

Every expected output is transformers' own `model.generate`, one prompt at a time (no padding, no prefix
cache), run without stops and cut afterwards at the row's EOS and first stop string (`cut_at_stop`): the
loop's batching, its stop checks and its cached prefixes must change nothing.
"""

from __future__ import annotations

import functools
import random

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import bpe_chat_tokenizer  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from evalkit.core.extract import cut_at_stop, find_stop  # noqa: E402
from evalkit.core.task import GenerationConfig  # noqa: E402
from evalkit.models.decode import ModelCall, left_pad, stop_candidates, vocabulary_texts  # noqa: E402
from evalkit.models.hf import HFBackend  # noqa: E402
from evalkit.models.hf_chat import encode_prompt, encode_prompts  # noqa: E402
from evalkit.models.prefix import MIN_PREFIX, group_prefixes, prefix_plan  # noqa: E402
from evalkit.models.tiny import build_char_tokenizer, tiny_gpt2, tiny_llama  # noqa: E402

SYSTEM = "You add two numbers. Answer with the sum only.\n"  # 47 characters: a prefix worth caching
QUESTIONS = ["1+1=", "12+345=", "7*8=", "x", "987654+123456=", "(q) ", "The quick brown fox", "0="]
PROMPTS = [SYSTEM + q for q in QUESTIONS] + ["Hello, world", "a\nb\nc:", "zz top", SYSTEM[:10]]
MAX_NEW = 12


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


# The two architectures every comparison runs on (test_shards uses them too).
MODELS = {"llama": lambda tok: tiny_llama(tok, hidden=64, layers=2, heads=4, seed=1),
          "gpt2": lambda tok: tiny_gpt2(tok, hidden=64, layers=2, heads=4, seed=3)}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request, tok):
    return MODELS[request.param](tok)


def generated(model, ids: list[int], max_new: int, eos: set[int]) -> list[int]:
    """transformers' greedy `generate` on one unpadded prompt: its new tokens, through its first EOS."""
    with torch.inference_mode():
        seq = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=max_new, do_sample=False, eos_token_id=sorted(eos), pad_token_id=0)
    new = seq[0, len(ids):].tolist()
    return new[:next((k + 1 for k, t in enumerate(new) if t in eos), len(new))]


def reference(model, ids: list[int], max_new: int, eos: set[int], decode) -> str:
    """The text of `generated` (no stops), its EOS left out."""
    new = generated(model, ids, max_new, eos)
    return decode([t for t in new if t not in eos])


def references(model, tok, prompts, max_new=MAX_NEW, eos=None):
    eos = eos or {tok.eos_token_id}
    return [reference(model, encode_prompt(tok, p), max_new, eos,
                      lambda t: tok.decode(t, skip_special_tokens=True)) for p in prompts]


def pick_stops(outputs: list[str]) -> tuple[str, ...]:
    """A single character and a two-character string (spanning two tokens) that each end some rows early."""
    chars = sorted({c for o in outputs for c in o[1:]})
    one = max(chars, key=lambda c: (sum(c in o[1:] for o in outputs), c))
    rest = [o for o in outputs if one not in o[1:] and len(o) >= 6]
    two = rest[0][3:5] if rest else outputs[0][2:4]
    return one, two


def test_loop_equals_generate_at_any_batch_size_with_stops_prefixes_and_joining_rows(model, tok):
    free = references(model, tok, PROMPTS)
    stops = pick_stops(free)
    want = [cut_at_stop(o, stops) for o in free]
    assert len({len(w) for w in want}) >= 4, want  # rows end at different places
    assert sum(w != o for w, o in zip(want, free)) >= 2  # the stops cut rows
    for batch_size in (1, 3, len(PROMPTS)):
        for prefix_cache, continuous in ((True, True), (True, False), (False, True), (False, False)):
            backend = HFBackend(model, tok, batch_size=batch_size, prefix_cache=prefix_cache,
                                continuous_batching=continuous)
            cut = backend.generate(PROMPTS, GenerationConfig(max_new_tokens=MAX_NEW, stop=stops))
            assert cut == [[w] for w in want]
            assert backend.generate(PROMPTS, GenerationConfig(max_new_tokens=MAX_NEW, stop=())) == [[o] for o in free]


def test_shared_prefix_is_found_and_cached_once(model, tok):
    ids = encode_prompts(tok, PROMPTS)
    groups, lengths = group_prefixes(ids)
    assert lengths == [1 + len(SYSTEM)]  # BOS + the system text: the questions differ from their first token
    assert [g for g in groups] == [0] * len(QUESTIONS) + [-1] * 4
    backend = HFBackend(model, tok)
    kv, plan = prefix_plan(backend._call, ids, batch_size=4)
    assert kv is not None and plan == groups and kv.lengths == lengths
    # The cached states are those of the prompt's own prefill: the same keys as a whole-prompt pass.
    with torch.inference_mode():
        cache = backend._call.new_cache()
        x = torch.tensor([ids[0]])
        backend._call.forward(x, torch.ones_like(x), torch.arange(x.shape[1])[None], cache, last_only=True)
        data, mask, plen = kv.gather([0, -1])
    assert plen == [lengths[0], 0] and mask.tolist() == [[1] * lengths[0], [0] * lengths[0]]
    whole = cache.layers[0].keys[0, :, :lengths[0]]
    assert torch.allclose(data[0][0][0], whole, atol=1e-5)
    assert torch.count_nonzero(data[0][0][1]) == 0  # a row without a prefix sees only zeroed, masked states


def test_rows_end_at_eos_and_stop_in_leading_whitespace_does_not_count(tok):
    model = tiny_llama(tok, hidden=64, layers=2, heads=4, seed=1)
    free = references(model, tok, PROMPTS)
    common = max(sorted({c for o in free for c in o}), key=lambda c: sum(c in o for o in free))
    eos_id = tok.convert_tokens_to_ids(common)
    model.generation_config.eos_token_id = [tok.eos_token_id, eos_id]  # `common` now ends a row
    want = references(model, tok, PROMPTS, eos={tok.eos_token_id, eos_id})
    assert sum(len(w) < len(o) for w, o in zip(want, free)) >= 3 and all(common not in w for w in want)
    backend = HFBackend(model, tok, batch_size=5)
    assert backend.generate(PROMPTS, GenerationConfig(max_new_tokens=MAX_NEW, stop=())) == [[w] for w in want]
    stats = backend.last_stats  # each row's tokens, the EOS that ended it included
    eos = {tok.eos_token_id, eos_id}
    assert stats.generated_tokens == sum(len(generated(model, encode_prompt(tok, p), MAX_NEW, eos)) for p in PROMPTS)
    # " " is a stop, but a row that opens with spaces is not cut to nothing
    spaced = ["   ", "  a", "\n\n"]
    free = references(model, tok, spaced)
    got = backend.generate(spaced, GenerationConfig(max_new_tokens=MAX_NEW, stop=(" ", "\n")))
    assert got == [[cut_at_stop(o, (" ", "\n"))] for o in free]


def test_sampled_rows_do_not_depend_on_prefix_caching_or_batching(tok):
    model = tiny_llama(tok, hidden=64, layers=2, heads=4, seed=1)
    config = GenerationConfig(max_new_tokens=MAX_NEW, stop=(), temperature=1.0, top_p=0.9)
    a = HFBackend(model, tok, batch_size=3).generate(PROMPTS, config, seed=5, num_samples=2)
    b = HFBackend(model, tok, batch_size=64, prefix_cache=False, continuous_batching=False).generate(
        PROMPTS, config, seed=5, num_samples=2)
    assert a == b and any(r[0] != r[1] for r in a)


# -- chat prompts: a byte-level BPE with a chat template -----------------------------------------------------------
@pytest.fixture(scope="module")
def chat():
    tok = bpe_chat_tokenizer()
    return tiny_llama(tok, hidden=64, layers=2, heads=4, seed=3), tok


def chat_messages(question: str, shots: int = 1) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": "Answer with the number only."}]
    for _ in range(shots):
        msgs += [{"role": "user", "content": "What is 12+34?"}, {"role": "assistant", "content": "46"}]
    return msgs + [{"role": "user", "content": question}]


def test_chat_prompts_with_and_without_a_shared_prefix(chat):
    model, tok = chat
    prompts = [chat_messages(q) for q in ("What is 1+2?", "What is 40+2?", "Sort: 3 1 2", "hello world")]
    prompts += [chat_messages("What is 7+7?", shots=0), "A: 42", chat_messages("bal: bb", shots=2)]
    ids = encode_prompts(tok, prompts)
    groups, lengths = group_prefixes(ids)
    assert groups[:4] == [groups[0]] * 4 and groups[0] >= 0 and lengths[groups[0]] >= MIN_PREFIX
    end = tok.convert_tokens_to_ids("<|im_end|>")
    eos = {tok.eos_token_id, end}
    free = [reference(model, i, MAX_NEW, eos, lambda t: tok.decode(t, skip_special_tokens=True)) for i in ids]
    stops = pick_stops(free)
    for batch_size in (1, 2, 7):
        backend = HFBackend(model, tok, batch_size=batch_size)
        assert backend.generate(prompts, GenerationConfig(max_new_tokens=MAX_NEW, stop=())) == [[o] for o in free]
        got = backend.generate(prompts, GenerationConfig(max_new_tokens=MAX_NEW, stop=stops))
        assert got == [[cut_at_stop(o, stops)] for o in free]


def test_stop_candidates_hold_every_token_that_completes_a_stop(chat):
    """A token outside the candidates never completes a stop string: random token sequences, BPE tokens."""
    _, tok = chat
    backend = HFBackend(chat[0], tok)
    texts = vocabulary_texts(backend._decode, len(tok))
    assert texts is not None
    rng = random.Random(0)
    vocab = len(tok)
    for stop in (("\n",), ("\n\n", "42"), ("is",), (" 4",), ("é",)):
        cand = stop_candidates(texts, stop)
        assert cand is not None and len(cand) < vocab
        for _ in range(300):
            seq = [rng.randrange(vocab) for _ in range(rng.randrange(1, 8))]
            before = tok.decode(seq[:-1], skip_special_tokens=True)
            after = tok.decode(seq, skip_special_tokens=True)
            if find_stop(before, stop) < 0 <= find_stop(after, stop):
                assert seq[-1] in cand, (stop, seq, after)


# -- properties ------------------------------------------------------------------------------------------------
@given(st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=40), min_size=0, max_size=30),
       st.integers(1, 20))
@settings(max_examples=200, deadline=None)
def test_prefix_groups_share_their_prefix_and_leave_each_row_a_token(ids, min_len):
    groups, lengths = group_prefixes(ids, min_len)
    assert len(groups) == len(ids)
    for g, n in enumerate(lengths):
        rows = [ids[r] for r in range(len(ids)) if groups[r] == g]
        assert len(rows) >= 2 and n >= min_len
        assert all(r[:n] == rows[0][:n] and len(r) > n for r in rows)


@functools.cache
def _free(prompt: str) -> str:
    tok, model = _small()
    return references(model, tok, [prompt])[0]


@functools.lru_cache(maxsize=1)
def _small():
    tok = build_char_tokenizer()
    return tok, tiny_llama(tok, hidden=32, layers=2, heads=2, seed=4)


@given(st.lists(st.sampled_from(QUESTIONS + ["", "9", "+", "ab", "Hello"]), min_size=1, max_size=7),
       st.lists(st.booleans(), min_size=7, max_size=7), st.integers(1, 8), st.data())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_batch_of_prompts_and_stops_decodes_as_one_prompt_at_a_time(questions, prefixed, batch_size, data):
    torch.set_num_threads(1)
    tok, model = _small()
    prompts = [(SYSTEM + q) if p else q for q, p in zip(questions, prefixed)]
    free = [_free(p) for p in prompts]
    chars = sorted({c for o in free for c in o}) or ["z"]
    stops = tuple(data.draw(st.lists(st.sampled_from(chars), max_size=2)))
    pair = [o[1:3] for o in free if len(o) >= 3]
    if pair and data.draw(st.booleans()):
        stops += (pair[0],)
    got = HFBackend(model, tok, batch_size=batch_size).generate(prompts, GenerationConfig(max_new_tokens=MAX_NEW,
                                                                                          stop=stops))
    assert got == [[cut_at_stop(o, stops)] for o in free]


def test_waiting_rows_join_the_running_batch(tok):
    """Rows of very different lengths: with joining, fewer decoding steps run; the answers are the same."""
    model = tiny_llama(tok, hidden=64, layers=2, heads=4, seed=1)
    free = references(model, tok, PROMPTS, max_new=24)
    stops = pick_stops(free)
    config = GenerationConfig(max_new_tokens=24, stop=stops)
    steps = {}
    for continuous in (True, False):
        backend = HFBackend(model, tok, batch_size=4, continuous_batching=continuous)
        calls: list[int] = []
        handle = model.register_forward_pre_hook(lambda module, args, calls=calls: calls.append(1))
        try:
            got = backend.generate(PROMPTS, config)
        finally:
            handle.remove()
        assert got == [[cut_at_stop(o, stops)] for o in free]
        steps[continuous] = len(calls)
    assert steps[True] < steps[False]


def test_model_call_knows_the_cache_keyword(tok):
    call = ModelCall.of(tiny_llama(tok, hidden=32, layers=1, heads=2), pad_id=0, eos_ids=frozenset({2}))
    assert call.cache_kw in ("cache", "past_key_values") and call.keep_kw is not None


@given(st.lists(st.lists(st.integers(0, 50), max_size=6), max_size=5), st.integers(0, 50))
def test_left_pad_right_aligns_each_row_and_masks_the_padding(rows, pad):
    ids, mask = left_pad(rows, pad)
    width = max((len(r) for r in rows), default=0)
    assert ids.shape == mask.shape == (len(rows), width)
    for r, got, m in zip(rows, ids.tolist(), mask.tolist()):
        lead = width - len(r)
        assert got[lead:] == r and all(t == pad for t in got[:lead])
        assert m == [0] * lead + [1] * len(r)
