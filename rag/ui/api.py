"""JSON-friendly results for the named API endpoints (`/retrieve`, `/ask`) and the MCP tools."""
from __future__ import annotations

import logging
from contextlib import contextmanager

from rag.answer import Answerer
from rag.chat import QueryOptions, final_step, run_turn
from rag.errors import InputError, RAGError, user_message
from rag.pipeline import RAG
from rag.types import Candidate, Retrieval

log = logging.getLogger(__name__)


def candidate_dict(c: Candidate) -> dict:
    return {"text": c.text, "source": c.source, "heading": c.heading, "chunk_id": str(c.chunk_id),
            "doc_id": c.doc_id, "chunk_index": c.chunk_index, "dense_rank": c.dense_rank,
            "dense_score": round(c.dense_score, 6), "bm25_rank": c.bm25_rank, "bm25_score": round(c.bm25_score, 6),
            "fused_rank": c.fused_rank, "fused_score": None if c.fused_score is None else round(c.fused_score, 6),
            "rerank_rank": c.rerank_rank,
            "rerank_score": None if c.rerank_score is None else round(c.rerank_score, 6),
            "selected": c.selected}


def retrieval_dict(retrieval: Retrieval, timings: dict[str, float] | None = None) -> dict:
    timings = retrieval.timings if timings is None else timings
    return {"query": retrieval.query, "mode": retrieval.mode, "reranked": retrieval.reranked,
            "candidates": [candidate_dict(c) for c in retrieval.candidates],
            "timings": {stage: round(s, 4) for stage, s in timings.items()},
            "ran_on": {stage: backend.describe() for stage, backend in retrieval.ran_on.items()}}


def retrieve_json(rag: RAG, query: str, options: QueryOptions) -> dict:
    if not query.strip():
        raise InputError("The query is empty: pass the text to search for.")
    retrieval = rag.retrieve(query.strip(), options.top_k, options.top_n, options.query_instruction or None,
                             options.rerank_instruction or None, owner=None, use_reranker=options.use_reranker,
                             mode=options.retrieval_mode)
    return retrieval_dict(retrieval)


def ask_json(rag: RAG, answerer: Answerer, question: str, options: QueryOptions) -> dict:
    if not question.strip():
        raise InputError("The question is empty: pass the question to answer.")
    step = final_step(run_turn(rag, answerer, question.strip(), None, options))
    answer = step.answer
    return {"question": question.strip(), "answer": answer.text if answer else "",
            "mode": answer.mode if answer else "", "error": answer.error if answer else None,
            "citations": [{"number": c.number, "source": c.candidate.source, "heading": c.candidate.heading,
                           "chunk_id": str(c.candidate.chunk_id)} for c in (answer.citations if answer else [])],
            "warning": step.warning, "retrieval": retrieval_dict(step.retrieval, step.timings)}


@contextmanager
def _clear_errors():
    """API callers get a message, never a generic "the app raised an exception" or a traceback: our own
    errors as they are, anything else as a pointer to the server log (rag.errors.user_message)."""
    import gradio as gr

    try:
        yield
    except gr.Error:
        raise
    except Exception as exc:  # noqa: BLE001 - the log gets the traceback
        if not isinstance(exc, RAGError):
            log.exception("API request failed")
        raise gr.Error(user_message(exc)) from None


def register_api(rag: RAG, answerer: Answerer, settings) -> None:
    """Named endpoints `/retrieve` and `/ask` (gradio_client, REST, and MCP tools with `--mcp`).

    They search the shared knowledge base (session uploads belong to their browser session)."""
    import gradio as gr

    def retrieve(query: str, top_k: int = settings.top_k, top_n: int = settings.top_n,
                 use_reranker: bool = True, retrieval_mode: str = settings.retrieval_mode) -> dict:
        """Search the knowledge base: embedding and BM25 search for top_k candidates, then the reranker.

        Args:
            query: what to search for, in natural language.
            top_k: how many candidates the embedding search returns (1-100).
            top_n: how many of the best candidates are marked `selected` (the ones an answer would use).
            use_reranker: rerank the candidates with the cross-encoder reranker (slower, more precise).
            retrieval_mode: the first stage: "dense" (embeddings), "bm25" (words) or "hybrid" (both, fused).

        Returns:
            a dict: query, mode, reranked, candidates (in final order, each with text, source, heading,
            dense_rank, dense_score, bm25_rank, bm25_score, fused_rank, fused_score, rerank_rank, rerank_score,
            selected) and timings (seconds per stage).
        """
        options = QueryOptions.from_settings(settings, top_k=top_k, top_n=top_n, retrieval_mode=retrieval_mode,
                                             use_reranker=use_reranker and rag.reranker is not None)
        with _clear_errors():
            return retrieve_json(rag, query or "", options)

    def ask(question: str, top_k: int = settings.top_k, top_n: int = settings.top_n,
            use_reranker: bool = True, retrieval_mode: str = settings.retrieval_mode) -> dict:
        """Answer a question from the knowledge base, citing passages as [n].

        Args:
            question: the question, in natural language.
            top_k: how many candidates the embedding search returns (1-100).
            top_n: how many reranked passages the answer is written from.
            use_reranker: rerank the candidates before choosing the top_n passages.
            retrieval_mode: the first stage: "dense", "bm25" or "hybrid".

        Returns:
            a dict: question, answer (Markdown with [n] citations), mode ("llm" or "retrieval-only"), error,
            citations (number, source, heading, chunk_id) and retrieval (as the retrieve endpoint returns).
        """
        options = QueryOptions.from_settings(settings, top_k=top_k, top_n=top_n, retrieval_mode=retrieval_mode,
                                             use_reranker=use_reranker and rag.reranker is not None)
        with _clear_errors():
            return ask_json(rag, answerer, question or "", options)

    from rag.ui.serving import chat_limits

    gr.api(retrieve, api_name="retrieve", **chat_limits(settings))
    gr.api(ask, api_name="ask", **chat_limits(settings))
