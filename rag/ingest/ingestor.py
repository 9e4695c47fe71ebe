"""Ingestion: inputs -> text -> chunks -> vectors -> store, with progress and a per-file report.

Each document goes through parse (rag.ingest.loaders) -> chunk (`Chunker`) -> embed -> write. A document's
identity is (owner, display name): re-adding it unchanged is a no-op, changed it replaces the old version
(chunks that stayed the same keep their vectors), and content already stored under another name is skipped as
a duplicate. One bad file never stops the others: it becomes a "failed" row with the reason.

A document is embedded and written in steps of `WRITE_BATCH` chunks, so memory stays bounded by one step
whatever the file's size, and a cancelled ingestion (its session ended) stops within one step. A document of
at most one step is swapped in atomically for searches; a larger one becomes searchable step by step (see
`Ingestor._write`). `max_chunks` caps what one call may add (the app's per-upload limit).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from rag.errors import RAGError
from rag.ingest.chunking import chunk_text
from rag.ingest.inputs import (
    BytesInput,
    FileInput,
    Input,
    TextInput,
    clean_name,
    display_name,
    expand,
)
from rag.ingest.loaders import (
    IngestLimits,
    LoaderError,
    is_archive,
    is_supported,
    load_document,
    read_limited,
)
from rag.ingest.loaders.archive import iter_zip
from rag.ingest.report import FileResult, IngestReport, ProgressFn, Span
from rag.models.contracts import Embedder
from rag.models.priority import BACKGROUND_WAIT, GATE
from rag.settings import Settings
from rag.store import Store
from rag.types import SHARED_OWNER, Chunk, document_id

log = logging.getLogger(__name__)

WRITE_BATCH = 64  # chunks embedded and written per step: bounds memory; a cancel takes effect between steps
CHARS_PER_TOKEN = 6  # generous: text longer than max_chunks * chunk_tokens * this can't fit, and isn't chunked


class IngestCancelled(RAGError):
    """The ingestion was cancelled (its browser session ended); what it wrote is the caller's to remove."""


@dataclass
class IngestCall:
    """What one `ingest` call shares across its documents: the owner, the report, the chunk budget, the cancel."""
    owner: str
    report: IngestReport
    max_chunks: int | None = None  # chunks this call may add in all; None: no limit (CLI, default knowledge base)
    cancel: threading.Event | None = None
    added: int = 0  # chunks written so far

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise IngestCancelled("The upload was cancelled because its browser session ended.")

    def room(self) -> int | None:
        return None if self.max_chunks is None else self.max_chunks - self.added


class Chunker:
    """Text -> the chunks of one document, sized in tokens of the embedding model's own tokenizer."""

    def __init__(self, embedder: Embedder, settings: Settings):
        self.embedder = embedder
        self.overlap = settings.chunk_overlap
        self.max_tokens = max(32, settings.chunk_tokens)
        if embedder.max_tokens < self.max_tokens:
            # Capping chunks at the model's length instead was measured to retrieve worse on the Milvus FAQ
            # (docs/ingestion.md): the rest of a long chunk is stored and shown, not embedded.
            log.info("chunks of up to %d tokens; the embedder reads the first %d of each (RAG_CHUNK_TOKENS)",
                     self.max_tokens, embedder.max_tokens)

    def chunks(self, text: str, source: str, owner: str = SHARED_OWNER, title: str = "") -> list[Chunk]:
        """Chunks in reading order; identical chunks of one document are kept once."""
        count_many = self.embedder.count_tokens
        pieces = chunk_text(text, max_tokens=self.max_tokens, overlap=self.overlap,
                            count=lambda t: count_many([t])[0], count_many=count_many, title=title)
        chunks = [Chunk(text=p.text, source=source, heading=p.heading, owner=owner, tokens=p.tokens) for p in pieces]
        return _unique(chunks)


