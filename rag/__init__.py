"""Retrieval-augmented chat you can see inside: Qwen3 embeddings + Qwen3 reranker over Milvus."""
from .pipeline import RAG
from .settings import Settings
from .types import Candidate, Chunk, Retrieval

__all__ = ["RAG", "Settings", "Candidate", "Chunk", "Retrieval"]
