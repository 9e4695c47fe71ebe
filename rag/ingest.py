"""Ingestion: files -> text -> chunks -> vectors -> store, with a per-file report."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .chunking import chunk_text
from .types import SHARED_OWNER, Chunk, document_id

if TYPE_CHECKING:
    from .pipeline import RAG

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".md", ".markdown", ".txt"}


@dataclass
class FileResult:
    source: str
    status: str  # "ok" | "skipped" | "failed"
    chunks: int = 0
    reason: str = ""


@dataclass
class IngestReport:
    files: list[FileResult] = field(default_factory=list)

    @property
    def chunks(self) -> int:
        return sum(f.chunks for f in self.files if f.status == "ok")

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed


ProgressFn = Callable[[str, float], None]  # (message, fraction done)


class Ingestor:
    def __init__(self, rag: "RAG"):
        self.rag = rag
        self.settings = rag.settings

    def _count_tokens(self):
        counter = getattr(self.rag.embedder, "count_tokens", None)
        return counter or (lambda text: max(1, len(text) // 4))

    def chunks_for(self, text: str, source: str, owner: str) -> list[Chunk]:
        pieces = chunk_text(text, max_tokens=self.settings.chunk_tokens, overlap=self.settings.chunk_overlap,
                            count=self._count_tokens(), title=Path(source).stem)
        return [Chunk(text=p.text, source=source, chunk_index=i, heading=p.heading, owner=owner)
                for i, p in enumerate(pieces)]

    def store_document(self, chunks: list[Chunk], doc_id: str) -> FileResult | int:
        """Write one document's chunks, then drop its old chunks that are gone: a search sees the old or
        the new version throughout, never neither."""
        store = self.rag.store
        old_ids = set(store.chunk_ids(doc_id))
        unique = list({c.id: c for c in chunks}.values())
        if old_ids and old_ids == {c.id for c in unique}:
            return 0  # same content as stored: nothing to do
        vectors = self.rag.embedder.embed_documents([c.text for c in unique])
        store.upsert(unique, vectors)
        store.delete_ids(old_ids - {c.id for c in unique})
        return len(unique)

    def add_texts(self, texts: Sequence[str], source: str, owner: str = SHARED_OWNER) -> IngestReport:
        chunks = [c for t in texts for c in self.chunks_for(t, source, owner)]
        for i, c in enumerate(chunks):
            c.chunk_index = i
        return IngestReport([self._store(chunks, source, owner)])

    def _store(self, chunks: list[Chunk], source: str, owner: str) -> FileResult:
        if not chunks:
            return FileResult(source, "failed", reason="no text found in the file")
        written = self.store_document(chunks, document_id(source, owner))
        if written == 0:
            return FileResult(source, "skipped", reason="already stored, unchanged")
        return FileResult(source, "ok", chunks=written)

    def ingest_paths(self, paths: Sequence[str | Path], owner: str = SHARED_OWNER,
                     progress: ProgressFn | None = None) -> IngestReport:
        files = _expand(paths)
        report = IngestReport()
        for n, path in enumerate(files):
            if progress:
                progress(f"{path.name}", n / max(1, len(files)))
            try:
                text = path.read_text(encoding="utf-8")
                report.files.append(self._store(self.chunks_for(text, path.name, owner), path.name, owner))
            except Exception as exc:  # one bad file must not stop the batch
                log.warning("failed to ingest %s: %s", path, exc)
                report.files.append(FileResult(path.name, "failed", reason=str(exc)))
        if progress:
            progress("done", 1.0)
        return report


def _expand(paths: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES))
        else:
            files.append(p)
    return files
