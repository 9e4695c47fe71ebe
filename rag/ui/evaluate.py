"""Evaluation you can run and see: grade the selected passage of the candidates table, download a question's
trace, and the Evaluate tab (metrics of the judged questions, helped/hurt, instruction experiments).

The logic lives in `rag.eval` (the same code `python -m rag eval` runs); these are the components and thin
handlers. Grades are per session (a gr.State), and also go to the server's judgments file when the app was
started with --judgments-file.
"""
from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pandas as pd

from rag.answer import Answerer
from rag.errors import InputError, user_message
from rag.eval.judgments_file import JudgmentsFile
from rag.eval.modes import compare_modes
from rag.eval.report import VERDICT_METRIC, EvalReport, QueryResult
from rag.eval.runner import Progress, evaluate, instruction_variant, options_for
from rag.eval.session import GRADES, SessionJudgments, TurnRecord, session_report
from rag.eval.tables import (
    COMPARISON_HEADERS,
    METRIC_HEADERS,
    QUERY_HEADERS,
    Table,
    comparison_table,
    metric_table,
    mode_table,
    query_table,
)
from rag.eval.trace import turn_trace, write_trace
from rag.pipeline import RAG
from rag.settings import Settings
from rag.types import Candidate
from rag.ui.cleanup import remove_at_exit
from rag.ui.handlers import owner_of, passage_text
from rag.ui.safety import safe_markdown
from rag.ui.view import KEEP, Keep, View, bind

log = logging.getLogger(__name__)

GRADE_OF_LABEL = {label: grade for grade, label in GRADES.items()}
EXCLUDED_NOTE = "excluded from the metrics: trec_eval ignores questions without a relevant passage"
NO_RELEVANT = "Grade at least one passage as Relevant or Partly first (Chat tab)."
SELECT_FIRST = "Select a row of the candidates table first, then grade it."
NO_GRADES = ("No graded passages yet. In the **Chat** tab, ask a question, select a row of the candidates "
             "table and grade it (Relevant / Partly / Not relevant); then come back here.")


@dataclass(frozen=True)
class PassageView(View):
    """What selecting a candidates-table row, grading it and a new question change under the table
    (fields = `ui.<name>`; each event outputs one of the subsets below)."""
    full_text: str | Keep = KEEP  # the selected row's full text
    selected: dict | None | Keep = KEEP  # {"query", "chunk_id", "row"}: the row the grade goes to; None: none
    grade: str | None | Keep = KEEP  # the grade radio: the selected row's grade label
    grade_status: str | Keep = KEEP
    judged: SessionJudgments | Keep = KEEP
    trace: Any = KEEP  # the trace download: a gr.DownloadButton update


SELECTION = ("full_text", "selected", "grade", "grade_status")  # a table row selected
GRADING = ("judged", "grade_status")  # a grade given
NEW_TURN = ("trace", "selected", "grade", "grade_status")  # a question started or settled
GRADING_OFF = PassageView(selected=None, grade=None, grade_status="")  # no row to grade


@dataclass(frozen=True)
class EvaluateView(View):
    """What refresh and the instruction experiment change in the Evaluate tab (fields = `ev.<name>`)."""
    summary: str | Keep = KEEP
    metrics: pd.DataFrame | Keep = KEEP  # dense vs reranked
    helped: str | Keep = KEEP  # the questions the reranker helped and hurt
    queries: pd.DataFrame | Keep = KEEP  # per question
    download: Any = KEEP  # the judgments download: a gr.DownloadButton update
    comparison: pd.DataFrame | Keep = KEEP  # the experiment's A vs B
    comparison_note: str | Keep = KEEP
    modes: pd.DataFrame | Keep = KEEP  # dense vs BM25 vs hybrid vs reranked
    modes_note: str | Keep = KEEP


