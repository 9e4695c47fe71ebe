"""Packed forward passes for decoder-only embedders (Qwen3-Embedding): several texts in one row, no padding.

A padded batch of texts of different lengths wastes its padding in every matmul, and a batch of a few short texts
gives matmuls too short to reach the CPU's GEMM peak. Packing puts a batch's texts end to end in one row: the
Linear layers (almost all of the FLOPs) then see every real token of the batch as one tall matrix and no padding,
whatever the lengths. Each text keeps its own positions (restarting at 0) and attends only to itself: attention
runs per text, causal on the text's own slice, exactly what the text computes alone (on a CPU one fused kernel
call for all texts, else torch's SDPA per text; on a GPU one masked SDPA call per group of texts). The last-token
pooling then reads each text's last position, the only row the fused model's last layer computes
(rag/models/fused_layers.py).
A segment may also attend to a shared prefix of the keys first: the reranker packs every document's tail on its
query's shared head that way (rag/models/prefix_cache.py).

This is an attention implementation registered with transformers ("rag_packed"): the model is loaded by
sentence-transformers as usual and stays correct for ordinary padded calls (it then uses the SDPA path and mask).
"""
from __future__ import annotations

from typing import Sequence

from rag.models.fused_layers import attention_kernel
from rag.models.segments import Segment, grouped_sdpa, segment_sdpa, wanted_rows

ATTENTION = "rag_packed"


def _packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                      rag_segments: Sequence[Segment] | None = None, **kwargs):
    """Attention per packed segment (`rag_segments`), or transformers' own SDPA path when not packed.

    On a CPU with the fused kernels (rag/models/fused_layers.py) one kernel call runs every segment; otherwise
    torch's SDPA runs them, one by one on a CPU and in masked groups on a GPU (`attention_groups`). Packed calls
    are inference only (`dropout` is ignored there)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if rag_segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    kernel = attention_kernel(module, query, key, value)
    if kernel is not None:
        table = torch.tensor(rag_segments, dtype=torch.long)
        return kernel(query, key, value, table, scaling if scaling is not None else query.shape[-1] ** -0.5), None
    past = key.shape[2] - query.shape[2]  # cached positions come first in the keys
    outputs = [segment_sdpa(query, key, value, past, group[0], scaling) if len(group) == 1
               else grouped_sdpa(query, key, value, past, group, scaling)
               for group in attention_groups(rag_segments, query.device.type)]
    return torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0].contiguous(), None


# On a GPU, consecutive segments of up to this many rows in all share one masked attention call: a launch costs
# more than the masked-out work there, which grows with the rows' square (measured: docs/benchmarks.md). 0 = one
# call per segment, as on a CPU, which does every masked-out product.
GPU_ATTENTION_ROWS = 2048


def attention_groups(segments: Sequence[Segment], device_type: str) -> list[list[Segment]]:
    """The segments of a packed call grouped into attention calls: one each on a CPU, consecutive runs of up to
    GPU_ATTENTION_ROWS rows elsewhere (a longer segment goes alone)."""
    if device_type == "cpu":
        return [[segment] for segment in segments]
    groups = pack_batches([s.end - s.start for s in segments], GPU_ATTENTION_ROWS, len(segments))
    return [[segments[i] for i in group] for group in groups]


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION, _packed_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)  # unpacked calls get SDPA's own mask


def packable(model) -> bool:
    """True for a sentence-transformers model we can pack: a decoder (position ids, causal attention, SDPA-able)
    followed by last-token pooling, e.g. Qwen3-Embedding. Other models (BERT-style, mean pooling) are not."""
    modules = list(model)
    if len(modules) < 2 or type(modules[1]).__name__ != "Pooling":
        return False
    pooling = modules[1].get_config_dict() if hasattr(modules[1], "get_config_dict") else {}
    backbone = getattr(modules[0], "auto_model", None)
    config = getattr(backbone, "config", None)
    return (pooling.get("pooling_mode") == "lasttoken" and config is not None
            and hasattr(config, "num_key_value_heads")
            and getattr(backbone, "_supports_sdpa", False)
            and all(type(m).__name__ in ("Normalize",) for m in modules[2:]))


def use_packed_attention(model) -> None:
    """Switch a transformers decoder (Qwen3's) to the packed attention, in place; unpacked calls stay SDPA."""
    _register()
    model.set_attn_implementation(ATTENTION)


def pack_batches(lengths: Sequence[int], budget: int, rows: int) -> list[list[int]]:
    """Consecutive runs of at most `rows` item indices whose token counts sum to at most `budget` (a longer item
    goes alone). On a CPU, matmuls of ~300 rows and more run near the GEMM peak (docs/benchmarks.md)."""
    batches: list[list[int]] = []
    batch: list[int] = []
    total = 0
    for index, length in enumerate(lengths):
        if batch and (total + length > budget or len(batch) >= rows):
            batches.append(batch)
            batch, total = [], 0
        batch.append(index)
        total += length
    if batch:
        batches.append(batch)
    return batches


def last_token_states(backbone, sequences: Sequence[Sequence[int]]):
    """The final hidden state at each sequence's last token, all sequences packed into one forward pass."""
    import torch

    device = backbone.device
    ids = torch.tensor([t for s in sequences for t in s], dtype=torch.long, device=device)[None]
    positions = torch.cat([torch.arange(len(s), device=device) for s in sequences])[None]
    ends = torch.tensor([len(s) for s in sequences], device=device).cumsum(0)
    segments = [Segment(a, b) for a, b in zip([0] + ends[:-1].tolist(), ends.tolist())]
    last = (ends - 1).tolist()
    out = backbone(input_ids=ids, position_ids=positions, rag_segments=segments, rag_outputs=last)
    return wanted_rows(out.last_hidden_state[0], last)
