"""Retrieval metrics on hand-made rankings, checked against hand-computed values; the judgments format, the
helped/hurt rule, the result tables and the retrieve-then-score loop."""
import json
import math

import pytest

from rag.errors import InputError, user_message
from rag.eval.cli import report_text
from rag.eval.judgments import (
    Judgment,
    JudgmentError,
    Relevant,
    load_judgments,
    parse_judgment,
    parse_line,
)
from rag.eval.metrics import evaluate_retrievals
from rag.eval.report import HELPED, HURT, SAME, verdict
from rag.eval.runner import (
    EmptyCollectionError,
    evaluate,
    instruction_variant,
    options_for,
)
from rag.eval.tables import (
    COMPARISON_HEADERS,
    METRIC_HEADERS,
    comparison_table,
    metric_table,
    query_table,
)
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
    path.write_text("{not json}\n")
    with pytest.raises(JudgmentError, match=r"q.jsonl:1: not valid JSON"):
        load_judgments(path)
    with pytest.raises(JudgmentError, match="can't read the judgments file"):
        load_judgments(tmp_path / "missing.jsonl")


def test_judgment_errors_are_input_errors_that_say_what_to_fix():
    with pytest.raises(JudgmentError, match="a grade is a whole number") as bad_grade:
        parse_judgment({"query": "q", "relevant": [{"text": "a.md", "grade": "high"}]})
    assert isinstance(bad_grade.value, InputError) and "'high'" in user_message(bad_grade.value)
    with pytest.raises(JudgmentError, match="non-empty list"):
        parse_judgment({"query": "q", "relevant": []})
    with pytest.raises(JudgmentError, match="non-empty query"):
        parse_judgment({"relevant": ["a.md"]})


def test_a_judgment_line_reads_back_as_written():
    judgment = Judgment("What is “Milvus”?", [Relevant("17", 2), Relevant("a.md", 0)])
    line = judgment.to_line()
    assert json.loads(line) == {"query": "What is “Milvus”?",
                                "relevant": [{"text": "17", "grade": 2}, {"text": "a.md", "grade": 0}]}
    assert parse_line(line) == judgment and judgment.grades == {"17": 2, "a.md": 0}
    assert parse_line("   ") is None and parse_line("# a comment") is None
    assert Judgment.from_grades("q", {"1": 0}).has_relevant is False


def test_one_threshold_decides_helped_hurt_and_same():
    assert [verdict(d) for d in (0.2, -0.2, 0.0, 1e-12, -1e-12)] == [HELPED, HURT, SAME, SAME, SAME]
    good = (Judgment("g", [Relevant("a.md")]), _retrieval(["x", "a"], ["a", "x"]))
    bad = (Judgment("b", [Relevant("a.md")]), _retrieval(["a", "x"], ["x", "a"]))
    tie = (Judgment("t", [Relevant("a.md")]), _retrieval(["a", "x"], ["a", "x"]))
    report = evaluate_retrievals([good, bad, tie], top_n=1, top_k=2)
    assert [q.verdict for q in report.queries] == [HELPED, HURT, SAME]
    assert report.helped == [report.queries[0]] and report.hurt == [report.queries[1]]
    assert [row[4] for row in query_table(report).rows] == [HURT, SAME, HELPED]  # worst first


def test_evaluate_runs_the_pipeline_and_formats_a_table(tiny_rag, corpus_path):
    tiny_rag.ingest_paths([corpus_path])
    judgments = [Judgment("bees and honey", [Relevant("Honey bees live in colonies")]),
                 Judgment("lava", [Relevant("Volcanoes", 2)])]
    report = evaluate(tiny_rag, judgments, options_for(tiny_rag.settings, top_k=5, top_n=2))
    table = report_text(report)
    assert len(report.queries) == 2 and "nDCG@10" in table and "Reranked" in table
    assert all(0.0 <= v <= 1.0 for q in report.queries for v in q.dense.values())
    assert report.dense["Recall@5"] == report.reranked["Recall@5"]  # same candidates, other order


def test_queries_with_nothing_relevant_are_excluded_not_zeroed():
    judged = (Judgment("g", [Relevant("a.md")]), _retrieval(["x", "a"], ["a", "x"]))
    nothing = (Judgment("none", [Relevant("a.md", 0)]), _retrieval(["a", "x"], ["x", "a"]))
    report = evaluate_retrievals([judged, nothing], top_n=1, top_k=2)
    assert report.excluded == ["none"] and [q.query for q in report.queries] == ["g"]
    assert report.reranked["MRR@10"] == pytest.approx(1.0)
    assert "1 queries excluded" in report_text(report)


def test_tables_hold_the_report_cells_and_lay_them_out_as_text():
    a = evaluate_retrievals([(Judgment("g", [Relevant("a.md")]), _retrieval(["x", "a"], ["a", "x"]))], 1, 2)
    b = evaluate_retrievals([(Judgment("g", [Relevant("a.md")]), _retrieval(["a", "x"], ["a", "x"]))], 1, 2)
    metrics = metric_table(a)
    assert metrics.headers == METRIC_HEADERS
    assert metrics.rows[2] == ["MRR@10", "0.500", "1.000", "+0.500"]
    lines = metrics.text().splitlines()
    assert lines[0].split() == METRIC_HEADERS and set(lines[1].replace(" ", "")) == {"-"}
    assert lines[4].split() == ["MRR@10", "0.500", "1.000", "+0.500"]
    assert len({len(line) for line in lines}) == 1  # aligned columns
    comparison = comparison_table(a, b)
    assert comparison.headers == COMPARISON_HEADERS
    assert comparison.rows[2] == ["MRR@10", "0.500", "1.000", "+0.500", "1.000", "1.000", "+0.000"]


def test_options_for_keeps_the_settings_where_nothing_is_given(tiny_settings):
    options = options_for(tiny_settings, top_k=None, top_n=0, query_instruction="  ", use_reranker=False)
    assert (options.top_k, options.top_n) == (tiny_settings.top_k, tiny_settings.top_n)
    assert options.query_instruction == tiny_settings.query_instruction and options.use_reranker is False
    assert options_for(tiny_settings, top_k=200).top_k == 200  # not clamped to the settings panel's range
    b = instruction_variant(options, " ", "Judge bread")
    assert b.query_instruction == options.query_instruction and b.rerank_instruction == "Judge bread"
    assert (b.top_k, b.top_n, b.use_reranker) == (options.top_k, options.top_n, options.use_reranker)


def test_evaluating_an_empty_collection_says_to_add_documents(tiny_rag):
    with pytest.raises(EmptyCollectionError, match="add documents first") as empty:
        evaluate(tiny_rag, [Judgment("q", [Relevant("a.md")])], options_for(tiny_rag.settings))
    assert isinstance(empty.value, InputError)