REPORT = ("summary", "metrics", "helped", "queries", "download")  # refresh
EXPERIMENT = ("comparison", "comparison_note")
MODES = ("modes", "modes_note")


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
    with gr.Accordion("First stage: dense vs BM25 vs hybrid", open=True):
        gr.Markdown("Re-run the judged questions with each first stage (no reranker), and the reranker over "
                    "the settings panel's first stage. Same top_k, top_n and instructions.")
        ev.modes_run = gr.Button("Compare first stages on the judged questions", elem_id="rag-eval-modes-run")
        ev.modes = gr.Dataframe(headers=["Metric", "Dense", "BM25", "Hybrid"], interactive=False,
                                label="Dense vs BM25 vs hybrid vs reranked", elem_id="rag-eval-modes")
        ev.modes_note = gr.Markdown("", elem_id="rag-eval-modes-note")
    return ev


def wire(ui: SimpleNamespace, ev: SimpleNamespace, handlers: EvaluateHandlers, tab) -> None:
    """Grading, the trace and the Evaluate tab. (Selecting a table row: `select_row`, wired with the chat.)"""
    private = dict(api_visibility="private")
    ui.grade.input(**bind(PassageView, ui, handlers.grade, GRADING),
                   inputs=[ui.turn, ui.selected, ui.grade, ui.judged], **private)
    # a new question (turn None, also after Clear) drops the selection; a settled one offers its trace
    ui.turn.change(**bind(PassageView, ui, handlers.turn_changed, NEW_TURN), inputs=[ui.turn], **private)
    report = dict(**bind(EvaluateView, ev, handlers.refresh, REPORT), inputs=[ui.judged, ui.top_k, ui.top_n],
                  **private)
    tab.select(**report)
    ev.refresh.click(**report)
    ev.run.click(**bind(EvaluateView, ev, handlers.experiment, EXPERIMENT),
                 inputs=[ui.judged, ui.top_k, ui.top_n, ui.use_reranker, ui.query_instruction,
                         ui.rerank_instruction, ev.query_b, ev.rerank_b, ui.retrieval_mode], **private)
    ev.modes_run.click(**bind(EvaluateView, ev, handlers.compare_modes, MODES),
                       inputs=[ui.judged, ui.top_k, ui.top_n, ui.use_reranker, ui.query_instruction,
                               ui.rerank_instruction, ui.retrieval_mode], **private)


# --- the selected row ----------------------------------------------------------------------------------------
def select_row(candidates: list[Candidate] | None, record: TurnRecord | None, judged: SessionJudgments | None,
               evt: gr.SelectData) -> PassageView:
    """The one handler of the candidates table's select event: the row's full text, and its grade controls.
    The row is read in `candidates` (the table's rows at every stage, the dense one included)."""
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    if not candidates or row is None or not 0 <= row < len(candidates):
        return replace(GRADING_OFF, full_text="")
    return replace(selection(record, judged, candidates[row], row), full_text=passage_text(candidates[row]))


def selection(record: TurnRecord | None, judged: SessionJudgments | None, candidate: Candidate,
              row: int) -> PassageView:
    """The grade controls for table row `row` (`candidate`): the row to grade, its current grade and a status
    line. Off while the question's retrieval is not final (`record` None: the dense stage, before the
    reranker), or when `record` is another question's."""
    if record is None or all(c.chunk_id != candidate.chunk_id for c in record.retrieval.candidates):
        return GRADING_OFF
    grade = (judged or SessionJudgments()).grade_of(record.query, candidate.chunk_id)
    status = f"Grading row {row + 1}: *{safe_markdown(candidate.source)}*" + \
        (f" — graded {GRADES[grade]}" if grade is not None else "")
    return PassageView(selected={"query": record.query, "chunk_id": str(candidate.chunk_id), "row": row},
                       grade=GRADES[grade] if grade is not None else None, grade_status=status)


