"""Decoding on several threads (`HFBackend(decode_threads=...)`, evalkit.models.decode.decode_sharded).

The expected outputs are transformers' own `model.generate`, one prompt at a time (test_decode.py's
`references`): splitting the rows between threads must change no row's tokens, greedy or sampled. The
threads' torch thread count (one each) must not leak into the caller's, nor into threads started later.
"""

from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_decode import MAX_NEW, PROMPTS, pick_stops, references  # noqa: E402

from evalkit.core.extract import cut_at_stop  # noqa: E402
from evalkit.core.task import GenerationConfig  # noqa: E402
from evalkit.models.hf import HFBackend  # noqa: E402
from evalkit.models.tiny import build_char_tokenizer, tiny_gpt2, tiny_llama  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request, tok):
    if request.param == "llama":
        return tiny_llama(tok, hidden=64, layers=2, heads=4, seed=1)
    return tiny_gpt2(tok, hidden=64, layers=2, heads=4, seed=3)


@pytest.fixture
def two_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def where_forward_runs(model) -> tuple[list[tuple[str, int]], object]:
    """(thread name, torch threads there) of every forward call, and the hook's handle."""
    seen: list[tuple[str, int]] = []
    handle = model.register_forward_pre_hook(
        lambda module, args: seen.append((threading.current_thread().name, torch.get_num_threads())))
    return seen, handle


def test_rows_decoded_on_threads_are_the_rows_decoded_one_at_a_time(model, tok, two_torch_threads):
    free = references(model, tok, PROMPTS)
    stops = pick_stops(free)
    want = [cut_at_stop(o, stops) for o in free]
    for threads in (2, 3):
        for batch_size in (2, 6, 64):
            for prefix_cache, continuous in ((True, True), (False, False)):
                backend = HFBackend(model, tok, batch_size=batch_size, prefix_cache=prefix_cache,
                                    continuous_batching=continuous, decode_threads=threads)
                seen, handle = where_forward_runs(model)
                try:
                    got = backend.generate(PROMPTS, GenerationConfig(max_new_tokens=MAX_NEW, stop=stops))
                finally:
                    handle.remove()
                assert got == [[w] for w in want], (threads, batch_size, prefix_cache, continuous)
                decoding = {name for name, _ in seen if name.startswith("evalkit-decode-")}
                assert decoding == {f"evalkit-decode-{k}" for k in range(threads)}
                assert all(n == 1 for name, n in seen if name in decoding)
                assert backend.last_stats.generated_tokens >= sum(len(tok(w, add_special_tokens=False)["input_ids"])
                                                                  for w in want)
    assert torch.get_num_threads() == 2


def test_sampled_rows_do_not_depend_on_the_threads(tok, two_torch_threads):
    model = tiny_llama(tok, hidden=64, layers=2, heads=4, seed=1)
    config = GenerationConfig(max_new_tokens=MAX_NEW, stop=(), temperature=1.0, top_p=0.9)
    one = HFBackend(model, tok, batch_size=4, decode_threads=1).generate(PROMPTS, config, seed=5, num_samples=3)
    three = HFBackend(model, tok, batch_size=4, decode_threads=3).generate(PROMPTS, config, seed=5, num_samples=3)
    assert one == three and any(len(set(r)) > 1 for r in one)


def test_the_callers_thread_count_and_later_threads_keep_theirs(tok, two_torch_threads):
    model = tiny_llama(tok, hidden=32, layers=1, heads=2, seed=0)
    HFBackend(model, tok, batch_size=8, decode_threads=2).generate(PROMPTS, GenerationConfig(max_new_tokens=4))
    assert torch.get_num_threads() == 2
    later: list[int] = []
    t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert later == [2]


def test_default_threads_one_per_torch_thread_with_enough_rows_each(tok, two_torch_threads):
    model = tiny_llama(tok, hidden=32, layers=1, heads=2, seed=0)
    config = GenerationConfig(max_new_tokens=4)
    names = {}
    for batch_size in (64, 8):  # 8 rows a batch: too few to split (each thread gets at least 8)
        seen, handle = where_forward_runs(model)
        try:
            HFBackend(model, tok, batch_size=batch_size).generate(PROMPTS, config)
        finally:
            handle.remove()
        names[batch_size] = {name for name, _ in seen}
    # (the shared prefix of PROMPTS is computed once, on the calling thread, before the rows are split)
    assert names[64] == {"evalkit-decode-0", "evalkit-decode-1", threading.current_thread().name}
    assert names[8] == {threading.current_thread().name}
    torch.set_num_threads(1)
    seen, handle = where_forward_runs(model)
    try:
        HFBackend(model, tok, batch_size=64).generate(PROMPTS, config)
    finally:
        handle.remove()
    assert {name for name, _ in seen} == {threading.current_thread().name}


def test_an_error_on_a_decoding_thread_reaches_the_caller(tok, two_torch_threads):
    model = tiny_llama(tok, hidden=32, layers=1, heads=2, seed=0)

    def fail_on_thread_1(module, args):
        if threading.current_thread().name == "evalkit-decode-1":
            raise RuntimeError("forward failed on thread 1")

    handle = model.register_forward_pre_hook(fail_on_thread_1)
    try:
        with pytest.raises(RuntimeError, match="forward failed on thread 1"):
            HFBackend(model, tok, batch_size=8, decode_threads=2).generate(PROMPTS, GenerationConfig(max_new_tokens=4))
    finally:
        handle.remove()
    assert torch.get_num_threads() == 2


def test_decode_threads_must_be_positive(tok):
    model = tiny_llama(tok, hidden=32, layers=1, heads=2, seed=0)
    with pytest.raises(ValueError, match="decode_threads"):
        HFBackend(model, tok, decode_threads=0)
