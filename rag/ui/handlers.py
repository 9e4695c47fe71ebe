"""Gradio event handlers: thin adapters between components and `rag.chat`/`sessions`/`formatting`.

Per-session data lives in `gr.State` values and the session hash; the handler objects only hold the
shared, long-lived RAG, settings and answerer. Handlers return (or yield) typed views (`rag.ui.view`):
dataclasses whose fields are named like the components they change; layout wires them with `bind`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import gradio as gr
import pandas as pd

import rag.ui.formatting as fmt
from rag.answer import Answerer
from rag.chat import (
    ANSWER,
    DENSE,
    RERANKED,
    RERANKING,
    QueryOptions,
    TurnStep,
    run_turn,
)
from rag.errors import InputError, RAGError, user_message
from rag.eval.session import TurnRecord
from rag.ingest import IngestCancelled
from rag.ingest.inputs import clean_name
from rag.pipeline import RAG
from rag.settings import Settings
from rag.types import SHARED_OWNER, Candidate
from rag.ui.cleanup import remove_uploaded
from rag.ui.plots import ranking_figure
from rag.ui.safety import safe_markdown
from rag.ui.sessions import (
    NO_SESSION,
    SessionKeeper,
    UploadSessions,
    deletable_documents,
    end_session,
    session_owner,
    upload_budget,
    visible_documents,
    writable,
)
from rag.ui.view import KEEP, Keep, View

log = logging.getLogger(__name__)

SEARCHING = "Searching the knowledge base…"
RERANKING_TEXT = "Reranking {k} candidates…"
WRITING = "Writing the answer…"
EMPTY_KB = ("No passages found: the knowledge base is empty. Add documents in the **Knowledge** tab, "
            "then ask again.")
REPORT_HEADERS = ["File", "Status", "Chunks", "Note"]
DOCUMENT_HEADERS = ["Document", "Chunks", "Visible to"]
STATUS_ICONS = {"ok": "✓ added", "skipped": "= unchanged", "failed": "✗ failed"}
PROGRESS_EVERY = 0.5  # seconds between progress-bar updates of an upload


@dataclass(frozen=True)
class ChatView(View):
    """What one step of ask / re-run / clear changes in the Chat tab (fields = `ui.<name>`, in output order)."""
    chatbot: list[dict] | Keep = KEEP
    question: str | Keep = KEEP  # the question textbox
    table: pd.DataFrame | Keep = KEEP  # the candidates table
    plot: Any = KEEP  # the ranking figure (matplotlib); None empties it
    timings: str | Keep = KEEP
    cards: str | Keep = KEEP  # HTML cards of the passages sent to the LLM
    candidates: list[Candidate] | Keep = KEEP  # the table's rows at every stage: what a selected row is
    last: dict | None | Keep = KEEP  # {"question", "context"}: what re-run asks again
    turn: TurnRecord | None | Keep = KEEP  # once the retrieval is final; None while a new question starts
    full_text: str | Keep = KEEP  # the selected row's full text


@dataclass(frozen=True)
class KnowledgeView(View):
    """What upload / refresh / delete change in the Knowledge tab (fields = `kb.<name>`, in output order)."""
    report: pd.DataFrame | Keep = KEEP  # the upload report
    documents: pd.DataFrame | Keep = KEEP
    choice: Any = KEEP  # the delete dropdown: a gr.Dropdown update with this session's deletable documents
    summary: str | Keep = KEEP
    files: None | Keep = KEEP  # the file input: None empties it once its files are in


LISTING = ("documents", "choice", "summary")  # the components refresh and delete change


def owner_of(request: gr.Request | None, settings: Settings, *, writes: bool = False) -> str:
    """The request's owner; a malformed or (for writes in private mode) missing session id becomes a message
    on the page or for the API caller (gr.Error), not a trace."""
    try:
        owner = session_owner(getattr(request, "session_hash", None), settings, writes=writes)
    except InputError as exc:
        raise gr.Error(user_message(exc)) from None
    if writes and not writable(owner, settings):  # the one rule, whatever session_owner becomes
        raise gr.Error(NO_SESSION)
    return owner


def throttled(progress, every: float = PROGRESS_EVERY):
    """An ingestion progress callback that updates the page's progress bar at most every `every` seconds:
    the ingestor reports every embedding batch (one chunk on a CPU), and each update is a message the server
    encodes and sends while other sessions' questions wait for the same cores."""
    last = [float("-inf")]

    def report(message: str, fraction: float) -> None:
        now = time.monotonic()
        if now - last[0] >= every or fraction >= 1.0:
            last[0] = now
            progress(fraction, desc=message)

    return report


