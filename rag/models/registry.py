"""Which implementation serves each model role, chosen from `Settings`.

Each backend is a factory `(settings) -> Embedder | Reranker`; the one named by `embedding_backend(settings)`
/ `reranker_backend(settings)` is built: a model server when its URL is set (`embedding_url`, `reranker_url`),
else the model in this process.
"""
from __future__ import annotations

from typing import Callable

from rag.models.contracts import Embedder, Reranker
from rag.settings import Settings

LOCAL = "local"
SERVER = "server"


def _local_embedder(settings: Settings) -> Embedder:
    from rag.models.embedder import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(settings.embedding_model, dim=settings.embedding_dim, device=settings.device,
                                       dtype=settings.dtype, batch_size=settings.embed_batch_size,
                                       max_tokens=settings.max_embed_tokens,
                                       query_cache_size=settings.query_cache_size, fused=settings.fused_kernels,
                                       keep_heap=settings.keep_cpu_heap)


def _local_reranker(settings: Settings) -> Reranker:
    from rag.models.reranker import Qwen3Reranker

    return Qwen3Reranker(settings.reranker_model, device=settings.device, dtype=settings.dtype,
                         batch_size=settings.rerank_batch_size, max_tokens=settings.max_rerank_tokens,
                         fused=settings.fused_kernels, keep_heap=settings.keep_cpu_heap)


def _remote_embedder(settings: Settings) -> Embedder:
    from rag.models.remote_embedder import RemoteEmbedder

    return RemoteEmbedder(settings.embedding_model, settings.embedding_url, api_key=settings.embedding_api_key,
                          dim=settings.embedding_dim, max_tokens=settings.max_embed_tokens,
                          batch_size=settings.remote_batch_size, batch_tokens=settings.remote_batch_tokens,
                          timeout=settings.model_timeout, retries=settings.model_retries)


def _remote_reranker(settings: Settings) -> Reranker:
    from rag.models.remote_reranker import RemoteReranker

    return RemoteReranker(settings.reranker_model, settings.reranker_url, api=settings.reranker_api,
                          api_key=settings.reranker_api_key, template=settings.reranker_template,
                          batch_size=settings.remote_batch_size, timeout=settings.model_timeout,
                          retries=settings.model_retries)


EMBEDDERS: dict[str, Callable[[Settings], Embedder]] = {LOCAL: _local_embedder, SERVER: _remote_embedder}
RERANKERS: dict[str, Callable[[Settings], Reranker]] = {LOCAL: _local_reranker, SERVER: _remote_reranker}


def embedding_backend(settings: Settings) -> str:
    return SERVER if settings.embedding_url else LOCAL


def reranker_backend(settings: Settings) -> str:
    return SERVER if settings.reranker_url else LOCAL


def models_on_servers(settings: Settings) -> bool:
    """True when no model runs in this process: the app is then I/O-bound (rag/ui/serving.py)."""
    return embedding_backend(settings) == SERVER and (settings.reranker_model is None
                                                     or reranker_backend(settings) == SERVER)


def make_embedder(settings: Settings) -> Embedder:
    return EMBEDDERS[embedding_backend(settings)](settings)


def make_reranker(settings: Settings) -> Reranker | None:
    """None when reranking is off (`reranker_model` none)."""
    if settings.reranker_model is None:
        return None
    return RERANKERS[reranker_backend(settings)](settings)
