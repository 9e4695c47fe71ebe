"""The `RAG` facade: embed -> search Milvus (dense, BM25, or both fused) -> rerank, plus ingestion into the
same collection.

It composes parts that don't know it: an `Embedder` and a `Reranker` (rag.models, picked from settings), a
`Store` (rag.store) and an `Ingestor` (rag.ingest) over the same embedder and store."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

from rag.ingest.ingestor import Ingestor
from rag.ingest.inputs import Input, TextInput, file_inputs
from rag.ingest.loaders import IngestLimits
from rag.ingest.report import IngestReport
from rag.models import Embedder, Reranker, make_embedder, make_reranker
from rag.models.priority import GATE
from rag.models.scores import CachedScorer, ScoreBatch
from rag.settings import Settings
from rag.store import Store, make_client
from rag.store.fusion import Fused, Ranked, adaptive, lexical_weight, rrf, weighted
from rag.types import SHARED_OWNER, Candidate, Hit, Retrieval

log = logging.getLogger(__name__)


def make_store(settings: Settings, embedder: Embedder, client=None) -> Store:
    return Store(str(settings.milvus_uri), settings.collection, embedder.dim, token=settings.milvus_token,
                 embedding_model=embedder.model_name, client=client, analyzer=settings.bm25_analyzer,
                 call_timeout=settings.milvus_timeout)


@dataclass
class Scores:
    """Chunk id -> dense and BM25 score, for every chunk of either list."""
    dense: dict[int, float]
    bm25: dict[int, float]


def _break_ties(order: list[Fused], bm25: dict[int, float]) -> list[Fused]:
    """RRF ties when one list ranks a chunk where the other ranks another (rank 1 in each, say). Then a chunk
    sharing no term with the query (BM25 0) goes after one that does: an exact identifier the embedding
    missed beats a chunk that only resembles the query. Otherwise the dense list's chunk keeps the tie."""
    return sorted(order, key=lambda f: (-f.score, bm25[f.chunk_id] <= 0.0))