# --- handlers ----------------------------------------------------------------------------------------------
class EvaluateHandlers:
    def __init__(self, rag: RAG, settings: Settings, answerer: Answerer, judgments_file: str | Path | None = None,
                 work_dir: str | Path | None = None):
        self.rag, self.settings, self.answerer = rag, settings, answerer
        self.file = JudgmentsFile(judgments_file) if judgments_file else None
        # per-session trace and judgments files; a folder of our own goes when the process exits
        self.work_dir = Path(work_dir) if work_dir else remove_at_exit(Path(tempfile.mkdtemp(prefix="rag-eval-")))

    def end_session(self, request: gr.Request) -> None:
        """Blocks.unload: the session's trace and judgments files go with it."""
        folder = self.work_dir / _safe_name(getattr(request, "session_hash", None) or "local")
        shutil.rmtree(folder, ignore_errors=True)

    # chat tab: grade the selected passage, export the trace
    def grade(self, record: TurnRecord | None, selected: dict | None, label: str | None,
              judged: SessionJudgments | None) -> PassageView:
        """The judgments state and a status line (`GRADING`); the question's line goes to the judgments file
        too."""
        if not record or not selected or selected.get("query") != record.query or label not in GRADE_OF_LABEL:
            gr.Warning(SELECT_FIRST)
            return PassageView(grade_status=SELECT_FIRST)
        judged = judged or SessionJudgments()
        try:
            question = judged.grade(record.retrieval, selected["chunk_id"], GRADE_OF_LABEL[label])
        except InputError as exc:
            message = user_message(exc)
            gr.Warning(message)
            return PassageView(grade_status=message)
        status = (f"Recorded: row {selected['row'] + 1} is {label}. {len(question.grades)} passage(s) graded "
                  f"for this question; see the **Evaluate** tab.")
        if self.file is not None:
            try:
                self.file.record(question.query, question.grades)
            except OSError as exc:
                log.exception("writing the judgments file failed")
                gr.Warning(f"The grade is kept for this session, but the judgments file could not be written "
                           f"({type(exc).__name__}).")
        return PassageView(judged=judged, grade_status=status)

    def turn_changed(self, record: TurnRecord | None, request: gr.Request) -> PassageView:
        """A new question starts (record None: drop the selection) or settles (offer its trace); `NEW_TURN`."""
        if record is None:
            return replace(GRADING_OFF, trace=_download(None))
        try:
            path = self.write_trace(record, getattr(request, "session_hash", None))
        except Exception:  # noqa: BLE001 - no trace is better than an error in the page
            log.exception("writing the trace failed")
            return PassageView(trace=_download(None))
        return PassageView(trace=_download(path))

    def write_trace(self, record: TurnRecord, session: str | None = None) -> Path:
        folder = self.work_dir / _safe_name(session or "local")
        folder.mkdir(parents=True, exist_ok=True)
        trace = turn_trace(record, self.settings, self.answerer, self.rag.store.dim)
        return write_trace(trace, folder / "rag-trace.json")

    # evaluate tab
    def refresh(self, judged: SessionJudgments | None, top_k, top_n, request: gr.Request = None) -> EvaluateView:
        """The summary, metrics table, helped/hurt, per-question table and judgments download (`REPORT`)."""
        judged = judged or SessionJudgments()
        if not judged.questions:
            return _no_metrics(NO_GRADES)
        top_n, top_k = int(top_n), int(top_k)
        try:
            report = session_report(judged, top_n=top_n, top_k=top_k)
        except Exception as exc:  # noqa: BLE001
            log.exception("evaluating the judged questions failed")
            return _no_metrics(f"⚠ Could not compute the metrics: {safe_markdown(user_message(exc))}")
        view = _no_metrics(self.summary(judged, top_n, top_k), self._judgments_path(judged, request))
        if report is None:
            return view
        return replace(view, metrics=_frame(metric_table(report)), helped=helped_markdown(report),
                       queries=_frame(query_table(report)))

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

    def _panel_options(self, top_k, top_n, use_reranker, query_instruction: str, rerank_instruction: str,
                       retrieval_mode: str | None):
        """The settings panel's values as the chat would use them (blank instructions: the settings' own)."""
        return options_for(self.settings, top_k=max(1, int(top_k)), top_n=max(1, int(top_n)),
                           use_reranker=bool(use_reranker) and self.rag.reranker is not None,
                           query_instruction=query_instruction, rerank_instruction=rerank_instruction,
                           retrieval_mode=retrieval_mode)

    def experiment(self, judged: SessionJudgments | None, top_k, top_n, use_reranker, query_a: str,
                   rerank_a: str, query_b: str, rerank_b: str, request: gr.Request = None,
                   progress=gr.Progress(), retrieval_mode: str | None = None) -> EvaluateView:
        """Re-run the judged questions with instructions A and B: the comparison table and a note
        (`EXPERIMENT`)."""
        judgments = (judged or SessionJudgments()).judgments()
        if not judgments:
            gr.Warning(NO_RELEVANT)
            return EvaluateView()
        # A: the settings panel as the chat would use it.
        a = self._panel_options(top_k, top_n, use_reranker, query_a, rerank_a, retrieval_mode)
        variants = {"A": a, "B": instruction_variant(a, query_b, rerank_b)}
        owner = owner_of(request, self.settings)
        try:
            reports = [evaluate(self.rag, judgments, options, owner=owner, progress=_half(progress, n, label))
                       for n, (label, options) in enumerate(variants.items())]
        except Exception as exc:  # noqa: BLE001 - the page gets a message, the log the traceback
            log.exception("instruction experiment failed")
            gr.Warning(f"The experiment failed: {user_message(exc)}")
            return EvaluateView()
        note = (f"{len(judgments)} judged question(s), top_k {a.top_k}, top_n {a.top_n}, "
                f"{a.retrieval_mode} first stage, reranker {'on' if a.use_reranker else 'off'}. Δ = B − A.")
        return EvaluateView(comparison=_frame(comparison_table(*reports)), comparison_note=note)

    def compare_modes(self, judged: SessionJudgments | None, top_k, top_n, use_reranker, query_instruction: str,
                      rerank_instruction: str, retrieval_mode: str | None = None, request: gr.Request = None,
                      progress=gr.Progress()) -> EvaluateView:
        """The judged questions through each first stage, and the reranker over the panel's (`MODES`)."""
        judgments = (judged or SessionJudgments()).judgments()
        if not judgments:
            gr.Warning(NO_RELEVANT)
            return EvaluateView()
        options = self._panel_options(top_k, top_n, use_reranker, query_instruction, rerank_instruction,
                                      retrieval_mode)
        try:
            comparison = compare_modes(self.rag, judgments, options, owner=owner_of(request, self.settings),
                                       progress=lambda fraction, desc: progress(fraction, desc=desc))
        except Exception as exc:  # noqa: BLE001 - the page gets a message, the log the traceback
            log.exception("first-stage comparison failed")
            gr.Warning(f"The comparison failed: {user_message(exc)}")
            return EvaluateView()
        note = (f"{len(judgments)} judged question(s), top_k {options.top_k}, top_n {options.top_n}; "
                + (f"reranker over {options.retrieval_mode}." if comparison.reranked is not None
                   else "reranker off."))
        return EvaluateView(modes=_frame(mode_table(comparison)), modes_note=note)


