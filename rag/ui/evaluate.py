"""Evaluation you can run and see: grade the selected passage of the candidates table, download a question's
trace, and the Evaluate tab (metrics of the judged questions, helped/hurt, instruction experiments).

The logic lives in `rag.session_eval`; these are the components and thin handlers. Grades are per session
(a gr.State), and also go to the server's judgments file when the app was started with --judgments-file.
"""
from __future__ import annotations

from ..errors import InputError, user_message

import logging
import re
import tempfile
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from ..answer import Answerer
from ..pipeline import RAG
from ..session_eval import (COMPARISON_HEADERS, EXCLUDED_NOTE, GRADES, METRIC_HEADERS, QUERY_HEADERS,
                            JudgmentsFile, SessionJudgments, TurnRecord, comparison_rows, metric_rows,
                            query_rows, rerun_judged, session_report, turn_trace)
from ..settings import Settings
from ..trace import write_trace
from .handlers import owner_of
from .safety import safe_markdown

log = logging.getLogger(__name__)

GRADE_OF_LABEL = {label: grade for grade, label in GRADES.items()}
SELECT_FIRST = "Select a row of the candidates table first, then grade it."
NO_GRADES = ("No graded passages yet. In the **Chat** tab, ask a question, select a row of the candidates "
             "table and grade it (Relevant / Partly / Not relevant); then come back here.")


# --- layout ------------------------------------------------------------------------------------------------
def passage_controls(ui: SimpleNamespace) -> None:
    """Under the candidates table: the grade of the selected passage, and the trace download."""
    with gr.Row(equal_height=True):
        ui.grade = gr.Radio(list(GRADES.values()), value=None, label="Grade the selected passage",
                            elem_id="rag-grade", scale=4)
        ui.trace = gr.DownloadButton("Download trace (JSON)", interactive=False, size="sm", scale=1,
                                     elem_id="rag-trace")
    ui.grade_status = gr.Markdown("", elem_id="rag-grade-status")
    ui.turn = gr.State(None)  # TurnRecord of the last question
    ui.selected = gr.State(None)  # {"query", "chunk_id", "row"} of the selected table row
    ui.judged = gr.State(None)  # SessionJudgments


def evaluate_tab() -> SimpleNamespace:
    ev = SimpleNamespace()
    gr.Markdown("Metrics over the questions you graded in the Chat tab: the embedding (dense) ranking vs "
                "the reranked one, at the settings panel's top_n and top_k.")
    ev.summary = gr.Markdown(NO_GRADES, elem_id="rag-eval-summary")
    with gr.Row():
        ev.refresh = gr.Button("↻ Refresh", size="sm", scale=0, min_width=100, elem_id="rag-eval-refresh")
        ev.download = gr.DownloadButton("Download judgments (JSONL)", interactive=False, size="sm", scale=0,
                                        elem_id="rag-eval-download")
    ev.metrics = gr.Dataframe(headers=METRIC_HEADERS, interactive=False, label="Dense vs reranked",
                              elem_id="rag-eval-metrics")
    ev.helped = gr.Markdown("", elem_id="rag-eval-helped")
    ev.queries = gr.Dataframe(headers=QUERY_HEADERS, interactive=False, wrap=True, max_height=360,
                              label="Per question (worst first)", elem_id="rag-eval-queries")
    with gr.Accordion("Instruction experiment", open=True):
        gr.Markdown("Re-run the judged questions with two instruction pairs: **A** = the settings panel's "
                    "instructions, **B** = the ones below. Same top_k, top_n and reranker switch.")
        ev.query_b = gr.Textbox(lines=2, label="B: embedding query instruction", elem_id="rag-eval-query-b",
                                placeholder="Empty: the same as A")
        ev.rerank_b = gr.Textbox(lines=2, label="B: reranker instruction", elem_id="rag-eval-rerank-b",
                                 placeholder="Empty: the same as A")
        ev.run = gr.Button("Re-run the judged questions with these instructions", variant="primary",
                           elem_id="rag-eval-run")
        ev.comparison = gr.Dataframe(headers=COMPARISON_HEADERS, interactive=False, label="A vs B",
                                     elem_id="rag-eval-comparison")
        ev.comparison_note = gr.Markdown("")
    return ev


