"""The KV-cache decoding loop behind `HFBackend` (`decoder="loop"`), and how it knows a row has finished.

One call decodes one batch of token-id rows (left-padded here):

    call = ModelCall.of(model, pad_id, eos_ids)            # how to call this model's forward
    stops = StopCheck(config.stop, decode, stop_candidates(texts, config.stop))
    tokens, n_generated, prefills = decode_rows(call, rows, config, stops, batch_size=64, continuous=True)

- **Finished rows leave the batch.** A row ends at an EOS / end-of-turn id (not part of its text) or when
  its text holds a stop string past its leading whitespace (`find_stop`); its input, mask, positions and
  cache rows are dropped at once, so finished rows cost nothing.
- **Stops are checked only where a new token could complete one.** A stop string written by a new token
  ends inside that token's text, so it contains the stop's last character. `stop_candidates` lists, once
  per vocabulary, the ids whose text (alone, and after an ordinary character: tokenizers that drop a
  leading space alone keep it in context) contains such a character, is empty, or holds a byte fragment
  (U+FFFD); only rows whose new token is one of them are decoded. Without that list (no vocabulary
  texts), every row's tail is decoded, as a fallback.
- **Shared prompt prefixes** (`evalkit.models.prefix`): a row may start from a cached prefix (its key/value
  states computed once per call); only the rest of its prompt is fed, at the positions after the prefix.
- **Greedy** is the argmax; **sampling** uses the Gumbel-max trick with one generator per row, so a row's
  sample does not depend on the other rows of its batch.

Greedy output equals one-prompt-at-a-time greedy decoding (tests/test_decode.py checks it against
`model.generate`, with and without stops, prefixes, EOS and padding).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from evalkit.core.extract import find_stop

if TYPE_CHECKING:
    from evalkit.core.task import GenerationConfig

Decode = Callable[[list[list[int]]], list[str]]
_FRAGMENT = "\ufffd"  # what a byte fragment of a multi-byte character decodes to on its own


class Prefixes(Protocol):
    """Cached prompt prefixes (`evalkit.models.prefix.PrefixKV`)."""

    def gather(self, groups: list[int]) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, list[int]]:
        """Per-layer (keys, values) of prefixes `groups[i]` (-1: none), right-aligned; their mask; their lengths."""
        ...


@dataclass(frozen=True)
class ModelCall:
    """How to call a causal LM's forward: its cache keyword, its logits-to-keep keyword (if any), the pad id
    and the ids that end a row."""

    model: Any
    cache_kw: str
    keep_kw: str | None
    pad_id: int
    eos_ids: frozenset[int]

    @classmethod
    def of(cls, model: Any, pad_id: int, eos_ids: frozenset[int]) -> ModelCall:
        # A PEFT wrapper's forward takes **kwargs; the keywords it passes on are the base model's.
        get_base: Any = getattr(model, "get_base_model", None)
        base = get_base() if callable(get_base) else model
        params = inspect.signature(base.forward).parameters
        cache_kw = "cache" if "cache" in params else "past_key_values"
        keep_kw = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)
        return cls(model, cache_kw, keep_kw, pad_id, eos_ids)

    def new_cache(self, data: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> Any:
        """An empty `DynamicCache` for this model, or one holding `data` (keys, values per layer)."""
        from transformers import DynamicCache

        try:
            return DynamicCache(data, config=self.model.config) if data else DynamicCache(config=self.model.config)
        except TypeError:  # older transformers
            return DynamicCache(data) if data else DynamicCache()

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any,
                last_only: bool) -> torch.Tensor:
        """Logits of each row's last position ([rows, vocab]); `cache` grows by the input."""
        kw: dict[str, Any] = {self.cache_kw: cache, "use_cache": True}
        if last_only and self.keep_kw:
            kw[self.keep_kw] = 1
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=pos, **kw)
        return out.logits[:, -1, :]


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu",
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of `rows` left-padded to the longest (a row may be empty: all padding)."""
    width = max((len(r) for r in rows), default=0)
    if not rows or not width:
        return (torch.full((len(rows), width), pad_id, dtype=torch.long, device=device),
                torch.zeros((len(rows), width), dtype=torch.long, device=device))
    # Built as Python lists and converted once: a tensor per row costs more than the rows' tokens.
    ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return ids.to(device), mask.to(device)


def stop_candidates(texts: tuple[list[str], list[str | None]] | None,
                    stop: Sequence[str]) -> frozenset[int] | None:
    """Ids whose new text may complete one of `stop` (see the module's doc); None when `texts` is None.

    `texts` is (each id's text alone, its text after an ordinary character, None when that is unknown).
    """
    if texts is None:
        return None
    last = {s[-1] for s in stop if s}
    if not last:
        return frozenset()
    alone, anchored = texts
    out = []
    for i, (a, b) in enumerate(zip(alone, anchored)):
        if b is None or not a or not b or _FRAGMENT in a or _FRAGMENT in b or any(c in a or c in b for c in last):
            out.append(i)
    return frozenset(out)


def vocabulary_texts(decode: Decode, vocab: int) -> tuple[list[str], list[str | None]] | None:
    """Each id's text alone and after an ordinary character (the first id that decodes to one ASCII
    letter or digit); None when the vocabulary has no such id."""
    alone = decode([[i] for i in range(vocab)])
    anchor = next((i for i, t in enumerate(alone) if len(t) == 1 and t.isascii() and t.isalnum()), None)
    if anchor is None:
        return None
    head = alone[anchor]
    pairs = decode([[anchor, i] for i in range(vocab)])
    return alone, [t[len(head):] if t.startswith(head) else None for t in pairs]


class StopCheck:
    """Which rows the token just appended finished with a stop string (`find_stop`: past the output's
    leading whitespace).

    Args:
        stop: the stop strings ("" ignored).
        decode: token rows to text (special tokens skipped).
        candidates: ids whose text may complete a stop (`stop_candidates`); None checks every row's tail.
        known: how many ids `candidates` was computed over; an id past them (a model whose embedding
            is larger than its tokenizer) is always checked.
    """

    def __init__(self, stop: Sequence[str], decode: Decode, candidates: frozenset[int] | None, known: int = 0):
        self.stop = [s for s in stop if s]
        self.decode, self.candidates, self.known = decode, candidates, known
        # A stop of n characters ends within the last n tokens (a token is at least one character, or
        # nothing on its own: the margin covers those).
        self.window = max((len(s) for s in self.stop), default=0) + 8

    def hits(self, outs: list[list[int]], rows: list[int]) -> set[int]:
        """Of `rows` (indices into `outs`, each just given a token), those whose text now ends at a stop."""
        if not self.stop or not rows:
            return set()
        if self.candidates is not None:
            cand, known = self.candidates, self.known
            maybe = [r for r in rows if outs[r][-1] in cand or outs[r][-1] >= known]
        else:
            tails = self.decode([outs[r][-self.window:] for r in rows])
            maybe = [r for r, t in zip(rows, tails) if any(s in t for s in self.stop)]
        if not maybe:
            return set()
        return {r for r, t in zip(maybe, self.decode([outs[r] for r in maybe])) if find_stop(t, self.stop) >= 0}


def choose(logits: torch.Tensor, config: GenerationConfig, gens: list[torch.Generator] | None) -> torch.Tensor:
    """The next token of each row: the argmax (greedy), or a draw with each row's own generator."""
    if gens is None:
        return logits.argmax(dim=-1)
    scores = logits.float() / config.temperature
    if config.top_p < 1.0:  # nucleus: drop tokens once the mass before them reaches top_p
        sorted_scores, sorted_idx = scores.sort(dim=-1, descending=True)
        probs = sorted_scores.softmax(dim=-1)
        drop = (probs.cumsum(dim=-1) - probs) >= config.top_p  # never drops the top token
        scores = scores.scatter(-1, sorted_idx, sorted_scores.masked_fill(drop, float("-inf")))
    # Gumbel-max: argmax(scores + Gumbel noise) is a draw from softmax(scores); each row
    # draws its noise from its own generator, so batching does not change its sample.
    vocab = scores.shape[-1]
    u = torch.stack([torch.rand(vocab, generator=g, device=scores.device) for g in gens])
    gumbel = -torch.log(-torch.log(u.clamp_(min=1e-20, max=1.0 - 1e-7)))
    return (scores + gumbel).argmax(dim=-1)


@dataclass
class Running:
    """The rows being decoded: their original indices, attention mask [rows, width], last positions
    [rows, 1], cache, and the logits of their next token."""

    alive: list[int]
    mask: torch.Tensor
    pos: torch.Tensor
    cache: Any
    logits: torch.Tensor

    def select(self, keep: list[int]) -> None:
        """Keep only batch rows `keep` (their cache rows too)."""
        idx = torch.tensor(keep, device=self.mask.device)
        self.mask, self.pos = self.mask[idx], self.pos[idx]
        self.cache.batch_select_indices(idx)
        self.alive = [self.alive[j] for j in keep]

    def trim(self) -> None:
        """Drop leading columns no row attends to any more (left by rows that have ended)."""
        used = self.mask.any(dim=0)
        first = int(used.int().argmax()) if bool(used.any()) else 0
        if first > 0:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]

    def join(self, new: Running) -> None:
        """Add `new`'s rows: both caches right-aligned to the wider one, the padding masked."""
        width = max(self.mask.shape[1], new.mask.shape[1])

        def grow(t: torch.Tensor, by: int, dims: int) -> torch.Tensor:  # left-pad the sequence dimension
            return torch.nn.functional.pad(t, (0, 0) * (dims - 1) + (by, 0)) if by else t

        for mine, theirs in zip(self.cache.layers, new.cache.layers):
            a, b = width - mine.keys.shape[-2], width - theirs.keys.shape[-2]
            mine.keys = torch.cat([grow(mine.keys, a, 2), grow(theirs.keys, b, 2)])
            mine.values = torch.cat([grow(mine.values, a, 2), grow(theirs.values, b, 2)])
        self.mask = torch.cat([grow(self.mask, width - self.mask.shape[1], 1),
                               grow(new.mask, width - new.mask.shape[1], 1)])
        self.pos = torch.cat([self.pos, new.pos])
        self.logits = torch.cat([self.logits, new.logits])
        self.alive += new.alive