def _half(progress: Callable, n: int, label: str) -> Progress:
    """The progress of run `n` of the experiment's two, as half of the bar."""
    def step(fraction: float, desc: str) -> None:
        progress((n + fraction) / 2, desc=f"{label}: {desc}")

    return step


def _frame(table: Table) -> pd.DataFrame:
    return pd.DataFrame(table.rows, columns=table.headers)


def _download(path: Path | None):
    """A download button's update: offering the file at `path`, or off (None)."""
    return gr.DownloadButton(value=None if path is None else str(path), interactive=path is not None)


def _no_metrics(summary: str, judgments: Path | None = None) -> EvaluateView:
    """The Evaluate tab with `summary` over empty tables; the judgments download offers `judgments` (or is
    off)."""
    return EvaluateView(summary=summary, metrics=pd.DataFrame(columns=METRIC_HEADERS), helped="",
                        queries=pd.DataFrame(columns=QUERY_HEADERS), download=_download(judgments))


def helped_markdown(report: EvalReport) -> str:
    """Which questions the reranker helped and hurt (`EvalReport.helped`/`hurt`: one rule for CLI and tab)."""
    def names(queries: list[QueryResult]) -> str:
        return "; ".join(f"“{safe_markdown(q.query)}” ({q.delta:+.3f})" for q in queries) or "none"

    return (f"**Reranker helped** ({VERDICT_METRIC} up) {len(report.helped)}: {names(report.helped)}  \n"
            f"**Reranker hurt** ({VERDICT_METRIC} down) {len(report.hurt)}: {names(report.hurt)}")


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:64] or "local"