def passage_text(c: Candidate) -> str:
    """A candidates-table row's full text under its source label, for the full-text box."""
    ranks = f"embedding rank {c.dense_rank or '–'}, BM25 rank {c.bm25_rank or '–'}"
    return f"{fmt.source_label(c)}  (chunk {c.chunk_index}, {ranks})\n\n{c.text}"


def _with_reply(chat: list[dict], content: str) -> list[dict]:
    """A new message list with the last (assistant) message replaced: yielded values are never mutated."""
    return chat[:-1] + [{"role": "assistant", "content": content}]


def _warned(message: str) -> ChatView:
    """A toast, and a view that changes nothing."""
    gr.Warning(message)
    return ChatView()


class ChatHandlers:
    """Ask, re-run and clear; they yield or return `ChatView`s. (A selected table row: `rag.ui.evaluate.select_row`.)"""

    def __init__(self, rag: RAG, settings: Settings, answerer: Answerer):
        self.rag, self.settings, self.answerer = rag, settings, answerer

    def options(self, top_k, top_n, use_reranker, query_instruction, rerank_instruction, llm_model,
                temperature, retrieval_mode=None) -> QueryOptions:
        return QueryOptions.from_settings(
            self.settings, top_k=top_k, top_n=top_n, use_reranker=bool(use_reranker) and self.rag.reranker is not None,
            query_instruction=(query_instruction or "").strip() or None,
            rerank_instruction=(rerank_instruction or "").strip() or None,
            llm_model=(llm_model or "").strip() or None, temperature=temperature,
            retrieval_mode=retrieval_mode or None)

    def ask(self, message: str, history: list[dict], top_k, top_n, use_reranker, query_instruction,
            rerank_instruction, llm_model, temperature, request: gr.Request,
            retrieval_mode: str | None = None) -> Iterator[ChatView]:
        question = (message or "").strip()
        if not question:
            yield _warned("Type a question first.")
            return
        options = self.options(top_k, top_n, use_reranker, query_instruction, rerank_instruction, llm_model,
                               temperature, retrieval_mode)
        history = list(history or [])
        yield from self._turn(question, safe_markdown(question), history, history, options,
                              owner_of(request, self.settings))

    def rerun(self, last: dict | None, history: list[dict], top_k, top_n, use_reranker, query_instruction,
              rerank_instruction, llm_model, temperature, request: gr.Request,
              retrieval_mode: str | None = None) -> Iterator[ChatView]:
        """Ask the last question again with the current settings, as a new turn to compare with."""
        if not last:
            yield _warned("Ask a question first; then change the settings and re-run it to compare.")
            return
        options = self.options(top_k, top_n, use_reranker, query_instruction, rerank_instruction, llm_model,
                               temperature, retrieval_mode)
        history = list(history or [])
        label = (f"↻ {safe_markdown(last['question'])}\n\n<sub>re-run · top_k {options.top_k} · top_n "
                 f"{options.top_n} · {options.retrieval_mode} · reranker {'on' if options.use_reranker else 'off'}"
                 "</sub>")
        context = history[: last.get("context", 0)]
        yield from self._turn(last["question"], label, history, context, options,
                              owner_of(request, self.settings))

    def _turn(self, question: str, label: str, history: list[dict], context: list[dict],
              options: QueryOptions, owner: str) -> Iterator[ChatView]:
        turn = sum(1 for m in history if m.get("role") == "assistant") + 1
        chat = history + [{"role": "user", "content": label}, {"role": "assistant", "content": SEARCHING}]
        context = fmt.strip_sources(context)
        # turn=None: the previous question's record goes (the Evaluate side clears its grade selection)
        yield ChatView(chatbot=chat, question="", last={"question": question, "context": len(context)}, turn=None)
        try:
            for step in run_turn(self.rag, self.answerer, question, context, options, owner):
                if step.stage == RERANKED and step.warning:
                    gr.Warning(step.warning)  # the reranker's server failed: first-stage order, still answered
                record = TurnRecord.settled(step, question, context, options)
                yield from self._step_views(self._view(step, options, turn, chat), step, options,
                                            KEEP if record is None else record)
                if step.stage == DENSE and not step.retrieval.candidates:
                    return
        except Exception as exc:  # noqa: BLE001 - the page gets a message, the log the traceback
            if isinstance(exc, RAGError):  # ours say what happened and what to do: no traceback needed
                log.warning("answering %r failed: %s", question, exc)
            else:
                log.exception("answering %r failed", question)
            message = user_message(exc)
            gr.Warning(message)
            yield ChatView(chatbot=_with_reply(chat, "⚠ " + safe_markdown(message)))

    @staticmethod
    def _step_views(view: ChatView, step: TurnStep, options: QueryOptions,
                    record: TurnRecord | Keep) -> Iterator[ChatView]:
        if step.stage == RERANKING:  # scores fill the table as they come; the plot waits for all of them
            yield replace(view, plot=KEEP, cards=KEEP)
            return
        if step.stage == ANSWER:
            yield replace(view, turn=record)
            return
        # Table first: Gradio encodes every output of a yield before sending it, and the plot takes ~0.4 s to
        # draw and encode on a 2-core CPU. The plot and a settled record follow right after. While the reranker
        # runs the plot is cleared, not drawn: that would hold back its first pass (Gradio asks for the next step
        # once a yield is sent); it is drawn once, with every score in.
        yield view
        pending = step.stage == DENSE and options.use_reranker
        yield ChatView(plot=None if pending else ranking_figure(step.retrieval, options.top_n), turn=record)

    def _view(self, step: TurnStep, options: QueryOptions, turn: int, chat: list[dict]) -> ChatView:
        """The chat, table, timings, cards and candidates for one step of the turn (the plot: `_step_views`)."""
        if step.stage == ANSWER:
            return self._answer_view(step, turn, chat)
        retrieval = step.retrieval
        pending = step.stage == RERANKING or (step.stage == DENSE and options.use_reranker)
        running = "rerank" if pending else ("generate" if step.stage != DENSE else None)
        ran_on = dict(retrieval.ran_on)
        if pending and self.rag.reranker is not None:
            ran_on["rerank"] = self.rag.reranker.backend
        return ChatView(chatbot=_with_reply(chat, self._progress_text(step, pending)),
                        table=fmt.candidates_table(retrieval, options.top_n, pending), plot=KEEP,
                        timings=fmt.status_markdown(step.timings, retrieval, running, ran_on),
                        cards=fmt.passage_cards(None if pending else retrieval, turn),
                        candidates=list(retrieval.candidates))

    @staticmethod
    def _answer_view(step: TurnStep, turn: int, chat: list[dict]) -> ChatView:
        """The streamed answer (cited passages linked to this turn's cards) and the timings."""
        update = step.answer
        cited = {c.number for c in update.citations}
        text = fmt.render_answer(update.text, step.retrieval.selected, turn, cited, final=update.done)
        if update.done and update.error:
            gr.Warning(update.error)
        running = None if update.done else "generate"
        return ChatView(chatbot=_with_reply(chat, text),
                        timings=fmt.status_markdown(step.timings, step.retrieval, running, step.retrieval.ran_on))

    @staticmethod
    def _progress_text(step: TurnStep, pending: bool) -> str:
        """`Reranking 10 candidates… reranked 4/10` while the reranker runs, then `Writing the answer…`."""
        if not step.retrieval.candidates:
            return EMPTY_KB
        if not pending:
            return WRITING
        progress = fmt.rerank_progress(step.retrieval)
        return RERANKING_TEXT.format(k=len(step.retrieval.candidates)) + (f" {progress}" if progress else "")

    @staticmethod
    def clear() -> ChatView:
        """Everything back to an empty page; the turn record too (nothing is left to grade or export)."""
        return ChatView(chatbot=[], question="", table=fmt.candidates_table(None, 0), plot=None, timings="",
                        cards=fmt.passage_cards(None, 0), candidates=[], last=None, turn=None, full_text="")


