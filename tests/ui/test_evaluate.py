"""Evaluation in the app, through its handlers: grading passages, the judgments file, the Evaluate tab's
metrics, helped/hurt, instruction experiments and the trace download (tiny models, local LLM server)."""
from __future__ import annotations

import json
import threading
from dataclasses import replace
from types import SimpleNamespace

import gradio as gr
import pandas as pd
import pytest

from rag.answer import Answerer
from rag.chat import QueryOptions
from rag.eval.judgments import Judgment, Relevant, load_judgments
from rag.eval.judgments_file import JudgmentsFile
from rag.eval.metrics import evaluate_retrievals
from rag.eval.runner import evaluate, options_for
from rag.eval.session import GRADES, GradeError, SessionJudgments, TurnRecord
from rag.eval.tables import COMPARISON_HEADERS, METRIC_HEADERS, QUERY_HEADERS
from rag.eval.trace import load_trace
from rag.types import Candidate, Retrieval
from rag.ui import formatting as fmt
from rag.ui.evaluate import (
    EXCLUDED_NOTE,
    EXPERIMENT,
    GRADING,
    NEW_TURN,
    REPORT,
    SELECT_FIRST,
    SELECTION,
    EvaluateHandlers,
    EvaluateView,
    PassageView,
    select_row,
)
from rag.ui.handlers import ChatHandlers, ChatView
from rag.ui.view import KEEP

KNOBS = dict(top_k=6, top_n=2, use_reranker=True, query_instruction="", rerank_instruction="", llm_model="",
             temperature=0.2)
REQUEST = SimpleNamespace(session_hash="session-1")


@pytest.fixture
def app_parts(corpus_rag, openai_server, tmp_path):
    """The chat and Evaluate handlers over the module's read-only corpus (grading writes files, not chunks)."""
    settings = corpus_rag.settings.replace(llm_base_url=openai_server.base_url)
    answerer = Answerer(settings)
    chat = ChatHandlers(corpus_rag, settings, answerer)
    evaluation = EvaluateHandlers(corpus_rag, settings, answerer, judgments_file=tmp_path / "j" / "judged.jsonl",
                                  work_dir=tmp_path / "work")
    return SimpleNamespace(rag=corpus_rag, settings=settings, chat=chat, ev=evaluation,
                           file=tmp_path / "j" / "judged.jsonl")


def ask(chat: ChatHandlers, question: str, **changes) -> list[ChatView]:
    return list(chat.ask(question, [], *{**KNOBS, **changes}.values(), request=REQUEST))


def page(steps: list[ChatView], name: str):
    """What `ui.<name>` holds after the steps: the last value one of them sent (KEEP: none did)."""
    values = [getattr(s, name) for s in steps if getattr(s, name) is not KEEP]
    return values[-1] if values else KEEP


def select(record: TurnRecord | None, judged, row: int, candidates=None) -> PassageView:
    """Select table row `row`; the table shows the record's candidates unless `candidates` are given."""
    candidates = record.retrieval.candidates if candidates is None else candidates
    return select_row(list(candidates), record, judged, SimpleNamespace(index=[row, 7]))


def grade(ev: EvaluateHandlers, record, judged, row: int, grade_value: int):
    view = ev.grade(record, select(record, judged, row).selected, GRADES[grade_value], judged)
    assert view.grade_status.startswith("Recorded")
    view.values(GRADING)  # raises if it set a component the grade event does not output
    return view.judged


def test_ask_yields_a_turn_record_once_the_retrieval_is_final(app_parts, openai_server):
    openai_server.reply = "Lava [1]."
    steps = ask(app_parts.chat, "How do volcanoes erupt?")
    assert all(isinstance(s, ChatView) for s in steps)
    assert steps[0].turn is None  # a new question clears the previous record
    records = [s.turn for s in steps if isinstance(s.turn, TurnRecord)]
    assert records[0].answer is None and records[0].retrieval.reranked  # reranked: gradable
    final = records[-1]
    assert final.answer == "Lava [1]." and final.mode == "llm" and "generate" in final.timings
    assert final.query == "How do volcanoes erupt?" and len(final.retrieval.candidates) == 6
    assert isinstance(final.options, QueryOptions) and final.options.top_k == 6


