"""One task of a run, streamed: examples in chunks, each chunk's samples resumed from the journal or generated,
checked and journaled, then handed on as sample rows and counted — never all held at once.

A task's examples are read lazily (`Task.iter_examples`: a JSONL data file a line at a time), `CHUNK` of them
at a time. For each chunk the journal is asked which samples it holds (its index holds keys, not outputs:
evalkit.run.journal), the rest are generated in batches (evalkit.run.batching) and journaled, and the chunk's
sample rows go, in example order, to a sink (samples.jsonl, or a list in memory) and into the task's counts
(evalkit.run.counts). So the memory of a run does not grow with its examples beyond the ids of a data file
(kept to skip a repeated row) and the journal's keys on a resume. An adaptive run shuffles its examples, so
it holds them (its n examples, not their samples).

Checks overlap generation: a batch's outputs are sent to the checkers (`Scorer.submit`: worker processes, or
threads) and the next batch is generated while they are checked; then the first batch's results are collected
and journaled. So a batch reaches the journal before the batch after next is asked for, and an error or Ctrl-C
while a batch is generated first journals the batch before it. `check_s` in the timings is the time the run
waited for checks beyond what overlapped generation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain, islice
from typing import Any

from evalkit.core import keptpool
from evalkit.core.checkpool import Pending, fork_available, is_contained
from evalkit.core.example import Example
from evalkit.core.scoring import Scored, score
from evalkit.core.task import GenerationConfig, Task, default_max_new_tokens
from evalkit.errors import NothingToRun
from evalkit.models.base import ExampleGenerator, ModelBackend, TokenCounter
from evalkit.models.failed import FailedOutput
from evalkit.run.batching import BatchSizer, Tally, clean_outputs
from evalkit.run.counts import TaskCounts
from evalkit.run.journal import Journal, prompt_fingerprint, sample_keys
from evalkit.run.record import sample_row, task_entry
from evalkit.run.sequential import Sequential, seeded_order

CHUNK = 512  # examples looked up in the journal, generated and handed on together
HELD = 2 * CHUNK  # a task with fewer examples holds them, rather than reading them twice
# Progress callback: (task name, examples done, examples total), called after each batch.
ProgressFn = Callable[[str, int, int], None]
# Where a task's sample rows go, a chunk at a time, in example order.
SinkFn = Callable[[list[dict[str, Any]]], None]


def size_max_new_tokens(task: Task, examples: Iterable[Example], backend: object) -> int:
    """Room for `task`'s longest reference in `examples` plus a margin, counted in the backend's tokens
    when it is a TokenCounter, else in characters (see `evalkit.core.task.default_max_new_tokens`)."""
    count = backend.count_tokens if isinstance(backend, TokenCounter) else None
    return default_max_new_tokens((e.reference for e in examples), count)


class Scorer:
    """Where checks run: in worker processes (evalkit.core.checkpool), where a check past its deadline is
    ended, not abandoned; on threads here for tasks marked `contained` (their checks bound themselves,
    e.g. code in the sandbox), and where fork is unavailable. Workers start at the first check that
    needs them; an evaluation that ends well keeps them for the next one (evalkit.core.keptpool)."""

    def __init__(self, tasks: Sequence[Task], workers: int, timeout: float, thread_workers: int | None = None):
        """`thread_workers`: threads for the contained tasks' checks (default `workers`); a thread mostly waits
        on the sandbox, whose pool runs more checks at once than there are CPUs."""
        self.timeout = timeout
        in_workers = [t for t in tasks if not is_contained(t)]
        self.pool = keptpool.take(in_workers, workers=workers, timeout=timeout) if fork_available() and in_workers \
            else None
        self.in_workers = {id(t) for t in in_workers}
        self.threads = ThreadPoolExecutor(max_workers=thread_workers or workers, thread_name_prefix="evalkit-score")

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None and exc[0] is None:
            keptpool.keep(self.pool)
        elif self.pool is not None:
            self.pool.close(kill=True)
        self.threads.shutdown(wait=exc[0] is None, cancel_futures=True)

    def submit(self, task: Task, jobs: list[tuple[Example, str]]) -> Pending | list[Future[Scored]]:
        """Start checking `jobs` and return at once (one submission in worker processes at a time)."""
        if self.pool is not None and id(task) in self.in_workers:
            return self.pool.submit(task, jobs)
        return [self.threads.submit(score, task, ex, out, timeout=self.timeout) for ex, out in jobs]

    def collect(self, submitted: Pending | list[Future[Scored]]) -> list[Scored]:
        """The results of a `submit`, in job order."""
        if isinstance(submitted, list):
            return [f.result() for f in submitted]
        assert self.pool is not None
        return self.pool.collect(submitted)


def _chunks(items: Iterable[Example], size: int) -> Iterator[list[Example]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


@dataclass
class _Asked:
    """A batch generated (and being checked): its examples, its chat messages, its (example, sample index,
    output) jobs, and its checks once submitted."""

    batch: list[Example]
    messages: dict[str, Any]
    jobs: list[tuple[Example, int, Any]]
    submitted: Pending | list[Future[Scored]] | None = None


class _TaskRun:
    """The state of one task's run: settings, timings and counts, fed a chunk of examples at a time."""

    def __init__(self, task: Task, backend: ModelBackend, identity: str, journal: Journal | None, scorer: Scorer,
                 gen: GenerationConfig, *, seed: int, k: int, chat: bool, batch_size: int, tally: Tally,
                 progress: ProgressFn | None, sink: SinkFn | None, total: int):
        self.task, self.backend, self.identity, self.journal, self.scorer = task, backend, identity, journal, scorer
        self.gen, self.gen_key, self.seed, self.k, self.chat = gen, gen.to_dict(), seed, k, chat
        self.tally, self.progress, self.sink, self.total = tally, progress, sink, total
        self.key = sample_keys(identity, task.name, task.version, self.gen_key, seed)  # sample_key, faster
        self.sizer = BatchSizer(batch_size, backend, journaled=journal is not None)
        self.counts = TaskCounts()
        self.gen_s = self.check_s = 0.0
        self.gen_tokens = self.prompt_tokens = self.generated_examples = 0
        self.done = 0  # examples of this task finished (resumed or generated)
        self.first_passes = 0  # examples whose first sample passed (what an adaptive run looks at)

    def chunk(self, chunk: list[Example]) -> None:
        """Resume, generate, check and journal one chunk of examples; hand its rows on and count them."""
        task, k, journal = self.task, self.k, self.journal
        messages = {ex.id: task.messages(ex) for ex in chunk} if self.chat else {}
        make_key = self.key
        keys = {(ex.id, i): make_key(ex.id, i, prompt_fingerprint(messages[ex.id]) if self.chat else None)
                for ex in chunk for i in range(k)}
        found: dict[tuple[str, int], dict[str, Any]] = {}
        if journal is not None:
            for key_id, key in keys.items():
                entry = journal.get(key)
                if entry is not None and "failed" not in entry:  # a failed sample is generated again
                    found[key_id] = entry
        self.tally.resumed += len(found)
        pending = [ex for ex in chunk if any((ex.id, i) not in found for i in range(k))]
        self.done += len(chunk) - len(pending)
        if self.progress:
            self.progress(task.name, self.done, self.total)
        checking: _Asked | None = None  # the batch being checked while the next one is generated
        while pending:
            batch, pending = pending[: self.sizer.size], pending[self.sizer.size:]
            try:
                asked = self._ask(batch, messages)
            except BaseException:
                if checking is not None:  # what was generated before reaches the journal (then the error)
                    found.update(self._finish(checking, keys))
                raise
            if checking is not None:
                found.update(self._finish(checking, keys))
            self._submit(asked)
            checking = asked
        if checking is not None:
            found.update(self._finish(checking, keys))
        rows: list[dict[str, Any]] = []
        for ex in chunk:
            mine = [sample_row(found[(ex.id, i)]) for i in range(k)]
            self.counts.add_example(mine[0]["level"], ((s["status"], s["score"]) for s in mine))
            self.first_passes += mine[0]["status"] == "PASS"
            rows.extend(mine)
        if self.sink is not None:
            self.sink(rows)

    def _ask(self, batch: list[Example], messages: dict[str, Any]) -> _Asked:
        """Generate `batch`'s samples."""
        backend, k, gen = self.backend, self.k, self.gen
        t0 = time.perf_counter()
        if isinstance(backend, ExampleGenerator):
            raw = backend.generate_examples(batch, gen, seed=self.seed, num_samples=k)
        else:
            prompts = [messages[ex.id] if self.chat else ex.prompt for ex in batch]
            raw = backend.generate(prompts, gen, seed=self.seed, num_samples=k)
        outputs = clean_outputs(raw, len(batch), k, self.identity)
        t1 = time.perf_counter()
        self.gen_s += t1 - t0
        self.gen_tokens += backend.last_stats.generated_tokens
        self.prompt_tokens += backend.last_stats.prompt_tokens
        self.generated_examples += len(batch)
        self.sizer.done(len(batch), t1 - t0)  # the next batch's size (its checks overlap the next generation)
        jobs = [(ex, i, outs[i]) for ex, outs in zip(batch, outputs) for i in range(k)]
        return _Asked(batch, messages, jobs)

    def _submit(self, asked: _Asked) -> None:
        """Start checking `asked`'s outputs (in worker processes, or on threads)."""
        t0 = time.perf_counter()
        to_check = [(ex, output) for ex, _, output in asked.jobs if not isinstance(output, FailedOutput)]
        asked.submitted = self.scorer.submit(self.task, to_check)
        self.check_s += time.perf_counter() - t0

    def _finish(self, asked: _Asked, keys: dict[tuple[str, int], str]) -> dict[tuple[str, int], dict[str, Any]]:
        """Wait for `asked`'s checks, journal its samples and count them."""
        task, messages = self.task, asked.messages
        t0 = time.perf_counter()
        assert asked.submitted is not None
        checked = iter(self.scorer.collect(asked.submitted))
        self.check_s += time.perf_counter() - t0
        made: dict[tuple[str, int], dict[str, Any]] = {}
        entries = []
        for ex, i, output in asked.jobs:
            entry = {"key": keys[(ex.id, i)], "model": self.identity, "task": task.name,
                     "task_version": task.version, "example": ex.to_dict(), "sample_index": i, "seed": self.seed,
                     "generation": self.gen_key}
            if isinstance(output, FailedOutput):
                entry.update(output="", answer="", failed=output.error,
                             verdict={"status": "ERROR", "score": 0.0, "reason": f"no output: {output.error}"})
                self.tally.failed += 1
            else:
                sc = next(checked)
                entry.update(output=str(output), answer=sc.answer, verdict=sc.verdict.to_dict())
            if self.chat:
                entry["messages"] = messages[ex.id]
            entries.append(entry)
            made[(ex.id, i)] = entry
        if self.journal is not None:
            self.journal.append(entries)  # on disk before the batch after next is asked for
        self.tally.generated += len(entries)
        self.done += len(asked.batch)
        if self.progress:
            self.progress(task.name, self.done, self.total)
        return made

    def timings(self) -> dict[str, Any]:
        gen_s = self.gen_s
        return {"generate_s": round(gen_s, 4), "check_s": round(self.check_s, 4),
                "examples_per_s": round(self.generated_examples / gen_s, 2) if gen_s > 0 else 0.0,
                "tokens_per_s": round(self.gen_tokens / gen_s, 2) if gen_s > 0 else 0.0,
                "generated_tokens": self.gen_tokens, "prompt_tokens": self.prompt_tokens,
                "examples_generated": self.generated_examples,
                "examples_resumed": self.counts.examples - self.generated_examples}


