"""Evaluation in the app, through its handlers: grading passages, the judgments file, the Evaluate tab's
metrics, helped/hurt, instruction experiments and the trace download (tiny models, local LLM server)."""
from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import pandas as pd
import pytest

from rag.answer import Answerer
from rag.evaluation import Judgment, Relevant, evaluate_retrievals, load_judgments
from rag.session_eval import (COMPARISON_HEADERS, GRADES, JudgmentsFile, SessionJudgments, TurnRecord,
                              rerun_judged)
from rag.trace import load_trace
from rag.types import Candidate, Retrieval
from rag.ui.evaluate import EXCLUDED_NOTE, EvaluateHandlers
from rag.ui.handlers import ChatHandlers

KNOBS = dict(top_k=6, top_n=2, use_reranker=True, query_instruction="", rerank_instruction="", llm_model="",
             temperature=0.2)
REQUEST = SimpleNamespace(session_hash="session-1")


@pytest.fixture
def app_parts(tiny_rag, tiny_settings, corpus_path, openai_server, tmp_path):
    tiny_rag.ingest_paths([corpus_path])
    settings = tiny_settings.replace(llm_base_url=openai_server.base_url)
    answerer = Answerer(settings)
    chat = ChatHandlers(tiny_rag, settings, answerer)
    evaluation = EvaluateHandlers(tiny_rag, settings, answerer, judgments_file=tmp_path / "j" / "judged.jsonl",
                                  work_dir=tmp_path / "work")
    return SimpleNamespace(rag=tiny_rag, settings=settings, chat=chat, ev=evaluation,
                           file=tmp_path / "j" / "judged.jsonl")


def ask(chat: ChatHandlers, question: str, **changes) -> list[tuple]:
    return list(chat.ask(question, [], *{**KNOBS, **changes}.values(), request=REQUEST))


def select(record: TurnRecord, judged, row: int):
    return EvaluateHandlers.select_passage(record, judged, SimpleNamespace(index=[row, 7]))


def grade(ev: EvaluateHandlers, record, judged, row: int, grade_value: int):
    selected, _, _ = select(record, judged, row)
    judged, status = ev.grade(record, selected, GRADES[grade_value], judged)
    assert status.startswith("Recorded")
    return judged


def test_ask_yields_a_turn_record_once_the_retrieval_is_final(app_parts, openai_server):
    openai_server.reply = "Lava [1]."
    steps = ask(app_parts.chat, "How do volcanoes erupt?")
    assert all(len(s) == 9 for s in steps)
    assert steps[0][8] is None  # a new question clears the previous record
    records = [s[8] for s in steps if isinstance(s[8], TurnRecord)]
    assert records[0].answer is None and records[0].retrieval.reranked  # reranked: gradable
    final = records[-1]
    assert final.answer == "Lava [1]." and final.mode == "llm" and "generate" in final.timings
    assert final.query == "How do volcanoes erupt?" and len(final.retrieval.candidates) == 6


def test_grades_go_to_the_session_and_the_judgments_file(app_parts):
    record = ask(app_parts.chat, "How do volcanoes erupt?")[-1][8]
    ev = app_parts.ev
    judged = grade(ev, record, None, 0, 2)
    judged = grade(ev, record, judged, 2, 1)
    judged = grade(ev, record, judged, 2, 0)  # a re-grade replaces the grade
    ids = [str(c.chunk_id) for c in record.retrieval.candidates]
    assert judged.questions[record.query].grades == {ids[0]: 2, ids[2]: 0}
    _, radio, status = select(record, judged, 0)
    assert radio == GRADES[2] and "graded Relevant (2)" in status  # the control shows the row's grade

    other = ask(app_parts.chat, "chess")[-1][8]
    judged = grade(ev, other, judged, 1, 0)  # judged, nothing relevant
    lines = app_parts.file.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0]) == {
        "query": record.query, "relevant": [{"text": ids[0], "grade": 2}, {"text": ids[2], "grade": 0}]}
    loaded = load_judgments(app_parts.file)  # the CLI's reader
    assert [j.query for j in loaded] == [record.query, other.query]
    assert loaded[0].relevant == [Relevant(ids[0], 2), Relevant(ids[2], 0)]
    assert loaded[0].relevant[0].matches(record.retrieval.candidates[0])  # chunk ids given as strings

    bob = grade(ev, record, SessionJudgments(), 3, 1)  # another session's grades merge into the same line
    assert len(bob.questions) == 1 and len(judged.questions) == 2  # sessions don't share state
    merged = {r.value: r.grade for r in load_judgments(app_parts.file)[0].relevant}
    assert merged == {ids[0]: 2, ids[2]: 0, ids[3]: 1}