def test_grades_go_to_the_session_and_the_judgments_file(app_parts):
    record = ask(app_parts.chat, "How do volcanoes erupt?")[-1].turn
    ev = app_parts.ev
    judged = grade(ev, record, None, 0, 2)
    judged = grade(ev, record, judged, 2, 1)
    judged = grade(ev, record, judged, 2, 0)  # a re-grade replaces the grade
    ids = [str(c.chunk_id) for c in record.retrieval.candidates]
    assert judged.questions[record.query].grades == {ids[0]: 2, ids[2]: 0}
    view = select(record, judged, 0)
    assert view.grade == GRADES[2] and "graded Relevant (2)" in view.grade_status  # the row's grade shows
    assert view.full_text.endswith(record.retrieval.candidates[0].text)

    other = ask(app_parts.chat, "chess")[-1].turn
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
    record = ask(app_parts.chat, "volcano")[-1].turn
    with pytest.warns(UserWarning, match="Select a row"):
        assert app_parts.ev.grade(record, None, GRADES[2], None) == PassageView(grade_status=SELECT_FIRST)
    stale = {"query": "an older question", "chunk_id": "1", "row": 0}
    with pytest.warns(UserWarning, match="Select a row"):
        assert app_parts.ev.grade(record, stale, GRADES[2], None) == PassageView(grade_status=SELECT_FIRST)
    assert not app_parts.file.exists()
    assert select(record, None, 99) == PassageView(full_text="", selected=None, grade=None, grade_status="")
    elsewhere = replace(record.retrieval.candidates[0], chunk_id=-1)  # not among this question's candidates
    view = select(record, None, 0, candidates=[elsewhere])
    assert view.full_text.endswith(elsewhere.text) and (view.selected, view.grade, view.grade_status) == (
        None, None, "")  # shown, but not graded as this question's


def test_one_select_handler_shows_the_row_at_the_dense_stage_and_grades_it_once_settled(app_parts):
    steps = ask(app_parts.chat, "How do volcanoes erupt?")
    dense = next(i for i, s in enumerate(steps) if s.candidates is not KEEP) + 1  # the first table: dense
    candidates, record = page(steps[:dense], "candidates"), page(steps[:dense], "turn")
    assert set(page(steps[:dense], "table")["Rerank score"]) == {fmt.PENDING}  # the reranker is still running
    assert record is None and [c.dense_rank for c in candidates] == list(range(1, len(candidates) + 1))
    view = select_row(candidates, record, None, SimpleNamespace(index=[1, 7]))
    assert view.full_text.startswith(candidates[1].source) and view.full_text.endswith(candidates[1].text)
    assert (view.selected, view.grade, view.grade_status) == (None, None, "")  # grading stays off
    view.values(SELECTION)  # raises if it set a component the select event does not output

    candidates, record = page(steps, "candidates"), page(steps, "turn")  # the turn has settled
    assert isinstance(record, TurnRecord) and record.retrieval.reranked
    assert [c.chunk_id for c in candidates] == [c.chunk_id for c in record.retrieval.candidates]
    view = select_row(candidates, record, None, SimpleNamespace(index=[1, 7]))
    assert view.full_text.startswith(candidates[1].source) and view.full_text.endswith(candidates[1].text)
    assert view.selected == {"query": record.query, "chunk_id": str(candidates[1].chunk_id), "row": 1}
    assert view.grade is None and view.grade_status.startswith("Grading row 2:")
    graded = app_parts.ev.grade(record, view.selected, GRADES[1], None)
    assert graded.judged.questions[record.query].grades == {str(candidates[1].chunk_id): 1}
    assert json.loads(app_parts.file.read_text()) == {
        "query": record.query, "relevant": [{"text": str(candidates[1].chunk_id), "grade": 1}]}
    again = select_row(candidates, record, graded.judged, SimpleNamespace(index=[1, 7]))
    assert again.grade == GRADES[1] and "graded Partly (1)" in again.grade_status