def prefill(call: ModelCall, rows: list[list[int]], which: list[int], prefix: Prefixes | None,
            groups: list[int] | None) -> Running:
    """Run the prompts of rows `which` (each from its cached prefix, when it has one): a `Running` batch."""
    device = next(call.model.parameters()).device
    own = [groups[r] for r in which] if prefix is not None and groups is not None else None
    if own is not None and prefix is not None and any(g >= 0 for g in own):
        data, pmask, plen = prefix.gather(own)
        cache = call.new_cache(data)
        input_ids, smask = left_pad([rows[r][n:] for r, n in zip(which, plen)], call.pad_id, device)
        mask = torch.cat([pmask.to(device), smask], dim=1)
        pos = (smask.cumsum(-1) - 1).clamp_(min=0) + torch.tensor(plen, device=device)[:, None]
    else:
        cache = call.new_cache()
        input_ids, mask = left_pad([rows[r] for r in which], call.pad_id, device)
        pos = (mask.cumsum(-1) - 1).clamp_(min=0)
    logits = call.forward(input_ids, mask, pos, cache, last_only=True)
    return Running(list(which), mask, pos[:, -1:], cache, logits)


def decode_rows(call: ModelCall, rows: list[list[int]], config: GenerationConfig, stops: StopCheck, *,
                batch_size: int, gens: list[torch.Generator] | None = None, prefix: Prefixes | None = None,
                groups: list[int] | None = None, continuous: bool = False) -> tuple[list[list[int]], int, int]:
    """Decode `rows` (token ids, in the order they should start), at most `batch_size` at a time.

    Returns each row's new tokens (EOS excluded), the tokens generated, and the prefill passes run.
    With `prefix`, row i starts from cached prefix `groups[i]` (-1: none). `gens[i]`: row i's random
    generator (sampling), None for greedy. Without `continuous` a batch runs until its last row ends.
    With it (plain `DynamicCache`s only: `evalkit.models.prefix.supports_prefix_cache`), waiting rows
    are prefilled and join the running batch once half of it has ended (or when all the rest fit), so
    the decoding steps — whose cost on a small model is mostly fixed per step — keep serving a full
    batch instead of a batch's last few rows.
    """
    max_new = config.max_new_tokens
    assert max_new is not None  # the backend checked it
    eos = call.eos_ids
    queue = list(range(len(rows)))[::-1]  # popped from the end: rows start in the given order
    out: list[list[int]] = [[] for _ in rows]
    count = [0] * len(rows)
    n_gen = prefills = 0
    run: Running | None = None
    while queue or run is not None:
        free = batch_size - (len(run.alive) if run else 0)
        if queue and (run is None or (continuous and (2 * free >= batch_size or len(queue) <= free))):
            new = prefill(call, rows, [queue.pop() for _ in range(min(free, len(queue)))], prefix, groups)
            prefills += 1
            if run is None:
                run = new
            else:
                run.join(new)
        assert run is not None
        nxt = choose(run.logits, config, [gens[r] for r in run.alive] if gens else None)
        wrote: list[int] = []  # batch rows that appended a token
        for j, tok in enumerate(nxt.tolist()):
            r = run.alive[j]
            count[r] += 1
            if tok not in eos:  # EOS ends a row and is not part of its text
                out[r].append(tok)
                wrote.append(j)
        n_gen += len(run.alive)
        ended = stops.hits(out, [run.alive[j] for j in wrote])
        keep = [j for j in wrote if run.alive[j] not in ended and count[run.alive[j]] < max_new]
        if not keep:
            run = None
            continue
        if len(keep) < len(run.alive):  # drop finished rows everywhere
            nxt = nxt[torch.tensor(keep, device=nxt.device)]
            run.select(keep)
            if continuous:
                run.trim()
        run.mask = torch.cat([run.mask, run.mask.new_ones((len(run.alive), 1))], dim=1)
        run.pos = run.pos + 1
        run.logits = call.forward(nxt[:, None], run.mask, run.pos, run.cache, last_only=False)
    return out, n_gen, prefills


__all__ = ["Decode", "ModelCall", "Prefixes", "Running", "StopCheck", "choose", "decode_rows",
           "left_pad", "prefill", "stop_candidates", "vocabulary_texts"]
