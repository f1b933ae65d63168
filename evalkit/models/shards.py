"""A call's rows decoded in shards at once, each at one intra-op thread: `decode_sharded`.

On a CPU a small model's decoding step is mostly fixed costs per operation. Run as one batch on a team of
OpenMP threads, each operation pays a wake-up of the team (OMP_WAIT_POLICY=PASSIVE, which the `evalkit`
command sets, puts idle threads to sleep); run as independent shards at one intra-op thread each, none does.
Where the shards run:

- **Forked processes** (`processes=True`: Linux, a model on the CPU): shard 0 runs in the calling thread,
  each other shard in a child forked for this call, which decodes its rows and sends back their tokens
  (pickle, through a pipe) before it exits. Threads of one process take turns at the GIL, which a small
  model's forward holds for most of its operations; processes do not (on the ~1M model two threads decoded
  1.0-1.25x as fast as one, two processes 1.9x: bench/RESULTS.md). A child shares the parent's memory as it
  was at the fork (the weights as they are now: nothing is copied or loaded), ignores Ctrl-C, dies with the
  thread that forked it (PR_SET_PDEATHSIG), and leaves by `os._exit`: it never runs the parent's exit
  handlers or flushes its buffers. An error in a child is raised in the caller; a child that dies (killed,
  out of memory) is a RuntimeError that says how; an error or Ctrl-C in the caller kills the children.
- **Threads** (elsewhere, or `processes=False`): one per shard, named `evalkit-decode-K`.

Either way each shard decodes every `shards`-th row (so each keeps the given order) with `batch_size //
shards` rows in flight — as many rows in flight as one `decode_rows` — and the result is the same as one
`decode_rows`: a row's tokens do not depend on the rows beside it. The calling thread's torch thread count is
unchanged (torch's is per thread; its process-wide default is put back).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from evalkit.core.checkworker import become_helper, describe_exit, stop_signals_held
from evalkit.core.scoring import describe_exception
from evalkit.models.decode import ModelCall, Prefixes, StopCheck, decode_rows

if TYPE_CHECKING:
    from evalkit.core.task import GenerationConfig

Decoded = tuple[list[list[int]], int, int]  # each row's new tokens, tokens generated, prefill passes
TOKENIZERS_ENV = "TOKENIZERS_PARALLELISM"


def decode_sharded(call: ModelCall, rows: list[list[int]], config: GenerationConfig, stops: StopCheck, *,
                   shards: int, batch_size: int, gens: list[torch.Generator] | None = None,
                   prefix: Prefixes | None = None, groups: list[int] | None = None,
                   continuous: bool = False, processes: bool = False) -> Decoded:
    """`decode_rows` over `shards` shards at once (see the module's doc); `processes`: shards after the first
    in forked processes, else on threads."""
    if shards < 2 or len(rows) < 2 * shards:
        return decode_rows(call, rows, config, stops, batch_size=batch_size, gens=gens, prefix=prefix,
                           groups=groups, continuous=continuous)
    parts = [list(range(k, len(rows), shards)) for k in range(shards)]
    each = max(1, batch_size // shards)

    def work(k: int) -> Decoded:
        idx = parts[k]
        with torch.inference_mode():
            return decode_rows(call, [rows[i] for i in idx], config, stops, batch_size=each,
                               gens=[gens[i] for i in idx] if gens else None, prefix=prefix,
                               groups=[groups[i] for i in idx] if groups else None, continuous=continuous)

    results = on_processes(work, shards) if processes else on_threads(work, shards)
    out: list[list[int]] = [[] for _ in rows]
    n_gen = prefills = 0
    for idx, res in zip(parts, results):
        for i, toks in zip(idx, res[0]):
            out[i] = toks
        n_gen += res[1]
        prefills += res[2]
    return out, n_gen, prefills


def on_threads(work: Callable[[int], Decoded], shards: int) -> list[Decoded]:
    """`work(k)` for each shard k, on a thread of its own at one intra-op thread."""
    results: list[Decoded | None] = [None] * shards
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            try:
                # torch gives a thread its count on its first use (from the process default) and keeps it:
                # use first, then set — to this thread's 1 (and the default's, until the caller puts it back).
                torch.get_num_threads()
                torch.set_num_threads(1)
            finally:
                ready.wait()
            results[k] = work(k)
        except BaseException as exc:  # noqa: BLE001  # re-raised in the calling thread
            errors.append(exc)

    saved = torch.get_num_threads()
    ready = threading.Barrier(shards + 1)
    # Daemon threads: a Ctrl-C in the caller is not held up until they finish (their results are dropped).
    threads = [threading.Thread(target=run, args=(k,), name=f"evalkit-decode-{k}", daemon=True)
               for k in range(shards)]
    try:
        for t in threads:
            t.start()
        ready.wait()  # every worker holds its one thread now: put back the default new threads start with
        torch.set_num_threads(saved)
        for t in threads:
            t.join()
    finally:
        torch.set_num_threads(saved)
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]


def on_processes(work: Callable[[int], Decoded], shards: int) -> list[Decoded]:
    """`work(0)` here and `work(k)` for each other shard in a forked child, all at one intra-op thread."""
    children: list[tuple[int, int]] = []  # (pid, the read end of its pipe)
    saved = torch.get_num_threads()
    try:
        for k in range(1, shards):
            children.append(fork_shard(work, k))
        torch.set_num_threads(1)
        results = [work(0)]
        while children:
            pid, fd = children.pop(0)
            results.append(reap(pid, fd))
    except BaseException:
        for pid, fd in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            with contextlib.suppress(OSError):
                os.close(fd)
        raise
    finally:
        torch.set_num_threads(saved)
    return results


def fork_shard(work: Callable[[int], Decoded], k: int) -> tuple[int, int]:
    """Fork a child that runs `work(k)` and writes ("ok", result) or ("raise", error), pickled, to a pipe;
    (its pid, the pipe's read end)."""
    parent = os.getpid()
    r, w = os.pipe()
    # A thread pool does not survive a fork: the child decodes its stop candidates with the tokenizer on its own
    # thread (the tokenizers library reads this at each call; the caller's setting is put back right after).
    had = os.environ.get(TOKENIZERS_ENV)
    os.environ[TOKENIZERS_ENV] = "false"
    try:
        with stop_signals_held():
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child (measured by the tests through its results)
                _child(work, k, parent, r, w)
    finally:
        if had is None:
            os.environ.pop(TOKENIZERS_ENV, None)
        else:
            os.environ[TOKENIZERS_ENV] = had
    os.close(w)
    return pid, r


def _child(work: Callable[[int], Decoded], k: int, parent: int, r: int, w: int) -> None:
    code = 1
    try:
        become_helper(parent)
        os.close(r)
        torch.set_num_threads(1)
        try:
            reply: tuple[str, Any] = ("ok", work(k))
        except BaseException as exc:  # noqa: BLE001 - raised in the parent
            reply = ("raise", exc)
        try:
            data = pickle.dumps(reply)
        except Exception:  # noqa: BLE001 - an error that does not pickle is described
            data = pickle.dumps(("raise", RuntimeError(describe_exception(reply[1]))))
        with os.fdopen(w, "wb") as f:
            f.write(data)
        code = 0
    finally:
        os._exit(code)


def reap(pid: int, fd: int) -> Decoded:
    """The result a child sent (its error raised here); RuntimeError when it died without one."""
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise RuntimeError(f"a decoding process died ({describe_exit(os.waitstatus_to_exitcode(status))})")
    kind, payload = pickle.loads(data)
    if kind == "raise":
        raise payload
    return payload


__all__ = ["Decoded", "decode_sharded", "fork_shard", "on_processes", "on_threads", "reap"]
