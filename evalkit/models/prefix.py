"""Shared prompt prefixes, computed once: chat prompts repeat their system message and few-shot turns.

In a chat-mode evaluation every prompt of a task starts with the same rendered system message and
worked examples (46 tokens of SmolLM2's ~59 in the addition task), so most of the prefill is the same
work done again for each row. `HFBackend` finds, per `generate` call, groups of prompts that share a
long token prefix (`group_prefixes`), runs the model once over each group's prefix (`PrefixKV`), and
starts each row of the group from those key/value states, feeding only the rest of its prompt
(`evalkit.models.decode.decode_rows`). Rows of different groups (and rows of none) share a batch: the
cached part of each row sits right-aligned before the batch's new tokens, masked where a row has less,
and each row's positions continue from its own prefix length.

The states are the same computation (causal attention: a prefix's states do not depend on what follows
it), so greedy answers stay those of decoding each prompt whole; tests/test_decode.py checks that against
`model.generate`. Only models whose cache is a plain `DynamicCache` of full-attention layers use it
(`supports_prefix_cache`): sliding-window and recurrent layers keep the ordinary path.
"""

from __future__ import annotations

import torch

from evalkit.models.decode import ModelCall, left_pad

#: The shortest prefix worth caching, in tokens; shorter shared heads (a BOS, "12+") are fed as usual.
MIN_PREFIX = 16


def common_length(a: list[int], b: list[int], limit: int) -> int:
    """The length of the longest common prefix of `a` and `b`, at most `limit`."""
    n = min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def group_prefixes(ids: list[list[int]], min_len: int = MIN_PREFIX) -> tuple[list[int], list[int]]:
    """Groups of rows that share a prefix of at least `min_len` tokens.

    Rows are taken in lexicographic order of their ids and joined greedily while the group's common
    prefix stays >= `min_len` and shortening it for the rows already in costs less than the new row
    saves; a prefix always leaves each row at least one token of its own (the token
    whose logits start its answer). Groups of one row are dropped.

    Returns:
        (each row's group, -1 for none; each group's prefix length).
    """
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    groups: list[tuple[list[int], int]] = []  # (rows, common prefix length)
    for i in order:
        own = len(ids[i]) - 1
        if groups:
            rows, length = groups[-1]
            shared = common_length(ids[rows[0]], ids[i], min(length, own))
            # Join while it saves work: n rows sharing `shared` tokens beat n - 1 rows sharing `length`.
            if shared >= min_len and len(rows) * shared >= (len(rows) - 1) * length:
                rows.append(i)
                groups[-1] = (rows, shared)
                continue
        groups.append(([i], own))
    of_row = [-1] * len(ids)
    lengths: list[int] = []
    for rows, length in groups:
        if len(rows) > 1 and length >= min_len:
            for r in rows:
                of_row[r] = len(lengths)
            lengths.append(length)
    return of_row, lengths


def supports_prefix_cache(call: ModelCall) -> bool:
    """Whether the model's cache is made of plain full-attention `DynamicLayer`s (see the module's doc)."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        return False
    layers = getattr(call.new_cache(), "layers", None) or []
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


class PrefixKV:
    """The key/value states of some token prefixes, computed once, handed out per batch (`gather`).

    Args:
        call: the model.
        prefixes: each prefix's token ids.
        batch_size: prefixes per forward pass.
    """

    def __init__(self, call: ModelCall, prefixes: list[list[int]], batch_size: int):
        self.lengths = [len(p) for p in prefixes]
        self.width = max(self.lengths)
        device = next(call.model.parameters()).device
        keys: list[list[torch.Tensor]] = []
        values: list[list[torch.Tensor]] = []
        for b in range(0, len(prefixes), batch_size):
            chunk = prefixes[b:b + batch_size]
            ids, mask = left_pad(chunk, call.pad_id, device)
            pos = (mask.cumsum(-1) - 1).clamp_(min=0)
            cache = call.new_cache()
            call.forward(ids, mask, pos, cache, last_only=True)
            grow = self.width - ids.shape[1]  # every chunk right-aligned to the longest prefix
            for li, layer in enumerate(cache.layers):
                k, v = layer.keys, layer.values
                if grow:
                    k = torch.nn.functional.pad(k, (0, 0, grow, 0))
                    v = torch.nn.functional.pad(v, (0, 0, grow, 0))
                if b == 0:
                    keys.append([])
                    values.append([])
                keys[li].append(k)
                values[li].append(v)
        # One all-padding entry at the end, for rows without a prefix.
        mask = torch.zeros((len(prefixes) + 1, self.width), dtype=torch.long, device=device)
        for g, n in enumerate(self.lengths):
            mask[g, self.width - n:] = 1
        keep = mask[:, None, :, None].bool()
        self.keys = [torch.cat([*k, k[0][:1]]).where(keep, 0.0) for k in keys]  # padding zeroed: never NaN
        self.values = [torch.cat([*v, v[0][:1]]).where(keep, 0.0) for v in values]
        self.mask = mask

    def gather(self, groups: list[int]) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, list[int]]:
        """For rows of prefix `groups[i]` (-1: none): per-layer (keys, values) right-aligned to the batch's
        longest prefix, their mask, and each row's prefix length."""
        plen = [self.lengths[g] if g >= 0 else 0 for g in groups]
        width = max(plen)
        idx = torch.tensor([g if g >= 0 else len(self.lengths) for g in groups], device=self.mask.device)
        start = self.width - width
        data = [(k[idx, :, start:], v[idx, :, start:]) for k, v in zip(self.keys, self.values)]
        return data, self.mask[idx, start:], plen


def prefix_plan(call: ModelCall, ids: list[list[int]], batch_size: int,
                min_len: int = MIN_PREFIX) -> tuple[PrefixKV | None, list[int]]:
    """The cached prefixes of one call's rows and each row's group (-1: none); (None, all -1) when no
    group is worth it or the model cannot use them."""
    groups, lengths = group_prefixes(ids, min_len)
    if not lengths or not supports_prefix_cache(call):
        return None, [-1] * len(ids)
    first = {g: r for r, g in reversed(list(enumerate(groups))) if g >= 0}
    prefixes = [ids[first[g]][:n] for g, n in enumerate(lengths)]
    return PrefixKV(call, prefixes, batch_size), groups


def prefix_length(kv: PrefixKV | None, group: int) -> int:
    """Tokens of a row's prompt that its cached prefix covers."""
    return kv.lengths[group] if kv is not None and group >= 0 else 0


__all__ = ["MIN_PREFIX", "PrefixKV", "common_length", "group_prefixes", "prefix_length", "prefix_plan",
           "supports_prefix_cache"]

