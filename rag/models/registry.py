"""Which implementation serves each model role, chosen from `Settings`.

Each backend is a factory `(settings) -> Embedder | Reranker`; the one named by `embedding_backend(settings)`
/ `reranker_backend(settings)` is built. Today every model runs in this process; a model server backend plugs
in by adding a factory here and a rule that picks it.
"""
from __future__ import annotations

from typing import Callable

from rag.models.contracts import Embedder, Reranker
from rag.settings import Settings

LOCAL = "local"


def _local_embedder(settings: Settings) -> Embedder:
    from rag.models.embedder import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(settings.embedding_model, dim=settings.embedding_dim, device=settings.device,
                                       dtype=settings.dtype, batch_size=settings.embed_batch_size,
                                       max_tokens=settings.max_embed_tokens,
                                       query_cache_size=settings.query_cache_size)


def _local_reranker(settings: Settings) -> Reranker:
    from rag.models.reranker import Qwen3Reranker

    return Qwen3Reranker(settings.reranker_model, device=settings.device, dtype=settings.dtype,
                         batch_size=settings.rerank_batch_size, max_tokens=settings.max_rerank_tokens)


EMBEDDERS: dict[str, Callable[[Settings], Embedder]] = {LOCAL: _local_embedder}
RERANKERS: dict[str, Callable[[Settings], Reranker]] = {LOCAL: _local_reranker}


def embedding_backend(settings: Settings) -> str:
    return LOCAL


def reranker_backend(settings: Settings) -> str:
    return LOCAL


def make_embedder(settings: Settings) -> Embedder:
    return EMBEDDERS[embedding_backend(settings)](settings)


def make_reranker(settings: Settings) -> Reranker | None:
    """None when reranking is off (`reranker_model` none)."""
    if settings.reranker_model is None:
        return None
    return RERANKERS[reranker_backend(settings)](settings)