def wire(ui: SimpleNamespace, ev: SimpleNamespace, handlers: "EvaluateHandlers", tab) -> None:
    private = dict(api_visibility="private")
    ui.table.select(handlers.select_passage, [ui.turn, ui.judged], [ui.selected, ui.grade, ui.grade_status],
                    **private)
    ui.grade.input(handlers.grade, [ui.turn, ui.selected, ui.grade, ui.judged], [ui.judged, ui.grade_status],
                   **private)
    ui.turn.change(handlers.turn_changed, [ui.turn], [ui.trace, ui.selected, ui.grade, ui.grade_status],
                   **private)
    for cleared in (ui.clear.click, ui.chatbot.clear):  # Clear also forgets the last question's record
        cleared(lambda: None, None, [ui.turn], **private)
    view = dict(fn=handlers.refresh, inputs=[ui.judged, ui.top_k, ui.top_n],
                outputs=[ev.summary, ev.metrics, ev.helped, ev.queries, ev.download], **private)
    tab.select(**view)
    ev.refresh.click(**view)
    ev.run.click(handlers.experiment, [ui.judged, ui.top_k, ui.top_n, ui.use_reranker, ui.query_instruction,
                                       ui.rerank_instruction, ev.query_b, ev.rerank_b],
                 [ev.comparison, ev.comparison_note], **private)


