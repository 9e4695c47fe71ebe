"""The one retrieve-then-score loop: every judged query through the pipeline with one `QueryOptions`, both
rankings scored. The CLI, the Evaluate tab's instruction experiment and anything else that re-runs judgments
call `evaluate`; `options_for` and `instruction_variant` build the options they compare."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from rag.chat import QueryOptions
from rag.errors import InputError
from rag.eval.judgments import Judgment
from rag.eval.metrics import evaluate_retrievals
from rag.eval.report import EvalReport
from rag.types import Retrieval

if TYPE_CHECKING:
    from rag.pipeline import RAG
    from rag.settings import Settings

log = logging.getLogger(__name__)

Progress = Callable[[float, str], Any]  # (fraction done, what is running)


class EmptyCollectionError(InputError):
    """Nothing to retrieve from: every query would score 0, which says nothing about the models."""


def evaluate(rag: RAG, judgments: Sequence[Judgment], options: QueryOptions, *, owner: str | None = None,
             progress: Progress | None = None) -> EvalReport:
    """Retrieve every judged query with `options` (as `owner` sees the collection) and score both rankings."""
    if rag.store.count() == 0:
        raise EmptyCollectionError("The collection is empty, so there is nothing to evaluate: add documents "
                                   "first (the Knowledge tab, or python -m rag ingest PATH).")
    pairs = []
    for n, judgment in enumerate(judgments):
        if progress:
            progress(n / max(1, len(judgments)), f"question {n + 1} of {len(judgments)}")
        pairs.append((judgment, _retrieve(rag, judgment.query, options, owner)))
    log.info("evaluated %d judged queries (top_k %d, top_n %d)", len(pairs), options.top_k, options.top_n)
    report = evaluate_retrievals(pairs, top_n=options.top_n, top_k=options.top_k)
    report.mode = options.retrieval_mode
    return report


def _retrieve(rag: RAG, query: str, options: QueryOptions, owner: str | None) -> Retrieval:
    # An empty instruction means the settings' default, as in the chat (rag.chat.run_turn).
    return rag.retrieve(query, top_k=options.top_k, top_n=options.top_n,
                        query_instruction=options.query_instruction or None,
                        rerank_instruction=options.rerank_instruction or None, owner=owner,
                        use_reranker=options.use_reranker, mode=options.retrieval_mode)


def options_for(settings: Settings, **given: Any) -> QueryOptions:
    """The settings' `QueryOptions` with the values given. None, 0 and blank text mean "the settings' value",
    as an omitted CLI flag or an empty instruction box does. Unlike `QueryOptions.from_settings`, values are
    not clamped to the settings panel's ranges: an evaluation may ask for any k."""
    return replace(QueryOptions.from_settings(settings), **_given(given))


def instruction_variant(options: QueryOptions, query_instruction: str | None = None,
                        rerank_instruction: str | None = None) -> QueryOptions:
    """B of an instruction experiment: A's options with other instructions (a blank one keeps A's)."""
    return replace(options, **_given({"query_instruction": query_instruction,
                                      "rerank_instruction": rerank_instruction}))


def _given(values: dict[str, Any]) -> dict[str, Any]:
    kept = {}
    for name, value in values.items():
        value = value.strip() if isinstance(value, str) else value
        if isinstance(value, bool) or value:  # False is a choice (reranker off), not "unset"
            kept[name] = value
    return kept