class KnowledgeHandlers:
    """Upload, list and delete documents; session clean-up. Upload / refresh / delete return `KnowledgeView`s
    (refresh and delete change the `LISTING` components only)."""

    def __init__(self, rag: RAG, settings: Settings, kb_name: str = "", keeper: SessionKeeper | None = None):
        self.rag, self.settings, self.kb_name = rag, settings, kb_name
        self.sessions = UploadSessions()
        self.keeper = keeper or SessionKeeper(rag, None, settings.session_ttl)

    def upload(self, files: list[Any] | None, request: gr.Request, progress=gr.Progress()) -> KnowledgeView:
        paths = [getattr(f, "name", f) for f in files or []]
        if not paths:
            gr.Warning("Choose one or more files to upload first.")
            return KnowledgeView()
        try:
            owner = owner_of(request, self.settings, writes=True)
        except gr.Error:
            remove_uploaded(paths)
            raise
        progress(0, desc="Reading files…")
        try:
            report = self._ingest(paths, owner, progress)
        except IngestCancelled:
            return KnowledgeView()  # the tab is closed: nobody to show anything to
        except Exception as exc:  # noqa: BLE001 - a per-batch failure (store down, ...) becomes a message
            if not isinstance(exc, RAGError):  # ours (the private uploads are full, ...) need no traceback
                log.exception("upload failed")
            gr.Warning(f"Upload failed: {user_message(exc)}")
            return replace(self.refresh(request), files=None)
        self._notify(report)
        return replace(self.refresh(request), report=self.report_table(report), files=None)

    def _ingest(self, paths: list[str], owner: str, progress):
        """Ingest under the per-upload chunk limit; the raw files go once read. If the session ends meanwhile,
        the ingestion stops at its next step and everything it wrote for the session is removed."""
        with self.sessions.uploading(owner) as cancel:
            try:
                if not cancel.is_set():  # (an ended session's upload stops before it writes)
                    self.keeper.hold(owner)  # before the first write: replicas sweeping orphans see the lease
                budget = upload_budget(self.rag, owner, self.settings)
                report = self.rag.ingest_paths(paths, owner=owner, names=[Path(p).name for p in paths],
                                               max_chunks=budget, cancel=cancel,
                                               progress=throttled(progress))
            finally:
                remove_uploaded(paths)
                if cancel.is_set():  # ended mid-upload: delete after the last write, not only before it
                    log.info("upload cancelled: its session ended")
                    end_session(self.rag, owner)
            if cancel.is_set():
                raise IngestCancelled("The upload was cancelled because its browser session ended.")
        return report

    def api_upload(self, files: list[Any] | None, progress=gr.Progress()) -> dict:
        """The named `/upload` endpoint. An API caller has no browser session that could own (and, when it
        ends, remove) private uploads, so API uploads go to the shared knowledge base — and only when the
        app runs with --shared-uploads; otherwise they are refused. Returns the per-file report."""
        if not self.settings.shared_uploads:
            remove_uploaded(getattr(f, "name", f) for f in files or [])
            raise gr.Error("Uploads through the API go to the shared knowledge base, and this app keeps "
                           "uploads private (start it with --shared-uploads to allow them). Use the "
                           "Knowledge tab in the browser for a private upload.")
        paths = [getattr(f, "name", f) for f in files or []]
        if not paths:
            raise gr.Error("No files were sent: pass one or more files.")
        try:
            report = self.rag.ingest_paths(paths, owner=SHARED_OWNER, names=[Path(p).name for p in paths],
                                           max_chunks=self.settings.max_upload_chunks, progress=throttled(progress))
        except Exception as exc:  # noqa: BLE001 - a per-batch failure (store down, ...) becomes a message
            log.exception("API upload failed")
            raise gr.Error(f"Upload failed: {user_message(exc)}") from None
        finally:
            remove_uploaded(paths)
        return {"chunks": report.chunks, "summary": report.summary(),
                "files": [{"source": f.source, "status": f.status, "chunks": f.chunks, "reason": f.reason}
                          for f in report.files]}

    @staticmethod
    def _notify(report) -> None:
        added = [f for f in report.files if f.status == "ok"]
        if added:
            gr.Info(f"Added {len(added)} file(s), {report.chunks} chunks.", duration=4)
        if report.failed:
            gr.Warning(f"{len(report.failed)} file(s) could not be added; see the report for why.")

    @staticmethod
    def report_table(report) -> pd.DataFrame:
        rows = [[f.source, STATUS_ICONS.get(f.status, f.status), f.chunks, f.reason] for f in report.files]
        return pd.DataFrame(rows, columns=REPORT_HEADERS)

    def refresh(self, request: gr.Request) -> KnowledgeView:
        """The documents this session can search, the ones it may delete, and the knowledge-base summary."""
        owner = owner_of(request, self.settings)
        try:
            documents = visible_documents(self.rag, owner)
            deletable = deletable_documents(self.rag, owner, self.settings)
        except Exception as exc:  # noqa: BLE001
            log.exception("listing documents failed")
            return KnowledgeView(summary=f"⚠ Could not list the documents: {safe_markdown(user_message(exc))}")
        rows = [[clean_name(d.source), d.chunks, "everyone" if d.owner == SHARED_OWNER else "this session"]
                for d in documents]
        choices = [(clean_name(d.source), d.doc_id) for d in deletable]
        return KnowledgeView(documents=pd.DataFrame(rows, columns=DOCUMENT_HEADERS),
                             choice=gr.Dropdown(choices=choices, value=None, interactive=bool(choices)),
                             summary=self.summary(documents, owner))

    def summary(self, documents, owner: str) -> str:
        shared = [d for d in documents if d.owner == SHARED_OWNER]
        own = [d for d in documents if d.owner != SHARED_OWNER]
        name = safe_markdown(self.kb_name) if self.kb_name else "shared documents"
        text = (f"**Loaded knowledge base:** {name} — {len(shared)} documents, "
                f"{sum(d.chunks for d in shared)} chunks, shared by everyone.")
        if self.settings.shared_uploads:
            return text + "  \nUploads are **shared** with everyone and persist."
        return text + (f"  \n**Your uploads:** {len(own)} documents, {sum(d.chunks for d in own)} chunks — "
                       "searchable only in this browser session and removed when you close it.")

    def delete(self, doc_id: str | None, request: gr.Request) -> KnowledgeView:
        owner = owner_of(request, self.settings, writes=True)
        allowed = {d.doc_id: d for d in deletable_documents(self.rag, owner, self.settings)}
        if not doc_id or doc_id not in allowed:
            gr.Warning("Choose one of your uploaded documents to delete.")
            return self.refresh(request)
        removed = self.rag.store.delete_document(doc_id)
        gr.Info(f"Deleted {allowed[doc_id].source} ({removed} chunks).", duration=4)
        return self.refresh(request)

    def end_session(self, request: gr.Request) -> None:
        """Blocks.unload: the tab closed, drop what this session uploaded (unless uploads are shared); an upload
        still running for it is cancelled and cleans up after itself (`_ingest`)."""
        try:
            owner = owner_of(request, self.settings)
            if owner != SHARED_OWNER and self.sessions.end(owner):
                log.info("session ended during its upload: cancelling it")
            try:
                end_session(self.rag, owner)
            finally:  # even when the store is down: the lease then expires, and a later sweep removes them
                self.keeper.release(owner)
        except Exception:  # noqa: BLE001 - clean-up must never raise into Gradio's disconnect handling
            log.exception("cleaning up a closed session failed")
