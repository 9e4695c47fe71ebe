"""Retrieval-augmented chat you can see inside: Qwen3 embeddings + Qwen3 reranker over Milvus."""
from rag.pipeline import RAG
from rag.settings import Settings
from rag.types import Candidate, Chunk, Retrieval

__all__ = ["RAG", "Settings", "Candidate", "Chunk", "Retrieval"]
