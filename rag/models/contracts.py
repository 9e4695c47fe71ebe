"""The one-method contracts the rest of the package relies on; implementations live beside this module and
are picked from `Settings` by rag.models.registry. Nothing here imports a model library."""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import numpy as np

from rag.types import Backend

ProgressFn = Callable[[int, int], None]  # (texts done, texts total)


class Embedder(Protocol):
    """Texts -> unit-length vectors, so inner product is cosine similarity."""

    model_name: str  # what the collection is stamped with: another model's vectors are another space
    dim: int  # the size of every vector returned (a Matryoshka size may cut the model's full size)
    max_tokens: int  # tokens read per text; the rest of a longer text is not embedded
    backend: Backend  # where it runs: this process (device, precision) or a model server (URL)

    def embed_documents(self, texts: Sequence[str], progress: ProgressFn | None = None) -> np.ndarray:
        """One row per text, as stored (no instruction)."""

    def embed_query(self, text: str, instruction: str | None = None) -> np.ndarray:
        """A search vector; instruction-aware models get `Instruct: {instruction}\\nQuery:{text}`."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text in the model's own tokenizer, without special tokens (chunk sizes)."""


class Reranker(Protocol):
    """(query, documents) -> one relevance score per document, higher is better."""

    backend: Backend  # where it runs: this process (device, precision) or a model server (URL)

    def score(self, query: str, documents: Sequence[str], instruction: str | None = None) -> list[float]:
        """Scores in the documents' order; Qwen3-Reranker's are P("yes") in 0..1."""
