"""What one question does, step by step, independent of Gradio: condense -> first stage (dense, BM25 or
hybrid; the DENSE step keeps its name) -> rerank ->
stream the answer. Each step yields a `TurnStep`, so the page can show dense results before the reranker
finishes and the answer as it streams. The API endpoints reuse the same steps.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Iterator

from rag.answer import Answerer, AnswerUpdate
from rag.errors import ModelServerError
from rag.models.priority import GATE
from rag.pipeline import RAG
from rag.settings import RETRIEVAL_MODES
from rag.types import SHARED_OWNER, Retrieval

log = logging.getLogger(__name__)

DENSE, RERANKING, RERANKED, ANSWER = "dense", "reranking", "reranked", "answer"


@dataclass
class QueryOptions:
    """The per-question knobs of the settings panel."""
    top_k: int = 10
    top_n: int = 3
    use_reranker: bool = True
    retrieval_mode: str = "dense"  # dense | bm25 | hybrid (rag.settings.RETRIEVAL_MODES)
    query_instruction: str = ""
    rerank_instruction: str = ""
    llm_model: str = ""
    temperature: float = 0.2

    @classmethod
    def from_settings(cls, settings, **changes) -> "QueryOptions":
        base = cls(top_k=settings.top_k, top_n=settings.top_n, use_reranker=settings.reranker_model is not None,
                   retrieval_mode=settings.retrieval_mode,
                   query_instruction=settings.query_instruction, rerank_instruction=settings.rerank_instruction,
                   llm_model=settings.llm_model, temperature=settings.temperature)
        for name, value in changes.items():
            if value is not None:
                setattr(base, name, value)
        return base.clamped()

    def clamped(self) -> "QueryOptions":
        """Slider values arrive as floats and may be out of range when sent through the API."""
        self.top_k = max(1, min(100, int(self.top_k)))
        self.top_n = max(1, min(self.top_k, int(self.top_n)))
        self.temperature = max(0.0, min(2.0, float(self.temperature)))
        if self.retrieval_mode not in RETRIEVAL_MODES:
            self.retrieval_mode = "dense"  # an API caller's unknown value: the documented default
        return self


@dataclass
class TurnStep:
    stage: str  # "dense" | "reranking" | "reranked" | "answer"
    query: str  # the standalone retrieval query (the question itself, or condensed from history)
    retrieval: Retrieval
    timings: dict[str, float] = field(default_factory=dict)
    answer: AnswerUpdate | None = None
    warning: str | None = None  # a stage that failed without ending the turn (the reranker's server), and why


def run_turn(rag: RAG, answerer: Answerer, question: str, history: list[dict] | None,
             options: QueryOptions, owner: str = SHARED_OWNER) -> Iterator[TurnStep]:
    """Yield the first-stage retrieval, partial reranked ones (RERANKING: the scores known so far, as the reranker
    finishes each batch or the score cache has them), the reranked one, then every answer update (the last one
    done)."""
    timings: dict[str, float] = {}
    query = _condense(answerer, question, history, timings)
    with GATE.urgent():  # an upload's next step waits while the question searches (rag/models/priority.py)
        dense = rag.first_stage(query, options.top_k, options.query_instruction or None, owner or None,
                                options.retrieval_mode)
    timings.update(dense.timings)
    # The reranker starts now and scores while the page draws the first-stage table. Its worker holds the
    # priority gate while it scores (rag/models/scores.py): no lock is held across these yields, which wait for
    # the page.
    steps = rag.rerank_steps(dense, options.top_n, options.rerank_instruction or None, options.use_reranker)
    yield TurnStep(DENSE, query, dense, dict(timings))
    final, warning = dense, None
    try:
        for final in steps:
            if final.pending:
                yield TurnStep(RERANKING, query, final, dict(timings))  # "rerank" is timed once it is done
    except ModelServerError as exc:
        # The question still gets its passages and an answer: in the first stage's order, with the reason.
        log.warning("reranking failed, answering from the first stage's order: %s", exc)
        final = rag.rerank(dense, options.top_n, use_reranker=False)
        warning = f"Reranking failed, so the passages keep the first stage's order. {exc}"
    timings.update(final.timings)
    yield TurnStep(RERANKED, query, final, dict(timings), warning=warning)
    started = time.perf_counter()
    for update in answerer.stream(question, final.selected, history, model=options.llm_model or None,
                                  temperature=options.temperature, spent=timings.get("condense", 0.0)):
        timings["generate"] = time.perf_counter() - started
        yield TurnStep(ANSWER, query, final, dict(timings), update, warning)


def _condense(answerer: Answerer, question: str, history: list[dict] | None, timings: dict) -> str:
    if not history:
        return question
    started = time.perf_counter()
    query = answerer.condense(question, history)
    timings["condense"] = time.perf_counter() - started
    if query != question:
        log.info("follow-up %r searched as %r", question, query)
    return query


def final_step(steps: Iterator[TurnStep]) -> TurnStep:
    last = None
    for last in steps:
        pass
    if last is None:
        raise RuntimeError("the turn produced no result")
    return last
