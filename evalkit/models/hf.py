"""Hugging Face causal LMs as a `ModelBackend`: batched, per-row stopping, fast on small models.

Generation runs its own KV-cache decoding loop by default (`decoder="loop"`, `evalkit.models.decode`):
prompts are sorted by the token length still to feed and batched with their neighbours (left padding built
there, the tokenizer is never mutated), and a row that hits EOS or a stop string leaves the batch at once —
its input, mask, positions and cache rows are dropped — so finished rows cost nothing. Prompts of one call
that share a long token prefix (a chat task's system message and few-shot turns) have that prefix's
key/value states computed once (`evalkit.models.prefix`; `prefix_cache=False` turns it off). A row also
ends at the model's end-of-turn token (`hf_chat.stop_ids`). A prompt is raw text (the tokenizer adds BOS)
or a list of chat messages, rendered by the tokenizer's chat template (`render`, `hf_chat.render_chat`).
On a CPU the rows are split between decoders at one intra-op thread each (`decode_threads` of them,
`evalkit.models.shards.decode_sharded`): the calling thread and forked processes on Linux (threads of one
process take turns at the GIL), threads elsewhere. `decoder="generate"` uses `model.generate` with a per-row
stopping criterion instead (for architectures the loop does not handle).

This module imports torch and transformers: only code that runs a model imports it
(`evalkit.models` resolves `HFBackend` lazily).

Greedy output equals one-prompt-at-a-time greedy output. Sampling uses the Gumbel-max
trick with one random stream per (seed, prompt, sample index), so a sample does not depend
on which other prompts share its call or batch (a resumed run draws the same samples).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import torch
from transformers import StoppingCriteria

from evalkit.core.checkpool import fork_available
from evalkit.core.extract import cut_at_stop, find_stop
from evalkit.models import hf_chat
from evalkit.models.base import GenerationStats, check_generate_args
from evalkit.models.decode import ModelCall, StopCheck, left_pad, stop_candidates, vocabulary_texts
from evalkit.models.prefix import prefix_length, prefix_plan, supports_prefix_cache
from evalkit.models.shards import decode_sharded

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from evalkit.core.chat import Message, Prompt
    from evalkit.core.task import GenerationConfig

DECODERS = ("loop", "generate")
#: Per tokenizer digest: each id's text (`decode.vocabulary_texts`); per (digest, stops' last characters):
#: the ids that may complete a stop. Bounded; a tokenizer's digest covers its whole definition.
_VOCAB_TEXTS: dict[str, tuple[list[str], list[str | None]] | None] = {}
_CANDIDATES: dict[tuple[str, str], frozenset[int] | None] = {}
_CONFIG_VOLATILE = {"_name_or_path", "transformers_version", "torch_dtype", "dtype",
                    "architectures", "_commit_hash", "_attn_implementation_autoset"}


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over every state-dict tensor: its name, dtype, shape and full bytes.

    Every byte is hashed (a sample of each tensor could miss a training step's change).
    SHA-256 runs at ~1.8 GB/s with the SHA CPU extensions (x86 SHA-NI, ARMv8), about
    twice blake2b; tensors are hashed in a few threads (hashlib releases the GIL), and a
    tensor shared by two names (tied embeddings) is hashed once. Measured on a busy 2-core
    machine: ~5 ms for 1M float32 parameters, ~50-100 ms for 20M. Tensors on an
    accelerator are copied to the host first.
    """
    items = sorted(model.state_dict().items())
    keys = [(t.data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype) for _, t in items]
    unique = {k: t for k, (_, t) in zip(keys, items)}
    total = sum(t.numel() * t.element_size() for t in unique.values())
    workers = min(4, os.cpu_count() or 1) if total > (16 << 20) else 1
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            digests = dict(zip(unique, pool.map(_tensor_digest, unique.values())))
    else:
        digests = {k: _tensor_digest(t) for k, t in unique.items()}
    h = hashlib.sha256()
    for (name, t), key in zip(items, keys):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode() + digests[key])
    return h.hexdigest()[:40]


def _tensor_digest(t: torch.Tensor) -> bytes:
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    if flat.numel() == 0:
        return b""
    return hashlib.sha256(flat.view(torch.uint8).numpy().data).digest()  # raw bytes, bf16 too


