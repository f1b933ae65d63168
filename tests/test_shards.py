"""Rows decoded by several decoders at once (evalkit.models.shards: `HFBackend(decode_threads=...,
decode_processes=...)`): threads, or the calling thread and processes forked for the call.

Splitting the rows must change no row's tokens, greedy or sampled (the expected outputs are test_decode's:
transformers' own `generate`, one prompt at a time); the decoders' torch thread count (one each) must not leak
into the caller's, nor into threads started later; an error or death in a decoder reaches the caller and leaves
no process behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

# The same prompts, references and models as test_decode.
from test_decode import MAX_NEW, MODELS, PROMPTS, pick_stops, references  # noqa: E402

from evalkit.core.extract import cut_at_stop  # noqa: E402
from evalkit.core.task import GenerationConfig  # noqa: E402
from evalkit.models.hf import HFBackend  # noqa: E402
from evalkit.models.tiny import build_char_tokenizer, tiny_llama  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request, tok):
    return MODELS[request.param](tok)


@pytest.fixture
def two_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@contextlib.contextmanager
def where_forward_runs(model) -> Iterator[list[tuple[str, int]]]:
    """(thread name, torch threads there) of every forward call made inside the block."""
    seen: list[tuple[str, int]] = []
    handle = model.register_forward_pre_hook(
        lambda module, args: seen.append((threading.current_thread().name, torch.get_num_threads())))
    try:
        yield seen
    finally:
        handle.remove()


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_rows_decoded_by_several_decoders_are_the_rows_decoded_one_at_a_time(model, tok, two_torch_threads,
                                                                              processes):
    free = references(model, tok, PROMPTS)
    stops = pick_stops(free)
    want = [cut_at_stop(o, stops) for o in free]
    here = threading.current_thread().name
    for threads in (2, 3):
        for batch_size in (2, 6, 64):
            for prefix_cache, continuous in ((True, True), (False, False)):
                backend = HFBackend(model, tok, batch_size=batch_size, prefix_cache=prefix_cache,
                                    continuous_batching=continuous, decode_threads=threads,
                                    decode_processes=processes)
                with where_forward_runs(model) as seen:
                    got = backend.generate(PROMPTS, GenerationConfig(max_new_tokens=MAX_NEW, stop=stops))
                assert got == [[w] for w in want], (threads, batch_size, prefix_cache, continuous)
                decoding = {name for name, _ in seen if name.startswith("evalkit-decode-")}
                if processes:  # shard 0 here (at one torch thread), the others in children: not seen here
                    assert not decoding and any(n == 1 for name, n in seen if name == here)
                else:
                    assert decoding == {f"evalkit-decode-{k}" for k in range(threads)}
                    assert all(n == 1 for name, n in seen if name in decoding)
                assert backend.last_stats.generated_tokens >= sum(len(tok(w, add_special_tokens=False)["input_ids"])
                                                                  for w in want)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_sampled_rows_do_not_depend_on_the_decoders(tok, two_torch_threads, processes):
    model = tiny_llama(tok, hidden=64, layers=2, heads=4, seed=1)
    config = GenerationConfig(max_new_tokens=MAX_NEW, stop=(), temperature=1.0, top_p=0.9)
    one = HFBackend(model, tok, batch_size=4, decode_threads=1).generate(PROMPTS, config, seed=5, num_samples=3)
    three = HFBackend(model, tok, batch_size=4, decode_threads=3, decode_processes=processes).generate(
        PROMPTS, config, seed=5, num_samples=3)
    assert one == three and any(len(set(r)) > 1 for r in one)


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_the_callers_thread_count_and_later_threads_keep_theirs(tok, two_torch_threads, processes):
    model = tiny_llama(tok, hidden=32, layers=1, heads=2, seed=0)
    HFBackend(model, tok, batch_size=8, decode_threads=2, decode_processes=processes).generate(
        PROMPTS, GenerationConfig(max_new_tokens=4))
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
        with where_forward_runs(model) as seen:
            HFBackend(model, tok, batch_size=batch_size, decode_processes=False).generate(PROMPTS, config)
        names[batch_size] = {name for name, _ in seen}
    # (the shared prefix of PROMPTS is computed once, on the calling thread, before the rows are split)
    assert names[64] == {"evalkit-decode-0", "evalkit-decode-1", threading.current_thread().name}
    assert names[8] == {threading.current_thread().name}
    torch.set_num_threads(1)
    with where_forward_runs(model) as seen:
        HFBackend(model, tok, batch_size=64, decode_processes=False).generate(PROMPTS, config)
    assert {name for name, _ in seen} == {threading.current_thread().name}


def test_an_error_on_a_decoding_thread_reaches_the_caller(tok, two_torch_threads):
    model = tiny_llama(tok, hidden=32, layers=1, heads=2, seed=0)

    def fail_on_thread_1(module, args):
        if threading.current_thread().name == "evalkit-decode-1":
            raise RuntimeError("forward failed on thread 1")

    handle = model.register_forward_pre_hook(fail_on_thread_1)
    try:
        with pytest.raises(RuntimeError, match="forward failed on thread 1"):
            HFBackend(model, tok, batch_size=8, decode_threads=2, decode_processes=False).generate(
                PROMPTS, GenerationConfig(max_new_tokens=4))
    finally:
        handle.remove()
    assert torch.get_num_threads() == 2


def test_decode_threads_must_be_positive(tok):
    model = tiny_llama(tok, hidden=32, layers=1, heads=2, seed=0)
    with pytest.raises(ValueError, match="decode_threads"):
        HFBackend(model, tok, decode_threads=0)


def forked_children(monkeypatch) -> list[int]:
    """The pids of the decoding processes started from here on."""
    from evalkit.models import shards

    pids: list[int] = []
    real = shards.fork_shard

    def noting(work, k):
        pid, fd = real(work, k)
        pids.append(pid)
        return pid, fd

    monkeypatch.setattr(shards, "fork_shard", noting)
    return pids


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_by_default_on_a_cpu_the_other_decoders_are_forked_processes(tok, two_torch_threads, monkeypatch, tmp_path):
    model = tiny_llama(tok, hidden=32, layers=1, heads=2, seed=0)
    pids = forked_children(monkeypatch)
    log = tmp_path / "pids"

    def note(module, args):
        with log.open("a") as f:
            f.write(f"{os.getpid()}\n")

    handle = model.register_forward_pre_hook(note)
    try:
        HFBackend(model, tok, batch_size=64).generate(PROMPTS, GenerationConfig(max_new_tokens=4))
    finally:
        handle.remove()
    ran = set(map(int, log.read_text().split()))
    assert len(pids) == 1 and ran == {os.getpid(), pids[0]}  # two decoders: here, and one child
    assert gone(pids[0]) and torch.get_num_threads() == 2


@pytest.mark.parametrize("how", ["raises", "is-killed"])
def test_a_decoding_process_that_fails_or_dies_is_an_error_here(tok, two_torch_threads, monkeypatch, how):
    model = tiny_llama(tok, hidden=32, layers=1, heads=2, seed=0)
    pids = forked_children(monkeypatch)
    parent = os.getpid()

    def in_the_child(module, args):
        if os.getpid() != parent:
            if how == "raises":
                raise ValueError("forward failed in the child")
            os.kill(os.getpid(), signal.SIGKILL)

    handle = model.register_forward_pre_hook(in_the_child)
    expected = "forward failed in the child" if how == "raises" else r"a decoding process died \(killed by SIGKILL\)"
    try:
        with pytest.raises(ValueError if how == "raises" else RuntimeError, match=expected):
            HFBackend(model, tok, batch_size=8, decode_threads=2).generate(PROMPTS, GenerationConfig(max_new_tokens=4))
    finally:
        handle.remove()
    assert pids and all(gone(p) for p in pids) and torch.get_num_threads() == 2


def test_an_error_here_ends_the_decoding_processes(tok, two_torch_threads, monkeypatch):
    model = tiny_llama(tok, hidden=32, layers=1, heads=2, seed=0)
    pids = forked_children(monkeypatch)
    parent = os.getpid()

    def here_only(module, args):
        if os.getpid() == parent and threading.current_thread() is threading.main_thread() and pids:
            raise KeyboardInterrupt  # Ctrl-C while this process decodes its own share

    handle = model.register_forward_pre_hook(here_only)
    try:
        with pytest.raises(KeyboardInterrupt):
            HFBackend(model, tok, batch_size=64, decode_threads=3).generate(PROMPTS * 4,
                                                                              GenerationConfig(max_new_tokens=40))
    finally:
        handle.remove()
    assert len(pids) == 2 and all(gone(p) for p in pids)


def test_a_decoding_process_decodes_without_the_tokenizers_thread_pool(tok, two_torch_threads, tmp_path,
                                                                        monkeypatch):
    # A thread pool does not survive a fork: the child is told (TOKENIZERS_PARALLELISM=false) to decode its stop
    # candidates on its own thread; the caller's setting is left as it was, set or not.
    model = tiny_llama(tok, hidden=32, layers=1, heads=2, seed=0)
    log, parent = tmp_path / "env", os.getpid()

    def note(module, args):
        if os.getpid() != parent:
            with log.open("a") as f:
                f.write(os.environ.get("TOKENIZERS_PARALLELISM", "unset") + "\n")

    handle = model.register_forward_pre_hook(note)
    try:
        for before in (None, "true"):
            if before is None:
                monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
            else:
                monkeypatch.setenv("TOKENIZERS_PARALLELISM", before)
            out = HFBackend(model, tok, batch_size=64).generate(PROMPTS, GenerationConfig(max_new_tokens=4,
                                                                                         stop=("\n",)))
            assert len(out) == len(PROMPTS) and os.environ.get("TOKENIZERS_PARALLELISM") == before
    finally:
        handle.remove()
    assert set(log.read_text().split()) == {"false"}
