"""Ingestion: files -> text -> chunks -> vectors -> store, with progress and a per-file report.

Each document goes through parse (rag.loaders) -> chunk (rag.chunking) -> embed -> write. A document's identity
is (owner, display name): re-adding it unchanged is a no-op, changed it replaces the old version (chunks
that stayed the same keep their vectors), and content already stored under another name is skipped as a
duplicate. One bad file never stops the others: it becomes a "failed" row with the reason.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from .chunking import approx_tokens, chunk_text
from .loaders import (IngestLimits, LoaderError, is_archive, is_supported, load_document, read_limited)
from .loaders.archive import iter_zip
from .types import SHARED_OWNER, Chunk, document_id

if TYPE_CHECKING:
    from .pipeline import RAG

log = logging.getLogger(__name__)

STAGES = ("parse", "chunk", "embed", "write", "index")
ProgressFn = Callable[[str, float], None]  # (message, fraction done in 0..1)


@dataclass
class FileResult:
    source: str  # display name (inside a zip: "archive.zip/inner/path.md")
    status: str  # "ok" | "skipped" | "failed"
    chunks: int = 0
    reason: str = ""
    doc_id: str = ""
    tokens: int = 0  # tokens of the chunks written
    reused: int = 0  # chunks whose stored vectors were kept (unchanged parts of a replaced file)


@dataclass
class IngestReport:
    files: list[FileResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))  # stage -> s
    seconds: float = 0.0  # wall time of the whole call

    @property
    def chunks(self) -> int:
        return sum(f.chunks for f in self.files if f.status == "ok")

    @property
    def tokens(self) -> int:
        return sum(f.tokens for f in self.files if f.status == "ok")

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def skipped(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "skipped"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        done = sum(f.status == "ok" for f in self.files)
        return (f"{done} added, {len(self.skipped)} skipped, {len(self.failed)} failed; "
                f"{self.chunks} chunks in {self.seconds:.1f} s")


@dataclass
class InputFile:
    path: Path
    name: str  # display name: with the owner, the document's identity


class Span:
    """A slice [lo, hi] of the overall progress; sub-steps report fractions of it, never going backwards."""

    def __init__(self, fn: ProgressFn | None, lo: float = 0.0, hi: float = 1.0, _last: list | None = None):
        self.fn, self.lo, self.hi = fn, lo, hi
        self._last = _last if _last is not None else [0.0]

    def report(self, message: str, fraction: float) -> None:
        if self.fn is None:
            return
        value = min(1.0, max(self._last[0], self.lo + (self.hi - self.lo) * min(1.0, max(0.0, fraction))))
        self._last[0] = value
        self.fn(message, value)

    def part(self, index: int, total: int) -> "Span":
        width = (self.hi - self.lo) / max(1, total)
        return Span(self.fn, self.lo + index * width, self.lo + (index + 1) * width, self._last)


class Ingestor:
    def __init__(self, rag: "RAG", limits: IngestLimits | None = None):
        self.rag = rag
        self.settings = rag.settings
        self.limits = limits or IngestLimits.from_env()
        self.max_tokens = chunk_token_limit(rag)
        self.timings = dict.fromkeys(STAGES, 0.0)

    # --- public -----------------------------------------------------------------------------------
    def ingest_paths(self, paths: Sequence, owner: str = SHARED_OWNER, progress: ProgressFn | None = None,
                     names: Sequence[str | None] | None = None) -> IngestReport:
        started = time.perf_counter()
        inputs = expand_inputs(paths, names)
        span = Span(progress)
        report = IngestReport()
        for n, item in enumerate(inputs):
            file_span = span.part(n, len(inputs))
            file_span.report(f"{item.name} ({n + 1}/{len(inputs)})", 0.0)
            results = self._ingest_input(item, owner, file_span)
            report.files.extend(results)
            for r in results:
                _log_result(r)
        self._wait_for_index(report, span)
        span.report(f"done: {len(inputs)} file(s)", 1.0)
        return self._finish(report, started)

    def ingest_documents(self, items: Sequence[tuple[str, bytes]], owner: str = SHARED_OWNER,
                         progress: ProgressFn | None = None) -> IngestReport:
        """Ingest in-memory files given as (display name, bytes); the name's suffix picks the loader."""
        started = time.perf_counter()
        span = Span(progress)
        report = IngestReport()
        for n, (name, data) in enumerate(items):
            file_span = span.part(n, len(items))
            file_span.report(f"{name} ({n + 1}/{len(items)})", 0.0)
            report.files.append(self._ingest_bytes(name, data, owner, file_span))
            _log_result(report.files[-1])
        self._wait_for_index(report, span)
        span.report(f"done: {len(items)} file(s)", 1.0)
        return self._finish(report, started)

    def add_texts(self, texts: Sequence[str], source: str, owner: str = SHARED_OWNER,
                  progress: ProgressFn | None = None) -> IngestReport:
        started = time.perf_counter()
        with self._timed("chunk"):
            chunks = [c for t in texts for c in self.chunks_for(t, source, owner)]
        result = self._store(chunks, source, owner, Span(progress))
        report = IngestReport([result])
        self._wait_for_index(report, Span(progress))
        Span(progress).report("done", 1.0)
        return self._finish(report, started)

    def chunks_for(self, text: str, source: str, owner: str = SHARED_OWNER, title: str = "") -> list[Chunk]:
        counter = token_counter(self.rag.embedder)
        pieces = chunk_text(text, max_tokens=self.max_tokens, overlap=self.settings.chunk_overlap,
                            count=counter.count, count_many=counter.count_many, title=title)
        chunks = []
        for i, p in enumerate(pieces):
            chunk = Chunk(text=p.text, source=source, chunk_index=i, heading=p.heading, owner=owner)
            chunk._tokens = p.tokens  # for the report's token counts; not stored
            chunks.append(chunk)
        return chunks

    def store_document(self, chunks: list[Chunk], doc_id: str, span: Span | None = None,
                       old: dict[int, int] | None = None) -> tuple[int, int]:
        """Write one document's chunks, then drop its old chunks that are gone, as one step for searches
        (Store.replace_document): a search sees the old or the new version, never both or neither.
        `old` is the stored version's {chunk id: position}, when the caller has it already.
        Returns (chunks written, vectors reused); (0, 0) when the stored version is identical."""
        store = self.rag.store
        if old is None:
            with self._timed("write"):
                old = store.chunk_positions(doc_id)
        if old == {c.id: c.chunk_index for c in chunks}:
            return 0, 0
        keep = old.keys() & {c.id for c in chunks}
        with self._timed("write"):
            reused = store.vectors(list(keep)) if keep else {}
        vectors = self._vectors(chunks, reused, span or Span(None))
        with self._timed("write"):
            store.replace_document(chunks, vectors, stale_ids=old.keys() - {c.id for c in chunks})
        return len(chunks), len(reused)

    # --- per input --------------------------------------------------------------------------------
    def _ingest_input(self, item: InputFile, owner: str, span: Span) -> list[FileResult]:
        try:
            with self._timed("parse"):
                data = read_limited(item.path, item.name, self.limits)
        except FileNotFoundError:
            return [FileResult(item.name, "failed", reason=f"{item.path} does not exist.")]
        except (LoaderError, OSError) as exc:
            return [FileResult(item.name, "failed", reason=str(exc))]
        if is_archive(item.name):
            return self._ingest_archive(data, item.name, owner, span)
        return [self._ingest_bytes(item.name, data, owner, span)]

    def _ingest_archive(self, data: bytes, name: str, owner: str, span: Span) -> list[FileResult]:
        try:
            with self._timed("parse"):
                members = list(iter_zip(data, name, self.limits, _wanted_in_archive))
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
            results.append(self._ingest_bytes(source, member.data, owner, span.part(n, len(members))))
        return results

    def _ingest_bytes(self, source: str, data: bytes, owner: str, span: Span) -> FileResult:
        try:
            with self._timed("parse"):
                document = load_document(source, data, self.limits)
            span.report(f"{source}: chunking", 0.05)
            with self._timed("chunk"):
                chunks = self.chunks_for(document.text, source, owner, title=document.title)
            return self._store(chunks, source, owner, span)
        except LoaderError as exc:
            return FileResult(source, "failed", reason=str(exc))
        except Exception as exc:  # one bad file must not stop the batch; the reason goes to the report
            log.warning("failed to ingest %s", source, exc_info=True)
            return FileResult(source, "failed", reason=f"unexpected {type(exc).__name__}: {exc}")

    # --- per document -----------------------------------------------------------------------------
    def _store(self, chunks: list[Chunk], source: str, owner: str, span: Span) -> FileResult:
        doc_id = document_id(source, owner)
        chunks = _unique(chunks)
        if not chunks:
            return FileResult(source, "failed", reason=f"no text found in {source}.", doc_id=doc_id)
        with self._timed("write"):
            old = self.rag.store.chunk_positions(doc_id)
        duplicate = "" if old else self._duplicate_of(chunks, doc_id, owner)
        if duplicate:
            return FileResult(source, "skipped", reason=f"duplicate of {duplicate} (same content)",
                              doc_id=doc_id)
        written, reused = self.store_document(chunks, doc_id, span, old=old)
        if written == 0:
            return FileResult(source, "skipped", reason="already stored, unchanged", doc_id=doc_id)
        tokens = sum(_tokens_of(c) for c in chunks)
        return FileResult(source, "ok", chunks=written, doc_id=doc_id, tokens=tokens, reused=reused)

    def _duplicate_of(self, chunks: list[Chunk], doc_id: str, owner: str) -> str:
        """The name of another stored document holding all of this content ("" if none). Only asked for a
        new document: a changed file under an existing name always replaces its old version."""
        with self._timed("write"):
            holders = self.rag.store.content_documents([c.content_hash for c in chunks], owner)
        if len(holders) < len({c.content_hash for c in chunks}):
            return ""
        common = set.intersection(*(set(docs) for docs in holders.values())) - {doc_id}
        if not common:
            return ""
        any_docs = next(iter(holders.values()))
        return any_docs[sorted(common)[0]]

    def _vectors(self, chunks: list[Chunk], reused: dict[int, np.ndarray], span: Span) -> np.ndarray:
        todo = [c for c in chunks if c.id not in reused]
        name = chunks[0].source

        def on_batch(done: int, total: int) -> None:
            span.report(f"{name}: embedded {done}/{total} chunks", 0.1 + 0.85 * done / max(1, total))

        with self._timed("embed"):
            fresh = self.rag.embedder.embed_documents([c.text for c in todo], progress=on_batch) if todo \
                else np.zeros((0, self.rag.embedder.dim), dtype=np.float32)
        by_id = dict(reused)
        by_id.update({c.id: v for c, v in zip(todo, fresh)})
        return np.stack([by_id[c.id] for c in chunks]).astype(np.float32)

    def _wait_for_index(self, report: IngestReport, span: Span) -> None:
        """After writing, wait for the store's index build so the first search after an upload is fast."""
        if not report.chunks:
            return
        span.report("indexing for fast search...", 0.99)
        with self._timed("index"):
            self.rag.store.wait_until_indexed()

    # --- bookkeeping ------------------------------------------------------------------------------
    @contextmanager
    def _timed(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] += time.perf_counter() - started

    def _finish(self, report: IngestReport, started: float) -> IngestReport:
        report.timings = dict(self.timings)
        report.seconds = time.perf_counter() - started
        log.info("ingestion: %s", report.summary())
        return report


