"""Ingestion: inputs -> text -> chunks -> vectors -> store, with progress and a per-file report.

Each document goes through parse (rag.ingest.loaders) -> chunk (`Chunker`) -> embed -> write. A document's
identity is (owner, display name): re-adding it unchanged is a no-op, changed it replaces the old version
(chunks that stayed the same keep their vectors), and content already stored under another name is skipped as
a duplicate. One bad file never stops the others: it becomes a "failed" row with the reason.
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np

from rag.ingest.chunking import chunk_text
from rag.ingest.inputs import (
    BytesInput,
    FileInput,
    Input,
    TextInput,
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
from rag.settings import Settings
from rag.store import Store
from rag.types import SHARED_OWNER, Chunk, document_id

log = logging.getLogger(__name__)


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

    def ingest(self, inputs: Sequence[Input], owner: str = SHARED_OWNER,
               progress: ProgressFn | None = None) -> IngestReport:
        """Files, folders (recursive), zips, in-memory files and texts; one `FileResult` per document.
        `progress(message, fraction)` is called per file and per embedding batch, fraction in 0..1."""
        started = time.perf_counter()
        items = expand(inputs)
        report, span = IngestReport(), Span(progress)
        for n, item in enumerate(items):
            file_span = span.part(n, len(items))
            file_span.report(f"{display_name(item)} ({n + 1}/{len(items)})", 0.0)
            for result in self._ingest_one(item, owner, file_span, report):
                report.files.append(result)
                _log_result(result)
        self._wait_for_index(report, span)
        span.report(f"done: {len(items)} file(s)", 1.0)
        report.seconds = time.perf_counter() - started
        log.info("ingestion: %s", report.summary())
        return report

    # --- per input --------------------------------------------------------------------------------
    def _ingest_one(self, item: Input, owner: str, span: Span, report: IngestReport) -> list[FileResult]:
        if isinstance(item, TextInput):
            with report.timed("chunk"):
                chunks = _unique([c for text in item.texts for c in self.chunker.chunks(text, item.name, owner)])
            return [self._store(chunks, item.name, owner, span, report)]
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
            return self._ingest_archive(item, owner, span, report)
        return [self._ingest_bytes(item.name, item.data, owner, span, report)]

    def _ingest_archive(self, archive: BytesInput, owner: str, span: Span, report: IngestReport) -> list[FileResult]:
        name = archive.name
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
            source = f"{name}/{member.name}"
            if member.error is not None:
                results.append(FileResult(source, "failed", reason=str(member.error)))
                continue
            results.append(self._ingest_bytes(source, member.data, owner, span.part(n, len(members)), report))
        return results

    def _ingest_bytes(self, source: str, data: bytes, owner: str, span: Span, report: IngestReport) -> FileResult:
        try:
            with report.timed("parse"):
                document = load_document(source, data, self.limits)
            span.report(f"{source}: chunking", 0.05)
            with report.timed("chunk"):
                chunks = self.chunker.chunks(document.text, source, owner, title=document.title)
            return self._store(chunks, source, owner, span, report)
        except LoaderError as exc:
            return FileResult(source, "failed", reason=str(exc))
        except Exception as exc:  # one bad file must not stop the batch; the reason goes to the report
            log.warning("failed to ingest %s", source, exc_info=True)
            return FileResult(source, "failed", reason=f"unexpected {type(exc).__name__}: {exc}")

    # --- per document -----------------------------------------------------------------------------
    def _store(self, chunks: list[Chunk], source: str, owner: str, span: Span, report: IngestReport) -> FileResult:
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
        reused = self._replace(chunks, old, span, report)
        return FileResult(source, "ok", chunks=len(chunks), doc_id=doc_id, tokens=sum(c.tokens for c in chunks),
                          reused=reused)

    def _replace(self, chunks: list[Chunk], old: dict[int, int], span: Span, report: IngestReport) -> int:
        """Write a document's chunks and drop its old ones that are gone, as one step for searches
        (Store.replace_document): a search sees the old or the new version, never both or neither.
        Chunks that were stored already keep their vectors; returns how many did."""
        keep = old.keys() & {c.id for c in chunks}
        with report.timed("write"):
            reused = self.store.vectors(list(keep)) if keep else {}
        vectors = self._vectors(chunks, reused, span, report)
        with report.timed("write"):
            self.store.replace_document(chunks, vectors, stale_ids=old.keys() - {c.id for c in chunks})
        return len(reused)

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

    def _vectors(self, chunks: list[Chunk], reused: dict[int, np.ndarray], span: Span,
                 report: IngestReport) -> np.ndarray:
        todo = [c for c in chunks if c.id not in reused]
        name = chunks[0].source

        def on_batch(done: int, total: int) -> None:
            span.report(f"{name}: embedded {done}/{total} chunks", 0.1 + 0.85 * done / max(1, total))

        with report.timed("embed"):
            fresh = self.embedder.embed_documents([c.text for c in todo], progress=on_batch) if todo \
                else np.zeros((0, self.embedder.dim), dtype=np.float32)
        by_id = dict(reused)
        by_id.update({c.id: v for c, v in zip(todo, fresh)})
        return np.stack([by_id[c.id] for c in chunks]).astype(np.float32)

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