class RAG:
    """Two-stage retrieval over one collection. Parts are injectable; defaults are built from `settings`."""

    def __init__(self, settings: Settings | None = None, *, embedder: Embedder | None = None,
                 reranker: Reranker | None = None, store: Store | None = None, limits: IngestLimits | None = None):
        self.settings = settings or Settings.from_env()
        # Connect first: a wrong path, a locked database or an unreachable server is reported in seconds,
        # before minutes of model loading.
        client = None if store is not None else make_client(str(self.settings.milvus_uri),
                                                            self.settings.milvus_token,
                                                            call_timeout=self.settings.milvus_timeout)
        try:
            self.embedder = embedder or make_embedder(self.settings)
            self.reranker = reranker if reranker is not None else make_reranker(self.settings)
            self.store = store or make_store(self.settings, self.embedder, client)
        except BaseException:
            if client is not None:
                client.close()  # release Milvus Lite's lock for the caller's next try
            raise
        self.ingestor = Ingestor(self.embedder, self.store, self.settings, limits)

    @property
    def reranker(self) -> Reranker | None:
        return self._reranker

    @reranker.setter
    def reranker(self, reranker: Reranker | None) -> None:
        """A new reranker comes with its score cache: scores cached by (model, instruction, query, chunk
        content), so repeats cost a lookup (rag/models/scores.py)."""
        self._reranker = reranker
        self.scorer = CachedScorer(reranker, self.settings.rerank_cache_size) if reranker is not None else None

    # --- retrieval ------------------------------------------------------------------------------
    def dense_search(self, query: str, top_k: int | None = None, query_instruction: str | None = None,
                     owner: str | None = None) -> Retrieval:
        """`first_stage` in dense mode: the `top_k` nearest chunks by embedding similarity."""
        return self.first_stage(query, top_k, query_instruction, owner, mode="dense")

    def first_stage(self, query: str, top_k: int | None = None, query_instruction: str | None = None,
                    owner: str | None = None, mode: str | None = None) -> Retrieval:
        """Stage 1: the dense and the BM25 `top_k` lists (same owner filter), ordered by `mode` (dense, bm25,
        or hybrid = their fusion), cut to `top_k`. Every candidate gets both scores and both ranks, whichever
        list it came from: the missing dense score from its stored vector, the missing BM25 score by a BM25
        search restricted to those chunks."""
        top_k = top_k or self.settings.top_k
        mode = mode or self.settings.retrieval_mode
        started = time.perf_counter()
        vector = self.embedder.embed_query(query, query_instruction or self.settings.query_instruction)
        timings = {"embed_query": time.perf_counter() - started}
        dense = self._timed(timings, "search", self.store.search, vector, top_k, owner=owner)
        lexical = self._timed(timings, "bm25", self.store.bm25_search, query, top_k, owner=owner)
        started = time.perf_counter()
        weight = None
        if mode == "hybrid" and self.settings.fusion == "adaptive":
            order, scores, weight = self._adaptive(query, vector, dense, lexical, owner)
        else:
            order = self._order(mode, dense, lexical)
            scores = self._missing_scores(query, vector, order, dense, lexical, owner)
        if mode == "hybrid":
            order = _break_ties(order, scores.bm25)
        candidates = self._candidates(order[:top_k], dense, lexical, scores)
        timings["scores"] = time.perf_counter() - started
        return Retrieval(query=query, candidates=candidates, timings=timings, mode=mode, lexical_weight=weight,
                         ran_on={"embed_query": self.embedder.backend})

    def _adaptive(self, query: str, vector, dense: list[Hit], lexical: list[Hit],
                  owner: str | None) -> tuple[list[Fused], Scores, float]:
        """Adaptive fusion needs both scores of every chunk of either list before it can order them; BM25's
        weight comes from this query's BM25 list and the candidates' texts (rag/store/fusion.py)."""
        union = list(dict.fromkeys(h.chunk.id for h in dense + lexical))
        scores = self._missing_scores(query, vector, [Fused(i, 0.0) for i in union], dense, lexical, owner)
        texts = {h.chunk.id: h.chunk.text for h in dense + lexical}
        weight = lexical_weight(query, [Ranked(h.chunk.id, h.score) for h in lexical], texts)
        order = adaptive({i: scores.dense[i] for i in union}, scores.bm25, weight)
        return order, scores, weight

    @staticmethod
    def _timed(timings: dict, stage: str, search, *args, **kwargs) -> list[Hit]:
        started = time.perf_counter()
        hits = search(*args, **kwargs)
        timings[stage] = time.perf_counter() - started
        return hits

    def _order(self, mode: str, dense: list[Hit], lexical: list[Hit]) -> list[Fused]:
        lists = [[Ranked(h.chunk.id, h.score) for h in hits] for hits in (dense, lexical)]
        if mode == "dense":
            return [Fused(r.chunk_id, r.score) for r in lists[0]]
        if mode == "bm25":
            return [Fused(r.chunk_id, r.score) for r in lists[1]]
        if self.settings.fusion == "weighted":
            return weighted(lists, [self.settings.dense_weight, 1.0 - self.settings.dense_weight])
        return rrf(lists, self.settings.rrf_k)

    def _missing_scores(self, query: str, vector, order: list[Fused], dense: list[Hit], lexical: list[Hit],
                        owner: str | None) -> Scores:
        """Both scores of every fused chunk: from its list where it has one, else computed (the dense score from
        the stored vector, the BM25 one by a BM25 search restricted to those chunks, 0 without a term)."""
        ids = [f.chunk_id for f in order]
        scores = Scores({h.chunk.id: h.score for h in dense}, {h.chunk.id: h.score for h in lexical})
        vectors = self.store.vectors([i for i in ids if i not in scores.dense])
        scores.dense.update({i: float(v @ vector) for i, v in vectors.items()})
        scores.bm25.update(self.store.bm25_scores(query, [i for i in ids if i not in scores.bm25], owner=owner))
        return scores

    @staticmethod
    def _candidates(order: list[Fused], dense: list[Hit], lexical: list[Hit], scores: Scores) -> list[Candidate]:
        dense_at = {h.chunk.id: (rank, h.chunk) for rank, h in enumerate(dense, start=1)}
        bm25_at = {h.chunk.id: (rank, h.chunk) for rank, h in enumerate(lexical, start=1)}
        candidates = []
        for position, fused in enumerate(order, start=1):
            d_rank, chunk = dense_at.get(fused.chunk_id, (None, None))
            b_rank, b_chunk = bm25_at.get(fused.chunk_id, (None, None))
            chunk = chunk or b_chunk
            candidates.append(Candidate(
                text=chunk.text, source=chunk.source, chunk_id=chunk.id, dense_score=scores.dense[chunk.id],
                dense_rank=d_rank, heading=chunk.heading, doc_id=chunk.doc_id, chunk_index=chunk.chunk_index,
                bm25_score=scores.bm25[chunk.id], bm25_rank=b_rank, fused_score=fused.score, fused_rank=position))
        return candidates

    def rerank(self, retrieval: Retrieval, top_n: int | None = None,
               rerank_instruction: str | None = None, use_reranker: bool = True) -> Retrieval:
        """Stage 2: score every candidate with the reranker (or its score cache), reorder, and mark the
        `top_n` for the LLM."""
        final = retrieval
        for final in self.rerank_steps(retrieval, top_n, rerank_instruction, use_reranker):
            pass
        return final

    def rerank_steps(self, retrieval: Retrieval, top_n: int | None = None, rerank_instruction: str | None = None,
                     use_reranker: bool = True) -> Iterator[Retrieval]:
        """Stage 2 as it happens: partial results (first-stage order, the scores known so far, `pending` > 0)
        after the cached scores and after each batch the reranker finishes, then the final one, reordered by
        rerank score with the `top_n` selected (what `rerank` returns). Without reranking: the final one only.
        Candidates are copies: the first stage's `retrieval` is left as it was.

        The reranker starts when this is called (rag/models/scores.py), so it scores while the caller shows the
        first stage."""
        candidates = [replace(c) for c in retrieval.candidates]
        reranked = bool(use_reranker and self.scorer is not None and candidates)
        started = time.perf_counter()  # "rerank" counts from here: the reranker may work before anyone reads
        batches = self.scorer.batches(retrieval.query, [c.text for c in candidates],
                                      rerank_instruction or self.settings.rerank_instruction) if reranked else None
        return self._reranked(retrieval, candidates, batches, top_n or self.settings.top_n, started)

    def _reranked(self, retrieval: Retrieval, candidates: list[Candidate], batches: Iterator[ScoreBatch] | None,
                  top_n: int, started: float) -> Iterator[Retrieval]:
        timings = dict(retrieval.timings)
        ran_on = dict(retrieval.ran_on)
        if batches is not None:
            ran_on["rerank"] = self.reranker.backend
            pending = len(candidates)
            for batch in batches:
                for i, s in zip(batch.positions, batch.scores):
                    candidates[i].rerank_score, candidates[i].rerank_cached = s, batch.cached
                pending -= len(batch.positions)
                timings["rerank"] = time.perf_counter() - started
                if pending:
                    yield Retrieval(query=retrieval.query, candidates=[replace(c) for c in candidates],
                                    timings=dict(timings), mode=retrieval.mode, ran_on=dict(ran_on),
                                    lexical_weight=retrieval.lexical_weight, pending=pending)
            candidates.sort(key=lambda c: (-c.rerank_score, c.first_rank))
            for rank, c in enumerate(candidates, start=1):
                c.rerank_rank = rank
        for position, c in enumerate(candidates):
            c.selected = position < top_n
        yield Retrieval(query=retrieval.query, candidates=candidates, timings=timings, reranked=batches is not None,
                        mode=retrieval.mode, ran_on=ran_on, lexical_weight=retrieval.lexical_weight)

    def retrieve(self, query: str, top_k: int | None = None, top_n: int | None = None,
                 query_instruction: str | None = None, rerank_instruction: str | None = None,
                 owner: str | None = None, use_reranker: bool = True, mode: str | None = None) -> Retrieval:
        with GATE.urgent():  # an upload's next step waits while this question runs (rag/models/priority.py)
            first = self.first_stage(query, top_k, query_instruction, owner, mode)
            return self.rerank(first, top_n, rerank_instruction, use_reranker)

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