# --- handlers ----------------------------------------------------------------------------------------------
class EvaluateHandlers:
    def __init__(self, rag: RAG, settings: Settings, answerer: Answerer, judgments_file: str | Path | None = None,
                 work_dir: str | Path | None = None):
        self.rag, self.settings, self.answerer = rag, settings, answerer
        self.file = JudgmentsFile(judgments_file) if judgments_file else None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="rag-eval-"))

    # chat tab: grade the selected passage, export the trace
    @staticmethod
    def select_passage(record: TurnRecord | None, judged: SessionJudgments | None, evt: gr.SelectData) -> tuple:
        """selected-row state, the grade control (its current grade) and a status line."""
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        candidates = record.retrieval.candidates if record else []
        if row is None or not 0 <= row < len(candidates):
            return None, None, ""
        c = candidates[row]
        grade = (judged or SessionJudgments()).grade_of(record.query, c.chunk_id)
        status = f"Grading row {row + 1}: *{safe_markdown(c.source)}*" + \
            (f" — graded {GRADES[grade]}" if grade is not None else "")
        return {"query": record.query, "chunk_id": str(c.chunk_id), "row": row}, \
            (GRADES[grade] if grade is not None else None), status

    def grade(self, record: TurnRecord | None, selected: dict | None, label: str | None,
              judged: SessionJudgments | None) -> tuple:
        """judgments state and a status line; the question's line goes to the judgments file too."""
        if not record or not selected or selected.get("query") != record.query or label not in GRADE_OF_LABEL:
            gr.Warning(SELECT_FIRST)
            return gr.skip(), SELECT_FIRST
        judged = judged or SessionJudgments()
        try:
            question = judged.grade(record.retrieval, selected["chunk_id"], GRADE_OF_LABEL[label])
        except InputError as exc:
            gr.Warning(str(exc))
            return gr.skip(), str(exc)
        status = (f"Recorded: row {selected['row'] + 1} is {label}. {len(question.grades)} passage(s) graded "
                  f"for this question; see the **Evaluate** tab.")
        if self.file is not None:
            try:
                self.file.record(question.query, question.grades)
            except OSError as exc:
                log.exception("writing the judgments file failed")
                gr.Warning(f"The grade is kept for this session, but the judgments file could not be written "
                           f"({type(exc).__name__}).")
        return judged, status

    def turn_changed(self, record: TurnRecord | None, request: gr.Request) -> tuple:
        """A new question starts (record None: clear the selection) or settles (offer its trace)."""
        if record is None:
            return gr.DownloadButton(value=None, interactive=False), None, None, ""
        try:
            path = self.write_trace(record, getattr(request, "session_hash", None))
        except Exception:  # noqa: BLE001 - no trace is better than an error in the page
            log.exception("writing the trace failed")
            return gr.DownloadButton(value=None, interactive=False), gr.skip(), gr.skip(), gr.skip()
        return gr.DownloadButton(value=str(path), interactive=True), gr.skip(), gr.skip(), gr.skip()

    def write_trace(self, record: TurnRecord, session: str | None = None) -> Path:
        folder = self.work_dir / _safe_name(session or "local")
        folder.mkdir(parents=True, exist_ok=True)
        trace = turn_trace(record, self.settings, self.answerer, self.rag.store.dim)
        return write_trace(trace, folder / "rag-trace.json")

    # evaluate tab
    def refresh(self, judged: SessionJudgments | None, top_k, top_n, request: gr.Request = None) -> tuple:
        """summary, metrics table, helped/hurt, per-question table, judgments download."""
        judged = judged or SessionJudgments()
        empty = (pd.DataFrame(columns=METRIC_HEADERS), "", pd.DataFrame(columns=QUERY_HEADERS),
                 gr.DownloadButton(value=None, interactive=False))
        if not judged.questions:
            return (NO_GRADES,) + empty
        top_n, top_k = int(top_n), int(top_k)
        try:
            report = session_report(judged, top_n=top_n, top_k=top_k)
        except Exception as exc:  # noqa: BLE001
            log.exception("evaluating the judged questions failed")
            return (f"⚠ Could not compute the metrics: {safe_markdown(user_message(exc))}",) + empty
        download = gr.DownloadButton(value=str(self._judgments_path(judged, request)), interactive=True)
        summary = self.summary(judged, top_n, top_k)
        if report is None:
            return (summary,) + empty[:3] + (download,)
        return (summary, pd.DataFrame(metric_rows(report), columns=METRIC_HEADERS), helped_markdown(report),
                pd.DataFrame(query_rows(report), columns=QUERY_HEADERS), download)

    def summary(self, judged: SessionJudgments, top_n: int, top_k: int) -> str:
        scored, nothing = judged.scored, judged.nothing_relevant
        text = (f"**{len(judged.questions)} judged question(s)**: {len(scored)} scored at n = {top_n}, "
                f"k = {top_k} (each on the ranking it had when you graded it).")
        if nothing:
            names = ", ".join(f"“{safe_markdown(q.query)}”" for q in nothing)
            text += f"  \n{len(nothing)} judged with nothing relevant — {EXCLUDED_NOTE}: {names}."
        if not scored:
            text += "  \nGrade at least one passage *Relevant* or *Partly* to see metrics."
        if self.file is not None:
            text += "  \nGrades are also saved to the server's judgments file (`python -m rag eval` reads it)."
        return text

    def _judgments_path(self, judged: SessionJudgments, request) -> Path:
        folder = self.work_dir / _safe_name(getattr(request, "session_hash", None) or "local")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "judgments.jsonl"
        path.write_text(judged.to_jsonl(), encoding="utf-8")
        return path

    def experiment(self, judged: SessionJudgments | None, top_k, top_n, use_reranker, query_a: str,
                   rerank_a: str, query_b: str, rerank_b: str, request: gr.Request = None,
                   progress=gr.Progress()) -> tuple:
        """Re-run the judged questions with instructions A and B: the comparison table and a note."""
        judgments = (judged or SessionJudgments()).judgments()
        if not judgments:
            gr.Warning("Grade at least one passage as Relevant or Partly first (Chat tab).")
            return gr.skip(), gr.skip()
        settings = self.settings
        a = ((query_a or "").strip() or settings.query_instruction,
             (rerank_a or "").strip() or settings.rerank_instruction)
        b = ((query_b or "").strip() or a[0], (rerank_b or "").strip() or a[1])
        common = dict(top_k=max(1, int(top_k)), top_n=max(1, int(top_n)),
                      use_reranker=bool(use_reranker) and self.rag.reranker is not None,
                      owner=owner_of(request, settings))
        try:
            reports = []
            for i, (label, (qi, ri)) in enumerate((("A", a), ("B", b))):
                def step(fraction: float, desc: str, i=i) -> None:
                    progress((i + fraction) / 2, desc=desc)

                reports.append(rerun_judged(self.rag, judgments, query_instruction=qi, rerank_instruction=ri,
                                            progress=step, label=f"{label}: ", **common))
        except Exception as exc:  # noqa: BLE001
            log.exception("instruction experiment failed")
            gr.Warning(f"The experiment failed: {user_message(exc)}")
            return gr.skip(), gr.skip()
        note = (f"{len(judgments)} judged question(s), top_k {common['top_k']}, top_n {common['top_n']}, "
                f"reranker {'on' if common['use_reranker'] else 'off'}. Δ = B − A.")
        return pd.DataFrame(comparison_rows(*reports), columns=COMPARISON_HEADERS), note


def helped_markdown(report) -> str:
    def names(queries) -> str:
        return "; ".join(f"“{safe_markdown(q.query)}” ({q.delta:+.3f})" for q in queries) or "none"

    return (f"**Reranker helped** (nDCG@10 up) {len(report.helped)}: {names(report.helped)}  \n"
            f"**Reranker hurt** (nDCG@10 down) {len(report.hurt)}: {names(report.hurt)}")


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:64] or "local"