def config_digest(model: Any) -> str:
    """A short hash of the model's class and config (volatile keys such as the path left out)."""
    cfg = model.config.to_dict()
    body = repr(sorted((k, repr(v)) for k, v in cfg.items() if k not in _CONFIG_VOLATILE))
    return hashlib.blake2b(f"{type(model).__name__}|{body}".encode(), digest_size=8).hexdigest()


def tokenizer_digest(tokenizer: Any) -> str:
    """A short hash of the tokenizer's full definition (or its vocabulary when it has no fast backend)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class HFBackend:
    """A causal LM held in memory (e.g. the model being trained), as a `ModelBackend`.

    Args:
        model: a `PreTrainedModel` (decoder-only). It is not copied: `device`/`dtype`, when
            given, move it in place. Its train/eval mode is restored after every call.
        tokenizer: its tokenizer (never mutated).
        batch_size: rows per forward batch.
        device, dtype: where and in which precision to run (default: as the model is).
        decoder: "loop" (own KV-cache loop that drops finished rows) or "generate".
        prefix_cache: in the loop, compute a prefix shared by several prompts of a call once
            (`evalkit.models.prefix`).
        continuous_batching: in the loop, start waiting prompts in the running batch as its rows end
            (`evalkit.models.decode.decode_rows`), where the model's cache allows it.
        decode_threads: in the loop on a CPU, decoders of a share of the rows each at one intra-op thread
            (`evalkit.models.shards.decode_sharded`; the batch is split between them). None: one per torch
            thread of the caller, at most 4 and at least 8 rows of the batch each; 1: off.
        decode_processes: run the decoders after the first in processes forked for the call (True, where
            fork is available and the model is on the CPU: the default) or on threads (False).
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *,
                 batch_size: int = 64, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, decoder: str = "loop", prefix_cache: bool = True,
                 continuous_batching: bool = True, decode_threads: int | None = None,
                 decode_processes: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if decode_threads is not None and decode_threads < 1:
            raise ValueError(f"decode_threads must be >= 1 or None, got {decode_threads}")
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)  # type: ignore[call-arg]  # transformers' stubs wrap .to badly
        self.model: Any = model  # typed Any: transformers' stubs make generate() a Tensor attribute
        self.tokenizer = tokenizer
        self.batch_size, self.decoder, self.decode_threads = batch_size, decoder, decode_threads
        self.decode_processes = decode_processes
        self._stats = GenerationStats()
        self._tok_digest = tokenizer_digest(tokenizer)
        eos = hf_chat.eos_ids(model, tokenizer)
        self.eos_ids = eos | hf_chat.end_of_turn_ids(tokenizer)  # every id that ends a row
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (min(eos) if eos else 0)
        cfg = model.config
        self.max_positions: int | None = (getattr(cfg, "max_position_embeddings", None)
                                          or getattr(cfg, "n_positions", None))
        self.prefix_cache = prefix_cache
        self._call = ModelCall.of(model, self.pad_id, self.eos_ids)
        self._continuous = continuous_batching and supports_prefix_cache(self._call)
        self._fast_decode = getattr(tokenizer, "backend_tokenizer", None)

    def _stop_check(self, stop: Sequence[str]) -> StopCheck:
        """The stop-string check of a call; the vocabulary's texts are computed once per tokenizer (by its
        digest) and kept for the process, so a new backend per evaluation pays nothing again."""
        if not any(stop):
            return StopCheck((), self._decode, frozenset())
        key = self._tok_digest
        if key not in _VOCAB_TEXTS:
            if len(_VOCAB_TEXTS) >= 8:
                _VOCAB_TEXTS.pop(next(iter(_VOCAB_TEXTS)))
            _VOCAB_TEXTS[key] = vocabulary_texts(self._decode, len(self.tokenizer))
        texts = _VOCAB_TEXTS[key]
        last = "".join(sorted({s[-1] for s in stop if s}))
        if (key, last) not in _CANDIDATES:
            if len(_CANDIDATES) >= 64:
                _CANDIDATES.pop(next(iter(_CANDIDATES)))
            _CANDIDATES[key, last] = stop_candidates(texts, stop)
        return StopCheck(stop, self._decode, _CANDIDATES[key, last], len(texts[0]) if texts else 0)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu",
                  dtype: torch.dtype | str | None = None, batch_size: int = 64,
                  **kwargs: Any) -> HFBackend:
        """Load a model and tokenizer from a local directory (see `tiny.load_model`)."""
        from evalkit.models.tiny import load_model

        model, tokenizer = load_model(path, device=device, dtype=dtype)
        return cls(model, tokenizer, batch_size=batch_size, **kwargs)

    # -- identity ---------------------------------------------------------------------
    @property
    def identity(self) -> str:
        """`hf:<class>:<digest>` over weights, config and tokenizer; recomputed on every read
        (weights may have been trained since), so read it once per evaluation."""
        h = hashlib.blake2b(digest_size=16)
        for part in (weights_digest(self.model), config_digest(self.model), self._tok_digest):
            h.update(part.encode())
        return f"hf:{type(self.model).__name__}:{h.hexdigest()}"

    @property
    def last_stats(self) -> GenerationStats:
        return self._stats

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def chat_template_id(self) -> str:
        """A fingerprint of the tokenizer's chat template (`ChatTemplated`): part of a chat run's identity."""
        return hf_chat.chat_template_id(self.tokenizer)

    def render(self, messages: Sequence[Message]) -> str:
        """The chat prompt's text, as chat mode feeds it to the model (`hf_chat.render_chat`)."""
        return hf_chat.render_chat(self.tokenizer, messages)

    # -- generation -------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], config: GenerationConfig, *, seed: int = 0,
                 num_samples: int = 1) -> list[list[str]]:
        """See `ModelBackend.generate`. Raises ValueError when `config.max_new_tokens` is None, and
        ConfigError for chat messages when the tokenizer has no chat template."""
        max_new = check_generate_args(config, num_samples)
        start = time.perf_counter()
        keys = [p if isinstance(p, str) else json.dumps(list(p)) for p in prompts]  # of each row's sampling seed
        sampling = config.temperature > 0
        ids, truncated = self._encode(list(prompts), max_new)
        # One row per continuation to compute: greedy rows are shared by all samples.
        rows = [(p, s) for p in range(len(prompts)) for s in range(num_samples if sampling else 1)]
        loop = self.decoder == "loop"
        kv, groups = None, [-1] * len(rows)
        texts: list[str] = [""] * len(rows)
        n_gen = n_batches = 0
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                if loop and self.prefix_cache:
                    kv, groups = prefix_plan(self._call, [ids[p] for p, _ in rows], self.batch_size)
                # Longest first by the tokens still to feed, so a batch's rows need little padding.
                order = sorted(range(len(rows)), key=lambda r: prefix_length(kv, groups[r]) - len(ids[rows[r][0]]))
                if loop:
                    gens = [self._row_generator(seed, keys[p], s) for p, s in rows] if sampling else None
                    order_rows = [ids[rows[r][0]] for r in order]
                    toks, n_gen, n_batches = decode_sharded(
                        self._call, order_rows, config, self._stop_check(config.stop), shards=self._shards(),
                        batch_size=self.batch_size,
                        gens=[gens[r] for r in order] if gens else None, prefix=kv,
                        groups=[groups[r] for r in order], continuous=self._continuous,
                        processes=self.decode_processes and self.device.type == "cpu" and fork_available())
                    for r, text in zip(order, self._decode(toks)):
                        texts[r] = cut_at_stop(text, config.stop)
                else:
                    for b in range(0, len(order), self.batch_size):
                        chunk = order[b:b + self.batch_size]
                        toks, n = self._decode_generate([ids[rows[r][0]] for r in chunk], config, seed + b)
                        n_gen += n
                        n_batches += 1
                        for r, text in zip(chunk, self._decode(toks)):
                            texts[r] = cut_at_stop(text, config.stop)
        finally:
            self.model.train(was_training)
        out: list[list[str]] = [[] for _ in keys]
        for (p, _), text in zip(rows, texts):
            out[p].append(text)
        if not sampling:
            out = [row * num_samples for row in out]
        self._stats = GenerationStats(
            prompts=len(keys), samples=len(keys) * num_samples,
            prompt_tokens=sum(len(ids[p]) for p, _ in rows), generated_tokens=n_gen,
            seconds=time.perf_counter() - start, batches=n_batches, truncated_prompts=truncated)
        return out

    def _shards(self) -> int:
        """How many decoders the loop runs at once (`decode_threads`)."""
        if self.decode_threads is not None:
            return self.decode_threads
        if self.device.type != "cpu":
            return 1
        return max(1, min(torch.get_num_threads(), 4, self.batch_size // 8))

    def _encode(self, prompts: list[Prompt], max_new: int) -> tuple[list[list[int]], int]:
        ids = hf_chat.encode_prompts(self.tokenizer, prompts)
        limit = self.max_positions - max_new if self.max_positions else None
        if limit is not None and limit < 1:
            raise ValueError(f"max_new_tokens={max_new} leaves no room for a prompt in a "
                             f"{self.max_positions}-position model")
        fallback = self.tokenizer.bos_token_id
        truncated = 0
        for i in range(len(ids)):
            if not ids[i]:  # an empty prompt still needs one token to condition on
                ids[i] = [fallback if fallback is not None else self.pad_id]
            if limit is not None and len(ids[i]) > limit:
                ids[i] = ids[i][-limit:]  # keep the end, where the question is (as lm-eval does)
                truncated += 1
        return ids, truncated

    def _decode(self, rows: list[list[int]]) -> list[str]:
        if self._fast_decode is not None:
            return self._fast_decode.decode_batch(rows, skip_special_tokens=True)
        return self.tokenizer.batch_decode(rows, skip_special_tokens=True,
                                           clean_up_tokenization_spaces=False)

    def _row_generator(self, seed: int, prompt: str, sample: int) -> torch.Generator:
        key = hashlib.blake2b(f"{seed}\0{sample}\0{prompt}".encode(), digest_size=8).digest()
        g = torch.Generator(device=self.device)
        g.manual_seed(int.from_bytes(key, "little") & ((1 << 63) - 1))
        return g

    def _decode_generate(self, batch: list[list[int]], config: GenerationConfig,
                         seed: int) -> tuple[list[list[int]], int]:
        """`model.generate` with a per-row stop-string criterion (reproducible per batch)."""
        from transformers import GenerationConfig as HFGenerationConfig
        from transformers import StoppingCriteriaList

        input_ids, mask = left_pad(batch, self.pad_id, self.device)
        sampling = config.temperature > 0
        gc = HFGenerationConfig(
            max_new_tokens=config.max_new_tokens, do_sample=sampling, pad_token_id=self.pad_id,
            eos_token_id=sorted(self.eos_ids) or None,
            **({"temperature": config.temperature, "top_p": config.top_p, "top_k": 0} if sampling else {}))
        stop = [s for s in config.stop if s]
        criteria = StoppingCriteriaList(
            [StopStrings(self._decode, stop, input_ids.shape[1], max((len(s) for s in stop), default=0) + 8)]
            if stop else [])
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            seqs = self.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=gc,
                                       stopping_criteria=criteria)
        out, n_gen = [], 0
        for row in seqs[:, input_ids.shape[1]:].tolist():
            toks: list[int] = []
            for t in row:
                if t in self.eos_ids:
                    n_gen += 1
                    break
                toks.append(t)
            # Rows that stopped on a string were padded afterwards; pads decode to nothing.
            n_gen += sum(1 for t in toks if t != self.pad_id)
            out.append(toks)
        return out, n_gen


class StopStrings(StoppingCriteria):
    """A per-row stopping criterion: True for rows whose new text holds a stop string (`find_stop`).

    Only the last `window` new tokens of each row are decoded per step (all of them to confirm a hit).
    """

    def __init__(self, decode: Any, stop: Sequence[str], prompt_len: int, window: int):
        self.decode, self.stop, self.prompt_len, self.window = decode, list(stop), prompt_len, window

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        new = input_ids[:, self.prompt_len:]
        hit = [any(s in t for s in self.stop) for t in self.decode(new[:, -self.window:].tolist())]
        if any(hit):  # a stop string ends a row unless it lies in the output's leading whitespace
            maybe = [i for i, h in enumerate(hit) if h]
            for i, text in zip(maybe, self.decode(new[maybe].tolist())):
                hit[i] = find_stop(text, self.stop) >= 0
        return torch.tensor(hit, dtype=torch.bool, device=input_ids.device)