def test_grading_needs_a_selected_row_of_this_question(app_parts):
    record = ask(app_parts.chat, "volcano")[-1][8]
    with pytest.warns(UserWarning, match="Select a row"):
        judged, _ = app_parts.ev.grade(record, None, GRADES[2], None)
    stale = {"query": "an older question", "chunk_id": "1", "row": 0}
    with pytest.warns(UserWarning, match="Select a row"):
        app_parts.ev.grade(record, stale, GRADES[2], None)
    assert not app_parts.file.exists()
    assert select(record, None, 99) == (None, None, "")


def _candidate(name: str, dense_rank: int, rerank_rank: int) -> Candidate:
    return Candidate(text=f"text of {name}", source=f"{name}.md", chunk_id=100 + dense_rank,
                     dense_score=1 / dense_rank, dense_rank=dense_rank, rerank_score=1 / rerank_rank,
                     rerank_rank=rerank_rank, selected=rerank_rank == 1)


def _retrieval(query: str, dense: list[str], reranked: list[str]) -> Retrieval:
    cands = [_candidate(n, i + 1, reranked.index(n) + 1) for i, n in enumerate(dense)]
    return Retrieval(query, sorted(cands, key=lambda c: c.rerank_rank), reranked=True)


def test_evaluate_view_equals_evaluate_retrievals_and_lists_helped_and_hurt(app_parts):
    judged = SessionJudgments()
    helped = _retrieval("helped question", ["x", "a", "y"], ["a", "x", "y"])
    hurt = _retrieval("hurt question", ["a", "x", "y"], ["x", "y", "a"])
    empty = _retrieval("nothing relevant question", ["x", "y"], ["y", "x"])
    judged.grade(helped, "102", 2)
    judged.grade(hurt, "101", 1)
    judged.grade(hurt, "102", 0)
    judged.grade(empty, "101", 0)
    summary, metrics, helped_md, per_query, download = app_parts.ev.refresh(judged, 3, 1, REQUEST)

    expected = evaluate_retrievals([(Judgment("helped question", [Relevant("102", 2)]), helped),
                                    (Judgment("hurt question", [Relevant("101", 1), Relevant("102", 0)]), hurt)],
                                   top_n=1, top_k=3)
    assert list(metrics["Metric"]) == expected.metrics == ["Recall@1", "Recall@3", "MRR@10", "nDCG@10"]
    for _, row in metrics.iterrows():
        assert float(row["Dense"]) == pytest.approx(expected.dense[row["Metric"]], abs=1e-3)
        assert float(row["Reranked"]) == pytest.approx(expected.reranked[row["Metric"]], abs=1e-3)
        assert float(row["Δ"]) == pytest.approx(expected.delta[row["Metric"]], abs=1e-3)
    helped_line, hurt_line = helped_md.splitlines()
    assert "helped** (nDCG@10 up) 1: “helped question”" in helped_line
    assert "hurt** (nDCG@10 down) 1: “hurt question”" in hurt_line
    assert dict(zip(per_query["Question"], per_query["Reranker"])) == {"helped question": "helped",
                                                                        "hurt question": "hurt"}
    assert "3 judged question(s)" in summary and "2 scored" in summary
    assert EXCLUDED_NOTE in summary and "nothing relevant question" in summary
    exported = download.constructor_args["value"]
    assert [j.query for j in load_judgments(exported)] == list(judged.questions)


