"""Run a shared prompt head once and every continuation on top of its KV cache.

All reranker inputs for one query start with the same tokens (system prompt + instruction + query): computing
them once and reusing their keys/values saves that work for every candidate. Continuations are RIGHT-padded so
each row's real tokens sit at the same positions as in the unpadded sequence; causal attention then never lets
a real token see padding, and each row's last real token is gathered by its length.
"""
from __future__ import annotations

from typing import Sequence

import torch


def encode_head(decoder, head_ids: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (keys, values) of shape [1, kv_heads, len(head_ids), head_dim]."""
    ids = torch.tensor([list(head_ids)], device=decoder.device)
    out = decoder(input_ids=ids, use_cache=True)
    return [(layer.keys, layer.values) for layer in out.cache.layers]  # `cache`: transformers 5 name


def last_hidden_after_head(decoder, head_kv: list[tuple[torch.Tensor, torch.Tensor]],
                           tails: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """Hidden state at the last token of each `head + tail`, [len(tails), hidden], as a full pass computes it."""
    from transformers import DynamicCache

    batch, head_len = len(tails), head_kv[0][0].shape[-2]
    lengths = torch.tensor([len(t) for t in tails], device=decoder.device)
    width = int(lengths.max())
    ids = torch.full((batch, width), pad_id, dtype=torch.long, device=decoder.device)
    for row, tail in enumerate(tails):
        ids[row, :len(tail)] = torch.tensor(tail, device=decoder.device)
    real = torch.arange(width, device=decoder.device)[None, :] < lengths[:, None]
    mask = torch.cat([torch.ones(batch, head_len, dtype=torch.long, device=decoder.device), real.long()], dim=1)
    positions = torch.arange(head_len, head_len + width, device=decoder.device).expand(batch, width)
    # expand() is a view; the cache's first update copies it into [batch, ...] tensors, so head_kv stays intact
    cache = DynamicCache(ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
                                         for k, v in head_kv])
    hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                     use_cache=True).last_hidden_state
    return hidden[torch.arange(batch, device=decoder.device), lengths - 1]