def run_task(task: Task, backend: ModelBackend, identity: str, journal: Journal | None, scorer: Scorer, *,
             n: int | None, seed: int, k: int, temperature: float, top_p: float, split: str, level: int | None,
             batch_size: int, max_new_tokens: int | None, progress: ProgressFn | None, chat: bool = False,
             tally: Tally | None = None, sequential: Sequential | None = None,
             sink: SinkFn | None = None) -> dict[str, Any]:
    """Run one task (see the module's doc) and return its entry for the record (`task_entry`); its sample rows
    go to `sink`, a chunk at a time, in example order."""
    tally = tally if tally is not None else Tally()

    def examples() -> Iterator[Example]:
        return task.iter_examples(split, n=n, seed=seed, level=level)

    order: list[Example] | None = None  # the examples, when they are held (not read again)
    one_pass = False  # read once, as they are run (no first pass)
    mnt = max_new_tokens or task.generation.max_new_tokens
    stream = examples()
    first = list(islice(stream, HELD))
    if sequential is not None or task.is_generator or len(first) < HELD:
        order = first + list(stream)  # a generator's examples exist as a list anyway: made once
        if sequential is not None:  # the same examples as a fixed-n run, in a seeded random order
            order = seeded_order(order, f"{task.name}/{seed}")
            sequential.cap = len(order)
        total = len(order)
        mnt = mnt or size_max_new_tokens(task, order, backend)
    elif mnt and n is not None:  # one pass: n is the total until the file says otherwise (fewer rows)
        total, one_pass = n, True
    else:  # a first pass, one example at a time: how many there are, and the longest reference
        total = 0

        def counted() -> Iterator[Example]:
            nonlocal total
            for ex in chain(first, stream):
                total += 1
                yield ex

        if mnt:
            for _ in counted():
                pass
        else:
            mnt = size_max_new_tokens(task, counted(), backend)
    if not total:
        raise NothingToRun(f"task {task.name!r} has no {split} examples (level {level})")
    gen = GenerationConfig(max_new_tokens=mnt, stop=task.generation.stop, temperature=temperature, top_p=top_p,
                           chat=chat)
    state = _TaskRun(task, backend, identity, journal, scorer, gen, seed=seed, k=k, chat=chat,
                     batch_size=batch_size, tally=tally, progress=progress, sink=sink, total=total)
    if sequential is None:
        rest = order if order is not None else chain(first, stream) if one_pass else examples()
        for chunk in _chunks(rest, CHUNK):
            state.chunk(chunk)
        if progress and state.counts.examples < total:
            progress(task.name, state.counts.examples, state.counts.examples)  # fewer than n: the task is done
    else:
        assert order is not None
        start = 0  # examples of `order` looked at so far; the run looks after each round
        for end in sequential.looks():
            for chunk in _chunks(order[start:end], CHUNK):
                state.chunk(chunk)
            start = end
            if sequential.look(state.first_passes, end):
                break
        if progress and start < total:
            progress(task.name, start, start)  # stopped early: the task is done
    return task_entry(task, gen, level, state.counts, state.timings(),
                      sequential.to_dict() if sequential else None)
