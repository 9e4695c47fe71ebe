"""The `RAG` facade: embed -> search Milvus -> rerank, plus ingestion into the same collection.

It composes parts that don't know it: an `Embedder` and a `Reranker` (rag.models, picked from settings), a
`Store` (rag.store) and an `Ingestor` (rag.ingest) over the same embedder and store."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

from rag.ingest.ingestor import Ingestor
from rag.ingest.inputs import Input, TextInput, file_inputs
from rag.ingest.loaders import IngestLimits
from rag.ingest.report import IngestReport
from rag.models import Embedder, Reranker, make_embedder, make_reranker
from rag.models.priority import GATE
from rag.settings import Settings
from rag.store import Store, make_client
from rag.types import SHARED_OWNER, Candidate, Retrieval

log = logging.getLogger(__name__)


def make_store(settings: Settings, embedder: Embedder, client=None) -> Store:
    return Store(str(settings.milvus_uri), settings.collection, embedder.dim, token=settings.milvus_token,
                 embedding_model=embedder.model_name, client=client)


class RAG:
    """Two-stage retrieval over one collection. Parts are injectable; defaults are built from `settings`."""

    def __init__(self, settings: Settings | None = None, *, embedder: Embedder | None = None,
                 reranker: Reranker | None = None, store: Store | None = None, limits: IngestLimits | None = None):
        self.settings = settings or Settings.from_env()
        # Connect first: a wrong path, a locked database or an unreachable server is reported in seconds,
        # before minutes of model loading.
        client = None if store is not None else make_client(str(self.settings.milvus_uri),
                                                            self.settings.milvus_token)
        try:
            self.embedder = embedder or make_embedder(self.settings)
            self.reranker = reranker if reranker is not None else make_reranker(self.settings)
            self.store = store or make_store(self.settings, self.embedder, client)
        except BaseException:
            if client is not None:
                client.close()  # release Milvus Lite's lock for the caller's next try
            raise
        self.ingestor = Ingestor(self.embedder, self.store, self.settings, limits)

    # --- retrieval ------------------------------------------------------------------------------
    def dense_search(self, query: str, top_k: int | None = None, query_instruction: str | None = None,
                     owner: str | None = None) -> Retrieval:
        """Stage 1: the `top_k` nearest chunks by embedding similarity (ranked, not yet reranked)."""
        top_k = top_k or self.settings.top_k
        started = time.perf_counter()
        vector = self.embedder.embed_query(query, query_instruction or self.settings.query_instruction)
        embedded = time.perf_counter()
        hits = self.store.search(vector, top_k, owner=owner)
        searched = time.perf_counter()
        candidates = [Candidate(text=h.chunk.text, source=h.chunk.source, chunk_id=h.chunk.id,
                                dense_score=h.score, dense_rank=i, heading=h.chunk.heading,
                                doc_id=h.chunk.doc_id, chunk_index=h.chunk.chunk_index)
                      for i, h in enumerate(hits, start=1)]
        return Retrieval(query=query, candidates=candidates,
                         timings={"embed_query": embedded - started, "search": searched - embedded})

    def rerank(self, retrieval: Retrieval, top_n: int | None = None,
               rerank_instruction: str | None = None, use_reranker: bool = True) -> Retrieval:
        """Stage 2: score every candidate with the reranker, reorder, and mark the `top_n` for the LLM."""
        top_n = top_n or self.settings.top_n
        candidates = list(retrieval.candidates)
        timings = dict(retrieval.timings)
        reranked = bool(use_reranker and self.reranker is not None and candidates)
        if reranked:
            started = time.perf_counter()
            scores = self.reranker.score(retrieval.query, [c.text for c in candidates],
                                         rerank_instruction or self.settings.rerank_instruction)
            timings["rerank"] = time.perf_counter() - started
            for c, s in zip(candidates, scores):
                c.rerank_score = float(s)
            candidates.sort(key=lambda c: (-c.rerank_score, c.dense_rank))
            for rank, c in enumerate(candidates, start=1):
                c.rerank_rank = rank
        for position, c in enumerate(candidates):
            c.selected = position < top_n
        return Retrieval(query=retrieval.query, candidates=candidates, timings=timings, reranked=reranked)

    def retrieve(self, query: str, top_k: int | None = None, top_n: int | None = None,
                 query_instruction: str | None = None, rerank_instruction: str | None = None,
                 owner: str | None = None, use_reranker: bool = True) -> Retrieval:
        with GATE.urgent():  # an upload's next step waits while this question runs (rag/models/priority.py)
            dense = self.dense_search(query, top_k, query_instruction, owner)
            return self.rerank(dense, top_n, rerank_instruction, use_reranker)

    # --- ingestion --------------------------------------------------------------------------------
    def ingest(self, inputs: Sequence[Input], owner: str = SHARED_OWNER, progress=None, *,
               max_chunks: int | None = None, cancel=None) -> IngestReport:
        """The one ingestion entry point (rag.ingest.Ingestor.ingest): files, folders, zips, in-memory files
        (`BytesInput`) and texts (`TextInput`); one `FileResult` per document. `max_chunks` caps the chunks
        the call adds; `cancel` (a `threading.Event`) stops it between steps with `IngestCancelled`."""
        return self.ingestor.ingest(inputs, owner=owner, progress=progress, max_chunks=max_chunks, cancel=cancel)

    def add_texts(self, texts: Sequence[str], source: str, owner: str = SHARED_OWNER, progress=None) -> IngestReport:
        """Chunk, embed and store texts as one document named `source`; returns an `IngestReport`.
        Same (owner, source) again replaces that document; `progress(message, fraction)` is optional."""
        return self.ingest([TextInput(source, tuple(texts))], owner=owner, progress=progress)

    def ingest_paths(self, paths: Sequence[str | Path | tuple], owner: str = SHARED_OWNER, progress=None, *,
                     names: Sequence[str | None] | None = None, max_chunks: int | None = None,
                     cancel=None) -> IngestReport:
        """Ingest files, folders (recursively) and .zip archives; returns an `IngestReport` with one
        `FileResult` per document (ok / skipped / failed + reason). One bad file never stops the others.

        A document is identified by (owner, display name): re-adding it unchanged is a no-op, a changed
        version replaces the old one. The display name defaults to the file name (for files found in a
        folder: their path inside it). Uploads arriving as temp files pass their original name either as
        a `(path, display_name)` item in `paths` or as `names=[...]` (one name or None per path).
        `owner` is a session id for private uploads ("" = the shared knowledge base).
        `progress(message, fraction)` is called per file and per embedding batch, fraction in 0..1;
        `max_chunks` and `cancel` as for `ingest`."""
        return self.ingest(file_inputs(paths, names), owner=owner, progress=progress, max_chunks=max_chunks,
                           cancel=cancel)

    def close(self) -> None:
        self.store.close()