def test_the_table_has_one_select_handler_and_each_event_outputs_its_view(app_parts):
    from rag.ui import build_app

    demo = build_app(app_parts.rag, app_parts.settings, Answerer(app_parts.settings))
    blocks = {block._id: block for block in demo.blocks.values()}
    table = next(b for b in blocks.values() if getattr(b, "elem_id", None) == "rag-candidates")
    selects = [f for f in demo.fns.values() if (table._id, "select") in f.targets]
    assert len(selects) == 1
    [select_event] = selects
    # full text, the selected-row state, the grade radio and its status line (`SELECTION`)
    assert [getattr(o, "elem_id", None) for o in select_event.outputs] == [
        "rag-full-text", None, "rag-grade", "rag-grade-status"]
    assert [type(o).__name__ for o in select_event.outputs] == ["Textbox", "State", "Radio", "Markdown"]
    # the candidates, turn and judgments states
    assert [(type(i).__name__, i.value) for i in select_event.inputs] == [("State", []), ("State", None),
                                                                          ("State", None)]
    turn_writers = [f for f in demo.fns.values() if len(f.outputs) == 1 and type(f.outputs[0]).__name__ == "State"
                    and any(event in ("click", "clear") for _, event in f.targets)]
    assert turn_writers == []  # Clear sets turn=None through ChatView: no separate event for it


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
    view = app_parts.ev.refresh(judged, 3, 1, REQUEST)
    assert isinstance(view, EvaluateView) and len(view.values(REPORT)) == 5
    summary, metrics, helped_md, per_query, download = (view.summary, view.metrics, view.helped, view.queries,
                                                       view.download)

    expected = evaluate_retrievals([(Judgment("helped question", [Relevant("102", 2)]), helped),
                                    (Judgment("hurt question", [Relevant("101", 1), Relevant("102", 0)]), hurt)],
                                   top_n=1, top_k=3)
    assert list(metrics["Metric"]) == expected.metrics == ["Recall@1", "Recall@3", "MRR@10", "nDCG@10"]
    assert list(metrics.columns) == METRIC_HEADERS and list(per_query.columns) == QUERY_HEADERS
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
    view = app_parts.ev.refresh(None, 10, 3, REQUEST)
    assert "No graded passages yet" in view.summary and view.metrics.empty and view.queries.empty
    assert view.helped == "" and view.download.constructor_args["interactive"] is False
    judged = SessionJudgments()
    judged.grade(_retrieval("q", ["x", "y"], ["y", "x"]), "101", 0)
    view = app_parts.ev.refresh(judged, 10, 3, REQUEST)
    assert "Grade at least one passage" in view.summary and view.metrics.empty and view.queries.empty
    assert [j.query for j in load_judgments(view.download.constructor_args["value"])] == ["q"]  # still exported


def test_trace_download_holds_every_field_and_loads_back(app_parts, openai_server):
    openai_server.reply = "Magma rises [1]."
    record = ask(app_parts.chat, "How do volcanoes erupt?", rerank_instruction="Find volcano facts")[-1].turn
    settled = app_parts.ev.turn_changed(record, REQUEST)
    assert settled.values(NEW_TURN)[1:] == [gr.skip()] * 3  # the selection is kept
    button = settled.trace
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
    assert cleared.trace.constructor_args["interactive"] is False and cleared.selected is None
    assert cleared.grade is None and cleared.grade_status == ""


def test_instruction_experiment_compares_a_and_b(app_parts):
    record = ask(app_parts.chat, "How do volcanoes erupt?")[-1].turn
    judged = grade(app_parts.ev, record, None, 1, 2)
    view = app_parts.ev.experiment(judged, 6, 2, True, "", "", "Find passages about bread",
                                   "Judge whether the passage is about bread", REQUEST)
    assert len(view.values(EXPERIMENT)) == 2
    table, note = view.comparison, view.comparison_note
    assert isinstance(table, pd.DataFrame) and list(table.columns) == COMPARISON_HEADERS
    assert list(table["Metric"]) == ["Recall@2", "Recall@6", "MRR@10", "nDCG@10"]
    a = evaluate(app_parts.rag, judged.judgments(), owner="session-1",
                 options=options_for(app_parts.settings, top_k=6, top_n=2,
                                     query_instruction=app_parts.settings.query_instruction,
                                     rerank_instruction=app_parts.settings.rerank_instruction))
    b = evaluate(app_parts.rag, judged.judgments(), owner="session-1",
                 options=options_for(app_parts.settings, top_k=6, top_n=2,
                                     query_instruction="Find passages about bread",
                                     rerank_instruction="Judge whether the passage is about bread"))
    for _, row in table.iterrows():
        m = row["Metric"]
        assert float(row["Dense A"]) == pytest.approx(a.dense[m], abs=1e-3)
        assert float(row["Reranked B"]) == pytest.approx(b.reranked[m], abs=1e-3)
    assert "1 judged question" in note