# --- helpers ----------------------------------------------------------------------------------------
class token_counter:  # noqa: N801 - used like a function
    """Counts with the embedder's tokenizer (batched when it has one), else ~4 characters a token."""

    def __init__(self, embedder):
        self.tokenizer = getattr(embedder, "tokenizer", None)
        self.fallback = getattr(embedder, "count_tokens", None) or approx_tokens

    def count(self, text: str) -> int:
        return self.count_many([text])[0]

    def count_many(self, texts: Sequence[str]) -> list[int]:
        texts = list(texts)
        if not texts:
            return []
        if self.tokenizer is None:
            return [self.fallback(t) for t in texts]
        ids = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return [len(i) for i in ids]


def chunk_token_limit(rag: "RAG") -> int:
    """`Settings.chunk_tokens`. When the embedder reads fewer tokens (e.g. MiniLM: 256), the rest of a long
    chunk is stored and shown but not embedded; capping chunks at the model's length instead was measured
    to retrieve worse on the Milvus FAQ (docs/ingestion.md), so it is only logged."""
    limit = max(32, rag.settings.chunk_tokens)
    seq = getattr(getattr(rag.embedder, "model", None), "max_seq_length", None)
    if isinstance(seq, int) and 0 < seq < limit:
        log.info("chunks of up to %d tokens; the embedder reads the first %d of each (RAG_CHUNK_TOKENS)",
                 limit, seq)
    return limit