def test_evaluate_view_without_grades_says_what_to_do(app_parts):
    summary, metrics, *_ = app_parts.ev.refresh(None, 10, 3, REQUEST)
    assert "No graded passages yet" in summary and metrics.empty
    judged = SessionJudgments()
    judged.grade(_retrieval("q", ["x", "y"], ["y", "x"]), "101", 0)
    summary, metrics, *_ = app_parts.ev.refresh(judged, 10, 3, REQUEST)
    assert "Grade at least one passage" in summary and metrics.empty


def test_trace_download_holds_every_field_and_loads_back(app_parts, openai_server):
    openai_server.reply = "Magma rises [1]."
    record = ask(app_parts.chat, "How do volcanoes erupt?", rerank_instruction="Find volcano facts")[-1][8]
    button = app_parts.ev.turn_changed(record, REQUEST)[0]
    path = button.constructor_args["value"]
    raw = json.loads(open(path, encoding="utf-8").read())
    settings = raw["settings"]
    assert settings["rerank_instruction"] == "Find volcano facts" and settings["top_k"] == 6
    assert settings["top_n"] == 2 and settings["embedding_dim"] == app_parts.rag.store.dim
    assert {"embedding_model", "reranker_model", "query_instruction", "llm_model"} <= set(settings)
    assert {"embed_query", "search", "rerank", "generate"} <= set(raw["timings"])
    assert len(raw["candidates"]) == 6
    for c in raw["candidates"]:
        assert c["dense_score"] is not None and c["rerank_score"] is not None
        assert c["dense_rank"] >= 1 and c["rerank_rank"] >= 1
    assert raw["prompt"][0]["role"] == "system" and "How do volcanoes erupt?" in raw["prompt"][-1]["content"]
    assert raw["prompt"] == openai_server.requests[-1]["messages"]  # exactly what the LLM was sent
    assert raw["answer"] == "Magma rises [1]." and raw["question"] == "How do volcanoes erupt?"
    loaded, retrieval = load_trace(path)
    assert retrieval.candidates == record.retrieval.candidates and loaded["answer"] == "Magma rises [1]."
    cleared = app_parts.ev.turn_changed(None, REQUEST)
    assert cleared[0].constructor_args["interactive"] is False and cleared[1] is None


def test_instruction_experiment_compares_a_and_b(app_parts):
    record = ask(app_parts.chat, "How do volcanoes erupt?")[-1][8]
    judged = grade(app_parts.ev, record, None, 1, 2)
    table, note = app_parts.ev.experiment(judged, 6, 2, True, "", "", "Find passages about bread",
                                          "Judge whether the passage is about bread", REQUEST)
    assert isinstance(table, pd.DataFrame) and list(table.columns) == COMPARISON_HEADERS
    assert list(table["Metric"]) == ["Recall@2", "Recall@6", "MRR@10", "nDCG@10"]
    a = rerun_judged(app_parts.rag, judged.judgments(), top_k=6, top_n=2, owner="session-1",
                     query_instruction=app_parts.settings.query_instruction,
                     rerank_instruction=app_parts.settings.rerank_instruction)
    b = rerun_judged(app_parts.rag, judged.judgments(), top_k=6, top_n=2, owner="session-1",
                     query_instruction="Find passages about bread",
                     rerank_instruction="Judge whether the passage is about bread")
    for _, row in table.iterrows():
        m = row["Metric"]
        assert float(row["Dense A"]) == pytest.approx(a.dense[m], abs=1e-3)
        assert float(row["Reranked B"]) == pytest.approx(b.reranked[m], abs=1e-3)
    assert "1 judged question" in note


def test_instruction_experiment_without_relevant_grades_warns(app_parts):
    with pytest.warns(UserWarning, match="Grade at least one passage"):
        assert app_parts.ev.experiment(None, 6, 2, True, "", "", "b", "b", REQUEST)[0]["__type__"] == "update"


def test_judgments_file_keeps_every_line_under_concurrent_grades(tmp_path):
    file = JudgmentsFile(tmp_path / "j.jsonl")
    threads = [threading.Thread(target=file.record, args=(f"q{i}", {str(i): 1})) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(j.query for j in load_judgments(tmp_path / "j.jsonl")) == sorted(f"q{i}" for i in range(16))