def test_instruction_experiment_without_relevant_grades_warns(app_parts):
    with pytest.warns(UserWarning, match="Grade at least one passage"):
        view = app_parts.ev.experiment(None, 6, 2, True, "", "", "b", "b", REQUEST)
    assert view == EvaluateView() and view.values(EXPERIMENT) == [gr.skip(), gr.skip()]  # nothing changes


def test_judgments_file_keeps_every_line_under_concurrent_grades(tmp_path):
    file = JudgmentsFile(tmp_path / "j.jsonl")
    threads = [threading.Thread(target=file.record, args=(f"q{i}", {str(i): 1})) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(j.query for j in load_judgments(tmp_path / "j.jsonl")) == sorted(f"q{i}" for i in range(16))


def test_a_grade_the_session_cannot_take_is_an_input_error_shown_as_it_is(app_parts):
    retrieval = _retrieval("q", ["x", "y"], ["y", "x"])
    with pytest.raises(GradeError, match="0, 1 or 2"):
        SessionJudgments().grade(retrieval, "101", 5)
    record = TurnRecord("q", "q", retrieval, options_for(app_parts.settings))
    stale = {"query": "q", "chunk_id": "999", "row": 0}  # a passage no longer among the candidates
    with pytest.warns(UserWarning, match="not among this question's candidates"):
        view = app_parts.ev.grade(record, stale, GRADES[2], None)
    assert "select a row again" in view.grade_status and view.judged is KEEP and not app_parts.file.exists()


def test_judgments_file_keeps_lines_it_cannot_read_and_merges_its_own(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('# hand-written notes\n{not json}\n{"query": "q", "relevant": ["7"]}\n')
    JudgmentsFile(path).record("q", {"8": 2})
    lines = path.read_text().splitlines()
    assert lines[:2] == ["# hand-written notes", "{not json}"]
    assert json.loads(lines[2]) == {"query": "q", "relevant": [{"text": "7", "grade": 1}, {"text": "8", "grade": 2}]}


def test_instruction_experiment_on_an_empty_collection_says_what_to_do(tiny_rag, tiny_settings, tmp_path):
    ev = EvaluateHandlers(tiny_rag, tiny_settings, Answerer(tiny_settings), work_dir=tmp_path)
    judged = SessionJudgments()
    judged.grade(_retrieval("q", ["x", "y"], ["y", "x"]), "101", 2)
    with pytest.warns(UserWarning, match="The experiment failed: The collection is empty.*add documents"):
        assert ev.experiment(judged, 6, 2, True, "", "", "b", "b", REQUEST) == EvaluateView()


def test_first_stage_comparison_scores_each_mode_as_the_runner_does(app_parts):
    record = ask(app_parts.chat, "How do volcanoes erupt?")[-1].turn
    judged = grade(app_parts.ev, record, None, 1, 2)
    view = app_parts.ev.compare_modes(judged, 6, 2, True, "", "", "hybrid", REQUEST)
    table = view.modes
    assert list(table.columns) == ["Metric", "Dense", "BM25", "Hybrid", "Reranked (Hybrid)"]
    assert list(table["Metric"]) == ["Recall@2", "Recall@6", "MRR@10", "nDCG@10"]
    for mode, column in (("dense", "Dense"), ("bm25", "BM25"), ("hybrid", "Hybrid")):
        report = evaluate(app_parts.rag, judged.judgments(), owner="session-1",
                          options=options_for(app_parts.settings, top_k=6, top_n=2, use_reranker=False,
                                              retrieval_mode=mode))
        assert [float(v) for v in table[column]] == pytest.approx([report.dense[m] for m in report.metrics],
                                                                   abs=1e-3)
    reranked = evaluate(app_parts.rag, judged.judgments(), owner="session-1",
                        options=options_for(app_parts.settings, top_k=6, top_n=2, retrieval_mode="hybrid"))
    assert [float(v) for v in table["Reranked (Hybrid)"]] == pytest.approx(
        [reranked.reranked[m] for m in reranked.metrics], abs=1e-3)
    assert "1 judged question" in view.modes_note and "reranker over hybrid" in view.modes_note