def expand_inputs(paths: Iterable, names: Sequence[str | None] | None = None) -> list[InputFile]:
    """Files and folders (recursive, supported types only, hidden files skipped) -> (path, display name).

    An item may be a path or a `(path, display_name)` tuple; `names[i]`, when given, names `paths[i]`.
    A file's default name is its file name; files found in a folder are named by their path inside it."""
    paths = list(paths)
    names = list(names) if names is not None else [None] * len(paths)
    if len(names) != len(paths):
        raise ValueError(f"{len(paths)} paths but {len(names)} names: give one name (or None) per path.")
    inputs: list[InputFile] = []
    for item, name in zip(paths, names):
        if isinstance(item, tuple):
            item, name = item[0], name or item[1]
        path = Path(item)
        if path.is_dir():
            inputs.extend(_folder(path))
        else:
            inputs.append(InputFile(path, name or path.name))
    return inputs


def _folder(folder: Path) -> list[InputFile]:
    found = []
    for f in sorted(folder.rglob("*")):
        relative = f.relative_to(folder)
        if f.is_file() and is_supported(f.name) and not any(p.startswith(".") for p in relative.parts):
            found.append(InputFile(f, relative.as_posix()))
    return found


def _wanted_in_archive(member: str) -> bool:
    return is_supported(member) and not is_archive(member)


def _unique(chunks: list[Chunk]) -> list[Chunk]:
    """Identical chunks of one document are stored once; positions stay 0..n-1 in reading order."""
    seen: set[int] = set()
    unique = [c for c in chunks if not (c.id in seen or seen.add(c.id))]
    for i, c in enumerate(unique):
        c.chunk_index = i
    return unique


def _tokens_of(chunk: Chunk) -> int:
    return getattr(chunk, "_tokens", 0) or approx_tokens(chunk.text)


def _log_result(result: FileResult) -> None:
    if result.status == "failed":
        log.warning("%s: failed: %s", result.source, result.reason)
    else:
        log.info("%s: %s (%d chunks) %s", result.source, result.status, result.chunks, result.reason)
