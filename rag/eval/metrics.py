"""Score judged retrievals: Recall, MRR and nDCG of the dense ranking and the reranked ranking of the same
candidates, per query and overall, computed by trec_eval (through `ir_measures`), not hand-written formulas.

Each relevant item counts once: a document named by several chunks is found at its first chunk.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from rag.chat import DENSE, RERANKED
from rag.eval.judgments import Judgment
from rag.eval.report import EvalReport, QueryResult
from rag.types import Candidate, Retrieval

# The two rankings scored, named after the chat's steps that produce them; also `EvalReport`'s field names.
STAGES = (DENSE, RERANKED)


def metric_names(top_n: int, top_k: int) -> list[str]:
    """Recall at the passages sent to the LLM and at all candidates, then MRR@10 and nDCG@10."""
    return list(dict.fromkeys([f"Recall@{top_n}", f"Recall@{top_k}", "MRR@10", "nDCG@10"]))


def rankings(retrieval: Retrieval) -> dict[str, list[Candidate]]:
    return {DENSE: sorted(retrieval.candidates, key=lambda c: c.first_rank),
            RERANKED: sorted(retrieval.candidates, key=lambda c: c.rank)}


def evaluate_retrievals(pairs: Iterable[tuple[Judgment, Retrieval]], top_n: int = 3,
                        top_k: int = 10) -> EvalReport:
    """Score both rankings of each retrieval against its judgment."""
    pairs = list(pairs)
    names = metric_names(top_n, top_k)
    # trec_eval ignores queries without a relevant item; list them instead of averaging in a silent zero.
    scored = [(j, r) for j, r in pairs if j.has_relevant]
    per_stage = {stage: _scores(scored, stage, names) for stage in STAGES}
    queries = [QueryResult(j.query, per_stage[DENSE][n], per_stage[RERANKED][n]) for n, (j, _) in enumerate(scored)]
    return EvalReport(metrics=names, queries=queries, dense=_mean(per_stage[DENSE], names),
                      reranked=_mean(per_stage[RERANKED], names),
                      excluded=[j.query for j, _ in pairs if not j.has_relevant])


def _scores(pairs: Sequence[tuple[Judgment, Retrieval]], stage: str, names: list[str]) -> list[dict[str, float]]:
    """Each query's metrics for one ranking, in the order of `pairs`."""
    import ir_measures

    measures = _measures(names)
    qrels, runs = {}, {}
    for n, (judgment, retrieval) in enumerate(pairs):
        qrels[f"q{n}"], runs[f"q{n}"] = _qrels_and_run(judgment, rankings(retrieval)[stage])
    scores = [dict.fromkeys(names, 0.0) for _ in pairs]  # trec_eval omits a query with nothing retrieved
    for m in ir_measures.iter_calc(measures, qrels, runs):
        scores[int(m.query_id[1:])][measures[m.measure]] = m.value
    return scores


def _mean(scores: list[dict[str, float]], names: list[str]) -> dict[str, float]:
    return {m: sum(s[m] for s in scores) / max(1, len(scores)) for m in names}


def _measures(names: Sequence[str]) -> dict:
    """Our metric names -> ir_measures measures (Recall@k is R@k there, MRR@k is RR@k)."""
    import ir_measures

    return {ir_measures.parse_measure(n.replace("MRR", "RR").replace("Recall", "R")): n for n in names}


def _qrels_and_run(judgment: Judgment, ranking: Sequence[Candidate]) -> tuple[dict, dict]:
    """Item-level qrels, and a run where each candidate stands for the first uncredited item it matches."""
    qrels = {f"item{i}": r.grade for i, r in enumerate(judgment.relevant)}
    credited: set[str] = set()
    run = {}
    for position, c in enumerate(ranking):
        item = next((f"item{i}" for i, r in enumerate(judgment.relevant)
                     if f"item{i}" not in credited and r.matches(c)), None)
        doc = item or f"chunk{c.chunk_id}"
        if item:
            credited.add(item)
        run.setdefault(doc, float(len(ranking) - position))  # strictly decreasing: trec_eval sorts by score
    return qrels, run
