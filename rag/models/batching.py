"""Length-aware padded batching for embedders that are not packed, and the CPU token cap of every batch or pack.

Qwen3 models run packed (rag/models/packed.py, rag/models/prefix_cache.py): `CPU_BATCH_TOKENS` is then the
token budget of one packed pass, and `first_alone` orders the reranker's packs for progressive display.

On a CPU one text of a few hundred tokens already keeps the matmuls near their peak, so batching buys little
there and padding is pure loss; batches are capped in padded tokens as well as in rows, and closed before
padding becomes a noticeable share of the work. A few texts per batch still pay off with bf16-stored weights,
which are widened once per forward pass (docs/benchmarks.md: 512 / 2048 / no cap measured 32.6 / 29.8 / 30.6 s
per query for the 0.6B reranker on a 2-core CPU; the fp32 embedder was equal at every cap).
"""
from __future__ import annotations

from typing import Iterator, Sequence

CPU_BATCH_TOKENS = 2048  # tokens per batch or pack on CPU: matmuls of ~300+ rows already run near the GEMM peak
# On a CPU with native bf16 matmuls (AMX: ~3 TFLOP/s on 2 cores) a pass is so short that streaming the model's
# weights from memory for every pass weighs: one pass of 28 FAQ chunks (2,348 tokens) measured 9% faster than
# two (docs/benchmarks.md, "Intel Xeon with AMX, 2 cores").
CPU_BF16_BATCH_TOKENS = 4096


def token_batches(items: Sequence[int], lengths: Sequence[int], size: int, max_tokens: int = 1 << 30,
                  max_waste: float = 0.1) -> Iterator[list[int]]:
    """Consecutive runs of length-sorted `items` (either order): at most `size` rows and `max_tokens` padded
    tokens, closed before padding would exceed `max_waste` of the run's tokens (padding is pure loss)."""
    batch: list[int] = []
    real = width = 0
    for item, length in zip(items, lengths):
        grown = max(width, length)
        padded = (len(batch) + 1) * grown
        if batch and (len(batch) >= size or padded > max_tokens or padded * (1 - max_waste) > real + length):
            yield batch
            batch, real, grown = [], 0, length
        batch.append(item)
        real += length
        width = grown
    if batch:
        yield batch


def first_alone(batches: Iterator[list[int]]) -> Iterator[list[int]]:
    """The same items, the first one in a batch of its own: when results are shown as batches finish, the first
    one reaches the page after one text's work instead of a whole batch's (the rest keep their batches)."""
    for position, batch in enumerate(batches):
        if position == 0 and len(batch) > 1:
            yield batch[:1]
            batch = batch[1:]
        yield batch
