"""The model layer on real tiny models built from a config (no mocks, nothing downloaded)."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from evalkit.core.extract import cut_at_stop  # noqa: E402
from evalkit.core.task import GenerationConfig  # noqa: E402
from evalkit.models import GenerationStats, ModelBackend, PythonCallableBackend  # noqa: E402
from evalkit.models.hf import HFBackend  # noqa: E402
from evalkit.models.tiny import DEFAULT_ALPHABET, build_char_tokenizer, load_model, save_model, tiny_gpt2, tiny_llama  # noqa: E402

PROMPTS = ["1+1=", "12+345=", "Hello, world", "x", "987654+123456=", "a\nb\nc:", "(q) ",
           "The quick brown fox jumps", "7*8=", "zz top", "0=", "~!@#$%^&*"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def llama(tok):
    return tiny_llama(tok, hidden=64, layers=2, heads=4, seed=1)


@pytest.fixture(scope="module")
def full_outputs(llama, tok):
    """The untrained model's own one-at-a-time greedy outputs, without stop strings."""
    backend = HFBackend(llama, tok, batch_size=1)
    return [backend.generate([p], GenerationConfig(max_new_tokens=10, stop=()))[0][0] for p in PROMPTS]


def test_core_imports_without_torch():
    code = ("import sys, evalkit, evalkit.models, evalkit.models.base, evalkit.models.python\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_char_tokenizer_round_trips(tok):
    rng = random.Random(0)
    printable = "".join(chr(i) for i in range(32, 127)) + "\n"
    samples = [DEFAULT_ALPHABET, "123+456=579\n", "  two  spaces\n\nand tabs\t!", "", " ",
               "typed specials stay text: <s> </s> <pad> <unk>",
               *("".join(rng.choices(printable, k=rng.randrange(40))) for _ in range(200))]
    for s in samples:
        ids = tok(s)["input_ids"]
        assert ids[0] == tok.bos_token_id
        assert tok.decode(ids, skip_special_tokens=True) == s
    assert len(tok("ab\n")["input_ids"]) == 4  # one token per character, plus <s>
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok("é")["input_ids"][1] == tok.unk_token_id
    assert tok.padding_side == "left"
    assert build_char_tokenizer("0123456789+=\n", padding_side="right").padding_side == "right"
    small = build_char_tokenizer("0123456789+=\n", add_bos=False)
    assert len(small) == 4 + 13 and small.decode(small("12+3=\n")["input_ids"]) == "12+3=\n"


def test_tiny_models_have_the_tokenizers_ids(tok):
    model = tiny_llama(tok)
    n = sum(p.numel() for p in model.parameters())
    assert 0.9e6 < n < 1.3e6  # ~1M at hidden 128, 4 layers
    for cfg in (model.config, model.generation_config):
        assert (cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id) == (0, 1, 2)
    assert model.config.vocab_size == len(tok) and not model.training
    gpt2 = tiny_gpt2(tok, hidden=32, layers=1, heads=2)
    assert gpt2.config.vocab_size == len(tok) and gpt2.generation_config.eos_token_id == 2
    # deterministic in the seed, and the caller's RNG is untouched
    state = torch.random.get_rng_state()
    a, b = tiny_llama(tok, hidden=32, layers=1, seed=3), tiny_llama(tok, hidden=32, layers=1, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_save_load_round_trip_gives_identical_logits(tmp_path, tok, llama):
    target = tmp_path / "model"
    save_model(llama, tok, target)
    save_model(llama, tok, target)  # replacing an existing checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp dirs left
    assert (target / "model.safetensors").is_file()
    model2, tok2 = load_model(target)
    x = tok(["12+34=", "hello"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        assert torch.equal(llama(**x).logits, model2(**x).logits)
    assert tok2("a\nb")["input_ids"] == tok("a\nb")["input_ids"]
    backend = HFBackend.from_path(target)
    assert backend.identity == HFBackend(llama, tok).identity
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing")


def test_loop_matches_model_generate(llama, tok, full_outputs):
    """Our decoding loop is greedy decoding: the same text as transformers' own generate."""
    for prompt, ours in list(zip(PROMPTS, full_outputs))[:4]:
        x = tok(prompt, return_tensors="pt")
        with torch.inference_mode():
            seq = llama.generate(**x, max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=2)
        assert tok.decode(seq[0, x.input_ids.shape[1]:], skip_special_tokens=True) == ours


def _pick_stops(outputs: list[str]) -> tuple[str, ...]:
    """Stop strings made of what the model emits, cutting rows at different places.

    Two single characters that cut the most rows at distinct positions, plus a
    two-character string from the middle of a row they leave whole.
    """
    def spread(stops: tuple[str, ...]) -> int:
        cuts = [cut_at_stop(o, stops) for o in outputs]
        return len({len(c) for c, o in zip(cuts, outputs) if c != o})

    chars = sorted(set("".join(outputs)))
    pair = max(((a, b) for a in chars for b in chars if a < b), key=spread)
    for o in outputs:
        if cut_at_stop(o, pair) == o and len(o) >= 7:
            return (*pair, o[5:7])
    return pair


@pytest.mark.parametrize("decoder", ["loop", "generate"])
def test_batched_greedy_equals_one_at_a_time(llama, tok, full_outputs, decoder):
    stops = _pick_stops(full_outputs)
    expected = [cut_at_stop(o, stops) for o in full_outputs]
    cuts = [len(e) for e in expected]
    assert len(set(cuts)) >= 3, (stops, expected)  # stops hit at different positions
    hit_by = {s for o, e in zip(full_outputs, expected) if e != o for s in stops if o.startswith(s, len(e))}
    assert hit_by == set(stops), (stops, expected)  # every stop string ends some row
    config = GenerationConfig(max_new_tokens=10, stop=stops)
    batched = HFBackend(llama, tok, batch_size=5, decoder=decoder)
    got = batched.generate(PROMPTS, config)
    assert got == [[e] for e in expected]
    one = HFBackend(llama, tok, batch_size=1, decoder=decoder)
    assert [one.generate([p], config)[0] for p in PROMPTS] == got
    stats = batched.last_stats
    assert isinstance(stats, GenerationStats) and stats.prompts == stats.samples == len(PROMPTS)
    assert stats.prompt_tokens == sum(len(p) + 1 for p in PROMPTS)  # chars + <s>
    assert sum(cuts) < stats.generated_tokens <= 10 * len(PROMPTS)
    assert stats.seconds > 0
    # generate: 3 static batches; the loop: its prefill passes (waiting rows join the running batch as rows end)
    assert stats.batches == 3 if decoder == "generate" else 3 <= stats.batches <= len(PROMPTS)


def test_gpt2_batched_equals_one_at_a_time_and_truncates(tok):
    model = tiny_gpt2(tok, hidden=32, layers=2, heads=2, max_positions=32, seed=2)
    backend = HFBackend(model, tok, batch_size=4)
    config = GenerationConfig(max_new_tokens=6, stop=())
    batched = backend.generate(PROMPTS, config)
    assert batched == [backend.generate([p], config)[0] for p in PROMPTS]
    long_prompt = "1234567890" * 5  # longer than the 32 positions
    out = backend.generate([long_prompt], config)
    assert len(out[0][0]) == 6 and backend.last_stats.truncated_prompts == 1
    assert backend.last_stats.prompt_tokens == 32 - 6


def test_num_samples_greedy_repeats(llama, tok, full_outputs):
    out = HFBackend(llama, tok).generate(PROMPTS[:3], GenerationConfig(max_new_tokens=10, stop=()),
                                         num_samples=3)
    assert out == [[o] * 3 for o in full_outputs[:3]]


def test_sampling_is_reproducible_per_seed(llama, tok):
    config = GenerationConfig(max_new_tokens=8, stop=(), temperature=1.0, top_p=0.95)
    backend = HFBackend(llama, tok, batch_size=4)
    a = backend.generate(PROMPTS, config, seed=7, num_samples=2)
    assert backend.generate(PROMPTS, config, seed=7, num_samples=2) == a
    assert backend.generate(PROMPTS, config, seed=8, num_samples=2) != a
    assert all(len(row) == 2 for row in a) and any(r[0] != r[1] for r in a)
    assert backend.last_stats.samples == 2 * len(PROMPTS)
    # a sample does not depend on the batch it was drawn in
    assert HFBackend(llama, tok, batch_size=1).generate(PROMPTS[5:7], config, seed=7, num_samples=2) == a[5:7]
    gen = HFBackend(llama, tok, batch_size=4, decoder="generate")
    assert gen.generate(PROMPTS, config, seed=7) == gen.generate(PROMPTS, config, seed=7)


def test_training_mode_is_restored(llama, tok):
    backend = HFBackend(llama, tok)
    config = GenerationConfig(max_new_tokens=3)
    llama.train()
    try:
        backend.generate(["1+1="], config)
        assert llama.training
        def boom(module, args, kwargs):
            raise RuntimeError("boom")
        handle = llama.register_forward_pre_hook(boom, with_kwargs=True)
        try:
            with pytest.raises(RuntimeError, match="boom"):
                backend.generate(["1+1="], config)
        finally:
            handle.remove()
        assert llama.training
    finally:
        llama.eval()
    backend.generate(["1+1="], config)
    assert not llama.training


def test_max_new_tokens_is_required(llama, tok):
    with pytest.raises(ValueError, match="max_new_tokens"):
        HFBackend(llama, tok).generate(["1+1="], GenerationConfig())


def test_identity_follows_the_weights(tok):
    model = tiny_llama(tok, hidden=32, layers=1, seed=5)
    backend = HFBackend(model, tok)
    first = backend.identity
    assert first.startswith("hf:LlamaForCausalLM:")
    backend.generate(["1+1="], GenerationConfig(max_new_tokens=2))
    model.train()
    assert backend.identity == first  # stable: reading, generating, mode switches
    model.eval()
    weight = model.model.layers[0].mlp.down_proj.weight
    original = weight[3, 4].clone()
    with torch.no_grad():
        weight[3, 4] += 1e-6  # one weight, by one small step
    changed = backend.identity
    assert changed != first
    weight.data[3, 4] += 1.0  # via .data: invisible to version counters, not to the hash
    assert backend.identity not in (first, changed)
    weight.data[3, 4] = original
    assert backend.identity == first
    assert HFBackend(tiny_llama(tok, hidden=32, layers=1, seed=6), tok).identity != first


def test_backends_satisfy_the_protocol(llama, tok):
    from evalkit.models import ExampleGenerator, HasDevice, TokenCounter
    from evalkit.models.base import missing_members
    from evalkit.models.oracle import OracleBackend

    hf, py, oracle = HFBackend(llama, tok), PythonCallableBackend(str.upper), OracleBackend()
    for backend in (hf, py, oracle):
        assert isinstance(backend, ModelBackend) and missing_members(backend) == []
    # The optional capabilities, each its own protocol.
    assert isinstance(oracle, ExampleGenerator) and not isinstance(hf, ExampleGenerator)
    assert isinstance(hf, HasDevice) and str(hf.device) == "cpu" and not isinstance(py, HasDevice)
    assert not any(isinstance(b, TokenCounter) for b in (hf, py, oracle))
    assert missing_members(object()) == ["identity", "last_stats", "generate"]


def answer(prompt: str) -> str:
    a, b = prompt.rstrip("=").split("+")
    return f"{int(a) + int(b)}\nnext question"


def test_python_callable_backend():
    backend = PythonCallableBackend(answer)
    assert backend.identity == f"python:{__name__}:answer"
    config = GenerationConfig(max_new_tokens=5)
    assert backend.generate(["1+2=", "30+4="], config) == [["3"], ["34"]]
    assert backend.generate(["1+2="], config, num_samples=2) == [["3", "3"]]
    assert backend.last_stats.samples == 2

    def batched(prompts, config, seed=0):
        return [f"{p}|{seed}|STOP tail" for p in prompts]

    b2 = PythonCallableBackend(batched)
    assert b2.batched and b2.identity.endswith("test_python_callable_backend.<locals>.batched")
    assert b2.generate(["a", "b"], GenerationConfig(stop=("STOP",)), seed=3, num_samples=2) == [
        ["a|3|", "a|4|"], ["b|3|", "b|4|"]]
    with pytest.raises(ValueError):
        PythonCallableBackend(lambda ps, c: ["x"]).generate(["a", "b"], config)
