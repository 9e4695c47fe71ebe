"""Run a shared prompt head once and every continuation on top of its keys/values, packed.

All reranker inputs for one query start with the same tokens (system prompt + instruction + query): computing
them once and reusing their keys/values saves that work for every candidate. The continuations (each document's
tail) go end to end in one row with the head's rest (rag/models/packed.py): no padding, so the Linear layers,
almost all of the work, see every real token of the pass as one tall matrix, and a bf16-stored model widens its
weights once per pass instead of once per small batch. Each tail sees the whole head and itself, causally, at
the positions it has in its unsplit sequence, so it computes what a full pass over head + tail computes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from rag.models.segments import Segment, wanted_rows

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), [1, kv_heads, positions, head_dim]


@dataclass
class Pass:
    """What one packed pass gives back."""
    last_hidden: torch.Tensor  # [len(tails), hidden]: the final hidden state at each tail's last token
    head: KV  # keys/values of the whole head (the cached part + the rest run in this pass)


def kv_length(kv: KV | None) -> int:
    return kv[0][0].shape[-2] if kv else 0


def extend(decoder, past: KV | None, head_rest: Sequence[int], tails: Sequence[Sequence[int]]) -> Pass:
    """One packed pass: `head_rest` continues the head cached in `past`, then every tail runs on the whole head.

    `past` is never modified (the cache concatenates into new tensors), so one head serves any number of passes.
    """
    from transformers import DynamicCache

    device = decoder.device
    start = kv_length(past)
    head_end = start + len(head_rest)
    ids = list(head_rest) + [t for tail in tails for t in tail]
    positions = list(range(start, head_end)) + [p for tail in tails for p in range(head_end, head_end + len(tail))]
    segments = [Segment(0, len(head_rest), start)] if head_rest else []
    ends = []
    row = len(head_rest)
    for tail in tails:
        segments.append(Segment(row, row + len(tail), head_end))
        row += len(tail)
        ends.append(row - 1)
    cache = DynamicCache(ddp_cache_data=past) if past else DynamicCache()
    out = decoder(input_ids=torch.tensor([ids], device=device), position_ids=torch.tensor([positions], device=device),
                  cache=cache, use_cache=True, rag_segments=segments,
                  rag_outputs=ends or None)  # a head alone (no tails) wants no outputs: all rows, as before
    head = [(layer.keys[:, :, :head_end], layer.values[:, :, :head_end]) for layer in out.cache.layers]
    return Pass(wanted_rows(out.last_hidden_state[0], ends), head)  # `cache`: transformers 5 name
