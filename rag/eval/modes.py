"""Dense vs BM25 vs hybrid vs reranked on the same judged queries: the first-stage modes side by side.

Each mode is one `evaluate` run (the query embedding is cached, so the extra runs cost only the searches);
the reranker runs once, on the candidates of the mode chosen in the options."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from rag.chat import QueryOptions
from rag.eval.judgments import Judgment
from rag.eval.report import EvalReport
from rag.eval.runner import Progress, evaluate
from rag.settings import RETRIEVAL_MODES

if TYPE_CHECKING:
    from rag.pipeline import RAG


@dataclass
class ModeComparison:
    metrics: list[str]
    first_stage: dict[str, dict[str, float]]  # mode -> metric -> mean, without reranking
    reranked: dict[str, float] | None  # the reranker over `reranked_mode`'s candidates; None without one
    reranked_mode: str
    reports: dict[str, EvalReport]  # mode -> its full report (per-query results)

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "first_stage": self.first_stage, "reranked": self.reranked,
                "reranked_mode": self.reranked_mode}


def compare_modes(rag: RAG, judgments: Sequence[Judgment], options: QueryOptions, *, owner: str | None = None,
                  progress: Progress | None = None) -> ModeComparison:
    """Every first-stage mode without reranking, and the reranker over `options.retrieval_mode`."""
    reports: dict[str, EvalReport] = {}
    for n, mode in enumerate(RETRIEVAL_MODES):
        rerank = options.use_reranker and mode == options.retrieval_mode and rag.reranker is not None
        step = None if progress is None else _scaled(progress, n, len(RETRIEVAL_MODES), mode)
        reports[mode] = evaluate(rag, judgments, replace(options, retrieval_mode=mode, use_reranker=rerank),
                                 owner=owner, progress=step)
    chosen = reports[options.retrieval_mode]
    reranked = chosen.reranked if options.use_reranker and rag.reranker is not None else None
    return ModeComparison(chosen.metrics, {m: r.dense for m, r in reports.items()}, reranked,
                          options.retrieval_mode, reports)


def _scaled(progress: Progress, n: int, total: int, mode: str) -> Progress:
    return lambda fraction, what: progress((n + fraction) / total, f"{mode}: {what}")
