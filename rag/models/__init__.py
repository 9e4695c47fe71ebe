"""The models: an `Embedder` and a `Reranker` behind one-method contracts (contracts.py), built from settings
by the registry (registry.py); the Qwen3 implementations and their CPU/GPU plumbing beside them."""
from rag.models.contracts import Embedder, Reranker
from rag.models.registry import make_embedder, make_reranker

__all__ = ["Embedder", "Reranker", "make_embedder", "make_reranker"]