class Ingestor:
    """Writes documents into one store with one embedder. `ingest` is the single entry point."""

    def __init__(self, embedder: Embedder, store: Store, settings: Settings, limits: IngestLimits | None = None):
        self.embedder, self.store = embedder, store
        self.limits = limits or IngestLimits.from_env()
        self.chunker = Chunker(embedder, settings)

    def ingest(self, inputs: Sequence[Input], owner: str = SHARED_OWNER, progress: ProgressFn | None = None, *,
               max_chunks: int | None = None, cancel: threading.Event | None = None) -> IngestReport:
        """Files, folders (recursive), zips, in-memory files and texts; one `FileResult` per document.
        `progress(message, fraction)` is called per file and per embedding batch, fraction in 0..1.
        `max_chunks`: the most chunks this call may add (a document that would pass it fails, with a reason).
        `cancel`: once set, the call stops at its next step with `IngestCancelled`."""
        started = time.perf_counter()
        items = expand(inputs)
        report, span = IngestReport(), Span(progress)
        call = IngestCall(owner, report, max_chunks, cancel)
        for n, item in enumerate(items):
            call.check()
            file_span = span.part(n, len(items))
            file_span.report(f"{display_name(item)} ({n + 1}/{len(items)})", 0.0)
            for result in self._ingest_one(item, file_span, call):
                report.files.append(result)
                _log_result(result)
        self._wait_for_index(report, span)
        span.report(f"done: {len(items)} file(s)", 1.0)
        report.seconds = time.perf_counter() - started
        log.info("ingestion: %s", report.summary())
        return report

    # --- per input --------------------------------------------------------------------------------
    def _ingest_one(self, item: Input, span: Span, call: IngestCall) -> list[FileResult]:
        report, owner = call.report, call.owner
        if isinstance(item, TextInput):
            too_big = self._too_long(sum(len(t) for t in item.texts), item.name, call)
            if too_big:
                return [too_big]
            with report.timed("chunk"):
                chunks = _unique([c for text in item.texts for c in self.chunker.chunks(text, item.name, owner)])
            return [self._store(chunks, item.name, span, call)]
        if isinstance(item, FileInput):
            try:
                with report.timed("parse"):
                    data = read_limited(item.path, item.name, self.limits)
            except FileNotFoundError:
                return [FileResult(item.name, "failed", reason=f"{item.path} does not exist.")]
            except (LoaderError, OSError) as exc:
                return [FileResult(item.name, "failed", reason=str(exc))]
            item = BytesInput(item.name, data)
        if is_archive(item.name):
            return self._ingest_archive(item, span, call)
        return [self._ingest_bytes(item.name, item.data, span, call)]

    def _ingest_archive(self, archive: BytesInput, span: Span, call: IngestCall) -> list[FileResult]:
        name, report = archive.name, call.report
        try:
            with report.timed("parse"):
                members = list(iter_zip(archive.data, name, self.limits, _wanted_in_archive))
        except LoaderError as exc:
            return [FileResult(name, "failed", reason=str(exc))]
        if not members:
            return [FileResult(name, "failed", reason=f"{name} holds no supported documents (.md, .txt, "
                                                      ".pdf, .docx, .html).")]
        results = []
        for n, member in enumerate(members):
            source = f"{name}/{clean_name(member.name)}"
            if member.error is not None:
                results.append(FileResult(source, "failed", reason=str(member.error)))
                continue
            call.check()
            results.append(self._ingest_bytes(source, member.data, span.part(n, len(members)), call))
        return results

    def _ingest_bytes(self, source: str, data: bytes, span: Span, call: IngestCall) -> FileResult:
        report = call.report
        try:
            with report.timed("parse"):
                document = load_document(source, data, self.limits)
            too_big = self._too_long(len(document.text), source, call)
            if too_big:
                return too_big
            span.report(f"{source}: chunking", 0.05)
            with report.timed("chunk"):
                chunks = self.chunker.chunks(document.text, source, call.owner, title=document.title)
            return self._store(chunks, source, span, call)
        except LoaderError as exc:
            return FileResult(source, "failed", reason=str(exc))
        except IngestCancelled:
            raise
        except Exception as exc:  # one bad file must not stop the batch; the reason goes to the report
            log.warning("failed to ingest %s", source, exc_info=True)
            return FileResult(source, "failed", reason=f"unexpected {type(exc).__name__}: {exc}")

    # --- per document -----------------------------------------------------------------------------
    def _too_long(self, chars: int, source: str, call: IngestCall) -> FileResult | None:
        """A "failed" result for text that can't fit the call's chunk budget, found before chunking it:
        chunking a 30 MB file alone takes minutes of CPU."""
        room = call.room()
        limit = None if room is None else room * self.chunker.max_tokens * CHARS_PER_TOKEN
        if limit is None or chars <= limit:
            return None
        return FileResult(source, "failed", reason=(
            f"{source} holds {chars:,} characters of text, more than this upload may add ({room:,} chunks, "
            f"about {limit:,} characters; the limit per upload is {call.max_chunks:,} chunks). Split it into "
            "smaller files and upload them separately."))

    def _over_budget(self, chunks: list[Chunk], source: str, call: IngestCall) -> FileResult | None:
        room = call.room()
        if room is None or len(chunks) <= room:
            return None
        return FileResult(source, "failed", reason=(
            f"{source} makes {len(chunks):,} chunks, more than this upload may add ({room:,}; the limit per "
            f"upload is {call.max_chunks:,} chunks). Split it into smaller files and upload them separately."))

    def _store(self, chunks: list[Chunk], source: str, span: Span, call: IngestCall) -> FileResult:
        owner, report = call.owner, call.report
        doc_id = document_id(source, owner)
        if not chunks:
            return FileResult(source, "failed", reason=f"no text found in {source}.", doc_id=doc_id)
        with report.timed("write"):
            old = self.store.chunk_positions(doc_id)
            duplicate = "" if old else self._duplicate_of(chunks, doc_id, owner)
        if duplicate:
            return FileResult(source, "skipped", reason=f"duplicate of {duplicate} (same content)", doc_id=doc_id)
        if old == {c.id: c.chunk_index for c in chunks}:
            return FileResult(source, "skipped", reason="already stored, unchanged", doc_id=doc_id)
        over = self._over_budget(chunks, source, call)
        if over:
            return over
        reused = self._write(chunks, old, span, call)
        call.added += len(chunks)
        return FileResult(source, "ok", chunks=len(chunks), doc_id=doc_id, tokens=sum(c.tokens for c in chunks),
                          reused=reused)

    def _write(self, chunks: list[Chunk], old: dict[int, int], span: Span, call: IngestCall) -> int:
        """Write a document's chunks and drop its old ones that are gone; returns how many kept their vectors.

        Up to `WRITE_BATCH` chunks: one step for searches (Store.replace_document), which see the old or the
        new version, never both or neither. Larger: embedded and written `WRITE_BATCH` at a time, so memory
        holds one step's vectors and rows, not the whole document's; searches meanwhile see the chunks written
        so far (beside the old version's, for a replaced document), and the old version's remaining chunks go
        once the last step is in."""
        stale = old.keys() - {c.id for c in chunks}
        if len(chunks) <= WRITE_BATCH:
            vectors, reused = self._vectors(chunks, old, span, call.report, (0, len(chunks)))
            with call.report.timed("write"):
                self.store.replace_document(chunks, vectors, stale_ids=stale)
            return reused
        log.info("%s: writing %d chunks in steps of %d", chunks[0].source, len(chunks), WRITE_BATCH)
        reused = 0
        for start in range(0, len(chunks), WRITE_BATCH):
            call.check()
            step = chunks[start:start + WRITE_BATCH]
            vectors, kept = self._vectors(step, old, span, call.report, (start, len(chunks)))
            GATE.wait_turn(BACKGROUND_WAIT)  # the write competes for the same cores: questions first
            with call.report.timed("write"):
                self.store.upsert(step, vectors)
            reused += kept
        with call.report.timed("write"):
            self.store.delete_ids(stale)
        return reused

    def _duplicate_of(self, chunks: list[Chunk], doc_id: str, owner: str) -> str:
        """The name of another stored document holding all of this content ("" if none). Only asked for a
        new document: a changed file under an existing name always replaces its old version."""
        holders = self.store.content_documents([c.content_hash for c in chunks], owner)
        if len(holders) < len({c.content_hash for c in chunks}):
            return ""
        common = set.intersection(*(set(docs) for docs in holders.values())) - {doc_id}
        if not common:
            return ""
        any_docs = next(iter(holders.values()))
        return any_docs[sorted(common)[0]]

    def _vectors(self, chunks: list[Chunk], old: dict[int, int], span: Span, report: IngestReport,
                 position: tuple[int, int]) -> tuple[np.ndarray, int]:
        """Vectors for `chunks` (stored ones reused, the rest embedded) and how many were reused.
        `position`: (chunks of the document before these, chunks in the document), for progress."""
        keep = [c.id for c in chunks if c.id in old]
        with report.timed("write"):
            reused = self.store.vectors(keep) if keep else {}
        todo = [c for c in chunks if c.id not in reused]
        name = chunks[0].source
        before, total = position

        def on_batch(done: int, _: int) -> None:
            done += before
            span.report(f"{name}: embedded {done}/{total} chunks", 0.1 + 0.85 * done / max(1, total))

        with report.timed("embed"):
            fresh = self.embedder.embed_documents([c.text for c in todo], progress=on_batch) if todo \
                else np.zeros((0, self.embedder.dim), dtype=np.float32)
        by_id = dict(reused)
        by_id.update({c.id: v for c, v in zip(todo, fresh)})
        return np.stack([by_id[c.id] for c in chunks]).astype(np.float32), len(reused)

    def _wait_for_index(self, report: IngestReport, span: Span) -> None:
        """After writing, wait for the store's index build so the first search after an upload is fast."""
        if not report.chunks:
            return
        span.report("indexing for fast search...", 0.99)
        with report.timed("index"):
            self.store.wait_until_indexed()


# --- helpers ----------------------------------------------------------------------------------------
def _wanted_in_archive(member: str) -> bool:
    return is_supported(member) and not is_archive(member)


def _unique(chunks: list[Chunk]) -> list[Chunk]:
    """Identical chunks of one document are stored once; positions stay 0..n-1 in reading order."""
    seen: set[int] = set()
    unique = [c for c in chunks if not (c.id in seen or seen.add(c.id))]
    for i, c in enumerate(unique):
        c.chunk_index = i
    return unique


def _log_result(result: FileResult) -> None:
    if result.status == "failed":
        log.warning("%s: failed: %s", result.source, result.reason)
    else:
        log.info("%s: %s (%d chunks) %s", result.source, result.status, result.chunks, result.reason)
