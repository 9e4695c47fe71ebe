"""Packed segments and what their rows attend to, by torch's SDPA (rag/models/packed.py packs them).

A packed call puts several texts end to end in one row. Each text is a `Segment`: its rows attend to the first
`prefix` key positions whole (a shared head, rag/models/prefix_cache.py), then causally to the segment's own keys.
On a CPU the fused kernel runs every segment at once (rag/models/fused_cpu.cpp); the functions here are the SDPA
paths: whole segments (one call each on a CPU, consecutive ones in one masked call on a GPU) and single rows (a
model's last layer, where only a few rows' outputs are used).
"""
from __future__ import annotations

import functools
from bisect import bisect_right
from typing import NamedTuple, Sequence


class Segment(NamedTuple):
    """Rows [start, end) of a packed call: they attend causally to themselves, after the first `prefix` key
    positions (cached ones first, then this call's rows), which every row of the segment sees whole."""
    start: int
    end: int
    prefix: int = 0


def _visible(key, value, past: int, segment: Segment, end: int):
    """The keys and values rows of `segment` up to row `end` (exclusive) see: the prefix, then the segment's own
    rows. `past` cached positions come first in the keys."""
    import torch

    start, _, prefix = segment
    if not prefix or prefix == past + start:  # one slice: no prefix, or the prefix runs straight into the segment
        first = past + start - prefix
        return key[:, :, first:past + end], value[:, :, first:past + end]
    return (torch.cat([key[:, :, :prefix], key[:, :, past + start:past + end]], dim=2),
            torch.cat([value[:, :, :prefix], value[:, :, past + start:past + end]], dim=2))


def segment_sdpa(query, key, value, past: int, segment: Segment, scaling):
    """One segment's attention by torch's SDPA, [batch, rows, heads, head_dim] as transformers expects.

    torch's SDPA is called directly with `enable_gqa`: transformers' path copies the keys and values to every
    query head whenever there is a mask, which measured twice the attention time (docs/benchmarks.md)."""
    import torch
    from torch.nn.functional import scaled_dot_product_attention

    start, end, prefix = segment
    keys, values = _visible(key, value, past, segment, end)
    mask = None
    if prefix:  # row i sees the whole prefix and the segment's rows up to i
        mask = torch.ones(end - start, prefix + end - start, dtype=torch.bool, device=query.device)
        mask = mask.tril(diagonal=prefix)
    out = scaled_dot_product_attention(query[:, :, start:end], keys, values, attn_mask=mask,
                                       is_causal=mask is None, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2)


def grouped_sdpa(query, key, value, past: int, segments: Sequence[Segment], scaling):
    """Consecutive segments' attention in one SDPA call: the same as `segment_sdpa` per segment, with a mask that
    keeps each row to what it sees in its own segment. For a GPU, where launching a call costs more than the
    masked-out work: a packed pass of 10-30 segments otherwise issues that many attention calls per layer (the
    caller bounds a group's rows, since the masked-out work grows with their square).

    The keys are the prefixes' positions before the group's first row, then the group's own rows."""
    from torch.nn.functional import scaled_dot_product_attention

    first, end = segments[0].start, segments[-1].end
    head, mask = _group_mask(tuple(segments), past, str(query.device))
    own = slice(past + first, past + end)
    keys, values = key[:, :, own], value[:, :, own]
    if head:
        import torch

        keys = torch.cat([key[:, :, :head], keys], dim=2)
        values = torch.cat([value[:, :, :head], values], dim=2)
    out = scaled_dot_product_attention(query[:, :, first:end], keys, values, attn_mask=mask, scale=scaling,
                                       enable_gqa=True)
    return out.transpose(1, 2)


@functools.lru_cache(maxsize=8)  # every layer of a pass asks for the same mask
def _group_mask(segments: tuple[Segment, ...], past: int, device: str):
    """(head, mask) of `grouped_sdpa`: the first `head` key positions come before the group's rows (what its
    prefixes reach there), and mask[row, key] is True where the row sees that key."""
    import torch

    if any(a.end != b.start for a, b in zip(segments, segments[1:])):
        raise ValueError(f"grouped segments must be consecutive: {segments}")
    first, end = past + segments[0].start, past + segments[-1].end
    head = min(max(s.prefix for s in segments), first)
    lengths = torch.tensor([s.end - s.start for s in segments], device=device)
    starts = torch.tensor([past + s.start for s in segments], device=device).repeat_interleave(lengths)
    prefixes = torch.tensor([s.prefix for s in segments], device=device).repeat_interleave(lengths)
    rows = torch.arange(first, end, device=device)  # each row's own key position
    keys = torch.cat([torch.arange(head, device=device), rows])  # each key column's position
    mask = (keys < prefixes[:, None]) | ((keys >= starts[:, None]) & (keys <= rows[:, None]))
    return head, mask


def row_attention(query, key, value, past: int, rows: Sequence[int], segments: Sequence[Segment], scaling):
    """The attention of single rows of a packed call: `query` [batch, heads, len(rows), head_dim] holds the queries
    of `rows` (their indices in the call), each seeing what it sees in its segment. [batch, len(rows), heads,
    head_dim], as `segment_sdpa`. One SDPA call per row: meant for a few rows (one per text), not for whole
    segments."""
    import torch
    from torch.nn.functional import scaled_dot_product_attention

    starts = [segment.start for segment in segments]
    outputs = []
    for i, row in enumerate(int(r) for r in rows):
        segment = segments[bisect_right(starts, row) - 1]
        if not segment.start <= row < segment.end:
            raise ValueError(f"row {row} lies in no segment of the call")
        keys, values = _visible(key, value, past, segment, row + 1)
        outputs.append(scaled_dot_product_attention(query[:, :, i:i + 1], keys, values, scale=scaling,
                                                    enable_gqa=True))
    return torch.cat(outputs, dim=2).transpose(1, 2)


def wanted_rows(states, rows: Sequence[int]):
    """`rows` of a packed call's final states [n, hidden], the call made with `rag_outputs=rows`: the fused last
    layer (rag/models/fused_layers.py) computes those rows only and returns them in order; any other path (a GPU,
    the kernels still building) returns every row. When the call had exactly len(rows) rows, each text is one
    token and `rows` are all of them, in order: the two readings agree."""
    return states if states.shape[0] == len(rows) else states[list(rows)]
