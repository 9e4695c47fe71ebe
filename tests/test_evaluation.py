"""Retrieval metrics on hand-made rankings, checked against hand-computed values."""
import json
import math

import pytest

from rag.evaluation import (JudgmentError, Relevant, Judgment, evaluate, evaluate_retrievals, format_table,
                            load_judgments, parse_judgment)
from rag.types import Candidate, Retrieval


def _candidate(name: str, dense_rank: int, rerank_rank: int | None, text: str = "") -> Candidate:
    return Candidate(text=text or f"text of {name}", source=f"{name}.md", chunk_id=1000 + dense_rank,
                     dense_score=1.0 / dense_rank, dense_rank=dense_rank,
                     rerank_score=None if rerank_rank is None else 1.0 / rerank_rank, rerank_rank=rerank_rank)


def _retrieval(dense_order: list[str], rerank_order: list[str]) -> Retrieval:
    cands = [_candidate(n, i + 1, rerank_order.index(n) + 1) for i, n in enumerate(dense_order)]
    return Retrieval(query="q", candidates=sorted(cands, key=lambda c: c.rerank_rank), reranked=True)


def test_graded_metrics_match_hand_computation():
    judgment = Judgment("q", [Relevant("a.md", 1), Relevant("b.md", 2)])
    retrieval = _retrieval(["x", "a", "y", "b"], ["b", "a", "x", "y"])
    report = evaluate_retrievals([(judgment, retrieval)], top_n=2, top_k=4)
    idcg = 2 + 1 / math.log2(3)
    assert report.dense["Recall@2"] == pytest.approx(0.5)
    assert report.dense["Recall@4"] == pytest.approx(1.0)
    assert report.dense["MRR@10"] == pytest.approx(0.5)
    assert report.dense["nDCG@10"] == pytest.approx((1 / math.log2(3) + 2 / math.log2(5)) / idcg, abs=1e-4)
    assert report.reranked["Recall@2"] == pytest.approx(1.0)
    assert report.reranked["MRR@10"] == pytest.approx(1.0)
    assert report.reranked["nDCG@10"] == pytest.approx(1.0)
    assert report.delta["MRR@10"] == pytest.approx(0.5)
    assert [q.query for q in report.helped] == ["q"] and report.hurt == []


def test_means_over_queries_and_a_query_the_reranker_hurt():
    good = (Judgment("g", [Relevant("a.md")]), _retrieval(["x", "a"], ["a", "x"]))  # MRR 0.5 -> 1
    bad = (Judgment("b", [Relevant("a.md")]), _retrieval(["a", "x", "y"], ["x", "y", "a"]))  # MRR 1 -> 1/3
    report = evaluate_retrievals([good, bad], top_n=1, top_k=3)
    assert report.dense["MRR@10"] == pytest.approx((0.5 + 1) / 2)
    assert report.reranked["MRR@10"] == pytest.approx((1 + 1 / 3) / 2)
    assert [q.query for q in report.hurt] == ["b"]


def test_a_document_counts_once_and_missing_items_lower_recall():
    judgment = Judgment("q", [Relevant("a.md"), Relevant("never retrieved")])
    cands = [_candidate("a", 1, 1), _candidate("a", 2, 2)]  # two chunks of the same relevant document
    report = evaluate_retrievals([(judgment, Retrieval("q", cands, reranked=True))], top_n=2, top_k=2)
    assert report.dense["Recall@2"] == pytest.approx(0.5)


def test_relevant_matches_chunk_id_document_and_snippet():
    c = _candidate("doc", 1, 1, text="Milvus stores vectors in segments.")
    assert Relevant(str(c.chunk_id)).matches(c) and Relevant("doc.md").matches(c)
    assert Relevant("stores VECTORS").matches(c) and not Relevant("bananas").matches(c)


def test_load_judgments_and_clear_errors(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"query": "q1", "relevant": ["a.md", {"text": "snip", "grade": 2}]}) + "\n\n")
    [j] = load_judgments(path)
    assert j.relevant[1] == Relevant("snip", 2)
    path.write_text('{"query": "q1"}\n')
    with pytest.raises(JudgmentError, match="q.jsonl:1"):
        load_judgments(path)
    with pytest.raises(JudgmentError):
        parse_judgment({"query": "q", "relevant": [[1]]})


def test_evaluate_runs_the_pipeline_and_formats_a_table(tiny_rag, corpus_path):
    tiny_rag.ingest_paths([corpus_path])
    judgments = [Judgment("bees and honey", [Relevant("Honey bees live in colonies")]),
                 Judgment("lava", [Relevant("Volcanoes", 2)])]
    report = evaluate(tiny_rag, judgments, top_k=5, top_n=2)
    table = format_table(report)
    assert len(report.queries) == 2 and "nDCG@10" in table and "reranked" in table
    assert all(0.0 <= v <= 1.0 for q in report.queries for v in q.dense.values())
    assert report.dense["Recall@5"] == report.reranked["Recall@5"]  # same candidates, other order


def test_queries_with_nothing_relevant_are_excluded_not_zeroed():
    judged = (Judgment("g", [Relevant("a.md")]), _retrieval(["x", "a"], ["a", "x"]))
    nothing = (Judgment("none", [Relevant("a.md", 0)]), _retrieval(["a", "x"], ["x", "a"]))
    report = evaluate_retrievals([judged, nothing], top_n=1, top_k=2)
    assert report.excluded == ["none"] and [q.query for q in report.queries] == ["g"]
    assert report.reranked["MRR@10"] == pytest.approx(1.0)
    assert "1 queries excluded" in format_table(report)
